//! The gateway's errors and the one table from a gRPC status (code +
//! `google.rpc.ErrorInfo` reason) to an HTTP response. Every error leaves the
//! gateway as the same JSON shape ([`ErrorBody`]); the edge middleware fills in
//! the request id, so handlers and extractors never need it.

use crate::api::ERROR_DOMAIN;
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

/// The stable, machine-readable reason of an error: the contract's one enum
/// (`proto/mpauth/v1/errors.proto`). Mini-programs switch on it, never on `message`.
pub use crate::api::ErrorReason as Reason;

/// The gateway's side of one reason of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRow {
    /// The gateway sends this reason with this HTTP status and tells the
    /// mini-program what to do about it.
    Sends {
        /// The HTTP status.
        status: StatusCode,
        /// What the mini-program should do.
        action: &'static str,
    },
    /// A reason of the service the gateway does not pass on as such: it
    /// answers with this one instead (mini-programs cannot act on it).
    SentAs(Reason),
}

/// The HTTP side of the reasons, owned by this table.
impl Reason {
    /// The HTTP status this reason is answered with (that of the reason it is
    /// sent as, for a translated one).
    pub fn http_status(self) -> StatusCode {
        match self.sent_as().http_row() {
            HttpRow::Sends { status, .. } => status,
            HttpRow::SentAs(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the mini-program should do about it.
    pub fn action(self) -> &'static str {
        match self.sent_as().http_row() {
            HttpRow::Sends { action, .. } => action,
            HttpRow::SentAs(_) => "",
        }
    }

    /// The reason the gateway answers with when the service sends this one.
    pub fn sent_as(self) -> Reason {
        match self.http_row() {
            HttpRow::Sends { .. } => self,
            HttpRow::SentAs(other) => other,
        }
    }

    /// THE HTTP table: one row per reason of the contract. Exhaustive: a new
    /// reason in the proto does not compile until it has its row here (and
    /// a unit test checks docs/http-api.md lists it).
    pub fn http_row(self) -> HttpRow {
        use Reason as R;
        const RELOGIN: &str = "call wx.login again and retry once with the new code";
        const LOGIN_AGAIN: &str = "drop the stored tokens and log in again (silent login first)";
        const RETRY_LATER: &str = "wait Retry-After seconds, call wx.login again, then retry once";
        const FRESH_PHONE_DATA: &str = "call wx.login BEFORE showing the phone button, \
             then retry with the fresh code, encryptedData and iv";
        let (status, action) = match self {
            R::InvalidArgument => (
                StatusCode::BAD_REQUEST,
                "fix the field named in `field` (a bug in the mini-program, not something the user can fix)",
            ),
            R::MalformedJson => (
                StatusCode::BAD_REQUEST,
                "send a JSON object: {\"code\",\"phoneCode\"} or {\"code\",\"encryptedData\",\"iv\"}",
            ),
            R::AppIdRequired => (
                StatusCode::BAD_REQUEST,
                "send `appId`: this service serves several mini-programs",
            ),
            R::WatermarkMismatch => (
                StatusCode::BAD_REQUEST,
                "send the `appId` of the mini-program that showed the phone button",
            ),
            R::UnknownApp => (
                StatusCode::BAD_REQUEST,
                "check `appId`: this service does not serve that mini-program",
            ),
            R::LoginCodeInvalid => (StatusCode::UNAUTHORIZED, RELOGIN),
            R::LoginCodeUsed => (StatusCode::UNAUTHORIZED, RELOGIN),
            R::PhoneCodeInvalid => (
                StatusCode::UNAUTHORIZED,
                "ask the user to tap the phone button again, then retry with the new phoneCode \
                 and a new wx.login code",
            ),
            R::UserBlocked => (
                StatusCode::FORBIDDEN,
                "do not retry: tell the user WeChat refused this login",
            ),
            R::NotFound => (
                StatusCode::NOT_FOUND,
                "check the URL: the login endpoint is POST /auth/mp_login",
            ),
            R::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "use a method listed in the Allow header",
            ),
            R::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "send the request body without pausing; retry once",
            ),
            R::SessionKeyStale => (StatusCode::CONFLICT, FRESH_PHONE_DATA),
            R::EncryptedDataExpired => (StatusCode::CONFLICT, FRESH_PHONE_DATA),
            R::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "send only code and phoneCode (or code, encryptedData and iv)",
            ),
            R::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json",
            ),
            R::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "wait Retry-After seconds, then retry",
            ),
            R::WechatRateLimited => (StatusCode::TOO_MANY_REQUESTS, RETRY_LATER),
            R::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "retry once later with a new wx.login code; report the request_id if it persists",
            ),
            R::WechatUnavailable => (StatusCode::SERVICE_UNAVAILABLE, RETRY_LATER),
            R::DatabaseUnavailable => (StatusCode::SERVICE_UNAVAILABLE, RETRY_LATER),
            R::BackendUnavailable => (StatusCode::SERVICE_UNAVAILABLE, RETRY_LATER),
            R::NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "send traffic to another replica until this one is ready",
            ),
            R::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "call wx.login again and retry once (the code may have been used)",
            ),
            R::PhoneRequired => (
                StatusCode::PRECONDITION_REQUIRED,
                "show the 一键登录 phone button, then log in with its phoneCode (or encryptedData \
                 and iv) and a new wx.login code",
            ),
            R::RefreshTokenInvalid => (StatusCode::UNAUTHORIZED, LOGIN_AGAIN),
            R::RefreshTokenWrongApp => (
                StatusCode::UNAUTHORIZED,
                "send the refresh token with the appId of the mini-program that logged in",
            ),
            R::RefreshTokenReused => (StatusCode::UNAUTHORIZED, LOGIN_AGAIN),
            R::SessionRevoked => (StatusCode::UNAUTHORIZED, LOGIN_AGAIN),
            R::SessionExpired => (StatusCode::UNAUTHORIZED, LOGIN_AGAIN),
            R::TokenInvalid => (
                StatusCode::UNAUTHORIZED,
                "refresh the session once (POST /auth/refresh); if that fails, log in again",
            ),
            R::TokenExpired => (
                StatusCode::UNAUTHORIZED,
                "refresh the session once (POST /auth/refresh), then retry with the new access token",
            ),
            R::TokenRevoked => (StatusCode::UNAUTHORIZED, LOGIN_AGAIN),
            // Reasons of the service a mini-program cannot act on.
            R::Unspecified
            | R::WechatAppMisconfigured
            | R::CallerUnauthenticated
            | R::PermissionDenied
            | R::UserNotFound
            | R::UserDeleted
            | R::SessionNotFound => return HttpRow::SentAs(R::Internal),
            R::TokenNotYetValid | R::KeyUnknown => return HttpRow::SentAs(R::TokenInvalid),
            R::RevocationUnavailable | R::CallerRateLimited => {
                return HttpRow::SentAs(R::BackendUnavailable);
            }
        };
        HttpRow::Sends { status, action }
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

