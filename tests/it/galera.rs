//! `GaleraCluster`: a private MariaDB Galera cluster on loopback for one test,
//! whose nodes the test can kill, restart, isolate and desync.
//!
//! ```ignore
//! let mut cluster = GaleraCluster::start(3).await;  // node 0 bootstraps, the others join (rsync SST)
//! let url = cluster.create_database().await;          // mysql://…@127.0.0.1:PORT0/mp_auth_<uuid>
//! let url1 = cluster.url_on(1, &url);                 // the same database through node 1
//! cluster.kill(2).await;                              // SIGKILL, like a crash
//! cluster.restart(2).await;                           // --wsrep-recover, then rejoin by IST
//! ```
//! Each node has its own datadir under one temp dir, its own ports (`port`,
//! `gmcast.listen_addr`, `ist.recv_addr`, `wsrep_sst_receive_address`) picked
//! below the kernel's ephemeral range (a node reconnecting to a dead peer's port
//! from the ephemeral range can connect to itself and take that port), and runs
//! `mariadbd --no-defaults` as `mysql` when the test runs as root (rsync state
//! transfer fails as root). Every node is killed by PID when the cluster is
//! dropped, also when the test fails. Needs `scripts/galera-env.sh`.

#![allow(dead_code)] // helpers shared with other test modules

use crate::private_db::{find_binary, running_as_root};
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const USER: &str = "mp_auth";
const PASSWORD: &str = "mp_auth_galera";
const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";

/// One node: its directory, ports and process.
struct Node {
    dir: PathBuf,
    port: u16,
    gcomm_port: u16,
    ist_port: u16,
    sst_port: u16,
    child: std::sync::Mutex<Option<Child>>,
}

/// A private Galera cluster; the nodes die with it.
pub struct GaleraCluster {
    /// Unique per cluster, so two clusters of parallel tests never merge.
    name: String,
    nodes: Vec<Node>,
    // Last: removed after the nodes are killed.
    dir: tempfile::TempDir,
}

/// The uid and gid of `mysql`, which the nodes run as when the test runs as root.
fn mysql_ids() -> Option<(u32, u32)> {
    if !running_as_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("mysql:"))
        .expect("no `mysql` user: run `sudo scripts/test-env.sh`");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

