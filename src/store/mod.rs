//! The store: users (keyed by phone) and their WeChat identities, in MySQL/MariaDB
//! (production) or SQLite (dev mode), through diesel-async and a bb8 pool. The login's
//! find-or-create is one race-free upsert transaction, retried on deadlock; session
//! keys are stored sealed (the caller encrypts them, the store never sees plaintext).

mod error;
mod galera;
mod health;
mod mysql;
pub mod schema;
mod sqlite;

pub use error::StoreError;
pub use galera::NodeState;
pub use health::Health;
pub use mysql::LoginSql;

use crate::{
    config::DatabaseSettings,
    domain::{AppId, OpenId, Phone, UnionId, UserId},
};
use diesel::{
    ExpressionMethods, OptionalExtension, QueryDsl, QueryableByName, Selectable, SelectableHelper,
    migration::MigrationSource, result::Error as DieselError,
};
use diesel_async::{AsyncMigrationHarness, RunQueryDsl, pooled_connection::PoolError};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use error::{Class, classify, url_password};
use secrecy::{ExposeSecret, SecretString};
use std::{
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The MySQL/MariaDB migrations, embedded in the binary.
pub const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");
/// The SQLite migrations, embedded in the binary.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// MySQL or MariaDB (`mysql://`).
    Mysql,
    /// A SQLite file (`sqlite://`), for dev mode.
    Sqlite,
}

/// A snapshot of the pool, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Connections open (idle or in use).
    pub connections: u32,
    /// Connections open and idle.
    pub idle: u32,
}

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

/// A `wechat_identities` row, for tests and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, diesel::Queryable, Selectable)]
#[diesel(table_name = schema::wechat_identities)]
pub struct IdentityRow {
    pub app_id: String,
    pub openid: String,
    pub user_id: Option<i64>,
    pub unionid: Option<String>,
    pub session_key: Option<Vec<u8>>,
    pub session_key_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The database behind the service: a pool plus the login transaction. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Inner,
    /// One permit per pooled connection, handed out first come, first served. bb8 is not
    /// fair: a waiter woken for a returned connection races every new caller for it, so
    /// under load (callers > connections) some requests lose over and over and wait
    /// seconds while the median stays at milliseconds. The gate queues callers in order.
    gate: Arc<tokio::sync::Semaphore>,
    max_tx_attempts: u32,
    acquire_timeout: Duration,
    last_connect_error: LastConnectError,
    verify_window: mysql::VerifyWindow,
    /// The login transaction's form on this server (unused on SQLite).
    login_sql: LoginSql,
    /// Health checks' own connection, outside the pool and the gate.
    probe: Arc<health::Probe>,
}

#[derive(Clone)]
enum Inner {
    Mysql(mysql::Pool),
    Sqlite(sqlite::Pool),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .field("pool", &self.pool_state())
            .finish_non_exhaustive()
    }
}

/// Runs `$body` (an expression awaiting a `QueryResult` using `$conn`) on a pooled connection of
/// either backend and maps its error; the same DSL code compiles once per backend.
///
/// `$body` must be safe to run again: one statement (autocommit) or only reads. It is
/// run again, up to `max_tx_attempts` times, when it fails with a retryable conflict:
/// on Galera a single autocommit statement can lose certification to a write on
/// another node (the node retries it `wsrep_retry_autocommit` times, once by default,
/// then reports a deadlock), and then nothing of it was applied.
macro_rules! with_conn {
    ($store:expr, $context:expr, |$conn:ident| $body:expr) => {{
        let store = $store;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match &store.inner {
                $crate::store::Inner::Mysql(pool) => {
                    let mut guard = store.checkout(pool).await?;
                    let $conn: &mut $crate::store::mysql::Conn = &mut guard;
                    $body
                }
                $crate::store::Inner::Sqlite(pool) => {
                    let mut guard = store.checkout(pool).await?;
                    let $conn: &mut $crate::store::sqlite::Conn = &mut guard;
                    $body
                }
            };
            match result {
                Err(e)
                    if $crate::store::error::classify(&e) == $crate::store::error::Class::Retry
                        && attempt < store.max_tx_attempts =>
                {
                    metrics::counter!("mp_auth_db_tx_retries_total").increment(1);
                    tokio::time::sleep($crate::store::backoff(attempt)).await;
                }
                result => break result.map_err(|e| store.query_error($context, &e)),
            }
        }
    }};
}

