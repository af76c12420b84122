//! The gateway's errors and the one table from a gRPC status (code +
//! `google.rpc.ErrorInfo` reason) to an HTTP response. Every error leaves the
//! gateway as the same JSON shape ([`ErrorBody`]); the edge middleware fills in
//! the request id, so handlers and extractors never need it.

use crate::grpc::error::ERROR_DOMAIN;
use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use utoipa::ToSchema;

/// Default `Retry-After` of a 429 whose status carries no `RetryInfo`.
const DEFAULT_RATE_LIMIT_RETRY_SECS: u64 = 60;
/// Bounds of the `Retry-After` of a 503 (jittered so clients do not retry in step).
const UNAVAILABLE_RETRY_SECS: std::ops::RangeInclusive<u64> = 1..=5;

/// The stable, machine-readable reason of an error. Mini-programs switch on
/// this, never on `message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// 400: a field is missing, has the wrong type, or is malformed (`field` names it).
    InvalidArgument,
    /// 400: the body is not a JSON object.
    MalformedJson,
    /// 400: `appId` is required because the service serves several mini-programs.
    AppIdRequired,
    /// 400: the encrypted phone data was produced for another mini-program.
    WatermarkMismatch,
    /// 400: the service does not serve this `appId`.
    UnknownApp,
    /// 401: the `wx.login` code is invalid or expired.
    LoginCodeInvalid,
    /// 401: the `wx.login` code was already used.
    LoginCodeUsed,
    /// 401: the phone code is invalid, expired or already used.
    PhoneCodeInvalid,
    /// 403: WeChat blocked this login as high-risk.
    UserBlocked,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists but not with this method (see `Allow`).
    MethodNotAllowed,
    /// 408: the request body was not received in time.
    RequestTimeout,
    /// 409: the encrypted data was made with another session_key than this code's.
    SessionKeyStale,
    /// 409: the encrypted data is too old.
    EncryptedDataExpired,
    /// 413: the body is larger than `max_body_bytes`.
    PayloadTooLarge,
    /// 415: the body is not sent as `application/json`.
    UnsupportedMediaType,
    /// 429: this client sent too many requests (gateway per-IP limit, or a backend limit).
    RateLimited,
    /// 429: WeChat's rate limit for this mini-program was reached.
    WechatRateLimited,
    /// 500: anything unexpected; details are in the logs under the request id.
    Internal,
    /// 503: WeChat is unavailable.
    WechatUnavailable,
    /// 503: the user database is unavailable.
    DatabaseUnavailable,
    /// 503: the login service cannot be reached.
    BackendUnavailable,
    /// 503 (`/readyz` only): the gateway cannot serve logins right now.
    NotReady,
    /// 504: the login took longer than the gateway's deadline.
    Timeout,
    /// 428: a silent login of a WeChat user who is not registered: show the phone button.
    PhoneRequired,
    /// 401: the refresh token is malformed, tampered with or unknown: log in again.
    RefreshTokenInvalid,
    /// 401: the refresh token belongs to another mini-program.
    RefreshTokenWrongApp,
    /// 401: the refresh token was already used: the session is revoked, log in again.
    RefreshTokenReused,
    /// 401: the session was logged out or revoked: log in again.
    SessionRevoked,
    /// 401: the session expired (idle or absolute lifetime): log in again.
    SessionExpired,
    /// 401: the access token is invalid or expired (refresh, or log in again).
    TokenInvalid,
    /// 401: the access token has expired: refresh the session, then retry.
    TokenExpired,
    /// 401: the access token's session was logged out or revoked: log in again.
    TokenRevoked,
}

impl Reason {
    /// Every reason, in the order of docs/http-api.md's table.
    pub const ALL: [Reason; 33] = [
        Reason::InvalidArgument,
        Reason::MalformedJson,
        Reason::AppIdRequired,
        Reason::WatermarkMismatch,
        Reason::UnknownApp,
        Reason::LoginCodeInvalid,
        Reason::LoginCodeUsed,
        Reason::PhoneCodeInvalid,
        Reason::UserBlocked,
        Reason::NotFound,
        Reason::MethodNotAllowed,
        Reason::RequestTimeout,
        Reason::SessionKeyStale,
        Reason::EncryptedDataExpired,
        Reason::PayloadTooLarge,
        Reason::UnsupportedMediaType,
        Reason::RateLimited,
        Reason::WechatRateLimited,
        Reason::Internal,
        Reason::WechatUnavailable,
        Reason::DatabaseUnavailable,
        Reason::BackendUnavailable,
        Reason::NotReady,
        Reason::Timeout,
        Reason::PhoneRequired,
        Reason::RefreshTokenInvalid,
        Reason::RefreshTokenWrongApp,
        Reason::RefreshTokenReused,
        Reason::SessionRevoked,
        Reason::SessionExpired,
        Reason::TokenInvalid,
        Reason::TokenExpired,
        Reason::TokenRevoked,
    ];