/// The OpenAPI schema `Reason`: a string, one of the reasons the gateway sends.
impl utoipa::PartialSchema for Reason {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The stable, machine-readable reason of an error. Mini-programs switch on \
                 this, never on `message`.",
            ))
            .enum_values(Some(
                Reason::all()
                    .filter(|r| matches!(r.http_row(), HttpRow::Sends { .. }))
                    .map(Reason::as_str),
            ))
            .into()
    }
}

impl ToSchema for Reason {
    fn name() -> std::borrow::Cow<'static, str> {
        "Reason".into()
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The stable reason to switch on.
    #[serde(serialize_with = "Reason::serialize")]
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

    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
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

/// A backend status (code + `ErrorInfo.reason` of domain `mpauth.v1`) to the
/// HTTP error sent to the mini-program: a reason of the contract sent with its
/// own gRPC code goes through [`Reason::http_row`]; any other status falls back
/// to its code's row, and codes with no row of their own are `INTERNAL`.
/// Documented in docs/http-api.md.
pub fn from_status(status: &Status) -> ApiError {
    use Code as C;
    use Reason as R;
    let info = status
        .get_details_error_info()
        .filter(|info| info.domain == ERROR_DOMAIN);
    // A reason of the contract sent with its own code: the table decides.
    let known = info
        .as_ref()
        .and_then(|info| Reason::from_str_name(&info.reason))
        .filter(|reason| reason.grpc_code() == Some(status.code()));
    let reason = match known {
        // The backend refused the gateway's own credential: an operator's problem,
        // never the mini-program's (the wx.login code was not even looked at).
        Some(R::CallerUnauthenticated) => {
            tracing::error!(
                "the backend refused the gateway's API key: check gateway.api_key_file and the server's callers"
            );
            R::Internal
        }
        Some(reason) => reason.sent_as(),
        // A reason this table does not know falls back to its code's row.
        None => match status.code() {
            C::InvalidArgument => R::InvalidArgument,
            C::Unauthenticated => R::LoginCodeInvalid,
            C::ResourceExhausted => R::RateLimited,
            // Includes the channel's own "cannot connect" status, which has no ErrorInfo.
            C::Unavailable => R::BackendUnavailable,
            C::DeadlineExceeded => R::Timeout,
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
            | C::DataLoss => R::Internal,
        },
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
    use std::collections::{BTreeMap, HashMap};
    use tonic_types::ErrorDetails;

    /// A status as the service sends `reason`: its contract code and an ErrorInfo.
    fn service_status(reason: Reason) -> Option<Status> {
        let code = reason.grpc_code()?;
        let mut details = ErrorDetails::new();
        details.set_error_info(reason.as_str(), ERROR_DOMAIN, HashMap::new());
        Some(Status::with_error_details(
            code,
            "from the service",
            details,
        ))
    }

    #[test]
    fn every_error_reason_has_a_row_in_the_http_table() {
        let mut sent = 0;
        for reason in Reason::all() {
            match reason.http_row() {
                HttpRow::Sends { status, action } => {
                    sent += 1;
                    assert!(
                        status.is_client_error() || status.is_server_error(),
                        "{reason:?}: {status}"
                    );
                    assert!(!action.is_empty(), "{reason:?} has no action");
                }
                HttpRow::SentAs(other) => assert!(
                    matches!(other.http_row(), HttpRow::Sends { .. }),
                    "{reason:?} is sent as {other:?}, which the gateway does not send"
                ),
            }
            // What the service sends with this reason is answered by its row.
            if let Some(status) = service_status(reason) {
                let api = from_status(&status);
                assert_eq!(api.reason(), reason.sent_as(), "{reason:?}");
                assert_eq!(api.reason().http_status(), reason.http_status());
            }
        }
        assert_eq!(sent, 33, "the gateway sends 33 reasons");
    }

    #[test]
    fn wire_names_match_the_serde_names() {
        for reason in Reason::all() {
            let body = ApiError::Backend {
                reason,
                message: String::new(),
                field: None,
                retry_after_secs: None,
            }
            .body();
            assert_eq!(
                serde_json::to_value(&body).unwrap()["reason"],
                serde_json::Value::String(reason.as_str().to_owned())
            );
        }
    }

    /// The rows of a markdown table whose header line is `header`: its cells.
    fn table<'a>(doc: &'a str, header: &str) -> Vec<Vec<&'a str>> {
        doc.lines()
            .skip_while(|l| !l.starts_with(header))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
            .collect()
    }

