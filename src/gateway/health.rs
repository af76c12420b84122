//! `/healthz` (the process is alive) and `/readyz` (the backend's
//! `mpauth.v1.Auth` health is SERVING and the gateway is not draining).

use super::{AppState, error::ApiError};
use crate::grpc::HEALTH_AUTH;
use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
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

/// Readiness: asks the backend's `grpc.health.v1.Health/Check` for `mpauth.v1.Auth`.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "The backend reports SERVING", body = HealthStatus),
        (status = 503, description = "NOT_READY: draining, or the backend is unreachable or not SERVING", body = super::ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<HealthStatus>, ApiError> {
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::NotReady("the gateway is shutting down"));
    }
    let mut health = state.health.clone();
    let check = health.check(HealthCheckRequest {
        service: HEALTH_AUTH.to_owned(),
    });
    match tokio::time::timeout(state.ready_timeout, check).await {
        Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving => Ok(ok()),
        Ok(Ok(_)) => Err(ApiError::NotReady("the login service reports NOT_SERVING")),
        Ok(Err(_)) => Err(ApiError::NotReady("the login service is unreachable")),
        Err(_) => Err(ApiError::NotReady(
            "the login service's health check timed out",
        )),
    }
}
