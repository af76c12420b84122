//! The login's writes: the find-or-create transaction (user by phone, identity, the
//! session it starts) with its retries, and the sealed session keys of the legacy flow.

use super::{
    Inner, LoginSql, NewSession, Store, StoreError, backoff, batch,
    error::{Class, classify},
    mysql, now_ms, schema, sqlite,
};
use crate::domain::{AppId, OpenId, Phone, UnionId, UserId};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::RunQueryDsl;
use std::fmt;

/// What a completed login writes: the user (by phone) and the identity linked to it.
#[derive(Clone, Copy)]
pub struct LoginRecord<'a> {
    pub app_id: &'a AppId,
    pub openid: &'a OpenId,
    /// Stored when present; a login without one keeps the stored unionid.
    pub unionid: Option<&'a UnionId>,
    pub phone: &'a Phone,
    /// The session_key sealed by the caller (opaque bytes, at most 255).
    pub sealed_session_key: &'a [u8],
    pub session_key_expires_at_ms: i64,
    /// The session this login starts, created in the same transaction.
    pub session: Option<&'a NewSession>,
    /// The login's time, unix milliseconds.
    pub now_ms: i64,
}

impl fmt::Debug for LoginRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The phone masks itself; the sealed key is left out.
        f.debug_struct("LoginRecord")
            .field("app_id", self.app_id)
            .field("openid", self.openid)
            .field("unionid", &self.unionid)
            .field("phone", self.phone)
            .field("now_ms", &self.now_ms)
            .finish_non_exhaustive()
    }
}

/// The result of [`Store::record_login`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginOutcome {
    pub user_id: UserId,
    /// True when this login created the user.
    pub is_new_user: bool,
}

impl Store {
    /// The login transaction: find-or-create the user by phone, link (or move) the
    /// identity to it, store the unionid (never erasing one) and the sealed session key.
    ///
    /// Race-free by construction (upserts on unique keys, no SELECT-then-INSERT). The
    /// whole transaction is retried on deadlock (Galera: a lost certification) up to
    /// `max_tx_attempts` times, and once on a dead pooled connection (it is idempotent).
    #[tracing::instrument(name = "store.record_login", skip_all, fields(app_id = %login.app_id))]
    pub async fn record_login(&self, login: &LoginRecord<'_>) -> Result<LoginOutcome, StoreError> {
        let mut attempt = 0;
        let mut reconnected = false;
        loop {
            attempt += 1;
            let result = match &self.inner {
                Inner::Mysql(pool, batch) => match self.login_sql {
                    LoginSql::Batch => {
                        let mut conn = self.checkout(batch).await?;
                        batch::record_login(&mut conn, login).await
                    }
                    LoginSql::Returning | LoginSql::Portable => {
                        let returning = self.login_sql == LoginSql::Returning;
                        let mut conn = self.checkout(pool).await?;
                        mysql::record_login_by_statement(&mut conn, login, returning).await
                    }
                },
                Inner::Sqlite(pool) => {
                    let mut conn = self.checkout(pool).await?;
                    sqlite::record_login(&mut conn, login).await
                }
            };
            let err = match result {
                // After a lost connection the first attempt may have committed without
                // its acknowledgement reaching us: then this attempt found the row that
                // attempt created and calls the user returning. The row's creation time
                // is this login's own timestamp exactly when that happened.
                Ok(outcome) if reconnected && !outcome.is_new_user => {
                    return Ok(LoginOutcome {
                        is_new_user: self.created_at(outcome.user_id).await? == Some(login.now_ms),
                        ..outcome
                    });
                }
                Ok(outcome) => return Ok(outcome),
                Err(err) => err,
            };
            match classify(&err) {
                Class::Retry if attempt < self.max_tx_attempts => {
                    metrics::counter!("mp_auth_db_tx_retries_total").increment(1);
                    tracing::debug!(attempt, "login transaction hit contention; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Class::Unavailable if !reconnected => {
                    reconnected = true;
                    attempt -= 1;
                    self.verify_window.open();
                    tracing::warn!(
                        "database connection lost during login; retrying on a fresh one"
                    );
                }
                _ => return Err(self.query_error("login transaction", &err)),
            }
        }
    }

    /// When the user was created (unix ms), if it exists.
    async fn created_at(&self, user_id: UserId) -> Result<Option<i64>, StoreError> {
        use schema::users::dsl as u;
        with_conn!(self, "reading a user's creation time", |conn| {
            u::users
                .filter(u::id.eq(user_id.0))
                .select(u::created_at)
                .first::<i64>(conn)
                .await
                .optional()
        })
    }

    /// Upserts only the sealed session key of `(app_id, openid)`, leaving `user_id`
    /// untouched (NULL for a new row), so a later login can fall back to it.
    pub async fn save_session_key(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        sealed: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let (app_id, openid) = (app_id.as_str(), openid.as_str());
        match &self.inner {
            Inner::Mysql(pool, _) => {
                let mut conn = self.checkout(pool).await?;
                mysql::save_session_key(&mut conn, app_id, openid, sealed, expires_at_ms, now).await
            }
            Inner::Sqlite(pool) => {
                let mut conn = self.checkout(pool).await?;
                sqlite::save_session_key(&mut conn, app_id, openid, sealed, expires_at_ms, now)
                    .await
            }
        }
        .map_err(|e| self.query_error("saving the session key", &e))
    }

    /// The sealed session key of `(app_id, openid)`, if stored and not expired at `now_ms`.
    pub async fn session_key(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        now_ms: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        use schema::wechat_identities::dsl as wi;
        let found: Option<Option<Vec<u8>>> = with_conn!(self, "reading the session key", |conn| {
            wi::wechat_identities
                .filter(wi::app_id.eq(app_id.as_str()))
                .filter(wi::openid.eq(openid.as_str()))
                .filter(wi::session_key_expires_at.gt(now_ms))
                .select(wi::session_key)
                .first(conn)
                .await
                .optional()
        })?;
        Ok(found.flatten())
    }
}
