//! `GET /.well-known/jwks.json` and `GET /.well-known/openid-configuration`:
//! the public verification keys (from the backend's `Auth.GetJwks`, cached)
//! and the minimal discovery document generic JWT middleware looks for.

use super::{AppState, error::ApiError, login::EdgeContext, login::forward};
use crate::proto;
use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// How long the gateway reuses the backend's key set.
const JWKS_CACHE: Duration = Duration::from_secs(60);
/// `Cache-Control: max-age` of the JWKS: far shorter than the rotation overlap
/// (a retired key stays published for at least one access-token lifetime).
pub const JWKS_MAX_AGE_SECS: u64 = 300;

/// The backend's last key set and when it was fetched.
#[derive(Default)]
pub struct JwksCache {
    last: tokio::sync::Mutex<Option<(Instant, Value)>>,
}

async fn keys(state: &AppState, ctx: &EdgeContext) -> Result<Value, ApiError> {
    let mut last = state.jwks.last.lock().await;
    if let Some((at, keys)) = &*last
        && at.elapsed() < JWKS_CACHE
    {
        return Ok(keys.clone());
    }
    let mut client = state.auth();
    let answer = forward(
        state,
        ctx,
        tonic::Request::new(proto::GetJwksRequest {}),
        |r| client.get_jwks(r),
    )
    .await?;
    let keys: Vec<Value> = answer
        .keys
        .into_iter()
        .map(|k| {
            json!({"kty": k.kty, "crv": k.crv, "x": k.x, "y": k.y,
                   "kid": k.kid, "alg": k.alg, "use": k.r#use})
        })
        .collect();
    let keys = json!({ "keys": keys });
    *last = Some((Instant::now(), keys.clone()));
    Ok(keys)
}

fn cacheable(body: Value) -> Response {
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={JWKS_MAX_AGE_SECS}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

/// The JSON Web Key Set: every verification key (active and retained), public parts only.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "keys",
    responses(
        (status = 200, description = "The JWKS (RFC 7517)", content_type = "application/json",
            headers(("Cache-Control" = String, description = "public, max-age=300"))),
        (status = 503, description = "BACKEND_UNAVAILABLE", body = super::ErrorBody),
        (status = 504, description = "TIMEOUT", body = super::ErrorBody),
    ))]
pub async fn jwks(State(state): State<AppState>, ctx: EdgeContext) -> Result<Response, ApiError> {
    Ok(cacheable(keys(&state, &ctx).await?))
}

/// This gateway's public base URL: `gateway.public_url`, or the request's host.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.len() <= 255
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        })
        .unwrap_or("localhost");
    let local =
        host.starts_with("localhost") || host.starts_with("127.") || host.starts_with("[::1]");
    format!("{}://{host}", if local { "http" } else { "https" })
}

/// A minimal OpenID discovery document: issuer, jwks_uri and the algorithms.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "keys",
    responses(
        (status = 200, description = "issuer, jwks_uri, id_token_signing_alg_values_supported", content_type = "application/json"),
        (status = 503, description = "BACKEND_UNAVAILABLE", body = super::ErrorBody),
        (status = 504, description = "TIMEOUT", body = super::ErrorBody),
    ))]
pub async fn discovery(
    State(state): State<AppState>,
    ctx: EdgeContext,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let keys = keys(&state, &ctx).await?;
    let mut algs: Vec<String> = keys["keys"]
        .as_array()
        .map(|ks| {
            ks.iter()
                .filter_map(|k| k["alg"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    algs.sort();
    algs.dedup();
    let base = base_url(&state, &headers);
    Ok(cacheable(json!({
        "issuer": state.issuer,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
    })))
}
