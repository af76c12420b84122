//! The WeChat server endpoints, as WeChat serves them: same paths, parameters,
//! bodies, content types, errcodes and errmsgs (with the `, rid: …` suffix).
//! Errors are HTTP 200 with `errcode` in the body; success bodies of
//! jscode2session and stable_token carry no `errcode`, as WeChat's do.

use crate::{
    errcode::{WxError, errmsg, rid},
    faults::{Fault, FaultEndpoint},
    state::SimState,
};
use axum::{
    Router,
    body::Bytes,
    extract::{Query, State, rejection::QueryRejection},
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use serde::Deserialize;
use std::{borrow::Cow, fmt::Write as _, sync::Arc, time::Instant};

/// jscode2session answers `text/plain` (even for JSON), as WeChat does.
const TEXT_PLAIN: &str = "text/plain";
/// What WeChat's JSON APIs answer with.
const JSON: &str = "application/json; encoding=utf-8";

/// The routes of the WeChat server API.
pub(crate) fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/sns/jscode2session", get(jscode2session))
        .route("/cgi-bin/stable_token", any(stable_token))
        .route(
            "/wxa/business/getuserphonenumber",
            any(get_user_phone_number),
        )
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `{"errcode":N,"errmsg":"<WeChat's errmsg>, rid: <hex>"}`.
fn error_body(errcode: i64) -> String {
    format!(
        r#"{{"errcode":{errcode},"errmsg":"{}, rid: {}"}}"#,
        errmsg(errcode),
        rid()
    )
}

fn wx_error(content_type: &'static str, e: WxError) -> Response {
    respond(StatusCode::OK, content_type, error_body(e.errcode()))
}

/// The answer an injected fault replaces the normal one with.
fn fault_response(fault: &Fault, content_type: &'static str) -> Response {
    let status = fault
        .http_status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if let Some(body) = &fault.body {
        return respond(status, content_type, body.clone());
    }
    if let Some(errcode) = fault.errcode {
        return respond(status, content_type, error_body(errcode));
    }
    let reason = status.canonical_reason().unwrap_or("Error");
    let page = format!(
        "<html>\r\n<head><title>{} {reason}</title></head>\r\n<body>\r\n<center><h1>{} {reason}</h1></center>\r\n</body>\r\n</html>\r\n",
        status.as_u16(),
        status.as_u16()
    );
    respond(status, "text/html", page)
}

/// What an endpoint answered, before faults: for the call's log line and the client.
struct Answer {
    errcode: i64,
    app: String,
    response: Response,
}

impl Answer {
    fn ok(app: &str, content_type: &'static str, body: String) -> Self {
        Self {
            errcode: 0,
            app: app.to_owned(),
            response: respond(StatusCode::OK, content_type, body),
        }
    }

    fn err(app: &str, content_type: &'static str, e: WxError) -> Self {
        Self {
            errcode: e.errcode(),
            app: app.to_owned(),
            response: wx_error(content_type, e),
        }
    }
}

/// Serves one call to a WeChat endpoint with the armed faults applied, the one
/// place faults take effect: counts the call, sleeps a fault's latency, answers
/// with the fault instead when WeChat would not have processed the call, else
/// runs `handle` (which may spend a code) and, for a garbled success, replaces
/// its answer. One debug line per call; never codes, keys, tokens or phones.
async fn with_faults(
    st: &SimState,
    endpoint: FaultEndpoint,
    content_type: &'static str,
    handle: impl FnOnce() -> Answer,
) -> Response {
    let started = Instant::now();
    st.count_call(endpoint);
    let fault = st.faults.take(endpoint);
    if let Some(ms) = fault.as_ref().and_then(|f| f.latency_ms) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let fault = fault.filter(Fault::replaces_answer);
    if let Some(f) = fault.as_ref().filter(|f| !f.processes_request()) {
        log_call(endpoint, "", -1, started, true);
        return fault_response(f, content_type);
    }
    let answer = handle();
    log_call(
        endpoint,
        &answer.app,
        answer.errcode,
        started,
        fault.is_some(),
    );
    match fault {
        Some(f) => fault_response(&f, content_type),
        None => answer.response,
    }
}

fn log_call(endpoint: FaultEndpoint, app: &str, errcode: i64, started: Instant, faulted: bool) {
    tracing::debug!(
        endpoint = endpoint.as_str(),
        app,
        errcode,
        faulted,
        latency_us = started.elapsed().as_micros() as u64,
        "wechat call"
    );
}

#[derive(Deserialize, Default)]
struct Jscode2SessionQuery {
    appid: Option<String>,
    secret: Option<String>,
    js_code: Option<String>,
    grant_type: Option<String>,
}

async fn jscode2session(
    State(st): State<Arc<SimState>>,
    query: Result<Query<Jscode2SessionQuery>, QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    with_faults(&st, FaultEndpoint::Jscode2Session, TEXT_PLAIN, || {
        let app = q.appid.as_deref().unwrap_or("");
        match st.code2session(
            q.appid.as_deref(),
            q.secret.as_deref(),
            q.js_code.as_deref(),
            q.grant_type.as_deref(),
        ) {
            Ok((_, grant)) => {
                let mut body = String::with_capacity(128);
                let _ = write!(
                    body,
                    r#"{{"session_key":"{}","openid":"{}""#,
                    grant.session_key.to_base64(),
                    grant.openid
                );
                if let Some(u) = &grant.unionid {
                    let _ = write!(body, r#","unionid":"{u}""#);
                }
                body.push('}');
                Answer::ok(app, TEXT_PLAIN, body)
            }
            Err(e) => Answer::err(app, TEXT_PLAIN, e),
        }
    })
    .await
}

#[derive(Deserialize, Default)]
struct StableTokenBody<'a> {
    #[serde(borrow, default)]
    grant_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    appid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    secret: Option<Cow<'a, str>>,
    #[serde(default)]
    force_refresh: Option<bool>,
}

/// Parses a JSON body; an empty body reads as `{}`.
fn parse_body<'a, T: Deserialize<'a> + Default>(body: &'a [u8]) -> Result<T, WxError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|_| WxError::DataFormat)
}

async fn stable_token(State(st): State<Arc<SimState>>, method: Method, body: Bytes) -> Response {
    with_faults(&st, FaultEndpoint::StableToken, JSON, || {
        let parsed = if method == Method::POST {
            parse_body::<StableTokenBody>(&body)
        } else {
            Err(WxError::RequirePost)
        };
        let app = parsed
            .as_ref()
            .ok()
            .and_then(|b| b.appid.as_deref())
            .unwrap_or("");
        let result = parsed.as_ref().map_err(|e| *e).and_then(|b| {
            st.stable_token(
                b.appid.as_deref(),
                b.secret.as_deref(),
                b.grant_type.as_deref(),
                b.force_refresh.unwrap_or(false),
            )
        });
        match result {
            Ok((token, expires_in)) => Answer::ok(
                app,
                JSON,
                format!(r#"{{"access_token":"{token}","expires_in":{expires_in}}}"#),
            ),
            Err(e) => Answer::err(app, JSON, e),
        }
    })
    .await
}

#[derive(Deserialize, Default)]
struct TokenQuery {
    access_token: Option<String>,
}

#[derive(Deserialize, Default)]
struct PhoneBody<'a> {
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    openid: Option<Cow<'a, str>>,
}

async fn get_user_phone_number(
    State(st): State<Arc<SimState>>,
    method: Method,
    query: Result<Query<TokenQuery>, QueryRejection>,
    body: Bytes,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    with_faults(&st, FaultEndpoint::GetUserPhoneNumber, JSON, || {
        let result = if method == Method::POST {
            parse_body::<PhoneBody>(&body).and_then(|b| {
                st.phone_number(
                    q.access_token.as_deref(),
                    b.code.as_deref(),
                    b.openid.as_deref(),
                )
            })
        } else {
            Err(WxError::RequirePost)
        };
        match result {
            Ok(grant) => {
                let phone = &grant.phone;
                let body = format!(
                    r#"{{"errcode":0,"errmsg":"ok","phone_info":{{"phoneNumber":"{}","purePhoneNumber":"{}","countryCode":"{}","watermark":{{"timestamp":{},"appid":"{}"}}}}}}"#,
                    phone.full(),
                    phone.number(),
                    phone.country_code(),
                    grant.timestamp,
                    grant.app_id
                );
                Answer::ok(&grant.app_id, JSON, body)
            }
            Err(e) => Answer::err("", JSON, e),
        }
    })
    .await
}
