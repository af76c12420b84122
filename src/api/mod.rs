//! The contract both edges share, and nothing server-specific: the error
//! reasons (declared in `proto/mpauth/v1/errors.proto`), the metadata header
//! names, the health service names and the gateway's JSON bodies that clients
//! (the `login` command, the load generator) reuse.

pub mod health;
pub mod json;
pub mod metadata;
pub mod reason;

pub use reason::{ERROR_DOMAIN, ErrorReason, reason_of};
