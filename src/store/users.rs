//! Users as internal services see them: read by id with their WeChat
//! identities, found by identity, unionid or phone, and deleted (账号注销) in
//! one transaction that leaves only a tombstone.

use super::{Inner, Store, StoreError, backoff, error::Class, error::classify, schema};
use crate::domain::{AppId, OpenId, Phone, UnionId, UserId};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, QueryableByName};
use diesel_async::{AsyncConnection, RunQueryDsl};

/// Locks the user row until the transaction ends (SQLite: its transactions
/// are serialised already).
const LOCK_USER_MYSQL: &str = "SELECT id FROM users WHERE id = ? FOR UPDATE";
const LOCK_USER_SQLITE: &str = "SELECT id FROM users WHERE id = ?";

/// The body of the deletion transaction, the same for both backends:
/// `Ok(None)` when there is no live user with this id.
macro_rules! delete_user_tx {
    ($conn:ident, $id:expr, $reason:expr, $now:expr, $lock:expr) => {{
        use schema::deleted_users::dsl as du;
        use schema::users::dsl as u;
        use schema::wechat_identities::dsl as wi;
        let locked: Vec<IdRow> = diesel::sql_query($lock)
            .bind::<diesel::sql_types::BigInt, _>($id.0)
            .load($conn)
            .await?;
        if locked.is_empty() {
            return Ok(None);
        }
        let identities_erased = diesel::delete(wi::wechat_identities.filter(wi::user_id.eq($id.0)))
            .execute($conn)
            .await? as u64;
        let sessions_revoked = {
            use schema::sessions::dsl as s;
            diesel::update(
                s::sessions
                    .filter(s::user_id.eq($id.0))
                    .filter(s::revoked_at.is_null()),
            )
            .set((
                s::revoked_at.eq($now),
                s::revoke_reason.eq(super::RevokeReason::AccountDeleted.as_str()),
            ))
            .execute($conn)
            .await? as u64
        };
        diesel::delete(u::users.filter(u::id.eq($id.0)))
            .execute($conn)
            .await?;
        diesel::insert_into(du::deleted_users)
            .values((
                du::id.eq($id.0),
                du::deleted_at.eq($now),
                du::reason.eq($reason),
            ))
            .execute($conn)
            .await?;
        Ok::<_, diesel::result::Error>(Some(Deletion::Deleted {
            identities_erased,
            sessions_revoked,
        }))
    }};
}

/// A live user and its identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    /// Masks itself in `Debug`/`Display`; the full number only through `e164()`.
    pub phone: Phone,
    pub created_at_ms: i64,
    pub last_login_at_ms: i64,
    pub identities: Vec<IdentityRecord>,
}

/// One WeChat identity of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    pub app_id: String,
    pub openid: String,
    pub unionid: Option<String>,
}

/// How to find a user.
#[derive(Debug, Clone, Copy)]
pub enum UserKey<'a> {
    /// The user's identity in one mini program.
    Identity(&'a AppId, &'a OpenId),
    /// The user's unionid (shared by the apps of one Open Platform account).
    UnionId(&'a UnionId),
    /// The phone number, normalised as logins normalise it.
    Phone(&'a Phone),
}

/// What is left of a deleted user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub id: UserId,
    pub deleted_at_ms: i64,
    pub reason: String,
}

/// The result of [`Store::delete_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// The user was deleted by this call.
    Deleted {
        /// Identities erased (openids, unionids, sealed session keys).
        identities_erased: u64,
        /// Sessions revoked (reason `account_deleted`).
        sessions_revoked: u64,
    },
    /// The user had already been deleted.
    AlreadyDeleted(Tombstone),
    /// No user ever had this id.
    NotFound,
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    #[allow(dead_code)]
    id: i64,
}

type UserRow = (i64, String, String, i64, i64);
type IdentityTuple = (String, String, Option<String>);

fn phone_of(e164: &str, country_code: &str) -> Result<Phone, StoreError> {
    let number = e164
        .strip_prefix('+')
        .and_then(|rest| rest.strip_prefix(country_code))
        .unwrap_or(e164);
    Phone::from_parts(country_code, number)
        .map_err(|e| StoreError::Unexpected(format!("a stored phone does not parse: {e}")))
}

