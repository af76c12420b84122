//! The edge middleware every request passes: request id, client IP, per-IP
//! rate limit, rendering of every error as the one JSON shape (with the
//! request id), one access-log line and the HTTP metrics.

use super::{
    AppState,
    client_ip::ClientIp,
    error::{ApiError, ErrorBody, Reason, ceil_secs},
    request_id::{self, RequestId},
};
use axum::{
    body::Body,
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Instant,
};

/// Routes that are never rate limited and are logged at DEBUG (probes).
const PROBES: [&str; 2] = [super::HEALTHZ_PATH, super::READYZ_PATH];
/// Route label of requests that matched no route (keeps metric labels bounded).
const UNMATCHED: &str = "unmatched";
/// Longest path written to the access log.
const MAX_LOGGED_PATH: usize = 128;

/// The middleware (installed with `axum::middleware::from_fn_with_state`).
pub async fn edge(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = RequestId::from_headers(req.headers());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let client_ip = state.proxies.client_ip(peer, req.headers());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(MAX_LOGGED_PATH).collect();
    req.extensions_mut().insert(request_id.clone());
    req.extensions_mut().insert(ClientIp(client_ip));

    let is_probe = PROBES.contains(&route.as_str());
    if !is_probe {
        let trusted = state.proxies.is_trusted(peer);
        let has_xff = req
            .headers()
            .contains_key(super::client_ip::X_FORWARDED_FOR);
        if let Some(proxy) = state.proxy_watch.observe(peer, trusted, has_xff) {
            metrics::gauge!("mp_auth_gateway_untrusted_proxy_suspected").set(1.0);
            tracing::warn!(
                peer = %proxy,
                "every request so far came from {proxy}, which sends X-Forwarded-For but is not in \
                 gateway.trusted_proxies: all users share one rate-limit bucket. Fix: add the \
                 proxy's exact address or CIDR to MP_AUTH_GATEWAY__TRUSTED_PROXIES (see docs/http-api.md)"
            );
        }
    }
    let limited = match &state.limiter {
        Some(limiter) if !is_probe => limiter.check(client_ip).err(),
        _ => None,
    };
    let mut response = match limited {
        Some(wait) => ApiError::RateLimited {
            retry_after_secs: ceil_secs(wait),
        }
        .into_response(),
        None => next.run(req).await,
    };

    let reason = render_error(&mut response, &request_id);
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        response
            .headers_mut()
            .insert(request_id::HEADER.clone(), value);
    }
    let status = response.status().as_u16();
    let latency = started.elapsed();
    metrics::counter!("mp_auth_http_requests_total", "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("mp_auth_http_request_duration_seconds", "route" => route)
        .record(latency.as_secs_f64());
    let latency_ms = latency.as_secs_f64() * 1e3;
    if is_probe && status < 500 {
        tracing::debug!(target: "mp_auth::gateway::access", method = %method, path, status, reason,
            request_id = %request_id, client_ip = %client_ip, latency_ms, "http");
    } else {
        tracing::info!(target: "mp_auth::gateway::access", method = %method, path, status, reason,
            request_id = %request_id, client_ip = %client_ip, latency_ms, "http");
    }
    response
}

/// Writes the error body with the request id; returns the reason for the log.
/// A non-JSON error from anywhere (an axum rejection, a panic guard) is
/// replaced too, so clients only ever see the one shape.
fn render_error(response: &mut Response, request_id: &RequestId) -> &'static str {
    let body = match response.extensions_mut().remove::<ErrorBody>() {
        Some(body) => body,
        None if response.status().is_client_error() || response.status().is_server_error() => {
            let reason = match response.status() {
                StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Reason::MalformedJson,
                StatusCode::NOT_FOUND => Reason::NotFound,
                StatusCode::METHOD_NOT_ALLOWED => Reason::MethodNotAllowed,
                StatusCode::REQUEST_TIMEOUT => Reason::RequestTimeout,
                StatusCode::PAYLOAD_TOO_LARGE => Reason::PayloadTooLarge,
                StatusCode::UNSUPPORTED_MEDIA_TYPE => Reason::UnsupportedMediaType,
                StatusCode::TOO_MANY_REQUESTS => Reason::RateLimited,
                _ => Reason::Internal,
            };
            *response.status_mut() = reason.http_status();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            ErrorBody {
                reason,
                message: "the request was refused".to_owned(),
                action: reason.action().to_owned(),
                field: None,
                request_id: String::new(),
            }
        }
        None => return "OK",
    };
    let reason = body.reason.as_str();
    let body = ErrorBody {
        request_id: request_id.as_str().to_owned(),
        ..body
    };
    // Serializing a struct of strings cannot fail; fall back to an empty object regardless.
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    *response.body_mut() = Body::from(bytes);
    reason
}
