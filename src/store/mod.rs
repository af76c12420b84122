//! The store: users (keyed by phone) and their WeChat identities, in MySQL/MariaDB
//! (production) or SQLite (dev mode), through diesel-async and a bb8 pool. The login's
//! find-or-create is one race-free upsert transaction, retried on deadlock; session
//! keys are stored sealed (the caller encrypts them, the store never sees plaintext).
//!
//! Layout, by concern:
//! - this file: [`Store`] (connecting, the backend, ping, pool state) and `with_conn!`;
//! - `login`: the login transaction with its retries, and session keys;
//! - `sessions`, `users`: sessions (rotation, revocation, cleanup) and the Users API's
//!   reads and account deletion;
//! - `diagnostics`: counts and single rows for tests and operators;
//! - `migrations`, `health`: embedded migrations, and the health probe on its own
//!   connection;
//! - `pool`: the first-come-first-served checkout, pool errors, retry backoff;
//! - `mysql`, `batch`, `sqlite`, `galera`, `error`, [`schema`]: the backends (`batch`:
//!   the one-round-trip login on its own pool of `mysql_async` connections), Galera's
//!   specifics, the error classification, diesel's schema.

mod batch;
mod error;
mod galera;
mod health;
mod migrations;
mod mysql;
mod pool;
pub mod schema;
mod sqlite;

pub use diagnostics::IdentityRow;
pub use error::StoreError;
pub use galera::NodeState;
pub use health::Health;
pub use login::{LoginOutcome, LoginRecord};
pub use migrations::{MYSQL_MIGRATIONS, SQLITE_MIGRATIONS};
pub use mysql::LoginSql;
use pool::{Gated, LastConnectError, backoff};

use crate::config::DatabaseSettings;
use diesel::result::Error as DieselError;
use diesel_async::RunQueryDsl;
use error::url_password;
use secrecy::{ExposeSecret, SecretString};
use std::{fmt, sync::Arc, time::Duration};

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

/// The database behind the service: a pool plus the login transaction. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Inner,
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
    /// diesel-async's pool, and the login batch's pool (see `batch` and
    /// [`mysql_pool_sizes`]).
    Mysql(Gated<mysql::Manager>, Gated<batch::Manager>),
    Sqlite(Gated<sqlite::Manager>),
}

/// How `pool_size` connections are shared between the two pools of a MySQL store:
/// (diesel-async's pool, the login batch's pool). With the batch, each gets half (at
/// least one): the store never holds more than `pool_size` connections (two when
/// `pool_size` is 1), which is what operators budget against `max_connections`.
/// Statement by statement (a Galera node), diesel-async's pool gets them all and the
/// batch's pool, which only a test forcing the batch would use, one.
fn mysql_pool_sizes(pool_size: u32, batching: bool) -> (u32, u32) {
    if batching {
        let batch = pool_size.div_ceil(2).max(1);
        ((pool_size - batch).max(1), batch)
    } else {
        (pool_size.max(1), 1)
    }
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
                $crate::store::Inner::Mysql(pool, _) => {
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

// After `with_conn!`, which they use.
mod diagnostics;
mod login;
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
        let (inner, login_sql) = if url.starts_with("mysql://") {
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
            // Only the statement-by-statement forms need to know.
            let returning = LoginSql::separate(settings.login_statements, galera_node)
                && mysql::supports_returning(&mut first).await;
            let login_sql = LoginSql::choose(settings.login_statements, galera_node, returning);
            let (diesel_size, batch_size) =
                mysql_pool_sizes(pool_size, login_sql == LoginSql::Batch);
            let pool = Gated::new(
                mysql::manager(url, acquire_timeout, verify_window.clone(), galera_node),
                diesel_size,
                acquire_timeout,
                &last_connect_error,
            );
            pool.add(first);
            let batch = Gated::new(
                batch::Manager::new(url, acquire_timeout, verify_window.clone(), galera_node)
                    .map_err(|e| StoreError::from_connect(&e, password))?,
                batch_size,
                acquire_timeout,
                &last_connect_error,
            );
            (Inner::Mysql(pool, batch), login_sql)
        } else if let Some(path) = sqlite::path_of(url) {
            let first = sqlite::establish(path)
                .await
                .map_err(|e| StoreError::from_connect(&e, None))?;
            let pool = Gated::new(
                sqlite::manager(path),
                sqlite::POOL_SIZE,
                acquire_timeout,
                &last_connect_error,
            );
            pool.add(first);
            // Unused: SQLite has its own login transaction.
            (Inner::Sqlite(pool), LoginSql::Batch)
        } else {
            return Err(StoreError::Unexpected(
                "unsupported database URL: use mysql://user:password@host:3306/db or sqlite://path.db"
                    .into(),
            ));
        };
        let backend = match inner {
            Inner::Mysql(..) => Backend::Mysql,
            Inner::Sqlite(_) => Backend::Sqlite,
        };
        if backend == Backend::Mysql {
            tracing::info!(
                form = ?login_sql,
                "login transaction: Batch = one multi-statement request (1 round trip), Returning/Portable = one statement per round trip"
            );
        }
        Ok(Store {
            inner,
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
            login_sql,
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
            Inner::Mysql(..) => Backend::Mysql,
            Inner::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// A cheap liveness check (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_conn!(self, "ping", |conn| diesel::sql_query("SELECT 1")
            .execute(conn)
            .await)?;
        Ok(())
    }

    /// Connections open and idle (both pools of a MySQL store), for metrics.
    pub fn pool_state(&self) -> PoolState {
        let state = |s: bb8::State| PoolState {
            connections: s.connections,
            idle: s.idle_connections,
        };
        match &self.inner {
            Inner::Mysql(pool, batch) => {
                let (a, b) = (state(pool.state()), state(batch.state()));
                PoolState {
                    connections: a.connections + b.connections,
                    idle: a.idle + b.idle,
                }
            }
            Inner::Sqlite(pool) => state(pool.state()),
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

pub use crate::clock::now_ms;

#[cfg(test)]
mod tests {
    use super::{migrations::versions, *};

    #[test]
    fn backoff_grows_and_stays_small() {
        assert!(backoff(1) <= Duration::from_millis(10));
        assert!(backoff(20) <= Duration::from_millis(200));
        assert!(backoff(20) >= Duration::from_millis(100));
    }

    #[test]
    fn the_two_mysql_pools_share_pool_size() {
        assert_eq!(mysql_pool_sizes(16, true), (8, 8));
        assert_eq!(mysql_pool_sizes(5, true), (2, 3));
        assert_eq!(mysql_pool_sizes(2, true), (1, 1));
        assert_eq!(mysql_pool_sizes(1, true), (1, 1));
        assert_eq!(mysql_pool_sizes(16, false), (16, 1));
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
