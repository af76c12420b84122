//! `POST /auth/mp_login`: the JSON body the mini-program sends (the original
//! `{code, encryptedData, iv}` or the new `{code, phoneCode}`), forwarded once,
//! never retried, to `mpauth.v1.Auth/MiniProgramLogin` with a deadline.

use super::{
    AppState,
    client_ip::ClientIp,
    error::{ApiError, ErrorBody, from_status},
    request_id::RequestId,
};
pub use crate::api::json::{LoginRequest, LoginResponse};
use crate::api::metadata;
use anyhow::Context as _;
use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Request, State},
    http::{HeaderMap, HeaderValue, header, request::Parts},
    response::{IntoResponse, Response},
};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::Serialize;
use serde_json::{Map, Value};
use std::{convert::Infallible, time::Instant};
use tonic::{Code, metadata::AsciiMetadataValue};

/// A string field: absent, `null` and `""` are `None`; any other non-string is an error.
pub(super) fn string_field(
    map: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, ApiError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::InvalidField {
            field: name,
            problem: "must be a string",
        }),
    }
}

/// A request body the gateway reads itself (to give precise 4xx answers).
pub trait FromJsonBody: Sized {
    /// Parses the body's bytes.
    fn from_json(bytes: &[u8]) -> Result<Self, ApiError>;
}

impl FromJsonBody for LoginRequest {
    /// Reads the body's fields, checking only their presence and JSON types;
    /// the service validates the values.
    fn from_json(bytes: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson {
            problem: format!(
                "{} at line {} column {}",
                match e.classify() {
                    serde_json::error::Category::Eof => "unexpected end of input",
                    serde_json::error::Category::Io => "unreadable input",
                    _ => "syntax error",
                },
                e.line(),
                e.column()
            ),
        })?;
        let Value::Object(map) = value else {
            return Err(ApiError::MalformedJson {
                problem: "the top-level value must be an object".into(),
            });
        };
        let request = LoginRequest {
            code: string_field(&map, "code")?.ok_or(ApiError::InvalidField {
                field: "code",
                problem: "is required: send the code from wx.login()",
            })?,
            phone_code: string_field(&map, "phoneCode")?,
            encrypted_data: string_field(&map, "encryptedData")?,
            iv: string_field(&map, "iv")?,
            app_id: string_field(&map, "appId")?,
        };
        // No phone proof at all is a silent login (静默登录); half a legacy proof is a mistake.
        if request.phone_code.is_none() && request.encrypted_data.is_some() && request.iv.is_none()
        {
            return Err(ApiError::InvalidField {
                field: "iv",
                problem: "is required with encryptedData",
            });
        }
        Ok(request)
    }
}

/// The JSON body extractor: content type, size and read-time limits, then
/// [`FromJsonBody::from_json`]. Every rejection is an [`ApiError`].
pub struct LoginJson<T = LoginRequest>(pub T);

impl<T: FromJsonBody> FromRequest<AppState> for LoginJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        T::from_json(&read_body(req, state).await?).map(Self)
    }
}

/// A JSON body that may be left out entirely (no `Content-Type` and no bytes):
/// then `T::default()`. When sent, it passes the same checks as [`LoginJson`].
pub struct OptionalJson<T>(pub T);

impl<T: FromJsonBody + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let typed = req.headers().contains_key(header::CONTENT_TYPE);
        if typed && !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = read_body(req, state).await?;
        match (typed, bytes.is_empty()) {
            (_, true) => Ok(Self(T::default())),
            (false, false) => Err(ApiError::UnsupportedMediaType),
            (true, false) => T::from_json(&bytes).map(Self),
        }
    }
}

/// Reads a request body within `max_body_bytes` and the body-read timeout.
async fn read_body(req: Request, state: &AppState) -> Result<axum::body::Bytes, ApiError> {
    let limit = state.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let read = Limited::new(req.into_body(), limit).collect();
    match tokio::time::timeout(state.body_read_timeout, read).await {
        Err(_) => Err(ApiError::BodyTimeout),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Ok(Err(_)) => Err(ApiError::MalformedJson {
            problem: "the body could not be read".into(),
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// `application/json`, with an optional `charset=utf-8` (any case, quoted or not).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        && parts.all(|param| {
            let param = param.trim();
            match param.split_once('=') {
                Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
                    value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
                }
                _ => param.is_empty(),
            }
        })
}

/// What the edge middleware learned about a request: its id and client address.
#[derive(Debug, Clone)]
pub struct EdgeContext {
    /// The request id.
    pub request_id: RequestId,
    /// The resolved client IP.
    pub client_ip: Option<ClientIp>,
}

impl<S: Send + Sync> FromRequestParts<S> for EdgeContext {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            request_id: parts
                .extensions
                .get::<RequestId>()
                .cloned()
                .unwrap_or_else(RequestId::generate),
            client_ip: parts.extensions.get::<ClientIp>().copied(),
        })
    }
}