impl Store {
    /// The live user with this id and its identities, if any.
    pub async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        use schema::users::dsl as u;
        use schema::wechat_identities::dsl as wi;
        let found: Option<(UserRow, Vec<IdentityTuple>)> =
            with_conn!(self, "reading a user", |conn| async {
                let row: Option<UserRow> = u::users
                    .filter(u::id.eq(id.0))
                    .select((
                        u::id,
                        u::phone,
                        u::country_code,
                        u::created_at,
                        u::last_login_at,
                    ))
                    .first(conn)
                    .await
                    .optional()?;
                match row {
                    None => Ok::<_, diesel::result::Error>(None),
                    Some(row) => {
                        let identities = wi::wechat_identities
                            .filter(wi::user_id.eq(id.0))
                            .order((wi::app_id.asc(), wi::openid.asc()))
                            .select((wi::app_id, wi::openid, wi::unionid))
                            .load(conn)
                            .await?;
                        Ok::<_, diesel::result::Error>(Some((row, identities)))
                    }
                }
            }
            .await)?;
        let Some(((id, e164, country_code, created_at, last_login_at), identities)) = found else {
            return Ok(None);
        };
        Ok(Some(UserRecord {
            id: UserId(id),
            phone: phone_of(&e164, &country_code)?,
            created_at_ms: created_at,
            last_login_at_ms: last_login_at,
            identities: identities
                .into_iter()
                .map(|(app_id, openid, unionid)| IdentityRecord {
                    app_id,
                    openid,
                    unionid,
                })
                .collect(),
        }))
    }

    /// The id of the live user `key` names, if any. A unionid shared by several
    /// users (possible only if their phones differ) names the earliest one.
    pub async fn find_user(&self, key: UserKey<'_>) -> Result<Option<UserId>, StoreError> {
        use schema::users::dsl as u;
        use schema::wechat_identities::dsl as wi;
        let id: Option<i64> = match key {
            UserKey::Identity(app_id, openid) => {
                let id: Option<Option<i64>> = with_conn!(self, "finding a user", |conn| {
                    wi::wechat_identities
                        .filter(wi::app_id.eq(app_id.as_str()))
                        .filter(wi::openid.eq(openid.as_str()))
                        .select(wi::user_id)
                        .first(conn)
                        .await
                        .optional()
                })?;
                id.flatten()
            }
            UserKey::UnionId(unionid) => with_conn!(self, "finding a user", |conn| {
                wi::wechat_identities
                    .filter(wi::unionid.eq(unionid.as_str()))
                    .filter(wi::user_id.is_not_null())
                    .select(wi::user_id)
                    .order(wi::user_id.asc())
                    .first::<Option<i64>>(conn)
                    .await
                    .optional()
            })?
            .flatten(),
            UserKey::Phone(phone) => {
                let e164 = phone.e164();
                with_conn!(self, "finding a user", |conn| {
                    u::users
                        .filter(u::phone.eq(e164.as_str()))
                        .select(u::id)
                        .first::<i64>(conn)
                        .await
                        .optional()
                })?
            }
        };
        Ok(id.map(UserId))
    }

    /// The tombstone of a deleted user, if this id was deleted.
    pub async fn tombstone(&self, id: UserId) -> Result<Option<Tombstone>, StoreError> {
        use schema::deleted_users::dsl as du;
        let row: Option<(i64, i64, String)> = with_conn!(self, "reading a tombstone", |conn| {
            du::deleted_users
                .filter(du::id.eq(id.0))
                .select((du::id, du::deleted_at, du::reason))
                .first(conn)
                .await
                .optional()
        })?;
        Ok(row.map(|(id, deleted_at_ms, reason)| Tombstone {
            id: UserId(id),
            deleted_at_ms,
            reason,
        }))
    }

    /// Deletes a user in one transaction: locks the user row (a concurrent
    /// login of the same phone waits, then creates a new user), erases its
    /// identities (openids, unionids, sealed session keys), revokes its
    /// sessions, deletes the row (phone included) and writes the tombstone.
    /// Retried on deadlock like the login transaction.
    pub async fn delete_user(
        &self,
        id: UserId,
        reason: &str,
        now_ms: i64,
    ) -> Result<Deletion, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match &self.inner {
                Inner::Mysql(pool, _) => {
                    let mut conn = self.checkout(pool).await?;
                    let conn: &mut super::mysql::Conn = &mut conn;
                    conn.transaction(async |conn| {
                        delete_user_tx!(conn, id, reason, now_ms, LOCK_USER_MYSQL)
                    })
                    .await
                }
                Inner::Sqlite(pool) => {
                    let mut conn = self.checkout(pool).await?;
                    let conn: &mut super::sqlite::Conn = &mut conn;
                    conn.transaction(async |conn| {
                        delete_user_tx!(conn, id, reason, now_ms, LOCK_USER_SQLITE)
                    })
                    .await
                }
            };
            match result {
                Ok(Some(deleted)) => return Ok(deleted),
                Ok(None) => break,
                Err(err) if classify(&err) == Class::Retry && attempt < self.max_tx_attempts => {
                    metrics::counter!("mp_auth_db_tx_retries_total").increment(1);
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(err) => return Err(self.query_error("deleting a user", &err)),
            }
        }
        Ok(match self.tombstone(id).await? {
            Some(t) => Deletion::AlreadyDeleted(t),
            None => Deletion::NotFound,
        })
    }
}
