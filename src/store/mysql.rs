//! MySQL/MariaDB: the bb8 pool of `AsyncMysqlConnection`s and the backend-specific
//! upserts. Statements are `sql_query` with binds over constant SQL, wrapped in
//! [`Cached`] so diesel-async keeps them prepared per connection (keyed by their text).

use super::{
    LoginOutcome, LoginRecord,
    error::{Class, classify},
    now_ms,
};
use crate::{config::LoginStatements, domain::UserId};
use diesel::{
    ConnectionError, ConnectionResult, QueryResult, QueryableByName,
    mysql::Mysql,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    sql_types::{BigInt, Binary, Nullable, Text},
};
use diesel_async::{
    AsyncConnection, AsyncMysqlConnection, RunQueryDsl,
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
pub(super) type Manager = AsyncDieselConnectionManager<Conn>;

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
    pub(super) fn is_open(&self) -> bool {
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
struct Cached<Q>(Q);

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

#[derive(QueryableByName)]
struct InsertId {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// `id = LAST_INSERT_ID(id)` makes `LAST_INSERT_ID()` return the existing row's id when
/// the phone is taken. `login_count + 1` makes the update always change the row, so
/// affected rows are 1 for an insert and 2 for an update (diesel-async connects with
/// CLIENT_FOUND_ROWS, under which an unchanged row would also count 1). An upsert that
/// updates still consumes an AUTO_INCREMENT value: ids have gaps, which is harmless.
/// (`VALUES(col)` is deprecated in MySQL 8.0.20+ but works there and in MariaDB.)
const UPSERT_USER: &str = "INSERT INTO users \
     (phone, country_code, login_count, created_at, updated_at, last_login_at) \
     VALUES (?, ?, 1, ?, ?, ?) \
     ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id), login_count = login_count + 1, \
     updated_at = VALUES(updated_at), last_login_at = VALUES(last_login_at)";

const LAST_ID: &str = "SELECT CAST(LAST_INSERT_ID() AS SIGNED) AS id";

/// MariaDB (>= 10.5) returns the row from the upsert itself: the existing row's id on a
/// duplicate phone, and `login_count` after the update (1 = this login created the user).
/// One round trip fewer than `UPSERT_USER` + `LAST_ID`.
const UPSERT_USER_RETURNING: &str = "INSERT INTO users \
     (phone, country_code, login_count, created_at, updated_at, last_login_at) \
     VALUES (?, ?, 1, ?, ?, ?) \
     ON DUPLICATE KEY UPDATE login_count = login_count + 1, \
     updated_at = VALUES(updated_at), last_login_at = VALUES(last_login_at) \
     RETURNING id, login_count";

#[derive(QueryableByName)]
struct Upserted {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    login_count: i64,
}

/// Whether the server supports `INSERT ... RETURNING` (MariaDB 10.5 and later; MySQL
/// and TiDB do not). Asked once, on the first connection.
pub(super) async fn supports_returning(conn: &mut Conn) -> bool {
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = Text)]
        v: String,
    }
    let Ok(Version { v }) = diesel::sql_query("SELECT VERSION() AS v")
        .get_result::<Version>(conn)
        .await
    else {
        return false;
    };
    if !v.contains("MariaDB") {
        return false;
    }
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    matches!((parts.next(), parts.next()), (Some(major), Some(minor)) if (major, minor) >= (10, 5))
}

/// Links (or moves) the identity to the user; a login without unionid keeps the stored one.
const UPSERT_IDENTITY: &str = "INSERT INTO wechat_identities \
     (app_id, openid, user_id, unionid, session_key, session_key_expires_at, created_at, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
     ON DUPLICATE KEY UPDATE user_id = VALUES(user_id), \
     unionid = COALESCE(VALUES(unionid), unionid), session_key = VALUES(session_key), \
     session_key_expires_at = VALUES(session_key_expires_at), updated_at = VALUES(updated_at)";

/// The session a login starts (generation 1 of its refresh token).
pub(super) const INSERT_SESSION: &str = "INSERT INTO sessions \
     (id, user_id, app_id, openid, generation, created_at, last_used_at, idle_expires_at, expires_at) \
     VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)";

const UPSERT_SESSION_KEY: &str = "INSERT INTO wechat_identities \
     (app_id, openid, user_id, session_key, session_key_expires_at, created_at, updated_at) \
     VALUES (?, ?, NULL, ?, ?, ?, ?) \
     ON DUPLICATE KEY UPDATE session_key = VALUES(session_key), \
     session_key_expires_at = VALUES(session_key_expires_at), updated_at = VALUES(updated_at)";

/// How the login transaction talks to the server; chosen once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginSql {
    /// One multi-statement request that also reads back the user's id: **1 round
    /// trip** on every MySQL-family server that is not a Galera node (MariaDB, MySQL,
    /// TiDB). See `store::batch`.
    Batch,
    /// Statement by statement with MariaDB's `INSERT ... RETURNING` (>= 10.5):
    /// 5 round trips. Galera nodes running MariaDB.
    Returning,
    /// Statement by statement, reading `LAST_INSERT_ID()`: 6 round trips. Galera nodes
    /// without `RETURNING`.
    Portable,
}

