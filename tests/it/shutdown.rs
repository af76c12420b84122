//! Graceful shutdown of the real binary: `mp-auth serve` runs as a child
//! process (port 0, address read from `--ready-file`), logins are held in
//! flight by simulator latency, and the test sends SIGTERM or SIGINT.

use crate::{
    db::TestDb,
    health::{check, health_client, wait_for},
    helpers::{
        TEST_TOKEN_SECRET, TEST_VAULT_KEY, init_test_log, pressed_request, unique_app_id,
        unique_user,
    },
};
use mp_auth::{
    api::health::HEALTH_AUTH,
    proto::{self, auth_client::AuthClient},
};
use secrecy::SecretString;
use std::{
    net::SocketAddr,
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use wechat_sim::{
    Fault, FaultEndpoint, RunningSimulator, SimApp, SimClient, Simulator, SimulatorConfig,
};

/// `mp-auth serve` in a child process, with its simulator and database.
struct ChildServer {
    child: tokio::process::Child,
    addr: SocketAddr,
    sim_client: SimClient,
    app_id: String,
    dir: tempfile::TempDir,
    _sim: RunningSimulator,
    _db: TestDb,
}

impl ChildServer {
    /// Starts the binary with `drain_timeout_ms` and waits until it is SERVING.
    async fn start(drain_timeout_ms: u64) -> ChildServer {
        init_test_log();
        let app_id = unique_app_id();
        let secret = format!("secret-{}", uuid::Uuid::new_v4().simple());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = Simulator::start(
            listener,
            SimulatorConfig {
                apps: vec![SimApp {
                    app_id: app_id.clone(),
                    app_secret: SecretString::from(secret.clone()),
                    open_platform: None,
                }],
                session_refresh: Duration::from_secs(3600),
                force_refresh_min_interval: Duration::ZERO,
                ..SimulatorConfig::default()
            },
        )
        .await
        .unwrap();
        let db = TestDb::mysql().await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mp-auth.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[[apps]]
app_id = "{app_id}"
app_secret = "{secret}"

[wechat]
base_url = "{sim_url}"
timeout_ms = 20000

[database]
url = "{db_url}"
acquire_timeout_ms = 10000

[grpc]
listen = "127.0.0.1:0"
drain_timeout_ms = {drain_timeout_ms}
health_check_interval_ms = 200

[token]
hs256_secret = "{TEST_TOKEN_SECRET}"

[session_keys]
encryption_key = "{TEST_VAULT_KEY}"

[log]
format = "json"
filter = "info"
"#,
                sim_url = sim.base_url(),
                db_url = db.url(),
            ),
        )
        .unwrap();
        let ready = dir.path().join("ready");
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mp-auth"))
            .env_clear()
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mp-auth serve");
        let mut server = ChildServer {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            sim_client: sim.client(),
            app_id,
            dir,
            _sim: sim,
            _db: db,
        };
        let started = Instant::now();
        server.addr = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                break text.trim().parse().expect("an address in the ready file");
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("mp-auth serve exited ({status}): {}", server.stderr());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no ready file after 30 s: {}",
                server.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut health = health_client(server.addr).await;
        wait_for(
            &mut health,
            HEALTH_AUTH,
            ServingStatus::Serving,
            Duration::from_secs(10),
        )
        .await;
        server
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Sends `signal` (`TERM`, `INT`) to the child.
    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the child is running");
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} {pid}");
    }

    /// Waits for the child to exit, at most `within`.
    async fn exit(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "mp-auth serve still running {within:?} after the signal: {}",
                self.stderr()
            ),
        }
    }

    /// Holds every jscode2session call for `ms` until the faults are cleared.
    async fn hold_wechat(&self, ms: u64) {
        self.sim_client
            .set_fault(&Fault {
                latency_ms: Some(ms),
                ..Fault::on(FaultEndpoint::Jscode2Session)
            })
            .await
            .unwrap();
    }

    /// Starts `n` logins, each on its own connection, and returns once the
    /// simulator has seen all of them (so they are in flight, held by latency).
    async fn logins_in_flight(
        &self,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Result<proto::MiniProgramLoginResponse, tonic::Status>>> {
        let before = self.jscode2session_calls().await;
        let mut tasks = Vec::new();
        for _ in 0..n {
            let user = unique_user();
            let pressed = self
                .sim_client
                .press(&self.app_id, &user, None)
                .await
                .unwrap();
            let request = pressed_request(self.app_id.clone(), pressed);
            let mut client = AuthClient::connect(format!("http://{}", self.addr))
                .await
                .unwrap();
            tasks.push(tokio::spawn(async move {
                client
                    .mini_program_login(request)
                    .await
                    .map(tonic::Response::into_inner)
            }));
        }
        let started = Instant::now();
        while self.jscode2session_calls().await < before + n as u64 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "logins did not reach WeChat"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tasks
    }

    async fn jscode2session_calls(&self) -> u64 {
        let stats = self.sim_client.stats().await.unwrap();
        stats.calls_to("jscode2session")
    }
}

