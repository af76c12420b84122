//! The accept loop: HTTP/1.1 served by hyper directly so that the
//! header-read timeout is real (a slowloris client that never finishes its
//! headers, or an idle keep-alive connection, is closed), and a graceful,
//! bounded drain on shutdown.

use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use std::{future::Future, sync::Arc, time::Duration};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};
use tower::ServiceExt as _;

/// hyper's smallest read buffer.
pub(crate) const MIN_HEADER_BYTES: usize = 8 * 1024;
/// Most header lines in one request (hyper's default is 100).
const MAX_HEADERS: usize = 64;

/// What one client connection may cost: together these bound the gateway's
/// memory against clients that open many connections and send half a head.
pub(crate) struct ConnectionLimits {
    /// Time allowed to send the request head.
    pub header_read_timeout: Duration,
    /// The connection's read buffer, hence the largest head (431 beyond).
    pub max_header_bytes: usize,
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown`, then stops accepting, lets
/// in-flight requests finish within `drain`, and aborts what is left.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    drain: Duration,
    on_drain: impl FnOnce(),
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES))
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        // Full: close at once rather than buffer for one more client.
                        metrics::counter!("mp_auth_http_connections_refused_total").increment(1);
                        tracing::debug!(%peer, "connection limit reached: closing");
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let app = app.clone();
                    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                        req.extensions_mut().insert(ConnectInfo(peer));
                        app.clone().oneshot(req)
                    });
                    let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    connections.spawn(async move {
                        let _slot = slot;
                        if let Err(e) = conn.await {
                            // Header-read timeouts, resets, malformed requests: the client's problem.
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    on_drain();
    tracing::info!(
        in_flight_connections = connections.len(),
        "gateway draining"
    );
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => tracing::info!("gateway drained and stopped"),
        Err(_) => tracing::warn!(
            drain_ms = drain.as_millis() as u64,
            "drain timeout reached: closing remaining connections"
        ),
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}
