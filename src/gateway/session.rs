//! `POST /auth/refresh` and `POST /auth/logout`: the session endpoints of the
//! mini-program, each one call of the gRPC service, with the same limits,
//! error shape and `Cache-Control: no-store` as the login.

use super::{
    AppState,
    error::ApiError,
    login::{
        EdgeContext, FromJsonBody, LoginJson, OptionalJson, forward, no_store_json, string_field,
    },
};
use crate::proto;
use axum::{
    extract::{RawQuery, State},
    http::{HeaderMap, header},
    response::Response,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

/// `POST /auth/refresh` body.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    /// The refresh token from the login or the last refresh.
    #[schema(min_length = 1)]
    pub refresh_token: String,
    /// The mini-program's AppID; required only when the service serves several.
    #[serde(default)]
    #[schema(nullable, pattern = "^$|^[A-Za-z0-9_-]{1,64}$")]
    pub app_id: Option<String>,
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshRequest")
            .field("refresh_token", &"[REDACTED]")
            .field("app_id", &self.app_id)
            .finish()
    }
}

/// `POST /auth/logout` body (optional when a bearer access token is sent).
#[derive(Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogoutRequest {
    /// The session's refresh token (or send `Authorization: Bearer <access_token>`).
    #[serde(default)]
    #[schema(nullable)]
    pub refresh_token: Option<String>,
    /// Log out every session of the user, not just this one (as `?all=true`).
    #[serde(default)]
    #[schema(nullable)]
    pub all: Option<bool>,
}

impl std::fmt::Debug for LogoutRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogoutRequest")
            .field("refresh_token", &"[REDACTED]")
            .field("all", &self.all)
            .finish()
    }
}

fn object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::MalformedJson {
            problem: "the top-level value must be an object".into(),
        }),
        Err(e) => Err(ApiError::MalformedJson {
            problem: format!("syntax error at line {} column {}", e.line(), e.column()),
        }),
    }
}

impl FromJsonBody for RefreshRequest {
    fn from_json(bytes: &[u8]) -> Result<Self, ApiError> {
        let map = object(bytes)?;
        Ok(Self {
            refresh_token: string_field(&map, "refreshToken")?.ok_or(ApiError::InvalidField {
                field: "refreshToken",
                problem: "is required: send the refresh token of the login or the last refresh",
            })?,
            app_id: string_field(&map, "appId")?,
        })
    }
}

impl FromJsonBody for LogoutRequest {
    fn from_json(bytes: &[u8]) -> Result<Self, ApiError> {
        let map = object(bytes)?;
        let all = match map.get("all") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                return Err(ApiError::InvalidField {
                    field: "all",
                    problem: "must be a boolean",
                });
            }
        };
        Ok(Self {
            refresh_token: string_field(&map, "refreshToken")?,
            all,
        })
    }
}

/// The new tokens of a refreshed session.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RefreshResponse {
    /// The new access token (a JWT).
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: String,
    pub expires_in: i64,
    /// The new refresh token: the one sent stops working.
    pub refresh_token: String,
    pub refresh_expires_in: i64,
    pub user_id: String,
}

impl std::fmt::Debug for RefreshResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshResponse")
            .field("access_token", &"[REDACTED]")
            .field("refresh_token", &"[REDACTED]")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// What a logout did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogoutResponse {
    pub user_id: String,
    /// Sessions ended by this call (0 when already logged out).
    pub sessions_revoked: u64,
}

/// `?all=true` on `/auth/logout`.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct LogoutQuery {
    /// Log out every session of the user.
    #[serde(default)]
    pub all: Option<bool>,
}

/// Rotates the session's refresh token.
#[utoipa::path(post, path = "/auth/refresh", tag = "sessions",
    request_body(content = RefreshRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "New tokens; the refresh token sent stops working", body = RefreshResponse,
            headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "INVALID_ARGUMENT, MALFORMED_JSON, APP_ID_REQUIRED or UNKNOWN_APP", body = super::ErrorBody),
        (status = 401, description = "REFRESH_TOKEN_INVALID, REFRESH_TOKEN_WRONG_APP, REFRESH_TOKEN_REUSED, SESSION_REVOKED or SESSION_EXPIRED: log in again", body = super::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = super::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = super::ErrorBody),
        (status = 429, description = "RATE_LIMITED", body = super::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "INTERNAL", body = super::ErrorBody),
        (status = 503, description = "DATABASE_UNAVAILABLE or BACKEND_UNAVAILABLE", body = super::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait (1-5)"))),
        (status = 504, description = "TIMEOUT", body = super::ErrorBody),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    ctx: EdgeContext,
    LoginJson(body): LoginJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let request = tonic::Request::new(proto::RefreshSessionRequest {
        refresh_token: body.refresh_token,
        app_id: body.app_id.unwrap_or_default(),
    });
    let mut client = state.auth();
    let answer = forward(&state, &ctx, request, |r| client.refresh_session(r)).await?;
    Ok(no_store_json(RefreshResponse {
        access_token: answer.access_token,
        token_type: "bearer".into(),
        expires_in: answer.expires_in,
        refresh_token: answer.refresh_token,
        refresh_expires_in: answer.refresh_expires_in,
        user_id: answer.user_id,
    }))
}