    /// The wire string, e.g. `LOGIN_CODE_USED`.
    pub fn as_str(self) -> &'static str {
        self.row().2
    }

    /// The HTTP status of this reason.
    pub fn http_status(self) -> StatusCode {
        self.row().0
    }

    /// What the mini-program should do about it.
    pub fn action(self) -> &'static str {
        self.row().1
    }

    /// The HTTP side of the table: status, action, wire name. Exhaustive.
    fn row(self) -> (StatusCode, &'static str, &'static str) {
        use Reason as R;
        const RELOGIN: &str = "call wx.login again and retry once with the new code";
        const LOGIN_AGAIN: &str = "drop the stored tokens and log in again (silent login first)";
        const RETRY_LATER: &str = "wait Retry-After seconds, call wx.login again, then retry once";
        const FRESH_PHONE_DATA: &str = "call wx.login BEFORE showing the phone button, \
             then retry with the fresh code, encryptedData and iv";
        match self {
            R::InvalidArgument => (
                StatusCode::BAD_REQUEST,
                "fix the field named in `field` (a bug in the mini-program, not something the user can fix)",
                "INVALID_ARGUMENT",
            ),
            R::MalformedJson => (
                StatusCode::BAD_REQUEST,
                "send a JSON object: {\"code\",\"phoneCode\"} or {\"code\",\"encryptedData\",\"iv\"}",
                "MALFORMED_JSON",
            ),
            R::AppIdRequired => (
                StatusCode::BAD_REQUEST,
                "send `appId`: this service serves several mini-programs",
                "APP_ID_REQUIRED",
            ),
            R::WatermarkMismatch => (
                StatusCode::BAD_REQUEST,
                "send the `appId` of the mini-program that showed the phone button",
                "WATERMARK_MISMATCH",
            ),
            R::UnknownApp => (
                StatusCode::BAD_REQUEST,
                "check `appId`: this service does not serve that mini-program",
                "UNKNOWN_APP",
            ),
            R::LoginCodeInvalid => (StatusCode::UNAUTHORIZED, RELOGIN, "LOGIN_CODE_INVALID"),
            R::LoginCodeUsed => (StatusCode::UNAUTHORIZED, RELOGIN, "LOGIN_CODE_USED"),
            R::PhoneCodeInvalid => (
                StatusCode::UNAUTHORIZED,
                "ask the user to tap the phone button again, then retry with the new phoneCode \
                 and a new wx.login code",
                "PHONE_CODE_INVALID",
            ),
            R::UserBlocked => (
                StatusCode::FORBIDDEN,
                "do not retry: tell the user WeChat refused this login",
                "USER_BLOCKED",
            ),
            R::NotFound => (
                StatusCode::NOT_FOUND,
                "check the URL: the login endpoint is POST /auth/mp_login",
                "NOT_FOUND",
            ),
            R::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "use a method listed in the Allow header",
                "METHOD_NOT_ALLOWED",
            ),
            R::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "send the request body without pausing; retry once",
                "REQUEST_TIMEOUT",
            ),
            R::SessionKeyStale => (StatusCode::CONFLICT, FRESH_PHONE_DATA, "SESSION_KEY_STALE"),
            R::EncryptedDataExpired => (
                StatusCode::CONFLICT,
                FRESH_PHONE_DATA,
                "ENCRYPTED_DATA_EXPIRED",
            ),
            R::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "send only code and phoneCode (or code, encryptedData and iv)",
                "PAYLOAD_TOO_LARGE",
            ),
            R::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json",
                "UNSUPPORTED_MEDIA_TYPE",
            ),
            R::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "wait Retry-After seconds, then retry",
                "RATE_LIMITED",
            ),
            R::WechatRateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                RETRY_LATER,
                "WECHAT_RATE_LIMITED",
            ),
            R::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "retry once later with a new wx.login code; report the request_id if it persists",
                "INTERNAL",
            ),
            R::WechatUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                RETRY_LATER,
                "WECHAT_UNAVAILABLE",
            ),
            R::DatabaseUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                RETRY_LATER,
                "DATABASE_UNAVAILABLE",
            ),
            R::BackendUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                RETRY_LATER,
                "BACKEND_UNAVAILABLE",
            ),
            R::NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "send traffic to another replica until this one is ready",
                "NOT_READY",
            ),
            R::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "call wx.login again and retry once (the code may have been used)",
                "TIMEOUT",
            ),
            R::PhoneRequired => (
                StatusCode::PRECONDITION_REQUIRED,
                "show the 一键登录 phone button, then log in with its phoneCode (or encryptedData \
                 and iv) and a new wx.login code",
                "PHONE_REQUIRED",
            ),
            R::RefreshTokenInvalid => (
                StatusCode::UNAUTHORIZED,
                LOGIN_AGAIN,
                "REFRESH_TOKEN_INVALID",
            ),
            R::RefreshTokenWrongApp => (
                StatusCode::UNAUTHORIZED,
                "send the refresh token with the appId of the mini-program that logged in",
                "REFRESH_TOKEN_WRONG_APP",
            ),
            R::RefreshTokenReused => (
                StatusCode::UNAUTHORIZED,
                LOGIN_AGAIN,
                "REFRESH_TOKEN_REUSED",
            ),
            R::SessionRevoked => (StatusCode::UNAUTHORIZED, LOGIN_AGAIN, "SESSION_REVOKED"),
            R::SessionExpired => (StatusCode::UNAUTHORIZED, LOGIN_AGAIN, "SESSION_EXPIRED"),
            R::TokenInvalid => (
                StatusCode::UNAUTHORIZED,
                "refresh the session once (POST /auth/refresh); if that fails, log in again",
                "TOKEN_INVALID",
            ),
            R::TokenExpired => (
                StatusCode::UNAUTHORIZED,
                "refresh the session once (POST /auth/refresh), then retry with the new access token",
                "TOKEN_EXPIRED",
            ),
            R::TokenRevoked => (StatusCode::UNAUTHORIZED, LOGIN_AGAIN, "TOKEN_REVOKED"),
        }
    }

    /// A client-safe default message, used when the backend's is not passed on.
    fn default_message(self) -> &'static str {
        use Reason as R;
        match self {
            R::BackendUnavailable => "the login service is unavailable: retry shortly",
            R::Timeout => "the login service did not answer in time",
            R::NotReady => "the login service is not ready",
            R::Internal => "internal error",
            R::RateLimited => "too many requests",
            _ => "the login failed",
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The stable reason to switch on.
    pub reason: Reason,
    /// A human-readable explanation (may change; never switch on it).
    #[schema(example = "the wx.login code was already used: call wx.login again and retry once")]
    pub message: String,
    /// What the mini-program should do.
    #[schema(example = "call wx.login again and retry once with the new code")]
    pub action: String,
    /// The request field at fault, by its JSON name (`code`, `phoneCode`,
    /// `encryptedData`, `iv`, `appId`), when one field is at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "phoneCode")]
    pub field: Option<String>,
    /// The request id (also in the `X-Request-Id` header): quote it when reporting a problem.
    #[schema(example = "0b7c8f5e-8d0e-4d8a-9a43-3f1b2b7e1c55")]
    pub request_id: String,
}