    fn unquote(cell: &str) -> &str {
        cell.trim_matches('`')
    }

    #[test]
    fn the_http_api_doc_lists_exactly_the_error_reasons_with_their_status() {
        let doc = include_str!("../../docs/http-api.md");
        let mut documented: BTreeMap<&str, u16> = BTreeMap::new();
        for row in table(doc, "| HTTP | reason | sent when | action |") {
            let reason = Reason::from_str_name(unquote(row[1]))
                .unwrap_or_else(|| panic!("docs/http-api.md: {} is not an ErrorReason", row[1]));
            assert!(
                matches!(reason.http_row(), HttpRow::Sends { .. }),
                "{reason:?} is not sent by the gateway"
            );
            assert_eq!(row[3], reason.action(), "the action of {reason:?}");
            assert!(
                documented
                    .insert(reason.as_str(), row[0].parse().unwrap())
                    .is_none()
            );
        }
        for row in table(doc, "| service reason | sent as | HTTP |") {
            let reason = Reason::from_str_name(unquote(row[0]))
                .unwrap_or_else(|| panic!("docs/http-api.md: {} is not an ErrorReason", row[0]));
            assert_eq!(unquote(row[1]), reason.sent_as().as_str(), "{reason:?}");
            assert!(
                documented
                    .insert(reason.as_str(), row[2].parse().unwrap())
                    .is_none()
            );
        }
        let expected: BTreeMap<&str, u16> = Reason::all()
            .map(|r| (r.as_str(), r.http_status().as_u16()))
            .collect();
        assert_eq!(documented, expected);
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
