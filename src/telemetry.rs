//! Logging set-up: structured JSON for production, human-readable for dev.
//! Nothing secret is ever a span field (see STYLE.md habit 6).

use crate::config::{LogFormat, LogSettings};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber once; later calls are no-ops (tests call it freely).
pub fn init(settings: &LogSettings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match settings.format {
        // The JSON lines carry no span data (each event names its own fields), so spans
        // are switched off altogether: otherwise every `#[instrument]` span is still
        // created and its fields formatted, about a sixth of a login's CPU in `serve`.
        LogFormat::Json => registry
            .with(tracing_subscriber::filter::filter_fn(|meta| {
                !meta.is_span()
            }))
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().compact().with_writer(std::io::stderr))
            .try_init(),
    };
    install_panic_hook();
}

/// Reports panics as one log event in the configured format (a JSON line in
/// production) instead of the default multi-line text on stderr. The payload
/// is left out: it could hold anything; the location is enough to find it.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        tracing::error!(panic.location = %location, panic.thread = %thread, "panic");
    }));
}

/// The process-wide Prometheus recorder (installed once; later calls reuse it).
pub fn prometheus() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: parking_lot::Mutex<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        parking_lot::Mutex::new(None);
    let mut slot = HANDLE.lock();
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let latency_buckets = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow::anyhow!("a different metrics recorder is already installed"))?;
    describe_metrics();
    // Histogram samples pile up in the recorder until an upkeep drains them into the
    // buckets; a scrape does that, but without one (or between slow scrapes) memory
    // grows by ~60 bytes per login. Drain them on a timer.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })?;
    *slot = Some(handle.clone());
    Ok(handle)
}

fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "mp_auth_logins_total",
        "Logins by outcome (success/error), reason, flow and app_id."
    );
    describe_histogram!(
        "mp_auth_login_duration_seconds",
        Unit::Seconds,
        "Login latency inside the gRPC service."
    );
    describe_counter!(
        "mp_auth_wechat_calls_total",
        "WeChat API calls by endpoint and errcode (0 = success)."
    );
    describe_histogram!(
        "mp_auth_wechat_call_duration_seconds",
        Unit::Seconds,
        "WeChat API call latency by endpoint."
    );
    describe_counter!(
        "mp_auth_wechat_token_refreshes_total",
        "Stable access_token fetches by app."
    );
    describe_counter!(
        "mp_auth_wechat_token_self_heals_total",
        "Stale access_token (40001/42001/40014) retries by app."
    );
    describe_counter!(
        "mp_auth_session_key_rescues_total",
        "Legacy decryptions rescued by the stored previous session_key."
    );
    describe_counter!(
        "mp_auth_db_tx_retries_total",
        "Transactions and statements retried after a deadlock (on Galera: a certification conflict)."
    );
    describe_gauge!(
        "mp_auth_db_pool_connections",
        "Open database connections in the pool."
    );
    describe_gauge!(
        "mp_auth_db_pool_idle_connections",
        "Idle database connections in the pool."
    );
    describe_counter!(
        "mp_auth_http_requests_total",
        "Gateway HTTP requests by route and status."
    );
    describe_histogram!(
        "mp_auth_http_request_duration_seconds",
        Unit::Seconds,
        "Gateway HTTP request latency by route."
    );
}

/// Serves `GET /metrics` (Prometheus text format) on `addr` until `shutdown`.
/// Returns the bound address (port 0 picks a free port).
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context as _;
    let handle = prometheus()?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("binding the metrics listener {addr} (MP_AUTH_ADMIN__METRICS_LISTEN)")
    })?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                handle.run_upkeep();
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    tracing::info!(addr = %bound, "metrics listening on /metrics");
    Ok(bound)
}
