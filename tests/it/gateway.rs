//! The HTTP gateway over real HTTP and real gRPC: the backend is a tonic
//! server started here that stands in for `mpauth.v1.Auth` at the transport
//! level. It answers with the statuses the real service builds
//! (`grpc::error::to_status(&LoginError::...)`), chosen by the login code, and
//! records what it received (request, request id, client IP, deadline).

use mp_auth::{
    api::health::HEALTH_AUTH,
    config::{GatewaySettings, LogFormat, LogSettings, Settings},
    domain::FieldError,
    gateway::Gateway,
    grpc::error::to_status,
    login::LoginError,
    proto::{
        self,
        auth_server::{Auth, AuthServer},
        mini_program_login_request::Phone,
    },
};
use serde_json::{Value, json};
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, Once},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use tonic::{Code, Request, Response, Status, transport::server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};
use tonic_types::{ErrorDetails, StatusExt};

/// The legacy request exactly as the original front end sends it (WeChat's documented sample payload).
const ORIGINAL_BODY: &str = r#"{"code":"0c3AbCdEfGh","encryptedData":"CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==","iv":"r7BXXKkLb8qrSNn05n0qiA=="}"#;

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            mp_auth::telemetry::init(&LogSettings {
                format: LogFormat::Pretty,
                filter: "debug,h2=info,hyper=info,tower=info".into(),
            });
        }
    });
}

fn http_client() -> reqwest::Client {
    mp_auth::tls::install_crypto_provider();
    reqwest::Client::builder().build().unwrap()
}

// ---------------------------------------------------------------- backend

/// What the stand-in received for one call.
#[derive(Debug, Clone)]
struct Received {
    request: proto::MiniProgramLoginRequest,
    request_id: Option<String>,
    client_ip: Option<String>,
    grpc_timeout: Option<String>,
}

#[derive(Clone, Default)]
struct StandIn {
    received: Arc<Mutex<Vec<Received>>>,
}

/// The status the real service would send for the error named by `code`.
fn scripted_status(code: &str) -> Option<Status> {
    let err = match code {
        "INVALID_CODE" => LoginError::InvalidField(FieldError::new("code", "is too long")),
        "INVALID_ENCRYPTED_DATA" => {
            LoginError::InvalidField(FieldError::new("encrypted_data", "is required"))
        }
        "INVALID_PHONE_CODE" => LoginError::InvalidField(FieldError::new(
            "phone_code",
            "contains characters that are not printable ASCII",
        )),
        "INVALID_APP_ID" => LoginError::InvalidField(FieldError::new(
            "app_id",
            "must contain only letters, digits, '_' or '-'",
        )),
        "APP_ID_REQUIRED" => LoginError::AppIdRequired,
        "WATERMARK_MISMATCH" => LoginError::WatermarkMismatch,
        "UNKNOWN_APP" => LoginError::UnknownApp,
        "LOGIN_CODE_INVALID" => LoginError::LoginCodeInvalid,
        "LOGIN_CODE_USED" => LoginError::LoginCodeUsed,
        "PHONE_CODE_INVALID" => LoginError::PhoneCodeInvalid,
        "USER_BLOCKED" => LoginError::UserBlocked,
        "SESSION_KEY_STALE" => LoginError::SessionKeyStale,
        "ENCRYPTED_DATA_EXPIRED" => LoginError::EncryptedDataExpired,
        "WECHAT_RATE_LIMITED" => LoginError::RateLimited,
        "WECHAT_UNAVAILABLE" => LoginError::WechatUnavailable,
        "DATABASE_UNAVAILABLE" => LoginError::DatabaseUnavailable,
        "WECHAT_APP_MISCONFIGURED" => LoginError::WechatMisconfigured,
        "INTERNAL" => LoginError::Internal(anyhow::anyhow!("mysql://root:hunter2@db exploded")),
        "RAW_DEADLINE_EXCEEDED" => return Some(Status::deadline_exceeded("backend deadline")),
        "RAW_EXHAUSTED_7S" => {
            let mut details = ErrorDetails::new();
            details.set_retry_info(Some(Duration::from_secs(7)));
            return Some(Status::with_error_details(
                Code::ResourceExhausted,
                "slow down",
                details,
            ));
        }
        _ => return None,
    };
    Some(to_status(&err))
}

