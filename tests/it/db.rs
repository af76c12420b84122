//! `TestDb`: a fresh database per test, reusable by every integration test.
//!
//! ```ignore
//! let db = TestDb::mysql().await;   // new database on the shared MariaDB, migrated
//! let db = TestDb::sqlite().await;  // temp-dir SQLite file, migrated
//! db.store.record_login(...).await; // the Store under test
//! db.url();                          // the URL, e.g. to start the real server on it
//! ```
//! MariaDB comes from `MP_AUTH_TEST_MYSQL_URL` (default
//! `mysql://mp_auth_test:mp_auth_test@127.0.0.1:3306`; `sudo scripts/test-env.sh`
//! sets it up). MySQL databases are named `mp_auth_test_<uuid>` and dropped,
//! best-effort, when the `TestDb` is dropped. Tests that migrate need
//! `#[tokio::test(flavor = "multi_thread")]`.

#![allow(dead_code)] // helpers shared with other test modules

use diesel::Connection as _;
use diesel_async::{AsyncConnection, AsyncMysqlConnection, SimpleAsyncConnection};
use mp_auth::{
    config::DatabaseSettings,
    store::{Backend, Store},
};
use secrecy::SecretString;

/// The shared MariaDB server's URL (no database part).
pub fn mysql_server_url() -> String {
    std::env::var("MP_AUTH_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://mp_auth_test:mp_auth_test@127.0.0.1:3306".into())
        .trim_end_matches('/')
        .to_owned()
}

/// Database settings for tests: the defaults with a generous acquire timeout.
pub fn test_settings() -> DatabaseSettings {
    DatabaseSettings {
        acquire_timeout_ms: 10_000,
        ..DatabaseSettings::default()
    }
}

/// A fresh database and a [`Store`] connected to it.
pub struct TestDb {
    /// The store under test (migrated unless made by an `*_unmigrated` constructor).
    pub store: Store,
    backend: Backend,
    url: String,
    /// MySQL: the database to drop at the end.
    mysql_database: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A new, migrated database of `backend`.
    pub async fn new(backend: Backend) -> TestDb {
        let db = Self::unmigrated(backend).await;
        db.store.migrate().await.expect("migrations run");
        db
    }

    /// A new database of `backend` with no tables at all.
    pub async fn unmigrated(backend: Backend) -> TestDb {
        Self::unmigrated_with(backend, &test_settings()).await
    }

    /// Like [`TestDb::unmigrated`], with the store built from `settings`.
    pub async fn unmigrated_with(backend: Backend, settings: &DatabaseSettings) -> TestDb {
        match backend {
            Backend::Mysql => {
                let server = mysql_server_url();
                let name = format!("mp_auth_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = AsyncMysqlConnection::establish(&server).await.unwrap_or_else(|e| {
                    panic!("MariaDB is not reachable ({e}): run `sudo scripts/test-env.sh` or set MP_AUTH_TEST_MYSQL_URL")
                });
                admin
                    .batch_execute(&format!(
                        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                    ))
                    .await
                    .expect("create the test database");
                let url = format!("{server}/{name}");
                let store = Store::connect(&SecretString::from(url.clone()), settings)
                    .await
                    .expect("connect to the test database");
                TestDb {
                    store,
                    backend,
                    url,
                    mysql_database: Some(name),
                    _dir: None,
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("mp-auth.db").display());
                let store = Store::connect(&SecretString::from(url.clone()), settings)
                    .await
                    .expect("open the test database");
                TestDb {
                    store,
                    backend,
                    url,
                    mysql_database: None,
                    _dir: Some(dir),
                }
            }
        }
    }

    /// A migrated MySQL/MariaDB database.
    pub async fn mysql() -> TestDb {
        Self::new(Backend::Mysql).await
    }

    /// A migrated SQLite database in a temp dir.
    pub async fn sqlite() -> TestDb {
        Self::new(Backend::Sqlite).await
    }

    /// The database URL (`mysql://.../mp_auth_test_<uuid>` or `sqlite:///tmp/.../mp-auth.db`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL as the secret the service's config holds.
    pub fn secret_url(&self) -> SecretString {
        SecretString::from(self.url.clone())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Another store on the same database, with other settings.
    pub async fn connect_with(&self, settings: &DatabaseSettings) -> Store {
        Store::connect(&self.secret_url(), settings)
            .await
            .expect("connect to the test database")
    }

    /// Runs raw SQL (e.g. a trigger that injects a failure) on a direct connection.
    pub async fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Mysql => {
                let mut conn = AsyncMysqlConnection::establish(&self.url).await.unwrap();
                conn.batch_execute(sql).await.unwrap();
            }
            Backend::Sqlite => {
                use diesel::connection::SimpleConnection as _;
                let path = self.url.trim_start_matches("sqlite://");
                let mut conn = diesel::SqliteConnection::establish(path).unwrap();
                conn.batch_execute("PRAGMA busy_timeout = 5000;").unwrap();
                conn.batch_execute(sql).unwrap();
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.mysql_database.take() else {
            return;
        };
        let server = mysql_server_url();
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = AsyncMysqlConnection::establish(&server).await {
                    let _ = conn
                        .batch_execute(&format!("DROP DATABASE IF EXISTS `{name}`"))
                        .await;
                }
            });
        })
        .join();
    }
}
