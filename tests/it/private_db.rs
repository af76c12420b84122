//! `PrivateDb`: a MariaDB server of the test's own, which the test can stop and
//! start again, to see what the service does when its database goes away.
//!
//! ```ignore
//! let mut db = PrivateDb::start().await;     // mariadb-install-db + mariadbd on a free port
//! let url = db.create_database().await;     // mysql://mp_auth:…@127.0.0.1:PORT/mp_auth_<uuid>
//! db.stop().await;                          // SIGKILL, like a crash or a lost node
//! db.start_again().await;                   // same datadir and port
//! ```
//! Needs `mariadbd`, `mariadb-install-db` and the `mariadb` client (installed by
//! `scripts/test-env.sh`). The data directory is a temp dir, removed on drop.

#![allow(dead_code)] // helpers shared with other test modules

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const USER: &str = "mp_auth";
const PASSWORD: &str = "mp_auth_private";

/// A private MariaDB server: its own datadir, port and socket.
pub struct PrivateDb {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

/// A MariaDB binary from the usual Debian places.
pub(crate) fn find_binary(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} not found: run `sudo scripts/test-env.sh` (installs mariadb-server)")
}

/// Whether the tests run as root (then servers must run as `mysql`).
pub(crate) fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrivateDb {
    /// Initialises a datadir, starts `mariadbd` on a free port, waits until it
    /// answers and creates a user with all privileges.
    pub async fn start() -> PrivateDb {
        let dir = tempfile::Builder::new()
            .prefix("mpdb")
            .tempdir_in("/tmp") // the socket path must stay under ~100 bytes
            .unwrap();
        let mut install = Command::new(find_binary("mariadb-install-db"));
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if running_as_root() {
            install.arg("--user=root");
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
        let mut db = PrivateDb {
            dir,
            port: 0,
            child: None,
        };
        // The free port could be taken between probing and binding: try a few.
        for _ in 0..3 {
            db.port = free_port();
            if db.try_start().await {
                db.sql(&format!(
                    "CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';
                     GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1';"
                ))
                .await;
                return db;
            }
        }
        panic!("private mariadbd did not start: {}", db.error_log());
    }

    /// The server URL (no database part) for the test user.
    pub fn server_url(&self) -> String {
        format!("mysql://{USER}:{PASSWORD}@127.0.0.1:{}", self.port)
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates an empty database and returns its URL.
    pub async fn create_database(&self) -> String {
        let name = format!("mp_auth_{}", uuid::Uuid::new_v4().simple());
        self.sql(&format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        ))
        .await;
        format!("{}/{name}", self.server_url())
    }

    /// Kills the server (SIGKILL: no goodbye to clients, like a crash) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            tokio::task::spawn_blocking(move || child.wait())
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// Starts the server again on the same datadir and port.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the private MariaDB is running");
        // The old socket lingers for a moment after a kill; retry briefly.
        for _ in 0..3 {
            if self.try_start().await {
                return;
            }
        }
        panic!("private mariadbd did not restart: {}", self.error_log());
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Starts `mariadbd` and waits up to 30 s for it to answer; false if it exited.
    async fn try_start(&mut self) -> bool {
        let dir = self.dir.path();
        let mut cmd = Command::new(find_binary("mariadbd"));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                "--max-connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if running_as_root() {
            cmd.arg("--user=root");
        }
        let mut child = cmd.spawn().expect("spawn mariadbd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if self.answers().await {
                self.child = Some(child);
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// True when the server answers over TCP on its port (the way the service connects).
    async fn answers(&self) -> bool {
        let mut cmd = self.client(&["--protocol=tcp", "-h127.0.0.1", &format!("-P{}", self.port)]);
        cmd.args(["-e", "SELECT 1"]).stderr(Stdio::null());
        tokio::task::spawn_blocking(move || cmd.output().is_ok_and(|o| o.status.success()))
            .await
            .unwrap()
    }

    /// Runs SQL as root over the unix socket.
    async fn sql(&self, sql: &str) {
        let mut cmd = self.client(&[
            "--protocol=socket",
            &format!("--socket={}", self.socket().display()),
        ]);
        cmd.arg("-e").arg(sql);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .expect("run the mariadb client");
        assert!(
            out.status.success(),
            "SQL on the private MariaDB failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn client(&self, connection: &[&str]) -> Command {
        let mut cmd = Command::new(find_binary("mariadb"));
        cmd.arg("--no-defaults")
            .args(connection)
            .arg("-uroot")
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for PrivateDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