#[tonic::async_trait]
impl Auth for StandIn {
    async fn mini_program_login(
        &self,
        request: Request<proto::MiniProgramLoginRequest>,
    ) -> Result<Response<proto::MiniProgramLoginResponse>, Status> {
        let md = request.metadata();
        let get = |key: &str| md.get(key).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (request_id, client_ip, grpc_timeout) =
            (get("x-request-id"), get("x-client-ip"), get("grpc-timeout"));
        let wire = request.into_inner();
        self.received.lock().unwrap().push(Received {
            request: wire.clone(),
            request_id,
            client_ip,
            grpc_timeout,
        });
        if let Some(ms) = wire.code.strip_prefix("slow-") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        }
        if let Some(status) = scripted_status(&wire.code) {
            return Err(status);
        }
        Ok(Response::new(proto::MiniProgramLoginResponse {
            access_token: "eyJ0eXAiOiJhdCtqd3QifQ.eyJzdWIiOiI0MiJ9.sig".into(),
            token_type: "Bearer".into(),
            expires_in: 7200,
            user_id: "42".into(),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            unionid: if wire.code == "with-unionid" {
                "o6_bmasdasdsad6_2sgVt7hMZOPfL".into()
            } else {
                String::new()
            },
            is_new_user: true,
            app_id: "wx4f4bc4dec97d474b".into(),
            refresh_token: "Xy3kQ9vF0bN2pLw7tR5sAg.1.42.1790000000.mac".into(),
            refresh_expires_in: 2_592_000,
            session_id: "Xy3kQ9vF0bN2pLw7tR5sAg".into(),
            linked_by_unionid: false,
        }))
    }

    async fn refresh_session(
        &self,
        request: Request<proto::RefreshSessionRequest>,
    ) -> Result<Response<proto::RefreshSessionResponse>, Status> {
        let token = request.into_inner().refresh_token;
        if token == "reused" {
            return Err(mp_auth::grpc::error::session_status(
                &mp_auth::sessions::SessionError::Reused,
            ));
        }
        Ok(Response::new(proto::RefreshSessionResponse {
            access_token: "eyJ0eXAiOiJhdCtqd3QifQ.eyJzdWIiOiI0MiJ9.new".into(),
            token_type: "Bearer".into(),
            expires_in: 7200,
            refresh_token: format!("{token}-next"),
            refresh_expires_in: 2_592_000,
            session_id: "s".into(),
            user_id: "42".into(),
            app_id: "wx4f4bc4dec97d474b".into(),
        }))
    }

    async fn logout(
        &self,
        _request: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        Ok(Response::new(proto::LogoutResponse {
            user_id: "42".into(),
            sessions_revoked: 1,
        }))
    }

    async fn logout_all(
        &self,
        _request: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        Ok(Response::new(proto::LogoutResponse {
            user_id: "42".into(),
            sessions_revoked: 3,
        }))
    }

    async fn verify_token(
        &self,
        _request: Request<proto::VerifyTokenRequest>,
    ) -> Result<Response<proto::VerifyTokenResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn delete_account(
        &self,
        _request: Request<proto::DeleteAccountRequest>,
    ) -> Result<Response<proto::DeleteAccountResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn get_jwks(
        &self,
        _request: Request<proto::GetJwksRequest>,
    ) -> Result<Response<proto::GetJwksResponse>, Status> {
        Ok(Response::new(proto::GetJwksResponse {
            keys: vec![proto::Jwk {
                kty: "EC".into(),
                crv: "P-256".into(),
                x: "x".into(),
                y: "y".into(),
                kid: "kid-1".into(),
                alg: "ES256".into(),
                r#use: "sig".into(),
            }],
        }))
    }
}

