//! MariaDB Galera Cluster: recognising a Galera node, asking it whether it may
//! serve (ready, in the Primary component, Synced), the session setting that
//! gives reads after another replica's write the causality a single server has.
//!
//! Transactions on a Galera node must go statement by statement (as every store
//! transaction does): Galera aborts a local transaction that conflicts with a write
//! replicated from another node (a brute-force abort) and reports it on the next
//! command (deadlock 1213, retried), but not inside a multi-statement request,
//! where the rest of the request runs on in autocommit mode and its `COMMIT`
//! succeeds (pinned by a test in `tests/it/cluster.rs`).
//!
//! On a plain MariaDB, MySQL or TiDB server none of this runs: `wsrep_on` is OFF
//! or absent, and the store behaves as on a single server.

use super::mysql::Conn;
use diesel::{QueryResult, QueryableByName, sql_types::Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

/// `wsrep_sync_wait` for every pooled connection to a Galera node: 1 (reads and
/// `BEGIN`) + 2 (`UPDATE`, `DELETE`). A node applies other nodes' write sets
/// asynchronously after they are certified, so without it a refresh or logout
/// arriving at another replica right after a login could miss the new session
/// (`REFRESH_TOKEN_INVALID`), and a read right after a logout could miss the
/// revocation. With it the node first applies everything the cluster committed
/// before the statement. Inserts (4) need no wait: a conflicting insert fails
/// certification and the transaction is retried.
pub(super) const SYNC_WAIT: u8 = 3;

#[derive(QueryableByName)]
struct Variable {
    #[diesel(sql_type = Text, column_name = "Variable_name")]
    name: String,
    #[diesel(sql_type = Text, column_name = "Value")]
    value: String,
}

/// True when the server is a Galera node with replication on (`wsrep_on = ON`).
/// MySQL and TiDB have no such variable and answer with no rows.
pub(super) async fn is_galera(conn: &mut Conn) -> QueryResult<bool> {
    let rows: Vec<Variable> = diesel::sql_query("SHOW GLOBAL VARIABLES LIKE 'wsrep_on'")
        .load(conn)
        .await?;
    Ok(rows
        .iter()
        .any(|v| v.name.eq_ignore_ascii_case("wsrep_on") && v.value.eq_ignore_ascii_case("ON")))
}

/// Applies the Galera session settings ([`SYNC_WAIT`]) to a new connection.
pub(super) async fn set_up_session(conn: &mut Conn) -> QueryResult<()> {
    conn.batch_execute(&session_setup()).await
}

/// The statement of [`set_up_session`].
pub(super) fn session_setup() -> String {
    format!("SET SESSION wsrep_sync_wait = {SYNC_WAIT}")
}

/// What a Galera node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeState {
    /// `wsrep_ready`: the node accepts queries.
    pub ready: bool,
    /// `wsrep_cluster_status`: `Primary`, `non-Primary` or `Disconnected`.
    pub cluster_status: String,
    /// `wsrep_local_state_comment`: `Synced`, `Donor/Desynced`, `Joining`, `Joined`...
    pub local_state: String,
}

impl NodeState {
    /// Serves only a node that is ready, part of the Primary component and
    /// Synced. A donor or a desynced node (`Donor/Desynced`) lags behind the
    /// cluster and is taken out like one that left it (as `clustercheck` does);
    /// a joining node has not caught up yet.
    pub fn can_serve(&self) -> bool {
        self.ready && self.cluster_status == "Primary" && self.local_state == "Synced"
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wsrep_ready={}, wsrep_cluster_status={}, wsrep_local_state_comment={}",
            if self.ready { "ON" } else { "OFF" },
            self.cluster_status,
            self.local_state
        )
    }
}

/// Reads the node's state in one round trip. `SHOW STATUS` answers even on a
/// node outside the Primary component, where queries on tables fail with 1047.
pub(super) async fn node_state(conn: &mut Conn) -> QueryResult<NodeState> {
    let rows: Vec<Variable> = diesel::sql_query(
        "SHOW GLOBAL STATUS WHERE Variable_name IN \
         ('wsrep_ready', 'wsrep_cluster_status', 'wsrep_local_state_comment')",
    )
    .load(conn)
    .await?;
    Ok(state_from(
        rows.into_iter()
            .map(|v| (v.name.to_ascii_lowercase(), v.value)),
    ))
}

fn state_from(rows: impl IntoIterator<Item = (String, String)>) -> NodeState {
    let mut state = NodeState::default();
    for (name, value) in rows {
        match name.as_str() {
            "wsrep_ready" => state.ready = value.eq_ignore_ascii_case("ON"),
            "wsrep_cluster_status" => state.cluster_status = value,
            "wsrep_local_state_comment" => state.local_state = value,
            _ => {}
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(ready: &str, cluster: &str, local: &str) -> NodeState {
        state_from([
            ("wsrep_ready".to_owned(), ready.to_owned()),
            ("wsrep_cluster_status".to_owned(), cluster.to_owned()),
            ("wsrep_local_state_comment".to_owned(), local.to_owned()),
        ])
    }

    #[test]
    fn only_a_ready_synced_node_of_the_primary_component_serves() {
        assert!(state("ON", "Primary", "Synced").can_serve());
        // Isolated or partitioned: the node left the Primary component.
        assert!(!state("OFF", "non-Primary", "Initialized").can_serve());
        // A donor or a node desynced by an operator lags behind.
        assert!(!state("ON", "Primary", "Donor/Desynced").can_serve());
        // Still catching up after a restart.
        assert!(!state("ON", "Primary", "Joined").can_serve());
        assert!(!state("OFF", "Primary", "Joining").can_serve());
        // Nothing reported at all.
        assert!(!NodeState::default().can_serve());
    }

    #[test]
    fn the_state_reads_as_the_server_reports_it() {
        let s = state("ON", "Primary", "Donor/Desynced");
        assert_eq!(
            s.to_string(),
            "wsrep_ready=ON, wsrep_cluster_status=Primary, wsrep_local_state_comment=Donor/Desynced"
        );
    }
}
