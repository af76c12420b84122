//! The health probe's own database connection. Health must not queue behind
//! logins: under load the pool and its first-come-first-served gate are full
//! of logins, and a probe waiting there times out and marks a healthy but busy
//! replica NOT_SERVING, which moves its load to the others until they fail too.
//! The probe keeps one connection of its own, outside the pool and the gate,
//! reconnecting after any failure. On a Galera node the probe also asks the
//! node's cluster state: a node that still takes connections but left the
//! Primary component, or is desynced, is not ready.

use super::{
    Backend, MYSQL_MIGRATIONS, SQLITE_MIGRATIONS, StoreError,
    galera::{self, NodeState},
    migrations::{applied_versions, is_missing_table, versions},
    mysql, sqlite,
};
use diesel_async::RunQueryDsl;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

enum ProbeConn {
    Mysql(Box<mysql::Conn>),
    Sqlite(Box<sqlite::Conn>),
}

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The database answers and every embedded migration is applied.
    Ready,
    /// The database answers but migrations are pending.
    MigrationsPending,
    /// A Galera node that answers but must not serve: outside the Primary
    /// component (it refuses queries with 1047), desynced, a donor, or joining.
    ClusterNodeNotReady(NodeState),
}

/// A dedicated connection for health checks.
pub(super) struct Probe {
    url: SecretString,
    backend: Backend,
    connect_timeout: Duration,
    /// The server is a Galera node: its cluster state decides too.
    galera: bool,
    conn: tokio::sync::Mutex<Option<ProbeConn>>,
}

impl Probe {
    pub(super) fn new(
        url: SecretString,
        backend: Backend,
        connect_timeout: Duration,
        galera: bool,
    ) -> Self {
        Self {
            url,
            backend,
            connect_timeout,
            galera,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Checks the database over the probe's connection (opened on first use).
    /// The connection is taken out of its slot for the check and put back only
    /// after a success, so a failed or cancelled (timed-out) check leaves no
    /// half-used connection behind: the next check reconnects.
    pub(super) async fn check(&self) -> Result<Health, StoreError> {
        let mut slot = self.conn.lock().await;
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let result = match &mut conn {
            ProbeConn::Mysql(conn) if self.galera => match galera::node_state(conn).await {
                Ok(state) if state.can_serve() => probe(conn.as_mut(), self.backend).await,
                Ok(state) => Ok(Health::ClusterNodeNotReady(state)),
                Err(e) => Err(StoreError::from_query("health probe", &e)),
            },
            ProbeConn::Mysql(conn) => probe(conn.as_mut(), self.backend).await,
            ProbeConn::Sqlite(conn) => probe(conn.as_mut(), self.backend).await,
        };
        if result.is_ok() {
            *slot = Some(conn);
        }
        result
    }

    async fn connect(&self) -> Result<ProbeConn, StoreError> {
        let url = self.url.expose_secret();
        match self.backend {
            Backend::Mysql => mysql::establish(url, self.connect_timeout)
                .await
                .map(|c| ProbeConn::Mysql(Box::new(c)))
                .map_err(|e| StoreError::from_connect(&e, super::error::url_password(url))),
            Backend::Sqlite => {
                let path = sqlite::path_of(url).unwrap_or_default();
                sqlite::establish(path)
                    .await
                    .map(|c| ProbeConn::Sqlite(Box::new(c)))
                    .map_err(|e| StoreError::from_connect(&e, None))
            }
        }
    }
}

async fn probe<C>(conn: &mut C, backend: Backend) -> Result<Health, StoreError>
where
    C: diesel_async::AsyncConnection,
    diesel::query_builder::SqlQuery: diesel_async::methods::ExecuteDsl<C>,
    diesel::query_builder::SqlQuery:
        diesel_async::methods::LoadQuery<'static, C, super::migrations::AppliedVersion>,
{
    diesel::sql_query("SELECT 1")
        .execute(conn)
        .await
        .map_err(|e| StoreError::from_query("health probe", &e))?;
    let expected = match backend {
        Backend::Mysql => versions(&MYSQL_MIGRATIONS),
        Backend::Sqlite => versions(&SQLITE_MIGRATIONS),
    }?;
    match applied_versions(conn).await {
        Ok(applied) if expected.iter().all(|v| applied.contains(v)) => Ok(Health::Ready),
        Ok(_) => Ok(Health::MigrationsPending),
        Err(e) if is_missing_table(&e) => Ok(Health::MigrationsPending),
        Err(e) => Err(StoreError::from_query("health probe", &e)),
    }
}