struct Backend {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    health: HealthReporter,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn spawn_backend() -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(HEALTH_AUTH, ServingStatus::Serving)
        .await;
    let stand_in = StandIn::default();
    let received = stand_in.received.clone();
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AuthServer::new(stand_in))
        .serve_with_incoming(TcpIncoming::from(listener));
    let task = tokio::spawn(async move {
        let _ = server.await;
    });
    Backend {
        url,
        received,
        health,
        task,
    }
}

/// A URL where nothing listens.
async fn dead_backend_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

// ---------------------------------------------------------------- gateway

struct TestGateway {
    addr: SocketAddr,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Starts a gateway for `backend_url`; rate limiting is off unless `tweak` turns it on.
async fn spawn_gateway(backend_url: &str, tweak: impl FnOnce(&mut GatewaySettings)) -> TestGateway {
    init_logs();
    let mut settings = Settings::default();
    settings.gateway.listen = "127.0.0.1:0".parse().unwrap();
    settings.gateway.backend_url = backend_url.to_owned();
    settings.gateway.rate_limit_per_sec = 0;
    settings.gateway.backend_timeout_ms = mp_auth::config::Millis::clamped(3_000);
    settings.gateway.drain_timeout_ms = 3_000;
    tweak(&mut settings.gateway);
    let gateway = Gateway::build(&settings).await.unwrap();
    let addr = gateway.local_addr();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(gateway.run_until(async {
        let _ = stopped.await;
    }));
    TestGateway {
        addr,
        http: http_client(),
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestGateway {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `POST /auth/mp_login` with a raw body, as `wx.request` sends it.
    async fn login_raw(&self, body: &str) -> reqwest::Response {
        self.http
            .post(self.url("/auth/mp_login"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    async fn login(&self, body: Value) -> reqwest::Response {
        self.login_raw(&body.to_string()).await
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// Signals shutdown and waits for `run_until` to return.
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("run_until returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// Checks the common error shape and returns the body.
#[track_caller]
fn check_error(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    want_status: u16,
    reason: &str,
) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(headers["cache-control"], "no-store", "{body}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{body}"
    );
    assert!(!body["message"].as_str().unwrap().is_empty(), "{body}");
    assert!(!body["action"].as_str().unwrap().is_empty(), "{body}");
    assert_eq!(
        body["request_id"].as_str().unwrap(),
        headers["x-request-id"].to_str().unwrap(),
        "{body}"
    );
}

async fn expect_error(
    resp: reqwest::Response,
    want_status: u16,
    reason: &str,
) -> (reqwest::header::HeaderMap, Value) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    check_error(status, &headers, &body, want_status, reason);
    (headers, body)
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> u64 {
    headers["retry-after"].to_str().unwrap().parse().unwrap()
}

/// Sends raw bytes on a fresh connection and reads until the server closes it (or `wait` passes).
async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn the_original_request_shape_reaches_the_backend_as_the_encrypted_oneof_byte_for_byte() {
    let backend = spawn_backend().await;
    let gw = spawn_gateway(&backend.url, |_| {}).await;
    let resp = gw.login_raw(ORIGINAL_BODY).await;
    assert_eq!(resp.status(), 200);

    let sent: Value = serde_json::from_str(ORIGINAL_BODY).unwrap();
    let received = backend.received();
    assert_eq!(received.len(), 1);
    let wire = &received[0].request;
    assert_eq!(wire.code, sent["code"].as_str().unwrap());
    assert_eq!(wire.app_id, "");
    assert_eq!(
        wire.phone,
        Some(Phone::Encrypted(proto::EncryptedPhone {
            encrypted_data: sent["encryptedData"].as_str().unwrap().to_owned(),
            iv: sent["iv"].as_str().unwrap().to_owned(),
        }))
    );
}

#[tokio::test]
async fn the_new_request_shape_reaches_the_backend_as_phone_code_and_wins_over_encrypted_data() {
    let backend = spawn_backend().await;
    let gw = spawn_gateway(&backend.url, |_| {}).await;
    let resp = gw
        .login(json!({"code": "c-1", "phoneCode": "pc-1", "appId": "wx4f4bc4dec97d474b"}))
        .await;
    assert_eq!(resp.status(), 200);
    let resp = gw
        .login(json!({"code": "c-2", "phoneCode": "pc-2", "encryptedData": "ZW5j", "iv": "aXY=", "extra": [1, 2]}))
        .await;
    assert_eq!(resp.status(), 200);

    let received = backend.received();
    assert_eq!(
        received[0].request.phone,
        Some(Phone::PhoneCode("pc-1".into()))
    );
    assert_eq!(received[0].request.app_id, "wx4f4bc4dec97d474b");
    assert_eq!(
        received[1].request.phone,
        Some(Phone::PhoneCode("pc-2".into()))
    );
}

#[tokio::test]
async fn a_successful_login_returns_the_token_fields_and_is_never_cached() {
    let backend = spawn_backend().await;
    let gw = spawn_gateway(&backend.url, |_| {}).await;
    let resp = gw
        .http
        .post(gw.url("/auth/mp_login"))
        .header("content-type", "application/json; charset=utf-8")
        .body(json!({"code": "with-unionid", "phoneCode": "p"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["pragma"], "no-cache");
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["access_token"],
        "eyJ0eXAiOiJhdCtqd3QifQ.eyJzdWIiOiI0MiJ9.sig"
    );
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 7200);
    assert_eq!(body["openid"], "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
    assert_eq!(body["user_id"], "42");
    assert_eq!(body["is_new_user"], true);
    assert_eq!(body["unionid"], "o6_bmasdasdsad6_2sgVt7hMZOPfL");

    let body: Value = gw
        .login(json!({"code": "no-unionid", "phoneCode": "p"}))
        .await
        .json()
        .await
        .unwrap();
    assert!(body.get("unionid").is_none(), "{body}");
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys.len(),
        8,
        "exactly access_token, token_type, expires_in, openid, user_id, is_new_user, refresh_token, refresh_expires_in: {keys:?}"
    );
}

#[tokio::test]
async fn every_backend_status_maps_to_its_http_row() {
    let backend = spawn_backend().await;
    let gw = spawn_gateway(&backend.url, |_| {}).await;
    // (code that scripts the backend, HTTP status, reason, field)
    let rows: &[(&str, u16, &str, Option<&str>)] = &[
        ("INVALID_CODE", 400, "INVALID_ARGUMENT", Some("code")),
        (
            "INVALID_ENCRYPTED_DATA",
            400,
            "INVALID_ARGUMENT",
            Some("encryptedData"),
        ),
        (
            "INVALID_PHONE_CODE",
            400,
            "INVALID_ARGUMENT",
            Some("phoneCode"),
        ),
        ("INVALID_APP_ID", 400, "INVALID_ARGUMENT", Some("appId")),
        ("APP_ID_REQUIRED", 400, "APP_ID_REQUIRED", Some("appId")),
        ("WATERMARK_MISMATCH", 400, "WATERMARK_MISMATCH", None),
        ("UNKNOWN_APP", 400, "UNKNOWN_APP", None),
        ("LOGIN_CODE_INVALID", 401, "LOGIN_CODE_INVALID", None),
        ("LOGIN_CODE_USED", 401, "LOGIN_CODE_USED", None),
        ("PHONE_CODE_INVALID", 401, "PHONE_CODE_INVALID", None),
        ("USER_BLOCKED", 403, "USER_BLOCKED", None),
        ("SESSION_KEY_STALE", 409, "SESSION_KEY_STALE", None),
        (
            "ENCRYPTED_DATA_EXPIRED",
            409,
            "ENCRYPTED_DATA_EXPIRED",
            None,
        ),
        ("WECHAT_RATE_LIMITED", 429, "WECHAT_RATE_LIMITED", None),
        ("RAW_EXHAUSTED_7S", 429, "RATE_LIMITED", None),
        ("WECHAT_UNAVAILABLE", 503, "WECHAT_UNAVAILABLE", None),
        ("DATABASE_UNAVAILABLE", 503, "DATABASE_UNAVAILABLE", None),
        ("RAW_DEADLINE_EXCEEDED", 504, "TIMEOUT", None),
        ("WECHAT_APP_MISCONFIGURED", 500, "INTERNAL", None),
        ("INTERNAL", 500, "INTERNAL", None),
    ];
    for &(code, status, reason, field) in rows {
        let resp = gw.login(json!({"code": code, "phoneCode": "p"})).await;
        let (headers, body) = expect_error(resp, status, reason).await;
        assert_eq!(body["field"].as_str(), field, "{code}: {body}");
        match status {
            429 => assert_eq!(
                retry_after(&headers),
                if code == "RAW_EXHAUSTED_7S" { 7 } else { 60 },
                "{code}"
            ),
            503 => assert!((1..=5).contains(&retry_after(&headers)), "{code}"),
            _ => assert!(!headers.contains_key("retry-after"), "{code}"),
        }
        match reason {
            "LOGIN_CODE_INVALID" | "LOGIN_CODE_USED" => {
                assert!(
                    body["action"]
                        .as_str()
                        .unwrap()
                        .contains("call wx.login again")
                );
            }
            "PHONE_CODE_INVALID" => {
                assert!(
                    body["action"]
                        .as_str()
                        .unwrap()
                        .contains("tap the phone button again")
                );
            }
            "SESSION_KEY_STALE" | "ENCRYPTED_DATA_EXPIRED" => {
                assert!(
                    body["action"]
                        .as_str()
                        .unwrap()
                        .contains("BEFORE showing the phone button")
                );
            }
            "INTERNAL" => assert_eq!(body["message"], "internal error"),
            _ => {}
        }
    }
    // Each login was forwarded exactly once: the gateway never retries.
    assert_eq!(backend.received().len(), rows.len());
}

#[tokio::test]
async fn an_unreachable_backend_is_a_503_backend_unavailable_and_healthz_stays_ok() {
    let gw = spawn_gateway(&dead_backend_url().await, |_| {}).await;
    let resp = gw.login(json!({"code": "c", "phoneCode": "p"})).await;
    let (headers, body) = expect_error(resp, 503, "BACKEND_UNAVAILABLE").await;
    assert!((1..=5).contains(&retry_after(&headers)));
    assert!(
        !body["message"].as_str().unwrap().contains("127.0.0.1"),
        "{body}"
    );

    let resp = gw.get("/healthz").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn a_backend_slower_than_the_deadline_is_a_504_timeout_and_the_deadline_is_propagated() {
    let backend = spawn_backend().await;
    let gw = spawn_gateway(&backend.url, |g| {
        g.backend_timeout_ms = mp_auth::config::Millis::clamped(300)
    })
    .await;
    let started = Instant::now();
    let resp = gw
        .login(json!({"code": "slow-2000", "phoneCode": "p"}))
        .await;
    expect_error(resp, 504, "TIMEOUT").await;
    assert!(started.elapsed() < Duration::from_millis(1_500));
    let received = backend.received();
    assert_eq!(received.len(), 1, "never retried");
    assert!(received[0].grpc_timeout.is_some(), "grpc-timeout sent");
}

#[tokio::test]
async fn gateway_level_errors_are_json_and_never_reach_the_backend() {
    let backend = spawn_backend().await;
    let gw = spawn_gateway(&backend.url, |g| g.max_body_bytes = 1024).await;

    // 413: declared too large.
    let big = json!({"code": "c", "phoneCode": "x".repeat(2_000)}).to_string();
    expect_error(gw.login_raw(&big).await, 413, "PAYLOAD_TOO_LARGE").await;

    // 415: wrong and missing content types.
    let resp = gw
        .http
        .post(gw.url("/auth/mp_login"))
        .header("content-type", "text/plain")
        .body(r#"{"code":"c","phoneCode":"p"}"#)
        .send()
        .await
        .unwrap();
    expect_error(resp, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    let resp = gw
        .http
        .post(gw.url("/auth/mp_login"))
        .body(r#"{"code":"c","phoneCode":"p"}"#)
        .send()
        .await
        .unwrap();
    expect_error(resp, 415, "UNSUPPORTED_MEDIA_TYPE").await;

    // 400: malformed JSON, wrong types, missing code.
    expect_error(
        gw.login_raw(r#"{"code": "c", "#).await,
        400,
        "MALFORMED_JSON",
    )
    .await;
    let (_, body) = expect_error(
        gw.login_raw(r#"{"code": 12345, "phoneCode": "p"}"#).await,
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    assert_eq!(body["field"], "code");
    let (_, body) = expect_error(
        gw.login_raw(r#"{"code": "c", "encryptedData": {"a": 1}, "iv": "i"}"#)
            .await,
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    assert_eq!(body["field"], "encryptedData");
    let (_, body) = expect_error(
        gw.login_raw(r#"{"phoneCode": "p"}"#).await,
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    assert_eq!(body["field"], "code");

    // 404 and 405.
    expect_error(gw.get("/no/such/route").await, 404, "NOT_FOUND").await;
    let resp = gw.get("/auth/mp_login").await;
    let allow = resp.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("POST"), "{allow}");
    expect_error(resp, 405, "METHOD_NOT_ALLOWED").await;
    let resp = gw.http.post(gw.url("/healthz")).send().await.unwrap();
    expect_error(resp, 405, "METHOD_NOT_ALLOWED").await;

    assert!(backend.received().is_empty());
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_with_413_json() {
    let backend = spawn_backend().await;
    let gw = spawn_gateway(&backend.url, |g| g.max_body_bytes = 1024).await;
    let chunk = "x".repeat(800);
    let request = format!(
        "POST /auth/mp_login HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let response = raw_exchange(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains(r#""reason":"PAYLOAD_TOO_LARGE""#),
        "{response}"
    );
    assert!(backend.received().is_empty());
}

#[tokio::test]
async fn an_untrusted_peer_is_rate_limited_by_its_own_address_whatever_x_forwarded_for_says() {
    let backend = spawn_backend().await;
    let gw = spawn_gateway(&backend.url, |g| {
        g.rate_limit_per_sec = 1;
        g.rate_limit_burst = 2;
    })
    .await;
    let send = |spoof: &'static str| {
        gw.http
            .post(gw.url("/auth/mp_login"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", spoof)
            .body(r#"{"code":"c","phoneCode":"p"}"#)
            .send()
    };
    assert_eq!(send("198.51.100.1").await.unwrap().status(), 200);
    assert_eq!(send("198.51.100.2").await.unwrap().status(), 200);
    let (headers, _) = expect_error(send("198.51.100.3").await.unwrap(), 429, "RATE_LIMITED").await;
    assert!(retry_after(&headers) >= 1);

    let ips: Vec<_> = backend
        .received()
        .into_iter()
        .map(|r| r.client_ip)
        .collect();
    assert_eq!(ips, vec![Some("127.0.0.1".to_owned()); 2]);

    // Probes are never limited.
    for _ in 0..5 {
        assert_eq!(gw.get("/healthz").await.status(), 200);
    }
}

#[tokio::test]
async fn a_trusted_proxy_s_x_forwarded_for_decides_the_client_and_its_bucket() {
    let backend = spawn_backend().await;
    let gw = spawn_gateway(&backend.url, |g| {
        g.rate_limit_per_sec = 1;
        g.rate_limit_burst = 1;
        g.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    let send = |xff: &'static str| {
        gw.http
            .post(gw.url("/auth/mp_login"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", xff)
            .body(r#"{"code":"c","phoneCode":"p"}"#)
            .send()
    };
    assert_eq!(send("6.6.6.6, 203.0.113.1").await.unwrap().status(), 200);
    expect_error(send("203.0.113.1").await.unwrap(), 429, "RATE_LIMITED").await;
    assert_eq!(send("203.0.113.2").await.unwrap().status(), 200);

    let ips: Vec<_> = backend
        .received()
        .into_iter()
        .map(|r| r.client_ip)
        .collect();
    assert_eq!(
        ips,
        vec![
            Some("203.0.113.1".to_owned()),
            Some("203.0.113.2".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_sane_request_id_is_propagated_and_echoed_and_an_odd_one_is_replaced() {
    let backend = spawn_backend().await;
    let gw = spawn_gateway(&backend.url, |_| {}).await;
    let send = |id: &'static str, code: &'static str| {
        gw.http
            .post(gw.url("/auth/mp_login"))
            .header("content-type", "application/json")
            .header("x-request-id", id)
            .body(json!({"code": code, "phoneCode": "p"}).to_string())
            .send()
    };
    let resp = send("trace-4f2a_1.b", "ok").await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-4f2a_1.b");
    let (_, body) = expect_error(
        send("trace-4f2a_1.b", "LOGIN_CODE_USED").await.unwrap(),
        401,
        "LOGIN_CODE_USED",
    )
    .await;
    assert_eq!(body["request_id"], "trace-4f2a_1.b");

    let resp = send("not sane; <script>", "ok").await.unwrap();
    let echoed = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");

    let received = backend.received();
    assert_eq!(received[0].request_id.as_deref(), Some("trace-4f2a_1.b"));
    assert_eq!(received[1].request_id.as_deref(), Some("trace-4f2a_1.b"));
    assert_eq!(received[2].request_id.as_deref(), Some(echoed.as_str()));
    assert_eq!(received[2].client_ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn readyz_follows_the_backend_s_health() {
    let down = spawn_gateway(&dead_backend_url().await, |_| {}).await;
    expect_error(down.get("/readyz").await, 503, "NOT_READY").await;

    let backend = spawn_backend().await;
    let gw = spawn_gateway(&backend.url, |_| {}).await;
    let resp = gw.get("/readyz").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"status": "ok"}));

    backend
        .health
        .set_service_status(HEALTH_AUTH, ServingStatus::NotServing)
        .await;
    // The backend's answer is reused for a second (one health call per second
    // per gateway, however many probes arrive): the change shows within ~1 s.
    let started = Instant::now();
    while gw.get("/readyz").await.status() == 200 {
        assert!(
            started.elapsed() < Duration::from_millis(2_500),
            "/readyz still 200 after the backend went NOT_SERVING"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expect_error(gw.get("/readyz").await, 503, "NOT_READY").await;
    // A flood of probes is answered from the cached answer, all alike and fast.
    let flood: Vec<_> = (0..200).map(|_| gw.get("/readyz")).collect();
    for resp in futures::future::join_all(flood).await {
        assert_eq!(resp.status(), 503);
    }
}

#[tokio::test]
async fn openapi_json_documents_the_login_endpoint() {
    let gw = spawn_gateway(&dead_backend_url().await, |_| {}).await;
    let resp = gw.get("/openapi.json").await;
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/auth/mp_login"]["post"].is_object(), "{doc}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let gw = spawn_gateway(&dead_backend_url().await, |g| {
        g.header_read_timeout_ms = mp_auth::config::Millis::clamped(300)
    })
    .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"POST /auth/mp_login HTTP/1.1\r\nHost: gw\r\nContent-Type: appl")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection stayed open");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

    // A silent connection is closed too.
    let started = Instant::now();
    let response = raw_exchange(gw.addr, b"", Duration::from_secs(5)).await;
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 408"),
        "{response}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_login_finish_then_returns() {
    let backend = spawn_backend().await;
    let gw = spawn_gateway(&backend.url, |_| {}).await;
    let http = gw.http.clone();
    let url = gw.url("/auth/mp_login");
    let in_flight = tokio::spawn(async move {
        http.post(url)
            .header("content-type", "application/json")
            .body(r#"{"code":"slow-500","phoneCode":"p"}"#)
            .send()
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let addr = gw.addr;
    gw.shutdown().await;
    assert_eq!(in_flight.await.unwrap(), 200);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn a_forged_x_forwarded_for_from_a_peer_outside_the_trusted_ranges_is_ignored() {
    let backend = spawn_backend().await;
    // Proxies are trusted, but this client (127.0.0.1) is not one of them.
    let gw = spawn_gateway(&backend.url, |g| {
        g.rate_limit_per_sec = 1;
        g.rate_limit_burst = 1;
        g.trusted_proxies = vec!["10.0.0.0/8".into(), "192.0.2.7".into()];
    })
    .await;
    let send = |xff: &'static str| {
        gw.http
            .post(gw.url("/auth/mp_login"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", xff)
            .body(r#"{"code":"c","phoneCode":"p"}"#)
            .send()
    };
    assert_eq!(send("203.0.113.50").await.unwrap().status(), 200);
    // A new forged address per request does not buy a new bucket.
    expect_error(send("203.0.113.51").await.unwrap(), 429, "RATE_LIMITED").await;
    expect_error(
        send("10.0.0.1, 203.0.113.52").await.unwrap(),
        429,
        "RATE_LIMITED",
    )
    .await;
    let ips: Vec<_> = backend
        .received()
        .into_iter()
        .map(|r| r.client_ip)
        .collect();
    assert_eq!(ips, vec![Some("127.0.0.1".to_owned())]);
}

#[tokio::test]
async fn a_panicking_handler_answers_500_json_and_the_gateway_keeps_serving() {
    use tower::ServiceExt as _;
    let state = mp_auth::gateway::AppState::new(&mp_auth::config::GatewaySettings {
        backend_url: dead_backend_url().await,
        ..Default::default()
    })
    .unwrap();
    let app = mp_auth::gateway::with_edge(
        axum::Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    if std::hint::black_box(true) {
                        panic!("boom");
                    }
                    "unreachable"
                }),
            )
            .route("/fine", axum::routing::get(|| async { "fine" })),
        state,
    );
    let boom = app
        .clone()
        .oneshot(
            http::Request::get("/boom")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(boom.status(), 500);
    assert!(boom.headers().contains_key("x-request-id"));
    let body = axum::body::to_bytes(boom.into_body(), 4096).await.unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["reason"], "INTERNAL");
    assert!(
        !json.to_string().contains("boom"),
        "no panic payload: {json}"
    );
    let fine = app
        .oneshot(
            http::Request::get("/fine")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
}

/// A TCP relay in front of `backend` that counts the connections it accepted.
async fn counting_relay(backend: &str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let upstream: SocketAddr = backend.trim_start_matches("http://").parse().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn calls_to_the_backend_take_each_of_its_connections_in_turn() {
    let backend = spawn_backend().await;
    let (relay, accepted) = counting_relay(&backend.url).await;
    let gateway = spawn_gateway(&relay, |g| g.backend_connections = 3).await;
    for _ in 0..6 {
        let res = gateway.login_raw(ORIGINAL_BODY).await;
        assert_eq!(res.status(), 200);
    }
    assert_eq!(backend.received().len(), 6);
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "one HTTP/2 connection per gateway.backend_connections"
    );
}