/// Why the gateway answered with an error. Each case names the reason it is sent as.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 415 `UNSUPPORTED_MEDIA_TYPE`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 413 `PAYLOAD_TOO_LARGE`.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The configured `max_body_bytes`.
        limit: usize,
    },
    /// 408 `REQUEST_TIMEOUT`: the body did not arrive in time.
    #[error("the request body was not received in time")]
    BodyTimeout,
    /// 400 `MALFORMED_JSON`.
    #[error("the request body is not a JSON object: {problem}")]
    MalformedJson {
        /// Where parsing stopped; never echoes the body.
        problem: String,
    },
    /// 400 `INVALID_ARGUMENT`, one field at fault.
    #[error("invalid `{field}`: {problem}")]
    InvalidField {
        /// The JSON name of the field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// 404 `NOT_FOUND`.
    #[error("no such route")]
    NotFound,
    /// 405 `METHOD_NOT_ALLOWED` (axum adds the `Allow` header).
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 429 `RATE_LIMITED` from the gateway's per-IP limit.
    #[error("too many requests from this client")]
    RateLimited {
        /// Seconds until a request would be accepted.
        retry_after_secs: u64,
    },
    /// 503 `NOT_READY` from `/readyz`.
    #[error("not ready: {0}")]
    NotReady(&'static str),
    /// The backend answered with an error status, already mapped by [`from_status`].
    #[error("{message}")]
    Backend {
        /// The mapped reason.
        reason: Reason,
        /// Client-safe message.
        message: String,
        /// The JSON name of the field at fault.
        field: Option<String>,
        /// `Retry-After` seconds, for 429 and 503.
        retry_after_secs: Option<u64>,
    },
    /// 504 `TIMEOUT`: the gateway's own deadline passed.
    #[error("the login service did not answer in time")]
    Timeout,
    /// 500 `INTERNAL`: a failure inside the gateway (logged by whoever returns it).
    #[error("internal error")]
    Unexpected(#[source] anyhow::Error),
}

impl ApiError {
    /// The reason this error is sent as.
    pub fn reason(&self) -> Reason {
        match self {
            Self::UnsupportedMediaType => Reason::UnsupportedMediaType,
            Self::PayloadTooLarge { .. } => Reason::PayloadTooLarge,
            Self::BodyTimeout => Reason::RequestTimeout,
            Self::MalformedJson { .. } => Reason::MalformedJson,
            Self::InvalidField { .. } => Reason::InvalidArgument,
            Self::NotFound => Reason::NotFound,
            Self::MethodNotAllowed => Reason::MethodNotAllowed,
            Self::RateLimited { .. } => Reason::RateLimited,
            Self::NotReady(_) => Reason::NotReady,
            Self::Backend { reason, .. } => *reason,
            Self::Timeout => Reason::Timeout,
            Self::Unexpected(_) => Reason::Internal,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Unexpected(_) => Reason::Internal.default_message().to_owned(),
            other => other.to_string(),
        }
    }

    fn field(&self) -> Option<String> {
        match self {
            Self::InvalidField { field, .. } => Some((*field).to_owned()),
            Self::Backend { field, .. } => field.clone(),
            _ => None,
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            Self::Backend {
                retry_after_secs, ..
            } => *retry_after_secs,
            _ => None,
        }
    }

    /// The body, without the request id (the edge middleware adds it).
    pub fn body(&self) -> ErrorBody {
        let reason = self.reason();
        ErrorBody {
            reason,
            message: self.message(),
            action: reason.action().to_owned(),
            field: self.field(),
            request_id: String::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (body.reason.http_status(), Json(body.clone())).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // The edge middleware re-renders the body with the request id.
        response.extensions_mut().insert(body);
        response
    }
}

/// THE table: a backend status (code + `ErrorInfo.reason` of domain
/// `mpauth.v1`) to the HTTP error sent to the mini-program. Exhaustive over
/// codes; a reason this table does not know falls back to its code's row, and
/// codes with no row of their own are `INTERNAL`. Documented in docs/http-api.md.
pub fn from_status(status: &Status) -> ApiError {
    use Code as C;
    use Reason as R;
    let info = status
        .get_details_error_info()
        .filter(|info| info.domain == ERROR_DOMAIN);
    let backend_reason = info.as_ref().map(|info| info.reason.as_str());
    let reason = match (status.code(), backend_reason) {
        (C::InvalidArgument, Some("APP_ID_REQUIRED")) => R::AppIdRequired,
        (C::InvalidArgument, Some("WATERMARK_MISMATCH")) => R::WatermarkMismatch,
        (C::InvalidArgument, _) => R::InvalidArgument,
        (C::NotFound, Some("UNKNOWN_APP")) => R::UnknownApp,
        // The backend refused the gateway's own credential: an operator's problem,
        // never the mini-program's (the wx.login code was not even looked at).
        (C::Unauthenticated, Some("CALLER_UNAUTHENTICATED")) => {
            tracing::error!(
                "the backend refused the gateway's API key: check gateway.api_key_file and the server's callers"
            );
            R::Internal
        }
        (C::ResourceExhausted, Some("CALLER_RATE_LIMITED")) => R::BackendUnavailable,
        (C::Unauthenticated, Some("LOGIN_CODE_USED")) => R::LoginCodeUsed,
        (C::Unauthenticated, Some("REFRESH_TOKEN_INVALID")) => R::RefreshTokenInvalid,
        (C::Unauthenticated, Some("REFRESH_TOKEN_WRONG_APP")) => R::RefreshTokenWrongApp,
        (C::Unauthenticated, Some("REFRESH_TOKEN_REUSED")) => R::RefreshTokenReused,
        (C::Unauthenticated, Some("SESSION_REVOKED")) => R::SessionRevoked,
        (C::Unauthenticated, Some("SESSION_EXPIRED")) => R::SessionExpired,
        (C::Unauthenticated, Some("TOKEN_INVALID" | "KEY_UNKNOWN" | "TOKEN_NOT_YET_VALID")) => {
            R::TokenInvalid
        }
        (C::Unauthenticated, Some("TOKEN_EXPIRED")) => R::TokenExpired,
        (C::Unauthenticated, Some("TOKEN_REVOKED")) => R::TokenRevoked,
        (C::FailedPrecondition, Some("PHONE_REQUIRED")) => R::PhoneRequired,
        (C::Unauthenticated, Some("PHONE_CODE_INVALID")) => R::PhoneCodeInvalid,
        (C::Unauthenticated, _) => R::LoginCodeInvalid,
        (C::PermissionDenied, Some("USER_BLOCKED")) => R::UserBlocked,
        (C::FailedPrecondition, Some("SESSION_KEY_STALE")) => R::SessionKeyStale,
        (C::FailedPrecondition, Some("ENCRYPTED_DATA_EXPIRED")) => R::EncryptedDataExpired,
        (C::ResourceExhausted, Some("WECHAT_RATE_LIMITED")) => R::WechatRateLimited,
        (C::ResourceExhausted, _) => R::RateLimited,
        (C::Unavailable, Some("WECHAT_UNAVAILABLE")) => R::WechatUnavailable,
        (C::Unavailable, Some("DATABASE_UNAVAILABLE")) => R::DatabaseUnavailable,
        // Includes the channel's own "cannot connect" status, which has no ErrorInfo.
        (C::Unavailable, _) => R::BackendUnavailable,
        (C::DeadlineExceeded, _) => R::Timeout,
        (
            C::Ok
            | C::Cancelled
            | C::Unknown
            | C::NotFound
            | C::AlreadyExists
            | C::PermissionDenied
            | C::FailedPrecondition
            | C::Aborted
            | C::OutOfRange
            | C::Unimplemented
            | C::Internal
            | C::DataLoss,
            _,
        ) => R::Internal,
    };
    let retry_delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    let retry_after_secs = match reason.http_status() {
        StatusCode::TOO_MANY_REQUESTS => Some(
            retry_delay
                .map(ceil_secs)
                .unwrap_or(DEFAULT_RATE_LIMIT_RETRY_SECS),
        ),
        StatusCode::SERVICE_UNAVAILABLE => Some(match retry_delay {
            Some(delay) => ceil_secs(delay).clamp(
                *UNAVAILABLE_RETRY_SECS.start(),
                *UNAVAILABLE_RETRY_SECS.end(),
            ),
            None => rand::random_range(UNAVAILABLE_RETRY_SECS),
        }),
        _ => None,
    };
    // The service's messages are written for clients; only errors that carry
    // our ErrorInfo and are not internal pass theirs on.
    let message = match (&info, reason) {
        (Some(_), r) if r != R::Internal && r != R::BackendUnavailable => {
            json_field_names_in(status.message())
        }
        _ => reason.default_message().to_owned(),
    };
    let field = info
        .as_ref()
        .and_then(|info| info.metadata.get("field"))
        .map(|f| json_field_name(f).to_owned());
    ApiError::Backend {
        reason,
        message,
        field,
        retry_after_secs,
    }
}

/// Rounds a delay up to whole seconds, at least 1 (a `Retry-After` of 0 invites a hot loop).
pub(crate) fn ceil_secs(delay: Duration) -> u64 {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    secs.max(1)
}

/// Proto field names and the JSON names the mini-program sent.
const FIELD_NAMES: [(&str, &str); 4] = [
    ("encrypted_data", "encryptedData"),
    ("phone_code", "phoneCode"),
    ("app_id", "appId"),
    // The `phone` oneof was empty: the preferred way to fill it is phoneCode.
    ("phone", "phoneCode"),
];

/// The JSON name of a proto field name (`encrypted_data` → `encryptedData`).
pub fn json_field_name(proto_name: &str) -> &str {
    FIELD_NAMES
        .iter()
        .find(|(proto, _)| *proto == proto_name)
        .map_or(proto_name, |(_, json)| json)
}

/// Rewrites back-quoted proto field names in a message to their JSON names.
fn json_field_names_in(message: &str) -> String {
    FIELD_NAMES
        .iter()
        .fold(message.to_owned(), |m, (proto, json)| {
            m.replace(&format!("`{proto}`"), &format!("`{json}`"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::FieldError, grpc::error::to_status, login::LoginError};
    use std::collections::HashMap;
    use tonic_types::ErrorDetails;

    fn mapped(err: &LoginError) -> ApiError {
        from_status(&to_status(err))
    }

    #[track_caller]
    fn assert_row(err: LoginError, http: u16, reason: &str) -> ApiError {
        let api = mapped(&err);
        assert_eq!(api.reason().as_str(), reason, "{err:?}");
        assert_eq!(api.reason().http_status().as_u16(), http, "{err:?}");
        assert!(!api.body().action.is_empty());
        api
    }

    #[test]
    fn every_login_error_maps_to_its_http_row() {
        assert_row(LoginError::AppIdRequired, 400, "APP_ID_REQUIRED");
        assert_row(LoginError::WatermarkMismatch, 400, "WATERMARK_MISMATCH");
        assert_row(LoginError::UnknownApp, 400, "UNKNOWN_APP");
        assert_row(LoginError::LoginCodeInvalid, 401, "LOGIN_CODE_INVALID");
        assert_row(LoginError::LoginCodeUsed, 401, "LOGIN_CODE_USED");
        assert_row(LoginError::PhoneCodeInvalid, 401, "PHONE_CODE_INVALID");
        assert_row(LoginError::UserBlocked, 403, "USER_BLOCKED");
        assert_row(LoginError::SessionKeyStale, 409, "SESSION_KEY_STALE");
        assert_row(
            LoginError::EncryptedDataExpired,
            409,
            "ENCRYPTED_DATA_EXPIRED",
        );
        assert_row(LoginError::RateLimited, 429, "WECHAT_RATE_LIMITED");
        assert_row(LoginError::WechatUnavailable, 503, "WECHAT_UNAVAILABLE");
        assert_row(LoginError::DatabaseUnavailable, 503, "DATABASE_UNAVAILABLE");
        assert_row(LoginError::WechatMisconfigured, 500, "INTERNAL");
        assert_row(
            LoginError::Internal(anyhow::anyhow!("boom")),
            500,
            "INTERNAL",
        );
    }

    #[test]
    fn invalid_field_rows_name_the_json_field() {
        for (proto, json) in [
            ("encrypted_data", "encryptedData"),
            ("phone_code", "phoneCode"),
            ("app_id", "appId"),
            ("code", "code"),
            ("iv", "iv"),
        ] {
            let api = assert_row(
                LoginError::InvalidField(FieldError::new(proto, "is required")),
                400,
                "INVALID_ARGUMENT",
            );
            let body = api.body();
            assert_eq!(body.field.as_deref(), Some(json));
            assert!(
                body.message.contains(&format!("`{json}`")),
                "{}",
                body.message
            );
        }
        let api = assert_row(LoginError::AppIdRequired, 400, "APP_ID_REQUIRED");
        assert_eq!(api.body().field.as_deref(), Some("appId"));
    }

    #[test]
    fn phone_code_invalid_asks_for_the_phone_button_and_login_codes_for_wx_login() {
        assert!(
            Reason::PhoneCodeInvalid
                .action()
                .contains("tap the phone button again")
        );
        assert!(
            Reason::LoginCodeUsed
                .action()
                .contains("call wx.login again")
        );
        assert!(
            Reason::LoginCodeInvalid
                .action()
                .contains("call wx.login again")
        );
        assert!(
            Reason::SessionKeyStale
                .action()
                .contains("call wx.login BEFORE showing the phone button")
        );
    }

    #[test]
    fn backend_rate_limit_uses_retry_info_or_sixty_seconds() {
        let api = mapped(&LoginError::RateLimited);
        assert_eq!(api.retry_after_secs(), Some(60));
        let mut details = ErrorDetails::new();
        details.set_retry_info(Some(Duration::from_millis(7_200)));
        let api = from_status(&Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            details,
        ));
        assert_eq!(api.reason(), Reason::RateLimited);
        assert_eq!(api.retry_after_secs(), Some(8));
        let api = from_status(&Status::resource_exhausted("no details"));
        assert_eq!(api.retry_after_secs(), Some(60));
    }

    #[test]
    fn unavailable_retry_after_is_between_one_and_five_seconds() {
        for _ in 0..50 {
            let secs = mapped(&LoginError::WechatUnavailable)
                .retry_after_secs()
                .unwrap();
            assert!((1..=5).contains(&secs), "{secs}");
        }
        let mut details = ErrorDetails::new();
        details.set_retry_info(Some(Duration::from_secs(30)));
        let api = from_status(&Status::with_error_details(Code::Unavailable, "x", details));
        assert_eq!(api.retry_after_secs(), Some(5));
    }

    #[test]
    fn unreachable_backend_is_backend_unavailable_without_transport_details() {
        let api = from_status(&Status::unavailable(
            "tcp connect error: 10.1.2.3:50051 connection refused",
        ));
        assert_eq!(api.reason(), Reason::BackendUnavailable);
        assert_eq!(api.reason().http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!api.body().message.contains("10.1.2.3"));
    }

    #[test]
    fn deadline_exceeded_is_a_504_timeout() {
        let api = from_status(&Status::deadline_exceeded("too slow"));
        assert_eq!(api.reason(), Reason::Timeout);
        assert_eq!(api.reason().http_status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(ApiError::Timeout.reason(), Reason::Timeout);
    }

    #[test]
    fn unknown_codes_and_foreign_reasons_are_opaque_internal_errors() {
        for code in [
            Code::Unknown,
            Code::Internal,
            Code::Unimplemented,
            Code::Cancelled,
            Code::Aborted,
            Code::DataLoss,
        ] {
            let api = from_status(&Status::new(code, "secret stack trace at db:3306"));
            assert_eq!(api.reason(), Reason::Internal, "{code:?}");
            assert_eq!(api.body().message, "internal error");
        }
        // An ErrorInfo from another domain is not ours to trust.
        let mut details = ErrorDetails::new();
        details.set_error_info("USER_BLOCKED", "other.v1", HashMap::new());
        let api = from_status(&Status::with_error_details(
            Code::PermissionDenied,
            "x",
            details,
        ));
        assert_eq!(api.reason(), Reason::Internal);
        // A reason the table does not know falls back to its code's row.
        let mut details = ErrorDetails::new();
        details.set_error_info("SOMETHING_NEW", ERROR_DOMAIN, HashMap::new());
        let api = from_status(&Status::with_error_details(
            Code::Unauthenticated,
            "x",
            details,
        ));
        assert_eq!(api.reason(), Reason::LoginCodeInvalid);
    }

    #[test]
    fn internal_backend_messages_never_reach_the_client() {
        let api = mapped(&LoginError::Internal(anyhow::anyhow!(
            "mysql://root:hunter2@db"
        )));
        assert!(!api.body().message.contains("hunter2"));
        let api = ApiError::Unexpected(anyhow::anyhow!("hunter2"));
        assert_eq!(api.body().message, "internal error");
    }

    #[test]
    fn wire_names_match_the_serde_names() {
        for reason in Reason::ALL {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                serde_json::Value::String(reason.as_str().to_owned())
            );
        }
    }

    #[test]
    fn the_http_api_doc_lists_every_reason_with_its_status() {
        let doc = include_str!("../../docs/http-api.md");
        for reason in Reason::ALL {
            let row = format!(
                "| {} | `{}` |",
                reason.http_status().as_u16(),
                reason.as_str()
            );
            let line = doc
                .lines()
                .find(|l| l.starts_with(&row))
                .unwrap_or_else(|| panic!("docs/http-api.md lacks a row starting {row:?}"));
            assert!(
                line.contains(reason.action()),
                "{line} lacks {:?}",
                reason.action()
            );
        }
    }

    #[test]
    fn error_responses_carry_no_store_and_retry_after() {
        let response = ApiError::RateLimited {
            retry_after_secs: 3,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert!(response.extensions().get::<ErrorBody>().is_some());
    }
}