impl LoginSql {
    /// Whether the login goes statement by statement (then `RETURNING` matters).
    pub(super) fn separate(setting: LoginStatements, galera_node: bool) -> bool {
        match setting {
            LoginStatements::Auto => galera_node,
            LoginStatements::Batch => false,
            LoginStatements::Separate => true,
        }
    }

    /// The form for this server: with `auto`, the fastest one that is safe there. A
    /// Galera node reports a brute-force abort (a conflicting write replicated from
    /// another node) on the next command, but not inside a multi-statement request,
    /// whose remaining statements then run in autocommit mode and commit: so no batch
    /// there (pinned by a test in `tests/it/cluster.rs`).
    pub(super) fn choose(setting: LoginStatements, galera_node: bool, returning: bool) -> Self {
        match (Self::separate(setting, galera_node), returning) {
            (false, _) => Self::Batch,
            (true, true) => Self::Returning,
            (true, false) => Self::Portable,
        }
    }
}

/// One attempt of the login transaction statement by statement (Galera nodes). No
/// SELECT-then-INSERT: concurrent logins of one new phone queue on the unique key's
/// row lock and all see one id.
///
/// Round trips, the same for a new and a returning user: with `RETURNING` (MariaDB
/// 10.5 and later), BEGIN, upsert user `RETURNING id`, upsert identity, insert session,
/// COMMIT = 5; without, BEGIN, upsert user, read LAST_INSERT_ID(), upsert identity,
/// insert session, COMMIT = 6 (diesel-async does not expose the insert id of the OK
/// packet, hence the SELECT).
pub(super) async fn record_login_by_statement(
    conn: &mut Conn,
    login: &LoginRecord<'_>,
    returning: bool,
) -> QueryResult<LoginOutcome> {
    let phone = login.phone.e164();
    let phone = phone.as_str();
    conn.transaction(async |conn| {
        let (id, is_new_user) = if returning {
            let Upserted { id, login_count } = Cached(
                diesel::sql_query(UPSERT_USER_RETURNING)
                    .bind::<Text, _>(phone)
                    .bind::<Text, _>(login.phone.country_code())
                    .bind::<BigInt, _>(login.now_ms)
                    .bind::<BigInt, _>(login.now_ms)
                    .bind::<BigInt, _>(login.now_ms),
            )
            .get_result(conn)
            .await?;
            (id, login_count == 1)
        } else {
            upsert_user_then_read_id(conn, login, phone).await?
        };
        Cached(
            diesel::sql_query(UPSERT_IDENTITY)
                .bind::<Text, _>(login.app_id.as_str())
                .bind::<Text, _>(login.openid.as_str())
                .bind::<BigInt, _>(id)
                .bind::<Nullable<Text>, _>(login.unionid.map(|u| u.as_str()))
                .bind::<Binary, _>(login.sealed_session_key)
                .bind::<BigInt, _>(login.session_key_expires_at_ms)
                .bind::<BigInt, _>(login.now_ms)
                .bind::<BigInt, _>(login.now_ms),
        )
        .execute(conn)
        .await?;
        if let Some(session) = login.session {
            Cached(
                diesel::sql_query(INSERT_SESSION)
                    .bind::<Text, _>(session.id.as_str())
                    .bind::<BigInt, _>(id)
                    .bind::<Text, _>(login.app_id.as_str())
                    .bind::<Text, _>(login.openid.as_str())
                    .bind::<BigInt, _>(session.created_at_ms)
                    .bind::<BigInt, _>(session.created_at_ms)
                    .bind::<BigInt, _>(session.idle_expires_at_ms)
                    .bind::<BigInt, _>(session.expires_at_ms),
            )
            .execute(conn)
            .await?;
        }
        Ok(LoginOutcome {
            user_id: UserId(id),
            is_new_user,
        })
    })
    .await
}

/// The portable user upsert (MySQL, TiDB): upsert, then read `LAST_INSERT_ID()`.
async fn upsert_user_then_read_id(
    conn: &mut Conn,
    login: &LoginRecord<'_>,
    phone: &str,
) -> QueryResult<(i64, bool)> {
    let affected = Cached(
        diesel::sql_query(UPSERT_USER)
            .bind::<Text, _>(phone)
            .bind::<Text, _>(login.phone.country_code())
            .bind::<BigInt, _>(login.now_ms)
            .bind::<BigInt, _>(login.now_ms)
            .bind::<BigInt, _>(login.now_ms),
    )
    .execute(conn)
    .await?;
    let InsertId { id } = Cached(diesel::sql_query(LAST_ID)).get_result(conn).await?;
    Ok((id, affected == 1))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_galera_node_never_gets_the_batch_unless_an_operator_insists() {
        use LoginStatements::{Auto, Batch, Separate};
        assert_eq!(LoginSql::choose(Auto, false, true), LoginSql::Batch);
        assert_eq!(LoginSql::choose(Auto, false, false), LoginSql::Batch);
        assert_eq!(LoginSql::choose(Auto, true, true), LoginSql::Returning);
        assert_eq!(LoginSql::choose(Auto, true, false), LoginSql::Portable);
        // A Galera cluster behind a proxy that hides `wsrep_on`: statement by statement.
        assert_eq!(LoginSql::choose(Separate, false, true), LoginSql::Returning);
        assert_eq!(LoginSql::choose(Separate, false, false), LoginSql::Portable);
        assert_eq!(LoginSql::choose(Batch, true, true), LoginSql::Batch);
    }
}