/// Polls until a TCP connect to `addr` is refused; returns how long that took.
async fn wait_until_refused(addr: SocketAddr, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return started.elapsed();
            }
            _ => {}
        }
        assert!(
            started.elapsed() < within,
            "{addr} still accepts connections {within:?} after the signal"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Ten logins in flight, then `signal`: every login completes, new connections
/// are refused at once, and the process exits 0 well before the drain timeout.
async fn in_flight_logins_complete_on(signal: &str) {
    const LATENCY_MS: u64 = 1_500;
    const DRAIN_MS: u64 = 10_000;
    let mut server = ChildServer::start(DRAIN_MS).await;
    server.hold_wechat(LATENCY_MS).await;
    let logins = server.logins_in_flight(10).await;

    let signalled = Instant::now();
    server.signal(signal);
    let refused_after = wait_until_refused(server.addr, Duration::from_secs(2)).await;
    let pending = logins.iter().filter(|t| !t.is_finished()).count();
    assert_eq!(
        pending, 10,
        "new connections must be refused while the logins are still in flight \
         (refused {refused_after:?} after SIG{signal})"
    );

    for login in logins {
        let res = login.await.unwrap().unwrap_or_else(|e| {
            panic!(
                "an in-flight login failed during the drain: {e:?}\n{}",
                server.stderr()
            )
        });
        assert!(!res.access_token.is_empty());
        assert!(res.is_new_user);
    }
    let status = server
        .exit(Duration::from_millis(DRAIN_MS) + Duration::from_secs(5))
        .await;
    let exited_after = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(
        exited_after < Duration::from_millis(DRAIN_MS),
        "exited {exited_after:?} after SIG{signal}: the drain should end with the last call"
    );
    eprintln!(
        "SIG{signal}: refused new connections after {refused_after:?}, exited 0 after {exited_after:?}"
    );
    let log = server.stderr();
    assert!(log.contains("gRPC server drained and stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_logins_finish_refuses_new_connections_and_exits_zero() {
    in_flight_logins_complete_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_drains_exactly_like_sigterm() {
    in_flight_logins_complete_on("INT").await;
}

/// The drain is bounded: calls slower than `drain_timeout_ms` are abandoned and
/// the process exits 0 after about the drain time (a requested, bounded
/// shutdown is not a failure). Health goes NOT_SERVING before the exit.
#[tokio::test(flavor = "multi_thread")]
async fn a_drain_timeout_shorter_than_the_calls_still_exits_zero_in_about_the_drain_time() {
    const LATENCY_MS: u64 = 8_000;
    const DRAIN_MS: u64 = 700;
    let mut server = ChildServer::start(DRAIN_MS).await;

    // A Watch stream on the readiness name shows the flip as it happens.
    let mut health = health_client(server.addr).await;
    let mut watch = health
        .watch(HealthCheckRequest {
            service: HEALTH_AUTH.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    assert_eq!(
        check(&mut health, HEALTH_AUTH).await,
        ServingStatus::Serving
    );

    server.hold_wechat(LATENCY_MS).await;
    let logins = server.logins_in_flight(3).await;

    let signalled = Instant::now();
    server.signal("TERM");
    let flipped = watch.message().await;
    let flipped_after = signalled.elapsed();
    let flipped = flipped
        .expect("the watch stream carries the flip before the process exits")
        .expect("a status update");
    assert_eq!(flipped.status(), ServingStatus::NotServing);

    let status = server.exit(Duration::from_secs(5)).await;
    let exited_after = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(flipped_after <= exited_after);
    assert!(
        exited_after >= Duration::from_millis(DRAIN_MS - 100)
            && exited_after < Duration::from_millis(DRAIN_MS + 2_000),
        "exited {exited_after:?} after SIGTERM with a {DRAIN_MS} ms drain"
    );
    eprintln!(
        "NOT_SERVING after {flipped_after:?}, exited 0 after {exited_after:?} (drain {DRAIN_MS} ms)"
    );
    let log = server.stderr();
    assert!(log.contains("drain timeout reached"), "{log}");

    // The abandoned calls fail (connection gone) rather than hang.
    for login in logins {
        let res = tokio::time::timeout(Duration::from_secs(5), login)
            .await
            .expect("an abandoned login returns once the process is gone")
            .unwrap();
        assert!(res.is_err(), "a login held {LATENCY_MS} ms cannot succeed");
    }
}
