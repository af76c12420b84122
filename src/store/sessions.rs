//! Sessions (one per device login) and the silent login that starts one
//! without a phone: creation inside the login transactions, rotation of the
//! refresh generation in one conditional UPDATE, revocation, the revocation
//! feed every replica's verification cache polls, and bounded cleanup.

use super::{Inner, Store, StoreError, backoff, error::Class, error::classify, schema};
use crate::domain::{AppId, OpenId, UnionId, UserId};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, sql_types::BigInt};
use diesel_async::{AsyncConnection, RunQueryDsl};

/// A session to create (its id is chosen by the caller: 128 random bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub id: String,
    pub created_at_ms: i64,
    pub idle_expires_at_ms: i64,
    pub expires_at_ms: i64,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    pub user_id: UserId,
    pub app_id: String,
    pub openid: String,
    pub generation: i64,
    pub created_at_ms: i64,
    pub last_used_at_ms: i64,
    pub idle_expires_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub revoke_reason: Option<String>,
}

type SessionTuple = (
    String,
    i64,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
);

impl From<SessionTuple> for SessionRow {
    fn from(t: SessionTuple) -> Self {
        Self {
            id: t.0,
            user_id: UserId(t.1),
            app_id: t.2,
            openid: t.3,
            generation: t.4,
            created_at_ms: t.5,
            last_used_at_ms: t.6,
            idle_expires_at_ms: t.7,
            expires_at_ms: t.8,
            revoked_at_ms: t.9,
            revoke_reason: t.10,
        }
    }
}

/// A revoked session, as the revocation feed reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSession {
    pub sid: String,
    pub user_id: UserId,
    pub revoked_at_ms: i64,
}

/// What a silent login (a `wx.login` code and no phone) needs to write.
#[derive(Debug, Clone, Copy)]
pub struct SilentLogin<'a> {
    pub app_id: &'a AppId,
    pub openid: &'a OpenId,
    pub unionid: Option<&'a UnionId>,
    /// The fresh session_key, sealed by the caller; kept whatever the outcome.
    pub sealed_session_key: &'a [u8],
    pub session_key_expires_at_ms: i64,
    pub session: &'a NewSession,
    pub now_ms: i64,
}

/// The result of [`Store::silent_login`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilentOutcome {
    /// The identity was bound: the session is created.
    Known(UserId),
    /// The identity was new but its unionid names a user of another app of this
    /// deployment: the identity is linked to that user and the session created.
    Linked(UserId),
    /// Nobody to log in: only the session_key was kept (for the phone step).
    Unknown,
}

/// The result of [`Store::rotate_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented generation was current: it is now `generation`.
    Rotated { generation: i64 },
    /// The presented generation is the one just rotated, its successor
    /// (`current`) was never used and the rotation is within the retry window:
    /// a retry, answered with that successor.
    Retry { current: i64 },
    /// An older generation: reuse. The session has been revoked.
    Reused,
    /// The session was revoked earlier, for `reason`.
    Revoked { reason: String },
    /// Idle or absolute lifetime is over.
    Expired,
    /// No such session.
    NotFound,
}

/// Why a session was revoked (`sessions.revoke_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    LogoutAll,
    ReuseDetected,
    Expired,
    AccountDeleted,
    Admin,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::ReuseDetected => "reuse_detected",
            Self::Expired => "expired",
            Self::AccountDeleted => "account_deleted",
            Self::Admin => "admin",
        }
    }
}

const SESSION_COLUMNS: (
    schema::sessions::id,
    schema::sessions::user_id,
    schema::sessions::app_id,
    schema::sessions::openid,
    schema::sessions::generation,
    schema::sessions::created_at,
    schema::sessions::last_used_at,
    schema::sessions::idle_expires_at,
    schema::sessions::expires_at,
    schema::sessions::revoked_at,
    schema::sessions::revoke_reason,
) = (
    schema::sessions::id,
    schema::sessions::user_id,
    schema::sessions::app_id,
    schema::sessions::openid,
    schema::sessions::generation,
    schema::sessions::created_at,
    schema::sessions::last_used_at,
    schema::sessions::idle_expires_at,
    schema::sessions::expires_at,
    schema::sessions::revoked_at,
    schema::sessions::revoke_reason,
);

/// The identity's binding, read with a row lock on MySQL/MariaDB (`FOR UPDATE`):
/// a concurrent phone login moving the openid, or an account deletion, is
/// serialised with this transaction instead of being overwritten or racing it.
/// SQLite transactions are serialised already.
const BOUND_USER_MYSQL: &str =
    "SELECT user_id FROM wechat_identities WHERE app_id = ? AND openid = ? FOR UPDATE";
const BOUND_USER_SQLITE: &str =
    "SELECT user_id FROM wechat_identities WHERE app_id = ? AND openid = ?";

