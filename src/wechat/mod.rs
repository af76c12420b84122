//! The WeChat side: the HTTP client for WeChat's server API (typed errcodes,
//! stable access-token cache) and the legacy encrypted-data crypto.

pub mod budget;
pub mod client;
pub mod crypto;
pub mod error;
pub mod token;

pub use client::{WechatClient, WxSession};
pub use error::{Endpoint, WechatError};
pub use token::TokenCache;
