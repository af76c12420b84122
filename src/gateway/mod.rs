//! The HTTP gateway for mini-program clients (`wx.request` speaks HTTPS+JSON,
//! not gRPC). It holds no WeChat secret and no database credential: it turns
//! `POST /auth/mp_login` into one `mpauth.v1.Auth/MiniProgramLogin` call over a
//! pooled, lazily connected channel, and the resulting status into HTTP with
//! the one table in [`error::from_status`]. See docs/http-api.md.

pub mod client_ip;
pub mod edge;
pub mod error;
pub mod health;
pub mod jwks;
pub mod login;
pub mod openapi;
pub mod rate_limit;
pub mod request_id;
mod server;
pub mod session;

pub use error::{ApiError, ErrorBody, Reason, from_status};
pub use login::{LoginRequest, LoginResponse};

use crate::{
    config::{ConfigError, GatewaySettings, Settings},
    proto::auth_client::AuthClient,
};
use anyhow::Context as _;
use axum::{
    Router,
    routing::{get, post},
};
use client_ip::TrustedProxies;
use rate_limit::RateLimiter;
use std::{
    future::Future,
    net::SocketAddr,
    ops::Deref,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};
use tokio::net::TcpListener;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::health_client::HealthClient;

/// Longest wait of `/readyz` for the backend's health answer.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for a TCP connection to the backend.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What every handler shares: the backend clients and limits.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

/// The contents of [`AppState`].
pub struct StateInner {
    /// `mpauth.v1.Auth` clients, one per backend connection (`gateway.backend_connections`);
    /// [`StateInner::auth`] hands them out in turn.
    backends: Vec<AuthClient<InterceptedService<Channel, BackendKey>>>,
    next_backend: std::sync::atomic::AtomicUsize,
    /// `grpc.health.v1.Health` client over the first connection.
    pub health: HealthClient<Channel>,
    /// Deadline of one forwarded login.
    pub backend_timeout: Duration,
    /// Deadline of the `/readyz` health check.
    pub ready_timeout: Duration,
    /// Time allowed for the request body once the headers are in.
    pub body_read_timeout: Duration,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Peers whose `X-Forwarded-For` is believed.
    pub proxies: TrustedProxies,
    /// Warns once when all traffic comes from one untrusted forwarding peer.
    pub proxy_watch: client_ip::UntrustedProxyWatch,
    /// Per-client-IP limiter; `None` when disabled.
    pub limiter: Option<RateLimiter>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    pub draining: AtomicBool,
    /// The backend's last health answer, reused by `/readyz` for a second.
    pub readiness: health::ReadinessCache,
    /// The backend's public keys, reused by the JWKS endpoint for a minute.
    pub jwks: jwks::JwksCache,
    /// `iss` of the tokens (discovery document).
    pub issuer: String,
    /// This gateway's public base URL, if configured (discovery document).
    pub public_url: Option<String>,
}

impl AppState {
    /// Sets the tokens' `iss` (published in the discovery document).
    fn with_issuer(self, issuer: &str) -> Self {
        match Arc::try_unwrap(self.0) {
            Ok(mut inner) => {
                inner.issuer = issuer.to_owned();
                Self(Arc::new(inner))
            }
            Err(shared) => Self(shared),
        }
    }
}

impl StateInner {
    /// The next backend client, in turn over the backend connections.
    pub fn auth(&self) -> AuthClient<InterceptedService<Channel, BackendKey>> {
        use std::sync::atomic::Ordering;
        let n = self.next_backend.fetch_add(1, Ordering::Relaxed);
        self.backends[n % self.backends.len()].clone()
    }
}

/// Adds the gateway's own API key (`gateway.api_key[_file]`), if any, to every
/// call to the backend, as `authorization: Bearer ...` (marked sensitive).
#[derive(Clone)]
pub struct BackendKey(Option<tonic::metadata::AsciiMetadataValue>);

