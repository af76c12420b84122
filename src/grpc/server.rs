//! Builds and runs the gRPC server: the Auth service, tonic-health that tells
//! the truth about the database, reflection (v1 and v1alpha) for grpcurl, and
//! a bounded graceful shutdown.

use super::auth::AuthService;
use crate::{
    config::Settings,
    login::{LoginService, SessionVault},
    proto::auth_server::AuthServer,
    store::Store,
    tokens::{Hs256Signer, TokenIssuer},
    wechat::WechatClient,
};
use anyhow::Context as _;
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tonic_health::{ServingStatus, server::HealthReporter};

/// Health service name that stays SERVING while the process is alive
/// (Kubernetes liveness probe).
pub const HEALTH_LIVENESS: &str = "liveness";
/// Health service name of the Auth service: SERVING only while the database
/// answers and migrations are current (Kubernetes readiness probe). The empty
/// name `""` follows it.
pub const HEALTH_AUTH: &str = "mpauth.v1.Auth";

/// Assembles the login use case from settings: validates every setting it
/// needs, connects to the database (optionally migrating), and runs the token
/// self-test. Fails with a message that says how to fix the problem.
pub async fn build_login_service(settings: &Settings) -> anyhow::Result<Arc<LoginService>> {
    settings.validate_common()?;
    let apps = settings.app_credentials()?;
    let signer = Hs256Signer::new(&settings.token_secret()?)?;
    let tokens = TokenIssuer::new(&settings.token, Box::new(signer))?;
    let vault = SessionVault::new(&settings.session_key_encryption_key()?);
    let wechat =
        WechatClient::new(&settings.wechat, &apps).context("building the WeChat client")?;
    let store = Store::connect(&settings.database_url()?, &settings.database)
        .await
        .context("connecting to the database")?;
    if settings.database.migrate_on_start {
        let applied = store.migrate().await.context("running migrations")?;
        tracing::info!(applied, "migrations applied");
    }
    Ok(Arc::new(LoginService::new(
        settings, &apps, wechat, store, tokens, vault,
    )))
}

/// A bound, ready-to-run gRPC server.
pub struct GrpcServer {
    listener: TcpListener,
    login: Arc<LoginService>,
    settings: Settings,
}

impl GrpcServer {
    /// Builds the service and binds `grpc.listen` (port 0 picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let login = build_login_service(settings).await?;
        Self::with_login(settings, login).await
    }

    /// Binds the listener for an already assembled use case.
    pub async fn with_login(settings: &Settings, login: Arc<LoginService>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.grpc.listen)
            .await
            .with_context(|| {
                format!(
                    "binding gRPC listener {} (set MP_AUTH_GRPC__LISTEN)",
                    settings.grpc.listen
                )
            })?;
        Ok(Self {
            listener,
            login,
            settings: settings.clone(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.settings.grpc.listen)
    }

    /// Serves until `shutdown` resolves, then: health NOT_SERVING, stop
    /// accepting, let in-flight calls finish within `grpc.drain_timeout_ms`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let cfg = &self.settings.grpc;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        // tonic-health registers "" as SERVING at construction: nothing is ready yet.
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status(HEALTH_AUTH, ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status(HEALTH_LIVENESS, ServingStatus::Serving)
            .await;

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let auth = AuthServer::new(AuthService::new(self.login.clone()))
            .max_decoding_message_size(cfg.max_message_bytes)
            .max_encoding_message_size(cfg.max_message_bytes);

        let checker = tokio::spawn(health_loop(
            self.login.store().clone(),
            reporter.clone(),
            Duration::from_millis(cfg.health_check_interval_ms),
        ));

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let server = tonic::transport::Server::builder()
            .max_connection_age(Duration::from_secs(cfg.max_connection_age_secs))
            .http2_keepalive_interval(Some(Duration::from_secs(cfg.keepalive_interval_secs)))
            .http2_keepalive_timeout(Some(Duration::from_secs(cfg.keepalive_timeout_secs)))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(auth)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            });
        let mut server = tokio::spawn(server);

        tokio::select! {
            res = &mut server => {
                checker.abort();
                return res.context("gRPC server task")?.context("gRPC server");
            }
            () = shutdown => {}
        }
        checker.abort();
        for name in ["", HEALTH_AUTH, HEALTH_LIVENESS] {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let _ = stop_tx.send(());
        let drain = Duration::from_millis(cfg.drain_timeout_ms);
        match tokio::time::timeout(drain, &mut server).await {
            Ok(res) => {
                res.context("gRPC server task")?.context("gRPC server")?;
                tracing::info!("gRPC server drained and stopped");
            }
            Err(_) => {
                server.abort();
                tracing::warn!(
                    drain_ms = cfg.drain_timeout_ms,
                    "drain timeout reached: abandoning remaining calls"
                );
            }
        }
        Ok(())
    }
}

/// Flips `""` and `mpauth.v1.Auth` between SERVING and NOT_SERVING as the
/// database comes and goes.
async fn health_loop(store: Store, reporter: HealthReporter, interval: Duration) {
    let mut last: Option<ServingStatus> = None;
    loop {
        let healthy = tokio::time::timeout(interval.max(Duration::from_secs(1)), async {
            store.ping().await.is_ok() && matches!(store.migrations_current().await, Ok(true))
        })
        .await
        .unwrap_or(false);
        let pool = store.pool_state();
        metrics::gauge!("mp_auth_db_pool_connections").set(f64::from(pool.connections));
        metrics::gauge!("mp_auth_db_pool_idle_connections").set(f64::from(pool.idle));
        let status = if healthy {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            if healthy {
                tracing::info!("database healthy: SERVING");
            } else {
                tracing::warn!("database unreachable or migrations pending: NOT_SERVING");
            }
            reporter.set_service_status("", status).await;
            reporter.set_service_status(HEALTH_AUTH, status).await;
            last = Some(status);
        }
        tokio::time::sleep(interval).await;
    }
}