mod sessions;
mod users;
pub use sessions::{
    NewSession, RevokeReason, RevokedSession, Rotation, SessionRow, SilentLogin, SilentOutcome,
};
pub use users::{Deletion, IdentityRecord, Tombstone, UserKey, UserRecord};

impl Store {
    /// Connects to `mysql://user:password@host:3306/db` or `sqlite://path.db`.
    ///
    /// One connection is established directly first so that a wrong password or a
    /// closed port is reported as such ("Access denied", "Connection refused"), not
    /// as a pool timeout; it then joins the pool.
    pub async fn connect(
        url: &SecretString,
        settings: &DatabaseSettings,
    ) -> Result<Store, StoreError> {
        let secret_url = url.clone();
        let url = url.expose_secret();
        let acquire_timeout = Duration::from_millis(settings.acquire_timeout_ms.max(1));
        let last_connect_error = LastConnectError::default();
        let verify_window = mysql::VerifyWindow::default();
        let password = url_password(url);
        let pool_size = settings.pool_size.max(1);
        let mut galera_node = false;
        let mut returning = false;
        let inner = if url.starts_with("mysql://") {
            let mut first = mysql::establish(url, acquire_timeout)
                .await
                .map_err(|e| StoreError::from_connect(&e, password))?;
            // A server that cannot answer this is no Galera node (MySQL and TiDB
            // answer with no rows).
            galera_node = galera::is_galera(&mut first).await.unwrap_or(false);
            if galera_node {
                galera::set_up_session(&mut first)
                    .await
                    .map_err(|e| StoreError::from_query("setting up a Galera session", &e))?;
                tracing::info!(
                    "the database is a Galera node: causal reads on, health follows its cluster state"
                );
            }
            // Only the statement-by-statement form of Galera nodes needs to know.
            returning = galera_node && mysql::supports_returning(&mut first).await;
            let pool = bb8::Pool::builder()
                .max_size(pool_size)
                .connection_timeout(acquire_timeout)
                .error_sink(Box::new(last_connect_error.clone()))
                .build_unchecked(mysql::manager(
                    url,
                    acquire_timeout,
                    verify_window.clone(),
                    galera_node,
                ));
            // Only fails when the pool is full, which a new pool is not.
            let _ = pool.add(first);
            Inner::Mysql(pool)
        } else if let Some(path) = sqlite::path_of(url) {
            let first = sqlite::establish(path)
                .await
                .map_err(|e| StoreError::from_connect(&e, None))?;
            let pool = bb8::Pool::builder()
                .max_size(sqlite::POOL_SIZE)
                .connection_timeout(acquire_timeout)
                .error_sink(Box::new(last_connect_error.clone()))
                .build_unchecked(sqlite::manager(path));
            let _ = pool.add(first);
            Inner::Sqlite(pool)
        } else {
            return Err(StoreError::Unexpected(
                "unsupported database URL: use mysql://user:password@host:3306/db or sqlite://path.db"
                    .into(),
            ));
        };
        let (permits, backend) = match inner {
            Inner::Mysql(_) => (pool_size, Backend::Mysql),
            Inner::Sqlite(_) => (sqlite::POOL_SIZE, Backend::Sqlite),
        };
        Ok(Store {
            inner,
            gate: Arc::new(tokio::sync::Semaphore::new(permits as usize)),
            max_tx_attempts: settings.max_tx_attempts.max(1),
            acquire_timeout,
            last_connect_error,
            verify_window,
            probe: Arc::new(health::Probe::new(
                secret_url,
                backend,
                acquire_timeout,
                galera_node,
            )),
            login_sql: mysql::LoginSql::for_server(galera_node, returning),
        })
    }