impl BackendKey {
    fn new(settings: &GatewaySettings) -> Result<Self, ConfigError> {
        let key = crate::config::resolve_secret(
            "gateway.api_key",
            &settings.api_key,
            &settings.api_key_file,
        )?;
        let Some(key) = key else {
            return Ok(Self(None));
        };
        let mut value = tonic::metadata::AsciiMetadataValue::try_from(format!(
            "Bearer {}",
            secrecy::ExposeSecret::expose_secret(&key).trim()
        ))
        .map_err(|_| {
            invalid(
                "api_key",
                "is not a printable ASCII key",
                "use the key `mp-auth callers new-key` printed",
            )
        })?;
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

impl tonic::service::Interceptor for BackendKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert(crate::api::metadata::AUTHORIZATION, value.clone());
        }
        Ok(request)
    }
}

impl Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

fn invalid(setting: &str, problem: impl Into<String>, fix: &str) -> ConfigError {
    ConfigError::Invalid {
        setting: format!("gateway.{setting}"),
        problem: problem.into(),
        fix: fix.to_owned(),
    }
}

impl AppState {
    /// Validates the settings and creates the lazily connecting channel (the
    /// gateway starts even when the backend is down). Needs a tokio runtime.
    pub fn new(settings: &GatewaySettings) -> Result<Self, ConfigError> {
        if !settings.backend_url.starts_with("http://") {
            return Err(invalid(
                "backend_url",
                format!("{:?} is not an http:// URL", settings.backend_url),
                "use e.g. http://mp-auth-grpc:50051 (MP_AUTH_GATEWAY__BACKEND_URL or --backend); \
                 TLS to the backend belongs to the mesh",
            ));
        }
        for (name, value) in [
            ("max_body_bytes", settings.max_body_bytes as u64),
            ("max_connections", settings.max_connections as u64),
        ] {
            if value == 0 {
                return Err(invalid(
                    name,
                    "must be positive",
                    "see docs/http-api.md for defaults",
                ));
            }
        }
        if settings.max_header_bytes < server::MIN_HEADER_BYTES {
            return Err(invalid(
                "max_header_bytes",
                format!(
                    "{} is below {}",
                    settings.max_header_bytes,
                    server::MIN_HEADER_BYTES
                ),
                "the default (16384) fits every mini-program request",
            ));
        }
        let proxies = TrustedProxies::parse(&settings.trusted_proxies).map_err(|e| {
            invalid(
                "trusted_proxies",
                format!("{:?} is neither an IP address nor a CIDR", e.entry),
                "use e.g. [\"10.0.0.0/8\", \"192.168.1.7\"]",
            )
        })?;
        let backend_timeout = settings.backend_timeout_ms.duration();
        let endpoint = Endpoint::from_shared(settings.backend_url.clone())
            .map_err(|e| {
                invalid(
                    "backend_url",
                    e.to_string(),
                    "use e.g. http://mp-auth-grpc:50051",
                )
            })?
            .connect_timeout(CONNECT_TIMEOUT.min(backend_timeout))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        // Each `connect_lazy` is a connection of its own: behind a Kubernetes Service
        // each may be balanced to another replica.
        let channels: Vec<Channel> = (0..settings.backend_connections.max(1))
            .map(|_| endpoint.connect_lazy())
            .collect();
        let backend_key = BackendKey::new(settings)?;
        Ok(Self(Arc::new(StateInner {
            backends: channels
                .iter()
                .map(|c| AuthClient::with_interceptor(c.clone(), backend_key.clone()))
                .collect(),
            next_backend: std::sync::atomic::AtomicUsize::new(0),
            health: HealthClient::new(channels[0].clone()),
            backend_timeout,
            ready_timeout: READY_TIMEOUT.min(backend_timeout),
            body_read_timeout: settings.header_read_timeout_ms.duration(),
            max_body_bytes: settings.max_body_bytes,
            proxies,
            proxy_watch: client_ip::UntrustedProxyWatch::default(),
            limiter: RateLimiter::new(settings.rate_limit_per_sec, settings.rate_limit_burst),
            draining: AtomicBool::new(false),
            readiness: health::ReadinessCache::default(),
            jwks: jwks::JwksCache::default(),
            issuer: crate::config::TokenSettings::default().issuer,
            public_url: settings.public_url.clone(),
        })))
    }
}

/// Liveness probe path: 200 while the process is alive.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Readiness probe path: 200 while the backend reports `mpauth.v1.Auth` SERVING.
pub const READYZ_PATH: &str = "/readyz";

