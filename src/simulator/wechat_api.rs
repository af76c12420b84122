//! The WeChat server endpoints, as WeChat serves them: same paths, parameters,
//! bodies, content types, errcodes and errmsgs (with the `, rid: …` suffix).
//! Errors are HTTP 200 with `errcode` in the body; success bodies of
//! jscode2session and stable_token carry no `errcode`, as WeChat's do.

use super::{
    faults::{Fault, FaultEndpoint},
    state::{self, SimState, WxError, errmsg, rid},
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

/// Applies the fault taken for this call before normal processing. Returns the
/// answer if the fault replaces it without WeChat having processed the call;
/// otherwise the fault (if any) to apply after processing.
async fn pre_fault(
    st: &SimState,
    endpoint: FaultEndpoint,
    content_type: &'static str,
) -> Result<Option<Fault>, Response> {
    let Some(fault) = st.faults.take(endpoint) else {
        return Ok(None);
    };
    if let Some(ms) = fault.latency_ms {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if fault.replaces_answer() && !fault.processes_request() {
        return Err(fault_response(&fault, content_type));
    }
    Ok(Some(fault).filter(Fault::processes_request))
}

/// One debug line per WeChat call. Never codes, keys, tokens or phones.
fn log_call(endpoint: &'static str, app: &str, errcode: i64, started: Instant, faulted: bool) {
    tracing::debug!(
        endpoint,
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
    const EP: &str = "jscode2session";
    let started = Instant::now();
    st.count_call(state::JSCODE2SESSION);
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let app = q.appid.as_deref().unwrap_or("");
    let post_fault = match pre_fault(&st, FaultEndpoint::Jscode2Session, TEXT_PLAIN).await {
        Ok(f) => f,
        Err(resp) => {
            log_call(EP, app, -1, started, true);
            return resp;
        }
    };
    let result = st.code2session(
        q.appid.as_deref(),
        q.secret.as_deref(),
        q.js_code.as_deref(),
        q.grant_type.as_deref(),
    );
    let (errcode, resp) = match result {
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
            (0, respond(StatusCode::OK, TEXT_PLAIN, body))
        }
        Err(e) => (e.errcode(), wx_error(TEXT_PLAIN, e)),
    };
    match post_fault {
        Some(f) => {
            log_call(EP, app, errcode, started, true);
            fault_response(&f, TEXT_PLAIN)
        }
        None => {
            log_call(EP, app, errcode, started, false);
            resp
        }
    }
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
    const EP: &str = "stable_token";
    let started = Instant::now();
    st.count_call(state::STABLE_TOKEN);
    let post_fault = match pre_fault(&st, FaultEndpoint::StableToken, JSON).await {
        Ok(f) => f,
        Err(resp) => {
            log_call(EP, "", -1, started, true);
            return resp;
        }
    };
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
    let (errcode, resp) = match result {
        Ok((token, expires_in)) => (
            0,
            respond(
                StatusCode::OK,
                JSON,
                format!(r#"{{"access_token":"{token}","expires_in":{expires_in}}}"#),
            ),
        ),
        Err(e) => (e.errcode(), wx_error(JSON, e)),
    };
    let faulted = post_fault.is_some();
    log_call(EP, app, errcode, started, faulted);
    match post_fault {
        Some(f) => fault_response(&f, JSON),
        None => resp,
    }
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
    const EP: &str = "getuserphonenumber";
    let started = Instant::now();
    st.count_call(state::GETUSERPHONENUMBER);
    let post_fault = match pre_fault(&st, FaultEndpoint::GetUserPhoneNumber, JSON).await {
        Ok(f) => f,
        Err(resp) => {
            log_call(EP, "", -1, started, true);
            return resp;
        }
    };
    let q = query.map(|Query(q)| q).unwrap_or_default();
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
    let (errcode, app, resp) = match result {
        Ok(grant) => {
            let phone = &grant.phone;
            let cc = phone.country_code();
            let full = if cc == "86" {
                Cow::Borrowed(phone.number())
            } else {
                Cow::Owned(format!("+{cc}{}", phone.number()))
            };
            let body = format!(
                r#"{{"errcode":0,"errmsg":"ok","phone_info":{{"phoneNumber":"{full}","purePhoneNumber":"{}","countryCode":"{cc}","watermark":{{"timestamp":{},"appid":"{}"}}}}}}"#,
                phone.number(),
                grant.timestamp,
                grant.app_id
            );
            (0, Some(grant.app_id), respond(StatusCode::OK, JSON, body))
        }
        Err(e) => (e.errcode(), None, wx_error(JSON, e)),
    };
    log_call(
        EP,
        app.as_deref().unwrap_or(""),
        errcode,
        started,
        post_fault.is_some(),
    );
    match post_fault {
        Some(f) => fault_response(&f, JSON),
        None => resp,
    }
}