#[derive(diesel::QueryableByName)]
struct BoundUser {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    user_id: Option<i64>,
}

/// The silent login transaction, the same for both backends: find the user
/// of the identity (or, for a new identity, of its unionid), count the login on
/// that user (which also locks it and proves it still exists: a user deleted
/// meanwhile makes the identity unknown), keep the fresh session_key (linking
/// the identity only when found by unionid; a bound identity keeps its
/// binding), and create the session.
macro_rules! silent_login_tx {
    ($conn:ident, $l:expr, $bound_user:expr) => {{
        use schema::sessions::dsl as s;
        use schema::users::dsl as u;
        use schema::wechat_identities::dsl as wi;
        let l: &SilentLogin<'_> = $l;
        let bound: Option<Option<i64>> = diesel::sql_query($bound_user)
            .bind::<diesel::sql_types::Text, _>(l.app_id.as_str())
            .bind::<diesel::sql_types::Text, _>(l.openid.as_str())
            .get_result::<BoundUser>($conn)
            .await
            .optional()?
            .map(|b| b.user_id);
        let exists = bound.is_some();
        let (mut user_id, mut outcome) = match bound.flatten() {
            Some(id) => (Some(id), SilentOutcome::Known(UserId(id))),
            None => {
                let linked: Option<Option<i64>> = match l.unionid {
                    Some(unionid) => wi::wechat_identities
                        .filter(wi::unionid.eq(unionid.as_str()))
                        .filter(wi::user_id.is_not_null())
                        .order(wi::updated_at.desc())
                        .select(wi::user_id)
                        .first($conn)
                        .await
                        .optional()?,
                    None => None,
                };
                match linked.flatten() {
                    Some(id) => (Some(id), SilentOutcome::Linked(UserId(id))),
                    None => (None, SilentOutcome::Unknown),
                }
            }
        };
        if let Some(id) = user_id {
            let counted = diesel::update(u::users.filter(u::id.eq(id)))
                .set((
                    u::login_count.eq(u::login_count + 1),
                    u::last_login_at.eq(l.now_ms),
                    u::updated_at.eq(l.now_ms),
                ))
                .execute($conn)
                .await?;
            if counted == 0 {
                // Deleted meanwhile (its identities went with it): nobody to log in.
                user_id = None;
                outcome = SilentOutcome::Unknown;
            }
        }
        // Keep the fresh session_key either way (the phone step may need it).
        if exists {
            diesel::update(
                wi::wechat_identities
                    .filter(wi::app_id.eq(l.app_id.as_str()))
                    .filter(wi::openid.eq(l.openid.as_str())),
            )
            .set((
                wi::session_key.eq(l.sealed_session_key),
                wi::session_key_expires_at.eq(l.session_key_expires_at_ms),
                wi::updated_at.eq(l.now_ms),
            ))
            .execute($conn)
            .await?;
            if let SilentOutcome::Linked(UserId(id)) = outcome {
                diesel::update(
                    wi::wechat_identities
                        .filter(wi::app_id.eq(l.app_id.as_str()))
                        .filter(wi::openid.eq(l.openid.as_str())),
                )
                .set(wi::user_id.eq(id))
                .execute($conn)
                .await?;
            }
            if let Some(unionid) = l.unionid {
                diesel::update(
                    wi::wechat_identities
                        .filter(wi::app_id.eq(l.app_id.as_str()))
                        .filter(wi::openid.eq(l.openid.as_str())),
                )
                .set(wi::unionid.eq(unionid.as_str()))
                .execute($conn)
                .await?;
            }
        } else {
            diesel::insert_into(wi::wechat_identities)
                .values((
                    wi::app_id.eq(l.app_id.as_str()),
                    wi::openid.eq(l.openid.as_str()),
                    wi::user_id.eq(user_id),
                    wi::unionid.eq(l.unionid.map(|u| u.as_str())),
                    wi::session_key.eq(l.sealed_session_key),
                    wi::session_key_expires_at.eq(l.session_key_expires_at_ms),
                    wi::created_at.eq(l.now_ms),
                    wi::updated_at.eq(l.now_ms),
                ))
                .execute($conn)
                .await?;
        }
        if let Some(id) = user_id {
            diesel::insert_into(s::sessions)
                .values((
                    s::id.eq(l.session.id.as_str()),
                    s::user_id.eq(id),
                    s::app_id.eq(l.app_id.as_str()),
                    s::openid.eq(l.openid.as_str()),
                    s::generation.eq(1i64),
                    s::created_at.eq(l.session.created_at_ms),
                    s::last_used_at.eq(l.session.created_at_ms),
                    s::idle_expires_at.eq(l.session.idle_expires_at_ms),
                    s::expires_at.eq(l.session.expires_at_ms),
                ))
                .execute($conn)
                .await?;
        }
        Ok::<_, diesel::result::Error>(outcome)
    }};
}