/// Gives `path` to `mysql` (when running as root).
fn hand_to_mysql(path: &Path) {
    if let Some((uid, gid)) = mysql_ids() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// A port below the ephemeral range (32768+) that is free right now.
fn free_low_port() -> u16 {
    use rand::Rng as _;
    loop {
        let port = rand::rng().random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Node {
    /// A process was started and not killed.
    fn running(&self) -> bool {
        self.child.lock().unwrap().is_some()
    }

    /// The process was started and has exited by itself.
    fn exited(&self) -> bool {
        self.child
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn error_log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A `mariadb` client as root over the node's socket.
    fn client(&self) -> Command {
        let mut cmd = Command::new(find_binary("mariadb"));
        cmd.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "-N", "-B"])
            .stdin(Stdio::null());
        cmd
    }

    /// Runs SQL as root; `Err` carries the client's stderr.
    async fn try_sql(&self, sql: &str) -> Result<String, String> {
        let mut cmd = self.client();
        cmd.arg("-e").arg(sql);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .expect("run the mariadb client");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// `wsrep_local_state_comment`, or `None` when the node does not answer.
    async fn local_state(&self) -> Option<String> {
        self.try_sql("SHOW STATUS LIKE 'wsrep_local_state_comment'")
            .await
            .ok()
            .and_then(|out| out.split('\t').nth(1).map(str::to_owned))
    }
}

impl GaleraCluster {
    /// Starts `n` nodes: node 0 bootstraps the cluster (`--wsrep-new-cluster`),
    /// the others join it together (state transfer by rsync). Returns when every
    /// node is Synced and the test user exists.
    pub async fn start(n: usize) -> GaleraCluster {
        assert!(
            Path::new(PROVIDER).exists(),
            "{PROVIDER} not found: run `sudo scripts/galera-env.sh` (installs galera-4 and rsync)"
        );
        let dir = tempfile::Builder::new()
            .prefix("mpgal")
            .tempdir_in("/tmp") // socket paths must stay under ~100 bytes
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        hand_to_mysql(dir.path());
        let nodes = (0..n)
            .map(|i| {
                let node_dir = dir.path().join(format!("n{i}"));
                std::fs::create_dir_all(node_dir.join("data")).unwrap();
                hand_to_mysql(&node_dir);
                hand_to_mysql(&node_dir.join("data"));
                Node {
                    dir: node_dir,
                    port: free_low_port(),
                    gcomm_port: free_low_port(),
                    ist_port: free_low_port(),
                    sst_port: free_low_port(),
                    child: std::sync::Mutex::new(None),
                }
            })
            .collect();
        let cluster = GaleraCluster {
            name: format!("mpgal{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            nodes,
            dir,
        };
        cluster.install_first_datadir().await;
        cluster.spawn(0, &["--wsrep-new-cluster"]);
        cluster.wait_synced(0, Duration::from_secs(60)).await;
        cluster
            .sql(
                0,
                &format!(
                    "CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';
                     GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1';"
                ),
            )
            .await;
        for i in 1..n {
            cluster.spawn(i, &[] as &[&str]);
        }
        for i in 1..n {
            cluster.wait_synced(i, Duration::from_secs(120)).await;
        }
        cluster
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The SQL port of node `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// The server URL (no database part) of node `i` for the test user.
    pub fn server_url(&self, i: usize) -> String {
        format!("mysql://{USER}:{PASSWORD}@127.0.0.1:{}", self.nodes[i].port)
    }

    /// Creates an empty database (replicated to every node) and returns its URL on node 0.
    pub async fn create_database(&self) -> String {
        let name = format!("mp_auth_{}", uuid::Uuid::new_v4().simple());
        self.sql(
            0,
            &format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"),
        )
        .await;
        format!("{}/{name}", self.server_url(0))
    }

    /// `url` (of any node) rewritten to reach the same database through node `i`.
    pub fn url_on(&self, i: usize, url: &str) -> String {
        let database = url.rsplit('/').next().unwrap();
        format!("{}/{database}", self.server_url(i))
    }

    /// Runs SQL as root on node `i` and returns its tab-separated output; panics on failure.
    pub async fn sql(&self, i: usize, sql: &str) -> String {
        self.nodes[i]
            .try_sql(sql)
            .await
            .unwrap_or_else(|e| panic!("SQL on Galera node {i} failed: {e}\n{sql}"))
    }

    /// Runs SQL as root on node `i`; `Err` carries the server's message.
    pub async fn try_sql(&self, i: usize, sql: &str) -> Result<String, String> {
        self.nodes[i].try_sql(sql).await
    }

    /// A global status variable of node `i` (e.g. `wsrep_local_cert_failures`).
    pub async fn status(&self, i: usize, variable: &str) -> String {
        let out = self
            .sql(i, &format!("SHOW GLOBAL STATUS LIKE '{variable}'"))
            .await;
        out.split('\t').nth(1).unwrap_or_default().to_owned()
    }

    /// How node `i` received its state the last time it joined: "IST"
    /// (incremental, from a donor's gcache; the donor keeps serving) or "SST"
    /// (a full copy by rsync; the donor is blocked meanwhile).
    pub fn last_state_transfer(&self, i: usize) -> &'static str {
        let log = std::fs::read_to_string(self.nodes[i].dir.join("error.log")).unwrap_or_default();
        let sst = log.rfind("rsync SST completed on joiner");
        let ist = log.rfind("rsync IST completed on joiner");
        match (sst, ist) {
            (Some(s), Some(i)) if s > i => "SST",
            (_, Some(_)) => "IST",
            (Some(_), None) => "SST",
            (None, None) => "none",
        }
    }

    /// `wsrep_local_state_comment` of node `i`, `None` when it does not answer.
    pub async fn local_state(&self, i: usize) -> Option<String> {
        self.nodes[i].local_state().await
    }

    /// The cluster's conflict counters summed over the running nodes:
    /// (`wsrep_local_cert_failures`, `wsrep_local_bf_aborts`).
    pub async fn conflict_counters(&self) -> (u64, u64) {
        let (mut cert, mut bf) = (0, 0);
        for i in 0..self.nodes.len() {
            if !self.nodes[i].running() {
                continue;
            }
            cert += self
                .status(i, "wsrep_local_cert_failures")
                .await
                .parse::<u64>()
                .unwrap();
            bf += self
                .status(i, "wsrep_local_bf_aborts")
                .await
                .parse::<u64>()
                .unwrap();
        }
        (cert, bf)
    }

    /// Polls until node `i` is Synced; panics with its log after `within`.
    pub async fn wait_synced(&self, i: usize, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.local_state(i).await.as_deref() == Some("Synced") {
                return started.elapsed();
            }
            if self.nodes[i].exited() {
                panic!(
                    "Galera node {i} exited while starting:\n{}",
                    self.nodes[i].error_log_tail()
                );
            }
            assert!(
                started.elapsed() < within,
                "Galera node {i} not Synced after {within:?}:\n{}",
                self.nodes[i].error_log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls node `i` until it sees a cluster of `size` nodes (after a kill: until
    /// the others gave up on the dead node, `evs.suspect_timeout` later).
    pub async fn wait_cluster_size(&self, i: usize, size: usize, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.status(i, "wsrep_cluster_size").await == size.to_string() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "Galera node {i} does not see {size} nodes after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills node `i` (SIGKILL: no goodbye to clients or peers, like a crash).
    pub async fn kill(&self, i: usize) {
        let child = self.nodes[i].child.lock().unwrap().take();
        if let Some(mut child) = child {
            let _ = child.kill();
            tokio::task::spawn_blocking(move || child.wait())
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// Restarts node `i` after a kill as `galera_recovery` does: `--wsrep-recover`
    /// finds the last committed position in InnoDB, and the node rejoins from there
    /// (incremental state transfer from another node's gcache). Waits until Synced
    /// and returns how long the restart took.
    pub async fn restart(&self, i: usize) -> Duration {
        assert!(!self.nodes[i].running(), "Galera node {i} is running");
        let started = Instant::now();
        let recover_log = self.nodes[i].dir.join("recover.log");
        let mut recover = self.command(i);
        recover
            .arg("--wsrep-recover")
            .arg(format!("--log-error={}", recover_log.display()));
        let status = tokio::task::spawn_blocking(move || recover.status())
            .await
            .unwrap()
            .expect("run mariadbd --wsrep-recover");
        assert!(status.success(), "mariadbd --wsrep-recover failed");
        let log = std::fs::read_to_string(&recover_log).unwrap_or_default();
        let position = log
            .lines()
            .filter_map(|l| l.split("Recovered position: ").nth(1))
            .next_back()
            .map(|p| p.trim().to_owned());
        let start_position = position.map(|p| format!("--wsrep-start-position={p}"));
        // The old listeners may linger for a moment after a kill; retry briefly.
        for attempt in 0..3 {
            self.spawn(i, start_position.as_slice());
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                if self.local_state(i).await.as_deref() == Some("Synced") {
                    return started.elapsed();
                }
                if self.nodes[i].exited() {
                    self.nodes[i].child.lock().unwrap().take();
                    assert!(
                        attempt < 2,
                        "Galera node {i} did not restart:\n{}",
                        self.nodes[i].error_log_tail()
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "Galera node {i} not Synced 90 s after its restart:\n{}",
                    self.nodes[i].error_log_tail()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        unreachable!()
    }

    /// Cuts node `i` off the cluster (`gmcast.isolate=1`) or lets it back in. The
    /// isolated node keeps accepting connections but leaves the Primary component
    /// and refuses queries on tables (1047), as after a network partition.
    pub async fn isolate(&self, i: usize, isolated: bool) {
        self.sql(
            i,
            &format!(
                "SET GLOBAL wsrep_provider_options = 'gmcast.isolate={}'",
                u8::from(isolated)
            ),
        )
        .await;
    }

    /// Desyncs node `i` (`wsrep_desync`, as a backup tool does) or resyncs it.
    pub async fn desync(&self, i: usize, desynced: bool) {
        self.sql(
            i,
            &format!(
                "SET GLOBAL wsrep_desync = {}",
                if desynced { "ON" } else { "OFF" }
            ),
        )
        .await;
    }

    /// Initialises node 0's datadir; the other nodes receive theirs by state transfer.
    async fn install_first_datadir(&self) {
        let node = &self.nodes[0];
        let mut install = Command::new(find_binary("mariadb-install-db"));
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", node.data().display()))
            // Its own temporary directory: bootstraps of parallel tests must not
            // share (and clean up) each other's temporary tables in /tmp.
            .arg(format!("--tmpdir={}", node.data().display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if running_as_root() {
            install.arg("--user=mysql");
        }
        let out = tokio::task::spawn_blocking(move || install.output())
            .await
            .unwrap()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `mariadbd` with node `i`'s settings.
    fn command(&self, i: usize) -> Command {
        let node = &self.nodes[i];
        let peers = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.gcomm_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = Command::new(find_binary("mariadbd"));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", node.data().display()))
            .arg(format!("--port={}", node.port))
            .arg(format!("--socket={}", node.socket().display()))
            .arg(format!("--pid-file={}", node.dir.join("pid").display()))
            .arg(format!(
                "--log-error={}",
                node.dir.join("error.log").display()
            ))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--max-connections=300",
                "--binlog-format=ROW",
                "--innodb-autoinc-lock-mode=2",
                "--default-storage-engine=InnoDB",
                "--wsrep-on=ON",
            ])
            .arg(format!("--wsrep-provider={PROVIDER}"))
            .arg(format!("--wsrep-cluster-address=gcomm://{peers}"))
            .arg(format!("--wsrep-cluster-name={}", self.name))
            .arg(format!("--wsrep-node-name=n{i}"))
            .arg("--wsrep-node-address=127.0.0.1")
            .arg(format!(
                "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{g};\
                 ist.recv_addr=127.0.0.1:{ist};base_port={g};gcache.size=32M",
                g = node.gcomm_port,
                ist = node.ist_port
            ))
            .arg(format!(
                "--wsrep-sst-receive-address=127.0.0.1:{}",
                node.sst_port
            ))
            .arg("--wsrep-sst-method=rsync")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if running_as_root() {
            cmd.arg("--user=mysql");
        }
        cmd
    }

    fn spawn(&self, i: usize, extra: &[impl AsRef<std::ffi::OsStr>]) {
        let mut cmd = self.command(i);
        cmd.args(extra);
        *self.nodes[i].child.lock().unwrap() = Some(cmd.spawn().expect("spawn mariadbd"));
    }
}

impl Drop for GaleraCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let child = node
                .child
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(mut child) = child {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
