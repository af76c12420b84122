//! TEMPORARY STUB (replaced by the store branch).
#![allow(dead_code, unused_variables, clippy::unused_async)]
use crate::domain::{AppId, OpenId, Phone, UnionId, UserId};
#[derive(Clone)]
pub struct Store;
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("contention")]
    Contention,
    #[error("unexpected: {0}")]
    Unexpected(String),
}
pub struct LoginRecord<'a> {
    pub app_id: &'a AppId,
    pub openid: &'a OpenId,
    pub unionid: Option<&'a UnionId>,
    pub phone: &'a Phone,
    pub sealed_session_key: &'a [u8],
    pub session_key_expires_at_ms: i64,
    pub now_ms: i64,
}
pub struct LoginOutcome {
    pub user_id: UserId,
    pub is_new_user: bool,
}
impl Store {
    pub async fn connect(
        url: &secrecy::SecretString,
        settings: &crate::config::DatabaseSettings,
    ) -> Result<Store, StoreError> {
        todo!()
    }
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        todo!()
    }
    pub async fn migrations_current(&self) -> Result<bool, StoreError> {
        todo!()
    }
    pub async fn ping(&self) -> Result<(), StoreError> {
        todo!()
    }
    pub async fn record_login(&self, login: &LoginRecord<'_>) -> Result<LoginOutcome, StoreError> {
        todo!()
    }
    pub async fn save_session_key(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        sealed: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        todo!()
    }
    pub async fn session_key(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        now_ms: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        todo!()
    }
}
