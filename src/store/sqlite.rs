//! SQLite (dev mode): a one-connection bb8 pool of `SyncConnectionWrapper`s, so all
//! work is serialized in-process; WAL and a busy timeout cover other processes (e.g.
//! `mp-auth migrate` while the server runs). The login runs as one `BEGIN IMMEDIATE`
//! transaction on the blocking pool.

use super::{LoginOutcome, LoginRecord};
use crate::domain::UserId;
use diesel::{
    ConnectionResult, QueryResult, QueryableByName, SqliteConnection,
    sql_types::{BigInt, Binary, Nullable, Text},
};
use diesel_async::{
    AsyncConnection, SimpleAsyncConnection,
    pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod},
    sync_connection_wrapper::SyncConnectionWrapper,
};
use futures::FutureExt;

pub(super) type Conn = SyncConnectionWrapper<SqliteConnection>;
pub(super) type Manager = AsyncDieselConnectionManager<Conn>;

const SETUP: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;";

/// `sqlite://path`, `sqlite:path` or `sqlite:///abs/path` to the file path diesel opens.
pub(super) fn path_of(url: &str) -> Option<&str> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    (!path.is_empty()).then_some(path)
}

/// Opens one connection and applies the pragmas every connection needs.
pub(super) async fn establish(path: &str) -> ConnectionResult<Conn> {
    let mut conn = Conn::establish(path).await?;
    conn.batch_execute(SETUP)
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

pub(super) fn manager(path: &str) -> AsyncDieselConnectionManager<Conn> {
    let mut config = ManagerConfig::<Conn>::default();
    config.custom_setup = Box::new(|path: &str| establish(path).boxed());
    // A local file does not go away like a server connection does.
    config.recycling_method = RecyclingMethod::Fast;
    AsyncDieselConnectionManager::new_with_config(path, config)
}

/// The pool size: one connection serializes writes without SQLITE_BUSY retries.
pub(super) const POOL_SIZE: u32 = 1;

/// Owned copy of a [`LoginRecord`] for the blocking task.
struct OwnedLogin {
    app_id: String,
    openid: String,
    unionid: Option<String>,
    phone: String,
    country_code: String,
    sealed_session_key: Vec<u8>,
    session_key_expires_at_ms: i64,
    session: Option<super::NewSession>,
    now_ms: i64,
}

#[derive(QueryableByName)]
struct Upserted {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    login_count: i64,
}

const UPSERT_USER: &str = "INSERT INTO users \
     (phone, country_code, login_count, created_at, updated_at, last_login_at) \
     VALUES (?, ?, 1, ?, ?, ?) \
     ON CONFLICT (phone) DO UPDATE SET login_count = users.login_count + 1, \
     updated_at = excluded.updated_at, last_login_at = excluded.last_login_at \
     RETURNING id, login_count";

const UPSERT_IDENTITY: &str = "INSERT INTO wechat_identities \
     (app_id, openid, user_id, unionid, session_key, session_key_expires_at, created_at, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (app_id, openid) DO UPDATE SET user_id = excluded.user_id, \
     unionid = COALESCE(excluded.unionid, wechat_identities.unionid), \
     session_key = excluded.session_key, \
     session_key_expires_at = excluded.session_key_expires_at, updated_at = excluded.updated_at";

const UPSERT_SESSION_KEY: &str = "INSERT INTO wechat_identities \
     (app_id, openid, user_id, session_key, session_key_expires_at, created_at, updated_at) \
     VALUES (?, ?, NULL, ?, ?, ?, ?) \
     ON CONFLICT (app_id, openid) DO UPDATE SET session_key = excluded.session_key, \
     session_key_expires_at = excluded.session_key_expires_at, updated_at = excluded.updated_at";

/// One attempt of the login transaction: `BEGIN IMMEDIATE`, upsert the user
/// `RETURNING id, login_count` (1 means it was created), upsert the identity, COMMIT.
pub(super) async fn record_login(
    conn: &mut Conn,
    login: &LoginRecord<'_>,
) -> QueryResult<LoginOutcome> {
    let login = OwnedLogin {
        app_id: login.app_id.as_str().to_owned(),
        openid: login.openid.as_str().to_owned(),
        unionid: login.unionid.map(|u| u.as_str().to_owned()),
        phone: login.phone.e164(),
        country_code: login.phone.country_code().to_owned(),
        sealed_session_key: login.sealed_session_key.to_vec(),
        session_key_expires_at_ms: login.session_key_expires_at_ms,
        session: login.session.cloned(),
        now_ms: login.now_ms,
    };
    conn.spawn_blocking(move |c| c.immediate_transaction(|c| blocking::record_login(c, &login)))
        .await
}

pub(super) async fn save_session_key(
    conn: &mut Conn,
    app_id: &str,
    openid: &str,
    sealed: &[u8],
    expires_at_ms: i64,
    now_ms: i64,
) -> QueryResult<()> {
    use diesel_async::RunQueryDsl;
    diesel::sql_query(UPSERT_SESSION_KEY)
        .bind::<Text, _>(app_id)
        .bind::<Text, _>(openid)
        .bind::<Binary, _>(sealed)
        .bind::<BigInt, _>(expires_at_ms)
        .bind::<BigInt, _>(now_ms)
        .bind::<BigInt, _>(now_ms)
        .execute(conn)
        .await?;
    Ok(())
}

/// Runs embedded migrations on the blocking pool; returns how many were applied.
pub(super) async fn run_migrations(conn: &mut Conn) -> QueryResult<usize> {
    conn.spawn_blocking(|c| {
        use diesel_migrations::MigrationHarness;
        c.run_pending_migrations(super::SQLITE_MIGRATIONS)
            .map(|applied| applied.len())
            .map_err(diesel::result::Error::QueryBuilderError)
    })
    .await
}

/// The synchronous half, on the blocking pool (sync `RunQueryDsl` lives here only).
mod blocking {
    use super::*;
    use diesel::RunQueryDsl;

    pub(super) fn record_login(
        c: &mut SqliteConnection,
        login: &OwnedLogin,
    ) -> QueryResult<LoginOutcome> {
        let user: Upserted = diesel::sql_query(UPSERT_USER)
            .bind::<Text, _>(&login.phone)
            .bind::<Text, _>(&login.country_code)
            .bind::<BigInt, _>(login.now_ms)
            .bind::<BigInt, _>(login.now_ms)
            .bind::<BigInt, _>(login.now_ms)
            .get_result(c)?;
        diesel::sql_query(UPSERT_IDENTITY)
            .bind::<Text, _>(&login.app_id)
            .bind::<Text, _>(&login.openid)
            .bind::<BigInt, _>(user.id)
            .bind::<Nullable<Text>, _>(login.unionid.as_deref())
            .bind::<Binary, _>(&login.sealed_session_key)
            .bind::<BigInt, _>(login.session_key_expires_at_ms)
            .bind::<BigInt, _>(login.now_ms)
            .bind::<BigInt, _>(login.now_ms)
            .execute(c)?;
        if let Some(session) = &login.session {
            diesel::sql_query(super::super::mysql::INSERT_SESSION)
                .bind::<Text, _>(&session.id)
                .bind::<BigInt, _>(user.id)
                .bind::<Text, _>(&login.app_id)
                .bind::<Text, _>(&login.openid)
                .bind::<BigInt, _>(session.created_at_ms)
                .bind::<BigInt, _>(session.created_at_ms)
                .bind::<BigInt, _>(session.idle_expires_at_ms)
                .bind::<BigInt, _>(session.expires_at_ms)
                .execute(c)?;
        }
        Ok(LoginOutcome {
            user_id: UserId(user.id),
            is_new_user: user.login_count == 1,
        })
    }
}