    /// The health check: `SELECT 1` and the applied migrations, over a
    /// connection of its own (never queued behind logins in the pool).
    pub async fn health(&self) -> Result<Health, StoreError> {
        self.probe.check().await
    }

    /// Runs the login transaction in the given form instead of the one chosen for this
    /// server (lets tests cover every form on one MariaDB server).
    pub fn with_login_sql(mut self, sql: LoginSql) -> Store {
        self.login_sql = sql;
        self
    }

    /// How the login transaction talks to this server.
    pub fn login_sql(&self) -> LoginSql {
        self.login_sql
    }

    /// The database kind.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Mysql(_) => Backend::Mysql,
            Inner::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Applies pending migrations; returns how many were applied.
    ///
    /// Runs diesel's synchronous migration harness on tokio's blocking pool, so it works
    /// on any runtime flavour (no `block_in_place` on a worker thread).
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        match &self.inner {
            Inner::Mysql(pool) => {
                let conn = pool.get_owned().await.map_err(|e| self.pool_error(e))?;
                tokio::task::spawn_blocking(move || {
                    AsyncMigrationHarness::new(conn)
                        .run_pending_migrations(MYSQL_MIGRATIONS)
                        .map(|applied| applied.len())
                        .map_err(|e| StoreError::Unexpected(format!("migration failed: {e}")))
                })
                .await
                .map_err(|e| StoreError::Unexpected(format!("migration task failed: {e}")))?
            }
            Inner::Sqlite(pool) => {
                let mut conn = self.checkout(pool).await?;
                sqlite::run_migrations(&mut conn)
                    .await
                    .map_err(|e| StoreError::Unexpected(format!("migration failed: {e}")))
            }
        }
    }

    /// True when every embedded migration has been applied (for health checks).
    /// A database that was never migrated answers false, not an error.
    pub async fn migrations_current(&self) -> Result<bool, StoreError> {
        let expected = match self.backend() {
            Backend::Mysql => versions(&MYSQL_MIGRATIONS),
            Backend::Sqlite => versions(&SQLITE_MIGRATIONS),
        };
        let expected = expected?;
        let applied = match &self.inner {
            Inner::Mysql(pool) => {
                let mut conn = self.checkout(pool).await?;
                applied_versions(&mut *conn).await
            }
            Inner::Sqlite(pool) => {
                let mut conn = self.checkout(pool).await?;
                applied_versions(&mut *conn).await
            }
        };
        match applied {
            Ok(applied) => Ok(expected.iter().all(|v| applied.contains(v))),
            Err(e) if is_missing_table(&e) => Ok(false),
            Err(e) => Err(self.query_error("reading applied migrations", &e)),
        }
    }

    /// A cheap liveness check (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_conn!(self, "ping", |conn| diesel::sql_query("SELECT 1")
            .execute(conn)
            .await)?;
        Ok(())
    }

    /// Connections open and idle, for metrics.
    pub fn pool_state(&self) -> PoolState {
        let state = match &self.inner {
            Inner::Mysql(pool) => pool.state(),
            Inner::Sqlite(pool) => pool.state(),
        };
        PoolState {
            connections: state.connections,
            idle: state.idle_connections,
        }
    }

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
                Inner::Mysql(pool) => {
                    let mut conn = self.checkout(pool).await?;
                    mysql::record_login(&mut conn, login, self.login_sql).await
                }
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
            Inner::Mysql(pool) => {
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

    /// The number of users (for tests and the benchmark's duplicate check).
    pub async fn user_count(&self) -> Result<i64, StoreError> {
        use schema::users::dsl::users;
        with_conn!(self, "counting users", |conn| users
            .count()
            .get_result(conn)
            .await)
    }

    /// The id of the user with this phone, if any (for tests and diagnostics).
    pub async fn user_id_by_phone(&self, phone: &Phone) -> Result<Option<UserId>, StoreError> {
        use schema::users::dsl as u;
        let e164 = phone.e164();
        let id: Option<i64> = with_conn!(self, "reading a user", |conn| {
            u::users
                .filter(u::phone.eq(e164.as_str()))
                .select(u::id)
                .first(conn)
                .await
                .optional()
        })?;
        Ok(id.map(UserId))
    }

    /// The identity row of `(app_id, openid)`, if any (for tests and diagnostics).
    pub async fn identity(
        &self,
        app_id: &AppId,
        openid: &OpenId,
    ) -> Result<Option<IdentityRow>, StoreError> {
        use schema::wechat_identities::dsl as wi;
        with_conn!(self, "reading an identity", |conn| {
            wi::wechat_identities
                .filter(wi::app_id.eq(app_id.as_str()))
                .filter(wi::openid.eq(openid.as_str()))
                .select(IdentityRow::as_select())
                .first(conn)
                .await
                .optional()
        })
    }

    /// The number of identities linked to `user_id` (for tests and diagnostics).
    pub async fn identity_count(&self, user_id: UserId) -> Result<i64, StoreError> {
        use schema::wechat_identities::dsl as wi;
        with_conn!(self, "counting identities", |conn| {
            wi::wechat_identities
                .filter(wi::user_id.eq(user_id.0))
                .count()
                .get_result(conn)
                .await
        })
    }

    /// A pooled connection, after a first-come-first-served wait for a permit (see
    /// `gate`); both waits together are bounded by `acquire_timeout_ms`.
    async fn checkout<'p, C>(
        &self,
        pool: &'p bb8::Pool<diesel_async::pooled_connection::AsyncDieselConnectionManager<C>>,
    ) -> Result<Checkout<'p, C>, StoreError>
    where
        C: diesel_async::pooled_connection::PoolableConnection + 'static,
        diesel_async::pooled_connection::AsyncDieselConnectionManager<C>:
            bb8::ManageConnection<Connection = C, Error = PoolError>,
    {
        let checkout =
            async {
                let permit =
                    self.gate.clone().acquire_owned().await.map_err(|_| {
                        StoreError::Unexpected("the connection gate was closed".into())
                    })?;
                let conn = pool.get().await.map_err(|e| self.pool_error(e))?;
                Ok(Checkout {
                    conn,
                    _permit: permit,
                })
            };
        match tokio::time::timeout(self.acquire_timeout, checkout).await {
            Ok(result) => result,
            Err(_) => Err(self.pool_error(bb8::RunError::TimedOut)),
        }
    }

    fn pool_error(&self, err: bb8::RunError<PoolError>) -> StoreError {
        match err {
            bb8::RunError::TimedOut => {
                let cause = self
                    .last_connect_error
                    .recent()
                    .map(|e| format!(" (last connection error: {e})"))
                    .unwrap_or_default();
                StoreError::Unavailable(format!(
                    "no database connection available within {} ms{cause}",
                    self.acquire_timeout.as_millis()
                ))
            }
            bb8::RunError::User(e) => StoreError::Unavailable(pool_error_message(&e)),
        }
    }

    fn query_error(&self, context: &str, err: &DieselError) -> StoreError {
        let mapped = StoreError::from_query(context, err);
        if matches!(mapped, StoreError::Unavailable(_)) {
            self.verify_window.open();
        }
        mapped
    }
}

