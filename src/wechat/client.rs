//! TEMPORARY STUB (replaced by the wxclient branch).
#![allow(dead_code, unused_variables, clippy::unused_async)]
use crate::{
    config::{AppCredentials, WechatSettings},
    domain::*,
};
pub struct WechatClient;
pub struct WxSession {
    pub openid: OpenId,
    pub session_key: SessionKey,
    pub unionid: Option<UnionId>,
}
#[derive(Debug, thiserror::Error)]
pub enum WechatError {
    #[error("x")]
    InvalidCode,
    #[error("x")]
    CodeUsed,
    #[error("x")]
    UserBlocked,
    #[error("x")]
    RateLimited { errcode: i64 },
    #[error("x")]
    UnknownApp,
    #[error("x")]
    InvalidAppSecret,
    #[error("x")]
    InvalidAppId,
    #[error("x")]
    NotAuthorized,
    #[error("x")]
    IpNotWhitelisted,
    #[error("x")]
    AccessTokenInvalid,
    #[error("x")]
    Busy,
    #[error("x")]
    Timeout,
}
impl WechatError {
    pub fn is_retryable(&self) -> bool {
        true
    }
}
impl WechatClient {
    pub fn new(settings: &WechatSettings, apps: &[AppCredentials]) -> Result<Self, WechatError> {
        todo!()
    }
    pub async fn code2session(
        &self,
        app_id: &AppId,
        code: &LoginCode,
    ) -> Result<WxSession, WechatError> {
        todo!()
    }
    pub async fn phone_number(
        &self,
        app_id: &AppId,
        code: &PhoneCode,
        openid: &OpenId,
    ) -> Result<Phone, WechatError> {
        todo!()
    }
}
