//! MySQL/MariaDB: the bb8 pool of `AsyncMysqlConnection`s and the backend-specific
//! upserts. Statements are `sql_query` with binds over constant SQL, wrapped in
//! [`Cached`] so diesel-async keeps them prepared per connection (keyed by their text).

use super::{
    LoginOutcome, LoginRecord,
    error::{Class, classify},
    now_ms,
};
use crate::domain::UserId;
use diesel::{
    ConnectionError, ConnectionResult, QueryResult, QueryableByName,
    mysql::Mysql,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    sql_types::{BigInt, Binary, Text},
};
use diesel_async::{
    AsyncConnection, AsyncMysqlConnection, RunQueryDsl, SimpleAsyncConnection,
    pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod},
};
use futures::{FutureExt, future::BoxFuture};
use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

pub(super) type Conn = AsyncMysqlConnection;
pub(super) type Pool = bb8::Pool<AsyncDieselConnectionManager<Conn>>;

/// Opens one connection, bounded by `timeout` (mysql_async has no connect timeout of its own).
pub(super) async fn establish(url: &str, timeout: Duration) -> ConnectionResult<Conn> {
    match tokio::time::timeout(timeout, Conn::establish(url)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectionError::BadConnection(format!(
            "no answer from the database server within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// Until when (unix ms) checkouts verify their connection with `DO 1`.
///
/// Pooled connections are not verified on checkout (that would add a round trip to
/// every login). Instead, when a statement fails because its connection is gone (server
/// restart, killed connection), the store opens a short window in which every checkout
/// is verified, so the pool sheds its dead connections instead of handing them out one
/// failed request at a time.
#[derive(Clone, Default)]
pub(super) struct VerifyWindow(Arc<AtomicI64>);

impl VerifyWindow {
    const LENGTH_MS: i64 = 10_000;

    pub(super) fn open(&self) {
        AtomicI64::store(&self.0, now_ms() + Self::LENGTH_MS, Ordering::Relaxed);
    }
    fn is_open(&self) -> bool {
        AtomicI64::load(&self.0, Ordering::Relaxed) > now_ms()
    }
}

fn verify(conn: &mut Conn, needed: bool) -> BoxFuture<'_, QueryResult<()>> {
    async move {
        if needed {
            // `DO`, not `SELECT`: on Galera, with `wsrep_sync_wait`, a SELECT waits
            // for the cluster to apply what it ordered before it, and while the cluster
            // stalls (a node just died: commits wait `evs.suspect_timeout`) that wait
            // would hold every checkout until the acquire timeout. The connection's
            // liveness does not need it.
            match diesel::sql_query("DO 1").execute(conn).await {
                // The server answered with a refusal, so the connection is alive: a
                // Galera node outside the Primary component refuses even this (1047,
                // or 1205 under `wsrep_sync_wait`). Dropping the connection would only
                // make the pool reconnect to the same node until the acquire timeout;
                // kept, the request fails at once with the node's own refusal.
                Err(e) if classify(&e) == Class::NotServing => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }
    .boxed()
}

/// The connection manager: connects with a timeout, verifies only inside a [`VerifyWindow`].
/// On a Galera node (`galera`), every new connection gets the Galera session settings.
pub(super) fn manager(
    url: &str,
    connect_timeout: Duration,
    window: VerifyWindow,
    galera: bool,
) -> AsyncDieselConnectionManager<Conn> {
    let mut config = ManagerConfig::<Conn>::default();
    config.custom_setup = Box::new(move |url: &str| {
        let url = url.to_owned();
        async move {
            let mut conn = establish(&url, connect_timeout).await?;
            if galera {
                super::galera::set_up_session(&mut conn)
                    .await
                    .map_err(ConnectionError::CouldntSetupConfiguration)?;
            }
            Ok(conn)
        }
        .boxed()
    });
    config.recycling_method = RecyclingMethod::CustomFunction(Box::new(move |conn: &mut Conn| {
        verify(conn, window.is_open())
    }));
    AsyncDieselConnectionManager::new_with_config(url, config)
}

/// A `sql_query` over one of this module's constant SQL strings, marked safe to keep
/// prepared. diesel treats every raw `sql_query` as uncacheable, so diesel-async would
/// prepare, execute and close it on each call: two round trips and a close packet per
/// statement, and a parse in the server each time. Constant SQL is safe to cache (the
/// cache key is the SQL text and bind types), which makes each statement one round trip.
pub(super) struct Cached<Q>(pub(super) Q);

impl<Q: QueryFragment<Mysql>> QueryFragment<Mysql> for Cached<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Mysql) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> QueryId for Cached<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Cached<Q> {
    type SqlType = Q::SqlType;
}

/// The session a login starts (generation 1 of its refresh token).
pub(super) const INSERT_SESSION: &str = "INSERT INTO sessions \
     (id, user_id, app_id, openid, generation, created_at, last_used_at, idle_expires_at, expires_at) \
     VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)";

const UPSERT_SESSION_KEY: &str = "INSERT INTO wechat_identities \
     (app_id, openid, user_id, session_key, session_key_expires_at, created_at, updated_at) \
     VALUES (?, ?, NULL, ?, ?, ?, ?) \
     ON DUPLICATE KEY UPDATE session_key = VALUES(session_key), \
     session_key_expires_at = VALUES(session_key_expires_at), updated_at = VALUES(updated_at)";

/// One attempt of the login transaction, in **two round trips** on every
/// MySQL-family server (MariaDB, MySQL, TiDB):
///
/// 1. one multi-statement request: `BEGIN`; the user upsert (by phone; `id =
///    LAST_INSERT_ID(id)` makes a returning user's id the "last insert id");
///    `SET @mp_uid = LAST_INSERT_ID(), @mp_rc = ROW_COUNT()` (1: inserted, 2:
///    updated, since `login_count + 1` always changes the row); the identity
///    upsert and the session insert, both using `@mp_uid`; `COMMIT`;
/// 2. `SELECT @mp_uid, @mp_rc` (connection variables: no table is read).
///
/// Values are inlined as literals so the batch is one packet: every string as a
/// hex literal (`X'..'`, nothing to escape, no injection possible), numbers as
/// decimals. If any statement fails (deadlock, certification failure at
/// COMMIT, lost connection) the server stops the batch; the open transaction is
/// rolled back (one more round trip, failure path only) and the caller retries
/// as before. No SELECT-then-INSERT: concurrent logins of one new phone queue on
/// the unique key's row lock and all see one id.
pub(super) async fn record_login(
    conn: &mut Conn,
    login: &LoginRecord<'_>,
) -> QueryResult<LoginOutcome> {
    let batch = login_batch(login);
    if let Err(err) = conn.batch_execute(&batch).await {
        // The batch stopped at the failing statement, inside the transaction.
        let _ = conn.batch_execute("ROLLBACK").await;
        return Err(err);
    }
    let LoginVars { id, rc } = Cached(diesel::sql_query(READ_LOGIN_VARS))
        .get_result(conn)
        .await?;
    Ok(LoginOutcome {
        user_id: UserId(id),
        is_new_user: rc == 1,
    })
}

const READ_LOGIN_VARS: &str = "SELECT CAST(@mp_uid AS SIGNED) AS id, CAST(@mp_rc AS SIGNED) AS rc";

#[derive(QueryableByName)]
struct LoginVars {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    rc: i64,
}

/// A string as a MySQL hex literal (`X'..'`), or `NULL`.
fn hex(value: Option<&[u8]>) -> String {
    use std::fmt::Write as _;
    match value {
        None => "NULL".to_owned(),
        Some([]) => "''".to_owned(),
        Some(bytes) => {
            let mut out = String::with_capacity(bytes.len() * 2 + 3);
            out.push_str("X'");
            for b in bytes {
                let _ = write!(out, "{b:02x}");
            }
            out.push('\'');
            out
        }
    }
}

/// The multi-statement login transaction (see [`record_login`]).
pub(super) fn login_batch(login: &LoginRecord<'_>) -> String {
    let phone = login.phone.e164();
    let now = login.now_ms;
    let mut sql = format!(
        "BEGIN; \
         INSERT INTO users (phone, country_code, login_count, created_at, updated_at, last_login_at) \
         VALUES ({phone}, {cc}, 1, {now}, {now}, {now}) \
         ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id), login_count = login_count + 1, \
         updated_at = VALUES(updated_at), last_login_at = VALUES(last_login_at); \
         SET @mp_uid = LAST_INSERT_ID(), @mp_rc = ROW_COUNT(); \
         INSERT INTO wechat_identities \
         (app_id, openid, user_id, unionid, session_key, session_key_expires_at, created_at, updated_at) \
         VALUES ({app}, {openid}, @mp_uid, {unionid}, {key}, {key_exp}, {now}, {now}) \
         ON DUPLICATE KEY UPDATE user_id = VALUES(user_id), \
         unionid = COALESCE(VALUES(unionid), unionid), session_key = VALUES(session_key), \
         session_key_expires_at = VALUES(session_key_expires_at), updated_at = VALUES(updated_at);",
        phone = hex(Some(phone.as_bytes())),
        cc = hex(Some(login.phone.country_code().as_bytes())),
        app = hex(Some(login.app_id.as_str().as_bytes())),
        openid = hex(Some(login.openid.as_str().as_bytes())),
        unionid = hex(login.unionid.map(|u| u.as_str().as_bytes())),
        key = hex(Some(login.sealed_session_key)),
        key_exp = login.session_key_expires_at_ms,
    );
    if let Some(session) = login.session {
        sql.push_str(&format!(
            " INSERT INTO sessions \
             (id, user_id, app_id, openid, generation, created_at, last_used_at, idle_expires_at, expires_at) \
             VALUES ({id}, @mp_uid, {app}, {openid}, 1, {created}, {created}, {idle}, {expires});",
            id = hex(Some(session.id.as_bytes())),
            app = hex(Some(login.app_id.as_str().as_bytes())),
            openid = hex(Some(login.openid.as_str().as_bytes())),
            created = session.created_at_ms,
            idle = session.idle_expires_at_ms,
            expires = session.expires_at_ms,
        ));
    }
    sql.push_str(" COMMIT");
    sql
}

pub(super) async fn save_session_key(
    conn: &mut Conn,
    app_id: &str,
    openid: &str,
    sealed: &[u8],
    expires_at_ms: i64,
    now_ms: i64,
) -> QueryResult<()> {
    Cached(
        diesel::sql_query(UPSERT_SESSION_KEY)
            .bind::<Text, _>(app_id)
            .bind::<Text, _>(openid)
            .bind::<Binary, _>(sealed)
            .bind::<BigInt, _>(expires_at_ms)
            .bind::<BigInt, _>(now_ms)
            .bind::<BigInt, _>(now_ms),
    )
    .execute(conn)
    .await?;
    Ok(())
}