/// Logs a mini-program user in.
#[utoipa::path(
    post,
    path = "/auth/mp_login",
    tag = "auth",
    request_body(content = LoginRequest, content_type = "application/json",
        description = "The original `{code, encryptedData, iv}`, the new `{code, phoneCode}`, or `{code}` alone for a silent login (静默登录), plus optional `appId`."),
    params(("X-Request-Id" = Option<String>, Header,
        description = "Optional request id (1-64 characters of [A-Za-z0-9-_.]); echoed, or generated")),
    responses(
        (status = 200, description = "Logged in (Cache-Control: no-store)", body = LoginResponse),
        (status = 400, description = "INVALID_ARGUMENT, MALFORMED_JSON, APP_ID_REQUIRED, WATERMARK_MISMATCH or UNKNOWN_APP", body = ErrorBody),
        (status = 401, description = "LOGIN_CODE_INVALID, LOGIN_CODE_USED or PHONE_CODE_INVALID", body = ErrorBody),
        (status = 403, description = "USER_BLOCKED", body = ErrorBody),
        (status = 405, description = "METHOD_NOT_ALLOWED", body = ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT: the body was not received in time", body = ErrorBody),
        (status = 409, description = "SESSION_KEY_STALE or ENCRYPTED_DATA_EXPIRED", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = ErrorBody),
        (status = 428, description = "PHONE_REQUIRED: a silent login (no phone proof) of a WeChat user who is not registered", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED or WECHAT_RATE_LIMITED", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "INTERNAL", body = ErrorBody),
        (status = 503, description = "WECHAT_UNAVAILABLE, DATABASE_UNAVAILABLE or BACKEND_UNAVAILABLE", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait (1-5)"))),
        (status = 504, description = "TIMEOUT", body = ErrorBody),
    )
)]
pub async fn mp_login(
    State(state): State<AppState>,
    ctx: EdgeContext,
    LoginJson(body): LoginJson,
) -> Result<Response, ApiError> {
    let request = tonic::Request::new(body.into_proto());
    // One attempt only: WeChat codes are single-use, a retry could only fail or double-log-in.
    let mut client = state.auth();
    let answer = forward(&state, &ctx, request, |r| client.mini_program_login(r)).await?;
    Ok(no_store_json(LoginResponse::from(answer)))
}

/// A 200 JSON answer carrying tokens: never cached anywhere.
pub(crate) fn no_store_json<T: Serialize>(body: T) -> Response {
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Sends one backend call with the request id, the client IP and the
/// gateway's deadline, and maps its failure through the one status table.
pub(crate) async fn forward<Req, Resp, F, Fut>(
    state: &AppState,
    ctx: &EdgeContext,
    mut request: tonic::Request<Req>,
    call: F,
) -> Result<Resp, ApiError>
where
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    let request_id = &ctx.request_id;
    request.set_timeout(state.backend_timeout);
    let md = request.metadata_mut();
    md.insert(
        metadata::REQUEST_ID,
        AsciiMetadataValue::try_from(request_id.as_str())
            .context("request id as metadata")
            .map_err(ApiError::Unexpected)?,
    );
    if let Some(ClientIp(ip)) = ctx.client_ip {
        md.insert(
            metadata::CLIENT_IP,
            AsciiMetadataValue::try_from(ip.to_string())
                .context("client ip as metadata")
                .map_err(ApiError::Unexpected)?,
        );
    }
    let started = Instant::now();
    match tokio::time::timeout(state.backend_timeout, call(request)).await {
        Err(_) => Err(ApiError::Timeout),
        // The channel enforces the request's grpc-timeout itself and reports
        // its expiry as CANCELLED: that is the gateway's own deadline.
        Ok(Err(status))
            if status.code() == Code::Cancelled && started.elapsed() >= state.backend_timeout =>
        {
            Err(ApiError::Timeout)
        }
        Ok(Err(status)) => {
            let err = from_status(&status);
            // The client gets an opaque message for these: the details go to the log.
            match err.reason() {
                super::Reason::Internal => tracing::error!(
                    request_id = %request_id,
                    grpc_code = ?status.code(),
                    grpc_message = status.message(),
                    "backend error"
                ),
                super::Reason::BackendUnavailable => tracing::warn!(
                    request_id = %request_id,
                    grpc_code = ?status.code(),
                    grpc_message = status.message(),
                    "backend unavailable"
                ),
                _ => {}
            }
            Err(err)
        }
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::Reason;
    use crate::proto::{self, mini_program_login_request::Phone};

    fn parse(json: &str) -> Result<LoginRequest, ApiError> {
        <LoginRequest as FromJsonBody>::from_json(json.as_bytes())
    }

    #[track_caller]
    fn rejected(json: &str, reason: Reason, field: Option<&str>) {
        let err = parse(json).unwrap_err();
        assert_eq!(err.reason(), reason, "{json}");
        assert_eq!(err.body().field.as_deref(), field, "{json}");
    }

    #[test]
    fn the_original_body_becomes_the_encrypted_oneof_untouched() {
        let req = parse(r#"{"code":"c0de","encryptedData":"ab+/ cd==","iv":"aXY="}"#).unwrap();
        let wire = req.into_proto();
        assert_eq!(wire.code, "c0de");
        assert_eq!(wire.app_id, "");
        assert_eq!(
            wire.phone,
            Some(Phone::Encrypted(proto::EncryptedPhone {
                encrypted_data: "ab+/ cd==".into(),
                iv: "aXY=".into()
            }))
        );
    }

    #[test]
    fn the_new_body_becomes_phone_code_and_wins_over_encrypted_data() {
        let wire = parse(r#"{"code":"c","phoneCode":"p","appId":"wx1"}"#)
            .unwrap()
            .into_proto();
        assert_eq!(wire.phone, Some(Phone::PhoneCode("p".into())));
        assert_eq!(wire.app_id, "wx1");
        let wire = parse(r#"{"code":"c","phoneCode":"p","encryptedData":"e","iv":"i"}"#)
            .unwrap()
            .into_proto();
        assert_eq!(wire.phone, Some(Phone::PhoneCode("p".into())));
    }

    #[test]
    fn unknown_fields_and_nulls_are_ignored() {
        let req = parse(
            r#"{"code":"c","encryptedData":"e","iv":"i","rawData":{"x":1},"signature":"s","appId":null,"phoneCode":""}"#,
        )
        .unwrap();
        assert_eq!(req.flow(), "encrypted_data");
        assert_eq!(req.app_id, None);
    }

    #[test]
    fn malformed_json_and_non_objects_are_malformed_json() {
        rejected(r#"{"code":"#, Reason::MalformedJson, None);
        rejected("", Reason::MalformedJson, None);
        rejected("[1,2]", Reason::MalformedJson, None);
        rejected("\"code\"", Reason::MalformedJson, None);
        let err = parse("{\"code\": \"secret-code\" oops").unwrap_err();
        assert!(!err.body().message.contains("secret-code"));
    }

    #[test]
    fn wrong_types_name_the_field() {
        rejected(
            r#"{"code":1,"phoneCode":"p"}"#,
            Reason::InvalidArgument,
            Some("code"),
        );
        rejected(
            r#"{"code":"c","phoneCode":true}"#,
            Reason::InvalidArgument,
            Some("phoneCode"),
        );
        rejected(
            r#"{"code":"c","encryptedData":["x"],"iv":"i"}"#,
            Reason::InvalidArgument,
            Some("encryptedData"),
        );
        rejected(
            r#"{"code":"c","phoneCode":"p","appId":7}"#,
            Reason::InvalidArgument,
            Some("appId"),
        );
    }

    #[test]
    fn missing_fields_are_named() {
        rejected(
            r#"{"phoneCode":"p"}"#,
            Reason::InvalidArgument,
            Some("code"),
        );
        rejected(
            r#"{"code":"","phoneCode":"p"}"#,
            Reason::InvalidArgument,
            Some("code"),
        );
        // `{code}` alone (or with null/empty phone fields) is a silent login.
        for silent in [
            r#"{"code":"c"}"#,
            r#"{"code":"c","phoneCode":null,"encryptedData":"","iv":null}"#,
        ] {
            let req = parse(silent).unwrap();
            assert_eq!(req.flow(), "silent");
            assert!(req.into_proto().phone.is_none());
        }
        rejected(
            r#"{"code":"c","encryptedData":"e"}"#,
            Reason::InvalidArgument,
            Some("iv"),
        );
    }

    #[test]
    fn json_content_types_are_recognised() {
        let ok = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            is_json(&h)
        };
        assert!(ok("application/json"));
        assert!(ok("application/json; charset=utf-8"));
        assert!(ok("Application/JSON;charset=\"UTF-8\""));
        assert!(!ok("application/json; charset=gbk"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/x-www-form-urlencoded"));
        assert!(!ok("application/jsonp"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn debug_output_never_shows_codes() {
        let req = parse(r#"{"code":"SECRETCODE","phoneCode":"SECRETPHONE"}"#).unwrap();
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("SECRET"), "{dbg}");
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let body = LoginResponse::from(proto::MiniProgramLoginResponse {
            access_token: "SECRET-TOKEN".into(),
            user_id: "42".into(),
            ..Default::default()
        });
        let dbg = format!("{body:?}");
        assert!(!dbg.contains("SECRET"), "{dbg}");
    }

    #[test]
    fn the_response_says_bearer_and_omits_an_empty_unionid() {
        let body = LoginResponse::from(proto::MiniProgramLoginResponse {
            access_token: "t".into(),
            token_type: "Bearer".into(),
            expires_in: 7200,
            user_id: "42".into(),
            openid: "o".into(),
            unionid: String::new(),
            is_new_user: true,
            app_id: "wx1".into(),
            ..Default::default()
        });
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["token_type"], "bearer");
        assert!(json.get("unionid").is_none());
        assert!(json.get("app_id").is_none());
    }
}
