//! Runs the gRPC server for an already built [`App`]: the Auth and Users
//! services, tonic-health that tells the truth about the database, reflection
//! (v1 and v1alpha) for grpcurl, a last-resort panic layer, HTTP/2 limits,
//! and a bounded graceful shutdown.

use super::auth::AuthService;
use super::users::UsersGrpc;
use crate::{
    api::health::{HEALTH_AUTH, HEALTH_LIVENESS},
    app::App,
    config::GrpcSettings,
    proto::{auth_server::AuthServer, users_server::UsersServer},
    sessions::RevocationCache,
    store::Store,
};
use anyhow::Context as _;
use std::{any::Any, future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tonic_health::{ServingStatus, server::HealthReporter};
use tower_http::catch_panic::CatchPanicLayer;

/// A bound, ready-to-run gRPC server.
pub struct GrpcServer {
    listener: TcpListener,
    app: Arc<App>,
    settings: GrpcSettings,
}

impl GrpcServer {
    /// Binds `settings.listen` (port 0 picks a free port) for `app`.
    pub async fn bind(app: Arc<App>, settings: &GrpcSettings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.listen).await.with_context(|| {
            format!(
                "binding gRPC listener {} (set MP_AUTH_GRPC__LISTEN)",
                settings.listen
            )
        })?;
        Ok(Self {
            listener,
            app,
            settings: settings.clone(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.settings.listen)
    }

    /// Serves until `shutdown` resolves, then: health NOT_SERVING, close the
    /// listener (new connections are refused), GOAWAY to open connections, and
    /// let in-flight calls finish within `grpc.drain_timeout_ms`.
    ///
    /// Reaching the drain timeout abandons the remaining calls (their clients see
    /// the connection close) and still returns `Ok`: the shutdown was requested
    /// and bounded as configured, so `serve` exits 0; a warning is logged.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let cfg = &self.settings;
        let app = &self.app;
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

        let tracker = tokio_util::task::TaskTracker::new();
        let mut auth_service = AuthService::new(app, tracker.clone());
        if cfg.protect_login_rpcs {
            auth_service = auth_service.protect_login_rpcs();
        }
        let auth = AuthServer::new(auth_service)
            .max_decoding_message_size(cfg.max_message_bytes)
            .max_encoding_message_size(cfg.max_message_bytes);
        let users = UsersServer::new(UsersGrpc::new(app.users.clone(), app.callers.clone()))
            .max_decoding_message_size(cfg.max_message_bytes)
            .max_encoding_message_size(cfg.max_message_bytes);

        let background = app.spawn_background();
        let checker = tokio::spawn(health_loop(
            app.store.clone(),
            app.revocations.clone(),
            reporter.clone(),
            cfg.health_check_interval_ms.duration(),
        ));

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let server = server_builder(cfg)
            .layer(catch_panic_layer())
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(auth)
            .add_service(users)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            });
        let mut server = tokio::spawn(server);

        tokio::select! {
            res = &mut server => {
                checker.abort();
                drop(background);
                return res.context("gRPC server task")?.context("gRPC server");
            }
            () = shutdown => {}
        }
        checker.abort();
        drop(background);
        for name in ["", HEALTH_AUTH, HEALTH_LIVENESS] {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let _ = stop_tx.send(());
        let drain = Duration::from_millis(cfg.drain_timeout_ms);
        let started_drain = std::time::Instant::now();
        match tokio::time::timeout(drain, &mut server).await {
            Ok(res) => {
                res.context("gRPC server task")?.context("gRPC server")?;
                // Logins whose callers left still finish (within the same drain budget).
                tracker.close();
                let left = drain.saturating_sub(started_drain.elapsed());
                if tokio::time::timeout(left, tracker.wait()).await.is_err() {
                    tracing::warn!(
                        logins = tracker.len(),
                        "drain timeout reached with detached logins still running"
                    );
                }
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

/// The HTTP/2 connection settings of `cfg`. A zero age or keepalive interval
/// disables that feature. A connection past `max_connection_age` gets GOAWAY
/// and then as long as a shutdown drain (`drain_timeout_ms`) to finish its
/// calls before it is closed.
fn server_builder(cfg: &GrpcSettings) -> tonic::transport::Server {
    let secs = |n: u64| (n > 0).then(|| Duration::from_secs(n));
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(secs(cfg.keepalive_interval_secs))
        .http2_keepalive_timeout(secs(cfg.keepalive_timeout_secs));
    if let Some(age) = secs(cfg.max_connection_age_secs) {
        builder = builder
            .max_connection_age(age)
            .max_connection_age_grace(Duration::from_millis(cfg.drain_timeout_ms));
    }
    builder
}

/// The signature of [`grpc_internal_for_panic`].
pub type PanicResponder = fn(Box<dyn Any + Send>) -> http::Response<tonic::body::Body>;

/// A last-resort tower layer: a panic while handling a request answers that
/// request with gRPC INTERNAL (trailers-only, `grpc-status: 13`) instead of
/// tearing down the connection and every other call on it. The server keeps
/// serving. Counted as `mp_auth_grpc_panics_total`.
pub fn catch_panic_layer() -> CatchPanicLayer<PanicResponder> {
    CatchPanicLayer::custom(grpc_internal_for_panic as PanicResponder)
}

/// The response for a caught panic. The panic payload is not logged (it could
/// hold anything); the panic hook has already printed its location.
fn grpc_internal_for_panic(_payload: Box<dyn Any + Send>) -> http::Response<tonic::body::Body> {
    metrics::counter!("mp_auth_grpc_panics_total").increment(1);
    tracing::error!("a request handler panicked: answered INTERNAL");
    tonic::Status::internal("internal error").into_http()
}

/// Flips `""` and `mpauth.v1.Auth` between SERVING and NOT_SERVING as the
/// database comes and goes. A replica is also not ready while its revocation cache
/// cannot answer (before its first poll, or after polls failed for longer than the
/// cache's staleness bound): `VerifyToken` would refuse every token there.
async fn health_loop(
    store: Store,
    revocations: Arc<RevocationCache>,
    reporter: HealthReporter,
    interval: Duration,
) {
    let mut last: Option<ServingStatus> = None;
    loop {
        // Its own connection: a pool full of logins must not make a busy replica unready.
        let seen = tokio::time::timeout(interval.max(Duration::from_secs(1)), store.health()).await;
        let database_ready = matches!(seen, Ok(Ok(crate::store::Health::Ready)));
        let revocations_fresh = revocations.is_fresh(crate::clock::now_ms());
        let healthy = database_ready && revocations_fresh;
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
                let why = match &seen {
                    _ if database_ready => {
                        "the revocation cache has not been refreshed yet".to_owned()
                    }
                    Err(_) => "the health check timed out".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(crate::store::Health::ClusterNodeNotReady(state))) => {
                        format!("the Galera node may not serve ({state})")
                    }
                    Ok(Ok(health)) => format!("{health:?}"),
                };
                tracing::warn!(
                    reason = %why,
                    "database unreachable, not ready or migrations pending: NOT_SERVING"
                );
            }
            reporter.set_service_status("", status).await;
            reporter.set_service_status(HEALTH_AUTH, status).await;
            last = Some(status);
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tower::{Layer as _, Service as _, ServiceExt as _};

    /// A handler that panics on `/panic` (after an await, like a real async
    /// handler) and answers OK otherwise.
    async fn handler(
        req: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, std::convert::Infallible> {
        tokio::task::yield_now().await;
        if req.uri().path() == "/panic" {
            panic!("handler bug");
        }
        Ok(tonic::Status::ok("").into_http())
    }

    fn request(path: &str) -> http::Request<tonic::body::Body> {
        http::Request::builder()
            .uri(path)
            .body(tonic::body::Body::empty())
            .unwrap()
    }

    fn grpc_status(res: &http::Response<impl Sized>) -> Option<&str> {
        res.headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_the_service_keeps_serving() {
        let mut svc = catch_panic_layer().layer(tower::service_fn(handler));

        let res = svc
            .ready()
            .await
            .unwrap()
            .call(request("/panic"))
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            http::StatusCode::OK,
            "gRPC errors ride on 200"
        );
        assert_eq!(grpc_status(&res), Some("13"), "INTERNAL");
        assert_eq!(
            res.headers().get(http::header::CONTENT_TYPE).unwrap(),
            "application/grpc"
        );
        let message = res.headers().get("grpc-message").unwrap().to_str().unwrap();
        assert!(!message.contains("handler bug"), "{message}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty(), "trailers-only response");

        for _ in 0..3 {
            let res = svc
                .ready()
                .await
                .unwrap()
                .call(request("/ok"))
                .await
                .unwrap();
            assert_eq!(grpc_status(&res), Some("0"), "the service still serves");
        }
    }

    #[tokio::test]
    async fn a_panic_while_calling_the_service_is_caught_too() {
        let svc = catch_panic_layer().layer(tower::service_fn(
            |_req: http::Request<tonic::body::Body>| -> std::future::Ready<
                Result<http::Response<tonic::body::Body>, std::convert::Infallible>,
            > { panic!("synchronous bug") },
        ));
        let res = svc.oneshot(request("/x")).await.unwrap();
        assert_eq!(grpc_status(&res), Some("13"));
    }

    /// Panics on its first call, then delegates: a handler bug that hits once.
    #[derive(Clone)]
    struct PanicFirst<S> {
        inner: S,
        armed: Arc<std::sync::atomic::AtomicBool>,
    }

    impl<S: tonic::server::NamedService> tonic::server::NamedService for PanicFirst<S> {
        const NAME: &'static str = S::NAME;
    }

    impl<S> tower::Service<http::Request<tonic::body::Body>> for PanicFirst<S>
    where
        S: tower::Service<http::Request<tonic::body::Body>>,
        S::Future: Send + 'static,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

        fn poll_ready(
            &mut self,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            let panic_now = self.armed.swap(false, std::sync::atomic::Ordering::SeqCst);
            let fut = self.inner.call(req);
            Box::pin(async move {
                if panic_now {
                    panic!("handler bug");
                }
                fut.await
            })
        }
    }

    /// Without the layer this fails: the stream is reset (CANCELLED, "h2 protocol error").
    #[tokio::test]
    async fn the_real_server_answers_a_panic_with_internal_and_keeps_the_connection() {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let (_reporter, health) = tonic_health::server::health_reporter();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server = server_builder(&GrpcSettings::default())
            .layer(catch_panic_layer())
            .add_service(PanicFirst {
                inner: health,
                armed: Arc::new(true.into()),
            })
            .serve_with_incoming(incoming);
        let server = tokio::spawn(server);

        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let check = || HealthCheckRequest {
            service: String::new(),
        };
        let err = client.check(check()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
        // Same channel, same HTTP/2 connection: it survived the panic.
        let ok = client.check(check()).await.unwrap().into_inner();
        assert_eq!(ok.status, 1, "SERVING");
        assert!(!server.is_finished(), "the server is still running");
        server.abort();
    }
}