impl Store {
    /// A login without a phone: see [`SilentOutcome`]. One transaction,
    /// retried on deadlock like the login transaction.
    pub async fn silent_login(&self, login: &SilentLogin<'_>) -> Result<SilentOutcome, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match &self.inner {
                Inner::Mysql(pool, _) => {
                    let mut conn = self.checkout(pool).await?;
                    let conn: &mut super::mysql::Conn = &mut conn;
                    conn.transaction(async |conn| silent_login_tx!(conn, login, BOUND_USER_MYSQL))
                        .await
                }
                Inner::Sqlite(pool) => {
                    let mut conn = self.checkout(pool).await?;
                    let conn: &mut super::sqlite::Conn = &mut conn;
                    conn.transaction(async |conn| silent_login_tx!(conn, login, BOUND_USER_SQLITE))
                        .await
                }
            };
            match result {
                Ok(outcome) => return Ok(outcome),
                Err(err) if classify(&err) == Class::Retry && attempt < self.max_tx_attempts => {
                    metrics::counter!("mp_auth_db_tx_retries_total").increment(1);
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(err) => return Err(self.query_error("silent login", &err)),
            }
        }
    }

    /// The session `sid`, if it exists.
    pub async fn session(&self, sid: &str) -> Result<Option<SessionRow>, StoreError> {
        use schema::sessions::dsl as s;
        let row: Option<SessionTuple> = with_conn!(self, "reading a session", |conn| {
            s::sessions
                .filter(s::id.eq(sid))
                .select(SESSION_COLUMNS)
                .first(conn)
                .await
                .optional()
        })?;
        Ok(row.map(SessionRow::from))
    }

    /// Rotates the refresh generation of `sid` if `presented` is current and the
    /// session is live: one conditional UPDATE, so of concurrent refreshes of
    /// one token exactly one rotates. Anything else is classified with one read
    /// (and a reuse revokes the session). `last_used_at` is written only at
    /// creation and rotation, so it is when the newest generation was issued:
    /// the retry window (`retry_window_ms`) is measured from it.
    pub async fn rotate_session(
        &self,
        sid: &str,
        presented: i64,
        now_ms: i64,
        idle_expires_at_ms: i64,
        retry_window_ms: i64,
    ) -> Result<Rotation, StoreError> {
        use schema::sessions::dsl as s;
        // A deadlock or (Galera) certification conflict rolls the statement back and
        // `with_conn!` runs it again; if another replica's rotation won, it then
        // matches nothing and the read below sees a retry or a reuse.
        let rotated = with_conn!(self, "rotating a session", |conn| {
            diesel::update(
                s::sessions
                    .filter(s::id.eq(sid))
                    .filter(s::generation.eq(presented))
                    .filter(s::revoked_at.is_null())
                    .filter(s::expires_at.gt(now_ms))
                    .filter(s::idle_expires_at.gt(now_ms)),
            )
            .set((
                s::generation.eq(presented + 1),
                s::last_used_at.eq(now_ms),
                s::idle_expires_at.eq(idle_expires_at_ms),
            ))
            .execute(conn)
            .await
        })?;
        if rotated == 1 {
            return Ok(Rotation::Rotated {
                generation: presented + 1,
            });
        }
        let Some(row) = self.session(sid).await? else {
            return Ok(Rotation::NotFound);
        };
        if let Some(reason) = row
            .revoke_reason
            .clone()
            .filter(|_| row.revoked_at_ms.is_some())
        {
            return Ok(Rotation::Revoked { reason });
        }
        if row.expires_at_ms <= now_ms || row.idle_expires_at_ms <= now_ms {
            return Ok(Rotation::Expired);
        }
        if row.generation == presented + 1
            && retry_window_ms > 0
            && now_ms.saturating_sub(row.last_used_at_ms) <= retry_window_ms
        {
            return Ok(Rotation::Retry {
                current: row.generation,
            });
        }
        // Older than the last rotation, or the last one presented outside the
        // window: the chain has (or had) two holders.
        if row.generation > presented {
            self.revoke_session(sid, RevokeReason::ReuseDetected, now_ms)
                .await?;
            return Ok(Rotation::Reused);
        }
        // A generation from the future was never issued by us.
        Ok(Rotation::NotFound)
    }

    /// Revokes one session; true if it was live.
    pub async fn revoke_session(
        &self,
        sid: &str,
        reason: RevokeReason,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        use schema::sessions::dsl as s;
        let n = with_conn!(self, "revoking a session", |conn| {
            diesel::update(
                s::sessions
                    .filter(s::id.eq(sid))
                    .filter(s::revoked_at.is_null()),
            )
            .set((
                s::revoked_at.eq(now_ms),
                s::revoke_reason.eq(reason.as_str()),
            ))
            .execute(conn)
            .await
        })?;
        if n > 0 {
            metrics::counter!("mp_auth_sessions_revoked_total", "reason" => reason.as_str())
                .increment(n as u64);
        }
        Ok(n > 0)
    }

    /// Revokes every live session of `user_id`; returns how many.
    pub async fn revoke_user_sessions(
        &self,
        user_id: UserId,
        reason: RevokeReason,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        use schema::sessions::dsl as s;
        let n = with_conn!(self, "revoking a user's sessions", |conn| {
            diesel::update(
                s::sessions
                    .filter(s::user_id.eq(user_id.0))
                    .filter(s::revoked_at.is_null()),
            )
            .set((
                s::revoked_at.eq(now_ms),
                s::revoke_reason.eq(reason.as_str()),
            ))
            .execute(conn)
            .await
        })? as u64;
        if n > 0 {
            metrics::counter!("mp_auth_sessions_revoked_total", "reason" => reason.as_str())
                .increment(n);
        }
        Ok(n)
    }

    /// The live (not revoked, not expired) sessions of a user, newest first.
    pub async fn user_sessions(
        &self,
        user_id: UserId,
        now_ms: i64,
    ) -> Result<Vec<SessionRow>, StoreError> {
        use schema::sessions::dsl as s;
        let rows: Vec<SessionTuple> = with_conn!(self, "listing sessions", |conn| {
            s::sessions
                .filter(s::user_id.eq(user_id.0))
                .filter(s::revoked_at.is_null())
                .filter(s::expires_at.gt(now_ms))
                .filter(s::idle_expires_at.gt(now_ms))
                .order(s::created_at.desc())
                .select(SESSION_COLUMNS)
                .load(conn)
                .await
        })?;
        Ok(rows.into_iter().map(SessionRow::from).collect())
    }

    /// Sessions revoked at or after `since_ms`: the feed of the revocation
    /// caches (a range scan of the `revoked_at` index).
    pub async fn sessions_revoked_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<RevokedSession>, StoreError> {
        use schema::sessions::dsl as s;
        let rows: Vec<(String, i64, Option<i64>)> =
            with_conn!(self, "reading revocations", |conn| {
                s::sessions
                    .filter(s::revoked_at.ge(since_ms))
                    .select((s::id, s::user_id, s::revoked_at))
                    .load(conn)
                    .await
            })?;
        Ok(rows
            .into_iter()
            .map(|(sid, user_id, revoked_at)| RevokedSession {
                sid,
                user_id: UserId(user_id),
                revoked_at_ms: revoked_at.unwrap_or(since_ms),
            })
            .collect())
    }

    /// Deletes up to `batch` sessions that ended (expired or revoked) before
    /// `before_ms`; returns how many. Served by the expiry, idle-expiry and
    /// revocation indexes, never a full scan; run in the background, not on logins.
    pub async fn delete_ended_sessions(
        &self,
        before_ms: i64,
        batch: i64,
    ) -> Result<u64, StoreError> {
        use schema::sessions::dsl as s;
        // One round trip, each member of the union served by its own index range scan.
        let rows: Vec<SessionId> = with_conn!(self, "finding ended sessions", |conn| {
            diesel::sql_query(ENDED_SESSIONS)
                .bind::<BigInt, _>(before_ms)
                .bind::<BigInt, _>(batch)
                .bind::<BigInt, _>(before_ms)
                .bind::<BigInt, _>(batch)
                .bind::<BigInt, _>(before_ms)
                .bind::<BigInt, _>(batch)
                .load(conn)
                .await
        })?;
        let all: Vec<String> = rows.into_iter().map(|r| r.id).collect();
        if all.is_empty() {
            return Ok(0);
        }
        let n = with_conn!(self, "deleting ended sessions", |conn| {
            diesel::delete(s::sessions.filter(s::id.eq_any(&all)))
                .execute(conn)
                .await
        })?;
        Ok(n as u64)
    }
}

/// Sessions that ended before a time: expired (absolute lifetime), revoked, or idle
/// past their idle timeout, up to a batch of each (the `expires_at`, `revoked_at` and
/// `idle_expires_at` indexes). Portable to MySQL/MariaDB/TiDB and SQLite (a `LIMIT`
/// inside a union member needs the derived table in both).
const ENDED_SESSIONS: &str = "\
    SELECT id FROM (SELECT id FROM sessions WHERE expires_at < ? LIMIT ?) AS expired \
    UNION SELECT id FROM (SELECT id FROM sessions WHERE revoked_at < ? LIMIT ?) AS revoked \
    UNION SELECT id FROM (SELECT id FROM sessions WHERE idle_expires_at < ? LIMIT ?) AS idle";

#[derive(diesel::QueryableByName)]
struct SessionId {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}
