//! `/healthz` (the process is alive) and `/readyz` (the backend's
//! `mpauth.v1.Auth` health is SERVING and the gateway is not draining).

use super::{AppState, error::ApiError};
use crate::api::health::HEALTH_AUTH;
use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use utoipa::ToSchema;

/// The body of a healthy probe.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthStatus {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

fn ok() -> Json<HealthStatus> {
    Json(HealthStatus {
        status: "ok".to_owned(),
    })
}

/// Liveness: 200 while the process runs. Does not look at the backend.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The gateway process is alive", body = HealthStatus)))]
pub async fn healthz() -> Json<HealthStatus> {
    ok()
}

/// How long one backend health answer serves `/readyz`: probes (every pod's
/// kubelet, load balancers, or a flood of them) cost the backend at most one
/// health call per second per gateway.
const READY_CACHE_TTL: Duration = Duration::from_secs(1);

/// The backend's last readiness answer and when it was taken. Concurrent
/// probes wait for the one call in flight instead of each making their own.
#[derive(Default)]
pub struct ReadinessCache {
    last: tokio::sync::Mutex<Option<(Instant, Result<(), &'static str>)>>,
}

/// Readiness: asks the backend's `grpc.health.v1.Health/Check` for `mpauth.v1.Auth`
/// (at most once a second; answers in between reuse the last one).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "The backend reports SERVING", body = HealthStatus),
        (status = 503, description = "NOT_READY: draining, or the backend is unreachable or not SERVING", body = super::ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<HealthStatus>, ApiError> {
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::NotReady("the gateway is shutting down"));
    }
    let mut last = state.readiness.last.lock().await;
    let answer = match *last {
        Some((at, answer)) if at.elapsed() < READY_CACHE_TTL => answer,
        _ => {
            let answer = backend_ready(&state).await;
            *last = Some((Instant::now(), answer));
            answer
        }
    };
    drop(last);
    answer.map(|()| ok()).map_err(ApiError::NotReady)
}

async fn backend_ready(state: &AppState) -> Result<(), &'static str> {
    let mut health = state.health.clone();
    let check = health.check(HealthCheckRequest {
        service: HEALTH_AUTH.to_owned(),
    });
    match tokio::time::timeout(state.ready_timeout, check).await {
        Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving => Ok(()),
        Ok(Ok(_)) => Err("the login service reports NOT_SERVING"),
        Ok(Err(_)) => Err("the login service is unreachable"),
        Err(_) => Err("the login service's health check timed out"),
    }
}
