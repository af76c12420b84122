//! `TestApp`: the real gRPC service on a free port, against a fresh MariaDB
//! database and a WeChat simulator on its own free port. One method per RPC.
//! Logs are silent unless `TEST_LOG` is set.

#![allow(dead_code)]

use crate::db::TestDb;
use mp_auth::{
    app::App,
    config::{AppSettings, HttpUrl, Millis, Settings},
    grpc::GrpcServer,
    proto::{self, auth_client::AuthClient, mini_program_login_request::Phone},
    store::Backend,
    tokens::TokenIssuer,
};
use secrecy::SecretString;
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tonic::transport::Channel;
use wechat_sim::{Pressed, RunningSimulator, SimApp, SimClient, Simulator, SimulatorConfig};

/// An HS256 secret, for tests of the single-service (HS256) setup.
pub const TEST_TOKEN_SECRET: &str = "test-signing-secret-0123456789-abcdefghijklmnop";
/// The ES256 key every test server signs with (`openssl genpkey`, test only).
pub const TEST_SIGNING_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgLUyojo+uCPDvu8ly
l4Bhok+P2JEBdN75FdFOnIxOT1ihRANCAATrdpTullnp2xdb++KsvpMm/WA0MmaN
TNd29croydamb1kNX2eTD5mVHM9888Snnc5w+8uArhA677FzHv29PFx6
-----END PRIVATE KEY-----
";
/// The session-key vault key of every test server (base64 of 32 bytes).
pub const TEST_VAULT_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

static INIT_LOG: std::sync::Once = std::sync::Once::new();

/// Installs a log subscriber when `TEST_LOG` is set.
pub fn init_test_log() {
    INIT_LOG.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info")
                .with_test_writer()
                .try_init();
        }
    });
}