/// The gateway's routes, wrapped in the edge middleware. Every response that
/// is not a success is the JSON error shape, including unknown routes and methods.
pub fn router(state: AppState) -> Router {
    with_edge(
        Router::new()
            .route("/auth/mp_login", post(login::mp_login))
            .route("/auth/refresh", post(session::refresh))
            .route("/auth/logout", post(session::logout))
            .route("/auth/account/delete", post(session::delete_account))
            .route("/.well-known/jwks.json", get(jwks::jwks))
            .route("/.well-known/openid-configuration", get(jwks::discovery))
            .route(HEALTHZ_PATH, get(health::healthz))
            .route(READYZ_PATH, get(health::readyz))
            .route("/openapi.json", get(openapi::openapi_json)),
        state,
    )
}

/// Wraps `routes` in what every request passes: the not-found and
/// method-not-allowed answers, the panic catcher and the edge middleware.
pub fn with_edge(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Inside the edge, so a caught panic is rendered like any error (JSON, request id).
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response as fn(Box<dyn std::any::Any + Send>) -> axum::response::Response,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            edge::edge,
        ))
        .with_state(state)
}

/// A handler panicked: answer that request 500 `INTERNAL` and keep serving.
/// Counted as `mp_auth_http_panics_total`; the panic hook logged the location.
fn panic_response(_payload: Box<dyn std::any::Any + Send>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    metrics::counter!("mp_auth_http_panics_total").increment(1);
    ApiError::Unexpected(anyhow::anyhow!("a request handler panicked")).into_response()
}

/// The probe listener's routes: liveness and readiness only.
fn probe_router(state: AppState) -> Router {
    Router::new()
        .route(HEALTHZ_PATH, get(health::healthz))
        .route(READYZ_PATH, get(health::readyz))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

/// Connections the probe listener keeps open at most (kubelets and balancers).
const PROBE_MAX_CONNECTIONS: usize = 64;

/// A bound, ready-to-run gateway.
pub struct Gateway {
    listener: TcpListener,
    probe_listener: Option<TcpListener>,
    state: AppState,
    settings: GatewaySettings,
}

impl Gateway {
    /// Validates `settings.gateway`, prepares the backend channel (lazily:
    /// the backend may be down) and binds `gateway.listen` (port 0 picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Gateway> {
        let gw = &settings.gateway;
        let state = AppState::new(gw)?.with_issuer(&settings.token.issuer);
        let listener = TcpListener::bind(gw.listen).await.with_context(|| {
            format!(
                "binding gateway listener {} (set MP_AUTH_GATEWAY__LISTEN or --listen)",
                gw.listen
            )
        })?;
        let probe_listener = match gw.probe_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!("binding gateway probe listener {addr} (MP_AUTH_GATEWAY__PROBE_LISTEN)")
            })?),
            None => None,
        };
        Ok(Gateway {
            listener,
            probe_listener,
            state,
            settings: gw.clone(),
        })
    }

    /// The probe listener's address, when one is configured.
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.probe_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.settings.listen)
    }

    /// Serves until `shutdown` resolves, then stops accepting, drains
    /// in-flight requests within `gateway.drain_timeout_ms`, and returns.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        let (stop_probes, probes_stopped) = tokio::sync::oneshot::channel::<()>();
        let probes = self.probe_listener.map(|listener| {
            tokio::spawn(server::serve(
                listener,
                probe_router(self.state.clone()),
                server::ConnectionLimits {
                    header_read_timeout: self.settings.header_read_timeout_ms.duration(),
                    max_header_bytes: server::MIN_HEADER_BYTES,
                    max_connections: PROBE_MAX_CONNECTIONS,
                },
                Duration::ZERO,
                || {},
                async {
                    let _ = probes_stopped.await;
                },
            ))
        });
        server::serve(
            self.listener,
            router(self.state),
            server::ConnectionLimits {
                header_read_timeout: self.settings.header_read_timeout_ms.duration(),
                max_header_bytes: self.settings.max_header_bytes,
                max_connections: self.settings.max_connections,
            },
            Duration::from_millis(self.settings.drain_timeout_ms),
            move || {
                state
                    .draining
                    .store(true, std::sync::atomic::Ordering::Relaxed)
            },
            shutdown,
        )
        .await;
        // Probes answer (readyz: 503 while draining) until the public port is drained.
        let _ = stop_probes.send(());
        if let Some(probes) = probes {
            let _ = probes.await;
        }
        Ok(())
    }
}