/// A checked-out connection and its gate permit. Fields drop in order: the connection
/// goes back to the pool before the permit lets the next caller in.
struct Checkout<'p, C>
where
    C: diesel_async::pooled_connection::PoolableConnection + 'static,
    diesel_async::pooled_connection::AsyncDieselConnectionManager<C>:
        bb8::ManageConnection<Connection = C>,
{
    conn:
        bb8::PooledConnection<'p, diesel_async::pooled_connection::AsyncDieselConnectionManager<C>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<C> std::ops::Deref for Checkout<'_, C>
where
    C: diesel_async::pooled_connection::PoolableConnection + 'static,
    diesel_async::pooled_connection::AsyncDieselConnectionManager<C>:
        bb8::ManageConnection<Connection = C>,
{
    type Target = C;
    fn deref(&self) -> &C {
        &self.conn
    }
}

impl<C> std::ops::DerefMut for Checkout<'_, C>
where
    C: diesel_async::pooled_connection::PoolableConnection + 'static,
    diesel_async::pooled_connection::AsyncDieselConnectionManager<C>:
        bb8::ManageConnection<Connection = C>,
{
    fn deref_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}

fn pool_error_message(err: &PoolError) -> String {
    // Pool-made connections use the URL the store was given; mysql_async's messages
    // do not echo it, and quoted values are blanked anyway.
    error::redact_values(&err.to_string())
}

fn versions(source: &EmbeddedMigrations) -> Result<Vec<String>, StoreError> {
    // The version strings do not depend on the backend; Sqlite is just a `Backend` to name.
    MigrationSource::<diesel::sqlite::Sqlite>::migrations(source)
        .map(|ms| ms.iter().map(|m| m.name().version().to_string()).collect())
        .map_err(|e| StoreError::Unexpected(format!("embedded migrations are unreadable: {e}")))
}

#[derive(QueryableByName)]
pub(crate) struct AppliedVersion {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

async fn applied_versions<C>(conn: &mut C) -> Result<Vec<String>, DieselError>
where
    C: diesel_async::AsyncConnection,
    diesel::query_builder::SqlQuery: diesel_async::methods::LoadQuery<'static, C, AppliedVersion>,
{
    let rows: Vec<AppliedVersion> =
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
            .load(conn)
            .await?;
    Ok(rows.into_iter().map(|r| r.version).collect())
}

fn is_missing_table(err: &DieselError) -> bool {
    let message = err.to_string();
    message.contains("doesn't exist") || message.contains("no such table")
}

/// Jittered exponential backoff before attempt `attempt + 1`: ~5, 10, 20 ms ... capped at 200 ms.
fn backoff(attempt: u32) -> Duration {
    use rand::Rng as _;
    let base = 5u64.saturating_mul(1 << attempt.min(6)).min(200);
    Duration::from_millis(base / 2 + rand::rng().random_range(0..=base / 2))
}

pub use crate::clock::now_ms;

/// Remembers the pool's last failure to open a connection, so a pool timeout can say
/// why ("Connection refused") instead of only "timed out".
#[derive(Clone, Default, Debug)]
struct LastConnectError(Arc<Mutex<Option<(Instant, String)>>>);

impl LastConnectError {
    const RECENT: Duration = Duration::from_secs(30);

    fn recent(&self) -> Option<String> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|(at, _)| at.elapsed() < Self::RECENT)
            .map(|(_, e)| e.clone())
    }
}

impl bb8::ErrorSink<PoolError> for LastConnectError {
    fn sink(&self, err: PoolError) {
        let message = pool_error_message(&err);
        tracing::warn!(error = %message, "database connection failed");
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), message));
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<PoolError>> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_small() {
        assert!(backoff(1) <= Duration::from_millis(10));
        assert!(backoff(20) <= Duration::from_millis(200));
        assert!(backoff(20) >= Duration::from_millis(100));
    }

    #[test]
    fn sqlite_urls_map_to_paths() {
        assert_eq!(sqlite::path_of("sqlite://dev.db"), Some("dev.db"));
        assert_eq!(
            sqlite::path_of("sqlite:///var/lib/x.db"),
            Some("/var/lib/x.db")
        );
        assert_eq!(sqlite::path_of("sqlite:dev.db"), Some("dev.db"));
        assert_eq!(sqlite::path_of("mysql://x"), None);
    }

    #[test]
    fn embedded_migrations_have_versions_for_both_backends() {
        assert!(!versions(&MYSQL_MIGRATIONS).unwrap().is_empty());
        assert_eq!(
            versions(&MYSQL_MIGRATIONS).unwrap(),
            versions(&SQLITE_MIGRATIONS).unwrap()
        );
    }
}