/// A unique app id, so tests sharing the simulator image never collide.
pub fn unique_app_id() -> String {
    format!("wx{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// A `wx.login` code of WeChat's shape that WeChat never issued.
pub const WELL_FORMED_CODE: &str = "0c3Xyz0w3Ojbq03V7a0w3ZbAmE2Xyz0D";
/// A phone code of WeChat's shape (64 hex digits) that WeChat never issued.
pub const WELL_FORMED_PHONE_CODE: &str =
    "e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144";

/// A unique handle for a simulated WeChat user.
pub fn unique_user() -> String {
    format!("user-{}", uuid::Uuid::new_v4().simple())
}

/// A unique CN mobile number.
pub fn unique_phone() -> String {
    let n = uuid::Uuid::new_v4().as_u128() % 100_000_000;
    format!("139{n:08}")
}

/// Knobs for [`TestApp::spawn_with`].
pub struct TestAppOptions {
    /// How many apps to configure (all bound to one open platform).
    pub apps: usize,
    /// The simulator's session_key refresh period.
    pub session_refresh: Duration,
    /// Changes to the server's settings before it starts.
    pub tweak: Box<dyn FnOnce(&mut Settings) + Send>,
}

impl Default for TestAppOptions {
    fn default() -> Self {
        Self {
            apps: 1,
            session_refresh: Duration::from_secs(3600),
            tweak: Box::new(|_| {}),
        }
    }
}

/// `n` apps as `(app_id, app_secret)`, with fresh ids and secrets.
pub fn new_apps(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|_| {
            (
                unique_app_id(),
                format!("secret-{}", uuid::Uuid::new_v4().simple()),
            )
        })
        .collect()
}

/// A WeChat simulator on a free port that knows `apps` (all bound to one open platform).
pub async fn start_simulator(
    apps: &[(String, String)],
    session_refresh: Duration,
) -> RunningSimulator {
    let sim_apps = apps
        .iter()
        .map(|(id, secret)| SimApp {
            app_id: id.clone(),
            app_secret: SecretString::from(secret.clone()),
            open_platform: Some("test-open-platform".into()),
        })
        .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(
        listener,
        SimulatorConfig {
            apps: sim_apps,
            session_refresh,
            force_refresh_min_interval: Duration::ZERO,
            ..SimulatorConfig::default()
        },
    )
    .await
    .unwrap()
}

/// A running service under test.
pub struct TestApp {
    pub sim: RunningSimulator,
    pub sim_client: SimClient,
    pub db: TestDb,
    pub grpc_addr: SocketAddr,
    pub settings: Settings,
    /// The application the server runs (its store, sessions, token issuer...).
    pub app: Arc<App>,
    /// The configured app ids (the first is the default).
    pub app_ids: Vec<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The service's test settings for `apps` pointing at `sim_url` and `db_url`.
pub fn test_settings(apps: &[(String, String)], sim_url: &str, db_url: &str) -> Settings {
    let mut s = Settings {
        apps: apps
            .iter()
            .map(|(id, secret)| AppSettings {
                app_id: id.clone(),
                app_secret: Some(SecretString::from(secret.clone())),
                app_secret_file: None,
            })
            .collect(),
        ..Settings::default()
    };
    s.wechat.base_url = HttpUrl::parse(sim_url).unwrap();
    s.wechat.timeout_ms = Millis::clamped(2_000);
    // Tests inject 45011 and expect the next call to reach the simulator.
    s.wechat.rate_limit_cooldown_secs = 0;
    s.database.url = Some(SecretString::from(db_url.to_owned()));
    s.database.acquire_timeout_ms = 10_000;
    s.token.signing_key = Some(SecretString::from(TEST_SIGNING_KEY));
    s.session_keys.encryption_key = Some(SecretString::from(TEST_VAULT_KEY));
    s.grpc.listen = ([127, 0, 0, 1], 0).into();
    s.grpc.health_check_interval_ms = Millis::clamped(200);
    s.gateway.listen = ([127, 0, 0, 1], 0).into();
    s
}

impl TestApp {
    /// One app, a long session_key refresh period.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(TestAppOptions::default()).await
    }

    pub async fn spawn_with(opts: TestAppOptions) -> TestApp {
        init_test_log();
        let apps = new_apps(opts.apps);
        let sim = start_simulator(&apps, opts.session_refresh).await;
        let db = TestDb::new(Backend::Mysql).await;
        let mut settings = test_settings(&apps, &sim.base_url(), db.url());
        (opts.tweak)(&mut settings);
        let app = App::build(&settings).await.expect("app builds");
        let server = GrpcServer::bind(app.clone(), &settings.grpc)
            .await
            .expect("server binds");
        let grpc_addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        let sim_client = sim.client();
        TestApp {
            sim,
            sim_client,
            db,
            grpc_addr,
            settings,
            app,
            app_ids: apps.into_iter().map(|(id, _)| id).collect(),
            stop: Some(stop),
            server: Some(task),
        }
    }

    /// The default (first) app id.
    pub fn app_id(&self) -> &str {
        &self.app_ids[0]
    }

    /// A gRPC client of the service.
    pub async fn client(&self) -> AuthClient<Channel> {
        AuthClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .unwrap()
    }

    /// The server's token issuer, to mint and verify tokens.
    pub fn token_issuer(&self) -> Arc<TokenIssuer> {
        self.app.tokens.clone()
    }

    /// Calls `MiniProgramLogin` with a raw request.
    pub async fn login_raw(
        &self,
        req: proto::MiniProgramLoginRequest,
    ) -> Result<proto::MiniProgramLoginResponse, tonic::Status> {
        self.client()
            .await
            .mini_program_login(req)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Plays `wx.login` for `user` of the default app: a fresh login code.
    pub async fn wx_login(&self, user: &str) -> String {
        self.sim_client
            .login(self.app_id(), user, None)
            .await
            .unwrap()
            .code
    }

    /// Plays one tap of "一键登录" for `user` of the default app: `wx.login`,
    /// then the phone button.
    pub async fn press(&self, user: &str) -> Pressed {
        self.sim_client
            .press(self.app_id(), user, None)
            .await
            .unwrap()
    }

    /// Presses the login button for `user` of the default app and logs in at
    /// the replica listening on `addr` (another server on the same database).
    pub async fn login_at(&self, addr: SocketAddr, user: &str) -> proto::MiniProgramLoginResponse {
        AuthClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .mini_program_login(pressed_request(self.app_id(), self.press(user).await))
            .await
            .unwrap()
            .into_inner()
    }

    /// Presses the login button for `user` and logs in with the new flow.
    pub async fn login_with_phone_code(
        &self,
        app_id: &str,
        user: &str,
        phone: Option<&str>,
    ) -> Result<proto::MiniProgramLoginResponse, tonic::Status> {
        let pressed = self.sim_client.press(app_id, user, phone).await.unwrap();
        self.login_raw(pressed_request(app_id, pressed)).await
    }

    /// Presses the login button for `user` and logs in with the legacy fields.
    pub async fn login_with_encrypted_data(
        &self,
        app_id: &str,
        user: &str,
        phone: Option<&str>,
    ) -> Result<proto::MiniProgramLoginResponse, tonic::Status> {
        let pressed = self.sim_client.press(app_id, user, phone).await.unwrap();
        self.login_raw(encrypted_request(
            app_id,
            pressed.login.code,
            pressed.phone.encrypted_data,
            pressed.phone.iv,
        ))
        .await
    }

    /// Stops the server (bounded drain) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.server.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An HTTP gateway in front of a gRPC backend, stopped when dropped.
pub struct RunningGateway {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts a gateway with `settings` (on a free port) forwarding to `backend`.
pub async fn start_gateway(settings: &Settings, backend: SocketAddr) -> RunningGateway {
    let mut settings = settings.clone();
    settings.gateway.listen = ([127, 0, 0, 1], 0).into();
    settings.gateway.backend_url = format!("http://{backend}");
    let gateway = mp_auth::gateway::Gateway::build(&settings).await.unwrap();
    let url = format!("http://{}", gateway.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway.run_until(async {
        let _ = stopped.await;
    }));
    RunningGateway { url, _stop: stop }
}

/// A new-flow request: the `wx.login` code and the phone button's code.
pub fn phone_code_request(
    app_id: impl Into<String>,
    code: impl Into<String>,
    phone_code: impl Into<String>,
) -> proto::MiniProgramLoginRequest {
    proto::MiniProgramLoginRequest {
        app_id: app_id.into(),
        code: code.into(),
        phone: Some(Phone::PhoneCode(phone_code.into())),
    }
}

/// The new-flow request of one press of the login button.
pub fn pressed_request(
    app_id: impl Into<String>,
    pressed: Pressed,
) -> proto::MiniProgramLoginRequest {
    phone_code_request(app_id, pressed.login.code, pressed.phone.code)
}

/// A silent login (静默登录): the `wx.login` code alone.
pub fn silent_request(
    app_id: impl Into<String>,
    code: impl Into<String>,
) -> proto::MiniProgramLoginRequest {
    proto::MiniProgramLoginRequest {
        app_id: app_id.into(),
        code: code.into(),
        phone: None,
    }
}

/// A legacy-flow request.
pub fn encrypted_request(
    app_id: &str,
    code: String,
    encrypted_data: String,
    iv: String,
) -> proto::MiniProgramLoginRequest {
    proto::MiniProgramLoginRequest {
        app_id: app_id.into(),
        code,
        phone: Some(Phone::Encrypted(proto::EncryptedPhone {
            encrypted_data,
            iv,
        })),
    }
}

/// The status's ErrorInfo reason.
pub fn reason(status: &tonic::Status) -> String {
    mp_auth::api::reason_of(status).unwrap_or_default()
}
