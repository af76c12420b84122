//! The `/_sim/` control API: register apps, play the WeChat client (`wx.login`,
//! the phone button), inject faults and read call statistics. Errors are JSON
//! `{"error": "..."}` with a 4xx status.

use crate::{
    config::{SimApp, check_app_id},
    faults::Fault,
    state::{ControlError, SimState},
    wire::{MintedLogin, MintedPhone, SimStats},
};
use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use secrecy::SecretString;
use serde::{Deserialize, de::DeserializeOwned};
use std::sync::Arc;

/// A control-API error as an HTTP response.
struct ApiError(StatusCode, String);

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match e {
            ControlError::UnknownApp(_) => StatusCode::NOT_FOUND,
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
        };
        Self(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

/// The routes of the control API.
pub(crate) fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/_sim/apps", post(register_app))
        .route("/_sim/login", post(login))
        .route("/_sim/phone", post(phone))
        .route("/_sim/faults", post(add_fault).delete(clear_faults))
        .route("/_sim/stats", get(stats))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
}

#[derive(Deserialize)]
struct RegisterApp {
    app_id: String,
    app_secret: String,
    #[serde(default)]
    open_platform: Option<String>,
}

async fn register_app(State(st): State<Arc<SimState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: RegisterApp = parse(&body)?;
    let app_id = req.app_id.trim();
    check_app_id(app_id).map_err(bad)?;
    if req.app_secret.is_empty() {
        return Err(bad("`app_secret` must not be empty"));
    }
    st.register_app(&SimApp {
        app_id: app_id.to_owned(),
        app_secret: SecretString::from(req.app_secret),
        open_platform: req.open_platform,
    });
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "app_id": app_id })),
    )
        .into_response())
}

#[derive(Deserialize)]
struct UserRequest {
    app_id: String,
    user: String,
    #[serde(default)]
    phone: Option<String>,
}

async fn login(
    State(st): State<Arc<SimState>>,
    body: Bytes,
) -> Result<Json<MintedLogin>, ApiError> {
    let req: UserRequest = parse(&body)?;
    Ok(Json(st.mint_login(
        &req.app_id,
        &req.user,
        req.phone.as_deref(),
    )?))
}

async fn phone(
    State(st): State<Arc<SimState>>,
    body: Bytes,
) -> Result<Json<MintedPhone>, ApiError> {
    let req: UserRequest = parse(&body)?;
    Ok(Json(st.mint_phone(
        &req.app_id,
        &req.user,
        req.phone.as_deref(),
    )?))
}

async fn add_fault(State(st): State<Arc<SimState>>, body: Bytes) -> Result<Response, ApiError> {
    let fault: Fault = parse(&body)?;
    fault.validate().map_err(bad)?;
    st.faults.add(fault);
    Ok(StatusCode::CREATED.into_response())
}

async fn clear_faults(State(st): State<Arc<SimState>>) -> StatusCode {
    st.faults.clear();
    StatusCode::NO_CONTENT
}

async fn stats(State(st): State<Arc<SimState>>) -> Json<SimStats> {
    Json(st.stats())
}