/// `all` from the query string (`?all=true`, `?all=false`, `?all=1`, `?all=0`);
/// anything else in `all` is an `INVALID_ARGUMENT` naming it.
fn all_of(query: Option<&str>) -> Result<Option<bool>, ApiError> {
    let mut all = None;
    for pair in query.unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "all" {
            continue;
        }
        all = Some(match value {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(ApiError::InvalidField {
                    field: "all",
                    problem: "must be true or false",
                });
            }
        });
    }
    Ok(all)
}

/// The bearer token of an `Authorization` header, if any.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// Ends the session (or, with `all`, every session of the user).
#[utoipa::path(post, path = "/auth/logout", tag = "sessions",
    params(LogoutQuery),
    request_body(content = LogoutRequest, content_type = "application/json",
        description = "Optional when `Authorization: Bearer <access_token>` is sent"),
    responses(
        (status = 200, description = "Logged out", body = LogoutResponse,
            headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "INVALID_ARGUMENT (no credential) or MALFORMED_JSON", body = super::ErrorBody),
        (status = 401, description = "REFRESH_TOKEN_INVALID or TOKEN_INVALID", body = super::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = super::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = super::ErrorBody),
        (status = 429, description = "RATE_LIMITED", body = super::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "INTERNAL", body = super::ErrorBody),
        (status = 503, description = "DATABASE_UNAVAILABLE or BACKEND_UNAVAILABLE", body = super::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait (1-5)"))),
        (status = 504, description = "TIMEOUT", body = super::ErrorBody),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    ctx: EdgeContext,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<LogoutRequest>,
) -> Result<Response, ApiError> {
    // The body is optional here (a bearer token suffices); when sent it is JSON.
    let all = all_of(query.as_deref())?.or(body.all).unwrap_or(false);
    let credential = match (body.refresh_token, bearer(&headers)) {
        (Some(token), _) => proto::logout_request::Credential::RefreshToken(token),
        (None, Some(token)) => proto::logout_request::Credential::AccessToken(token),
        (None, None) => {
            return Err(ApiError::InvalidField {
                field: "refreshToken",
                problem: "is required, or send Authorization: Bearer <access_token>",
            });
        }
    };
    let request = tonic::Request::new(proto::LogoutRequest {
        credential: Some(credential),
    });
    let mut client = state.auth();
    let answer = if all {
        forward(&state, &ctx, request, |r| client.logout_all(r)).await?
    } else {
        forward(&state, &ctx, request, |r| client.logout(r)).await?
    };
    Ok(no_store_json(LogoutResponse {
        user_id: answer.user_id,
        sessions_revoked: answer.sessions_revoked,
    }))
}

/// `POST /auth/account/delete` body (optional).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct DeleteAccountRequest {
    /// Why (kept in the tombstone): letters, digits, `_ - : .`; default `user_request`.
    #[serde(default)]
    pub reason: Option<String>,
}

impl FromJsonBody for DeleteAccountRequest {
    fn from_json(bytes: &[u8]) -> Result<Self, ApiError> {
        Ok(Self {
            reason: string_field(&object(bytes)?, "reason")?,
        })
    }
}

/// What the deletion did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeleteAccountResponse {
    pub user_id: String,
    pub deleted_at_ms: i64,
    pub sessions_revoked: u64,
}

/// Account deletion (账号注销) by the user, authenticated by its access token.
#[utoipa::path(post, path = "/auth/account/delete", tag = "sessions",
    request_body(content = DeleteAccountRequest, content_type = "application/json",
        description = "Optional; send `Authorization: Bearer <access_token>`"),
    responses(
        (status = 200, description = "Deleted: phone and identities erased, every session revoked", body = DeleteAccountResponse,
            headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "INVALID_ARGUMENT (no bearer token, bad reason) or MALFORMED_JSON", body = super::ErrorBody),
        (status = 401, description = "TOKEN_INVALID, TOKEN_EXPIRED or TOKEN_REVOKED", body = super::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = super::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE (a body that is not JSON)", body = super::ErrorBody),
        (status = 429, description = "RATE_LIMITED", body = super::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "INTERNAL", body = super::ErrorBody),
        (status = 503, description = "DATABASE_UNAVAILABLE or BACKEND_UNAVAILABLE", body = super::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait (1-5)"))),
        (status = 504, description = "TIMEOUT", body = super::ErrorBody),
    )
)]
pub async fn delete_account(
    State(state): State<AppState>,
    ctx: EdgeContext,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<DeleteAccountRequest>,
) -> Result<Response, ApiError> {
    let reason = body.reason;
    let token = bearer(&headers).ok_or(ApiError::InvalidField {
        field: "Authorization",
        problem: "is required: send Authorization: Bearer <access_token>",
    })?;
    let request = tonic::Request::new(proto::DeleteAccountRequest {
        access_token: token,
        reason: reason.unwrap_or_default(),
    });
    let mut client = state.auth();
    let answer = forward(&state, &ctx, request, |r| client.delete_account(r)).await?;
    Ok(no_store_json(DeleteAccountResponse {
        user_id: answer.user_id,
        deleted_at_ms: answer.deleted_at_ms,
        sessions_revoked: answer.sessions_revoked,
    }))
}
