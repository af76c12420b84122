//! The embedded migrations, applying them, and whether a database is current.

use super::{Backend, Inner, Store, StoreError, sqlite};
use diesel::{QueryableByName, migration::MigrationSource, result::Error as DieselError};
use diesel_async::{AsyncMigrationHarness, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

/// The MySQL/MariaDB migrations, embedded in the binary.
pub const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");
/// The SQLite migrations, embedded in the binary.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

impl Store {
    /// Applies pending migrations; returns how many were applied.
    ///
    /// Runs diesel's synchronous migration harness on tokio's blocking pool, so it works
    /// on any runtime flavour (no `block_in_place` on a worker thread).
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        match &self.inner {
            Inner::Mysql(pool, _) => {
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
            Inner::Mysql(pool, _) => {
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
}

pub(super) fn versions(source: &EmbeddedMigrations) -> Result<Vec<String>, StoreError> {
    // The version strings do not depend on the backend; Sqlite is just a `Backend` to name.
    MigrationSource::<diesel::sqlite::Sqlite>::migrations(source)
        .map(|ms| ms.iter().map(|m| m.name().version().to_string()).collect())
        .map_err(|e| StoreError::Unexpected(format!("embedded migrations are unreadable: {e}")))
}

#[derive(QueryableByName)]
pub(super) struct AppliedVersion {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

pub(super) async fn applied_versions<C>(conn: &mut C) -> Result<Vec<String>, DieselError>
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

pub(super) fn is_missing_table(err: &DieselError) -> bool {
    let message = err.to_string();
    message.contains("doesn't exist") || message.contains("no such table")
}
