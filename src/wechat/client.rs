//! The WeChat server-API client: jscode2session, getuserphonenumber and the
//! stable access_token, over one pooled HTTP client with timeouts, with every
//! `errcode` checked and typed. Calls carrying a single-use code are never
//! retried, except the one documented stale-token retry of getuserphonenumber.

use super::budget::{BudgetLimits, UpstreamBudget};
use super::crypto::string_or_number;
use super::error::{Endpoint, WechatError};
use super::token::{FetchedToken, TokenCache};
use crate::config::{AppCredentials, WechatSettings};
use crate::domain::{AppId, LoginCode, OpenId, Phone, PhoneCode, SessionKey, UnionId};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, de::DeserializeOwned};
use std::{collections::HashMap, sync::Arc, time::Duration};

/// Bounds applied to stable_token's `expires_in` (WeChat documents at most 7200 s).
const MIN_UPSTREAM_TOKEN_TTL_SECS: u64 = 300;
const MAX_UPSTREAM_TOKEN_TTL_SECS: u64 = 7_200;

/// Largest WeChat response body we read; real ones are well under 1 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The result of jscode2session.
#[derive(Debug, Clone)]
pub struct WxSession {
    pub openid: OpenId,
    /// Secret: redacted in `Debug`, never sent to the client.
    pub session_key: SessionKey,
    /// Present when the app is bound to a WeChat Open Platform account.
    pub unionid: Option<UnionId>,
}

/// The WeChat API client. Cheap to clone; clones share the HTTP pool and the
/// access-token cache.
#[derive(Clone)]
pub struct WechatClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    secrets: HashMap<AppId, SecretString>,
    tokens: TokenCache,
    budget: UpstreamBudget,
}

impl std::fmt::Debug for WechatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatClient")
            .field("base_url", &self.inner.base_url)
            .field("apps", &self.inner.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The fields every WeChat JSON answer may carry; a missing errcode means 0.
#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: Option<String>,
}

#[derive(Deserialize)]
struct SessionBody {
    openid: Option<String>,
    session_key: Option<String>,
    unionid: Option<String>,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct PhoneBody {
    phone_info: Option<PhoneInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PhoneInfo {
    pure_phone_number: String,
    #[serde(deserialize_with = "string_or_number")]
    country_code: String,
    watermark: Watermark,
}

#[derive(Deserialize)]
struct Watermark {
    appid: String,
}

impl WechatClient {
    /// Builds the client: one HTTP/1.1 connection pool with the configured
    /// connect and total timeouts, redirects off (URLs carry secrets).
    pub fn new(settings: &WechatSettings, apps: &[AppCredentials]) -> Result<Self, WechatError> {
        crate::tls::install_crypto_provider();
        // The settings' types guarantee an http(s) URL without a trailing `/`
        // and positive timeouts.
        let base_url = settings.base_url.as_str().to_owned();
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout())
            .timeout(settings.timeout())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mp-auth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WechatError::Config(format!("cannot build the HTTP client: {e}")))?;
        let secrets: HashMap<AppId, SecretString> = apps
            .iter()
            .map(|a| (a.app_id.clone(), a.app_secret.clone()))
            .collect();
        let tokens = TokenCache::new(
            secrets.keys().cloned(),
            Duration::from_secs(settings.token_refresh_margin_secs),
        );
        let budget = UpstreamBudget::new(
            BudgetLimits {
                calls_per_sec: settings.upstream_calls_per_sec,
                burst: settings.upstream_burst,
                cooldown: Duration::from_secs(settings.rate_limit_cooldown_secs),
            },
            secrets.keys().cloned(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url,
                secrets,
                tokens,
                budget,
            }),
        })
    }

    /// True if `app_id` is configured.
    pub fn has_app(&self, app_id: &AppId) -> bool {
        self.inner.secrets.contains_key(app_id)
    }

    fn secret(&self, app_id: &AppId) -> Result<&SecretString, WechatError> {
        self.inner
            .secrets
            .get(app_id)
            .ok_or_else(|| WechatError::UnknownApp(app_id.clone()))
    }

    /// Exchanges a `wx.login` code (jscode2session). Never retried: the code is single-use.
    #[tracing::instrument(name = "wechat.code2session", skip_all, fields(app_id = %app_id))]
    pub async fn code2session(
        &self,
        app_id: &AppId,
        code: &LoginCode,
    ) -> Result<WxSession, WechatError> {
        let secret = self.secret(app_id)?;
        let request = self
            .inner
            .http
            .get(format!("{}/sns/jscode2session", self.inner.base_url))
            .query(&[
                ("appid", app_id.as_str()),
                ("secret", secret.expose_secret()),
                ("js_code", code.expose()),
                ("grant_type", "authorization_code"),
            ]);
        self.call(Endpoint::Code2Session, app_id, request, parse_session)
            .await
    }

    /// Exchanges a phone-button code (getuserphonenumber), bound to `openid`.
    /// If WeChat calls the access_token stale (40001/42001/40014), the token is
    /// invalidated (if still cached), re-fetched in normal mode, and the call is
    /// retried exactly once: WeChat refused the token before spending the code.
    /// Nothing else is retried.
    #[tracing::instrument(name = "wechat.phone_number", skip_all, fields(app_id = %app_id))]
    pub async fn phone_number(
        &self,
        app_id: &AppId,
        code: &PhoneCode,
        openid: &OpenId,
    ) -> Result<Phone, WechatError> {
        let token = self.access_token(app_id).await?;
        match self.phone_number_once(app_id, code, openid, &token).await {
            Err(err) if err.is_stale_token() => {
                self.inner.tokens.invalidate_if(app_id, &token);
                metrics::counter!(
                    "mp_auth_wechat_token_self_heals_total",
                    "app_id" => app_id.to_string()
                )
                .increment(1);
                tracing::info!(
                    app_id = %app_id,
                    errcode = err.errcode(),
                    "access_token refused as stale; re-fetching and retrying once"
                );
                let token = self.access_token(app_id).await?;
                self.phone_number_once(app_id, code, openid, &token).await
            }
            other => other,
        }
    }

    async fn phone_number_once(
        &self,
        app_id: &AppId,
        code: &PhoneCode,
        openid: &OpenId,
        token: &SecretString,
    ) -> Result<Phone, WechatError> {
        let request = self
            .inner
            .http
            .post(format!(
                "{}/wxa/business/getuserphonenumber",
                self.inner.base_url
            ))
            .query(&[("access_token", token.expose_secret())])
            .json(&serde_json::json!({ "code": code.expose(), "openid": openid.as_str() }));
        self.call(Endpoint::PhoneNumber, app_id, request, |b: PhoneBody| {
            let info = b.phone_info.ok_or(WechatError::Malformed(
                "getuserphonenumber answer has no phone_info",
            ))?;
            if info.watermark.appid != app_id.as_str() {
                return Err(WechatError::WatermarkMismatch);
            }
            Phone::new(&info.country_code, &info.pure_phone_number)
                .map_err(|_| WechatError::BadPhone)
        })
        .await
    }

    /// The app's access_token, from the cache or one shared stable_token fetch.
    async fn access_token(&self, app_id: &AppId) -> Result<SecretString, WechatError> {
        self.inner
            .tokens
            .get_or_fetch(app_id, || self.fetch_stable_token(app_id))
            .await
    }

    /// `POST /cgi-bin/stable_token` in normal mode (never `force_refresh`).
    async fn fetch_stable_token(&self, app_id: &AppId) -> Result<FetchedToken, WechatError> {
        let secret = self.secret(app_id)?;
        let request = self
            .inner
            .http
            .post(format!("{}/cgi-bin/stable_token", self.inner.base_url))
            .json(&serde_json::json!({
                "grant_type": "client_credential",
                "appid": app_id.as_str(),
                "secret": secret.expose_secret(),
                "force_refresh": false,
            }));
        let fetched = self
            .call(
                Endpoint::StableToken,
                app_id,
                request,
                |b: TokenBody| match (b.access_token, b.expires_in) {
                    (Some(token), Some(expires_in)) if !token.is_empty() => Ok(FetchedToken {
                        token: SecretString::from(token),
                        // A hostile or broken upstream must neither overflow the
                        // cache's arithmetic nor force a refetch on every login.
                        expires_in: Duration::from_secs(
                            expires_in
                                .clamp(MIN_UPSTREAM_TOKEN_TTL_SECS, MAX_UPSTREAM_TOKEN_TTL_SECS),
                        ),
                    }),
                    _ => Err(WechatError::Malformed(
                        "stable_token answer has no access_token or expires_in",
                    )),
                },
            )
            .await?;
        metrics::counter!(
            "mp_auth_wechat_token_refreshes_total",
            "app_id" => app_id.to_string()
        )
        .increment(1);
        Ok(fetched)
    }

    /// Sends one request, reads a capped body, checks `errcode`, parses the
    /// payload with `finish`, and records metrics and a debug line.
    async fn call<B, T>(
        &self,
        endpoint: Endpoint,
        app_id: &AppId,
        request: reqwest::RequestBuilder,
        finish: impl FnOnce(B) -> Result<T, WechatError>,
    ) -> Result<T, WechatError>
    where
        B: DeserializeOwned,
    {
        let started = std::time::Instant::now();
        self.inner.budget.admit(app_id, endpoint, started)?;
        let result = match send(endpoint, request).await {
            Ok(bytes) => serde_json::from_slice::<B>(&bytes)
                .map_err(|_| WechatError::Malformed("payload fields have unexpected types"))
                .and_then(finish),
            Err(err) => Err(err),
        };
        let elapsed = started.elapsed();
        let label = match &result {
            Ok(_) => "0".to_owned(),
            Err(err) => {
                self.inner.budget.observe(app_id, endpoint, err, started);
                err.metric_label()
            }
        };
        metrics::histogram!(
            "mp_auth_wechat_call_duration_seconds",
            "endpoint" => endpoint.label()
        )
        .record(elapsed.as_secs_f64());
        metrics::counter!(
            "mp_auth_wechat_calls_total",
            "endpoint" => endpoint.label(),
            "errcode" => label.clone()
        )
        .increment(1);
        tracing::debug!(
            endpoint = endpoint.label(),
            app_id = %app_id,
            errcode = %label,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "wechat call"
        );
        result
    }
}

/// Turns a successful jscode2session answer into a [`WxSession`].
fn parse_session(body: SessionBody) -> Result<WxSession, WechatError> {
    let openid = body.openid.ok_or(WechatError::Malformed(
        "jscode2session answer has no openid",
    ))?;
    let openid = OpenId::parse(&openid)
        .map_err(|_| WechatError::Malformed("jscode2session openid is invalid"))?;
    let session_key = body.session_key.ok_or(WechatError::Malformed(
        "jscode2session answer has no session_key",
    ))?;
    let session_key = SessionKey::from_base64(&session_key)
        .map_err(|_| WechatError::Malformed("jscode2session session_key is invalid"))?;
    let unionid = match body.unionid.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(u) => Some(
            UnionId::parse(u)
                .map_err(|_| WechatError::Malformed("jscode2session unionid is invalid"))?,
        ),
    };
    Ok(WxSession {
        openid,
        session_key,
        unionid,
    })
}

/// Sends the request and returns the body of a 2xx answer whose errcode is 0
/// (or absent). WeChat labels JSON as text/plain, so the content type is ignored.
async fn send(
    endpoint: Endpoint,
    request: reqwest::RequestBuilder,
) -> Result<Vec<u8>, WechatError> {
    let mut response = request.send().await.map_err(WechatError::from_reqwest)?;
    let status = response.status();
    if !status.is_success() {
        return Err(WechatError::HttpStatus(status.as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY_BYTES as u64)
    {
        return Err(WechatError::Malformed("body is too large"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(WechatError::from_reqwest)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(WechatError::Malformed("body is too large"));
        }
        body.extend_from_slice(&chunk);
    }
    let status: Status = serde_json::from_slice(&body).map_err(|e| {
        WechatError::Malformed(match e.classify() {
            serde_json::error::Category::Eof => "body is truncated JSON",
            serde_json::error::Category::Syntax => "body is not JSON",
            _ => "errcode/errmsg have unexpected types",
        })
    })?;
    if status.errcode != 0 {
        return Err(WechatError::from_errcode(
            endpoint,
            status.errcode,
            status.errmsg.as_deref().unwrap_or_default(),
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{
        Json, Router,
        extract::{Query, State},
        http::{StatusCode, header},
        response::IntoResponse,
        routing::{get, post},
    };
    use serde_json::{Value, json};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const APP: &str = "wxclienttest0001";
    const SECRET: &str = "app-secret-never-shown";
    const SESSION_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";

    fn app() -> AppId {
        AppId::parse(APP).unwrap()
    }

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    }

    fn client(base_url: &str, timeout_ms: u64) -> WechatClient {
        let settings = WechatSettings {
            base_url: crate::config::HttpUrl::parse(base_url).unwrap(),
            timeout_ms: crate::config::Millis::clamped(timeout_ms),
            connect_timeout_ms: crate::config::Millis::clamped(500),
            ..WechatSettings::default()
        };
        let apps = [AppCredentials {
            app_id: app(),
            app_secret: SecretString::from(SECRET),
        }];
        WechatClient::new(&settings, &apps).unwrap()
    }

    /// A server whose jscode2session answers `body` (as text/plain, like WeChat).
    async fn session_server(status: StatusCode, body: &'static str) -> String {
        serve(Router::new().route(
            "/sns/jscode2session",
            get(move || async move { (status, [(header::CONTENT_TYPE, "text/plain")], body) }),
        ))
        .await
    }

    async fn login(base: &str) -> Result<WxSession, WechatError> {
        client(base, 2_000)
            .code2session(
                &app(),
                &LoginCode::parse("0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d").unwrap(),
            )
            .await
    }

    #[tokio::test]
    async fn code2session_parses_a_text_plain_success_without_errcode() {
        let base = serve(Router::new().route(
            "/sns/jscode2session",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                assert_eq!(q["appid"], APP);
                assert_eq!(q["secret"], SECRET);
                assert_eq!(q["js_code"], "0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d");
                assert_eq!(q["grant_type"], "authorization_code");
                (
                    [(header::CONTENT_TYPE, "text/plain")],
                    format!(
                        r#"{{"session_key":"{SESSION_KEY}","openid":"o-user-1","unionid":"u-1"}}"#
                    ),
                )
            }),
        ))
        .await;
        let session = login(&base).await.unwrap();
        assert_eq!(session.openid.as_str(), "o-user-1");
        assert_eq!(session.session_key.to_base64(), SESSION_KEY);
        assert_eq!(session.unionid.unwrap().as_str(), "u-1");
    }

    #[tokio::test]
    async fn code2session_treats_errcode_zero_and_empty_unionid_as_success_without_unionid() {
        let base = session_server(
            StatusCode::OK,
            r#"{"errcode":0,"errmsg":"ok","session_key":"tiihtNczf5v6AKRyjwEUhQ==","openid":"o-2","unionid":""}"#,
        )
        .await;
        let session = login(&base).await.unwrap();
        assert!(session.unionid.is_none());
        assert!(!format!("{session:?}").contains("tiih"));
    }

    #[tokio::test]
    async fn code2session_maps_errcode_in_a_200_body_to_a_typed_error() {
        let base = session_server(
            StatusCode::OK,
            r#"{"errcode":40163,"errmsg":"code been used, rid: 1"}"#,
        )
        .await;
        assert_eq!(login(&base).await.unwrap_err(), WechatError::CodeUsed);
        let base = session_server(
            StatusCode::OK,
            r#"{"errcode":40029,"errmsg":"invalid code"}"#,
        )
        .await;
        assert_eq!(login(&base).await.unwrap_err(), WechatError::InvalidCode);
        let base =
            session_server(StatusCode::OK, r#"{"errcode":-1,"errmsg":"system error"}"#).await;
        let err = login(&base).await.unwrap_err();
        assert_eq!(err, WechatError::Busy);
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn code2session_reports_missing_fields_and_bad_session_keys_as_malformed() {
        for body in [
            r#"{"openid":"o-1"}"#,
            r#"{"session_key":"tiihtNczf5v6AKRyjwEUhQ=="}"#,
            r#"{"openid":"o-1","session_key":"not-base64!"}"#,
            r#"{"openid":"o-1","session_key":12}"#,
            r#"[1,2]"#,
        ] {
            let base = session_server(StatusCode::OK, body).await;
            assert!(
                matches!(login(&base).await, Err(WechatError::Malformed(_))),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn server_errors_become_http_status_and_are_retryable() {
        let base = session_server(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>").await;
        let err = login(&base).await.unwrap_err();
        assert_eq!(err, WechatError::HttpStatus(502));
        assert!(err.is_retryable());
        assert_eq!(err.metric_label(), "http_5xx");
        let base = session_server(StatusCode::NOT_FOUND, "").await;
        let err = login(&base).await.unwrap_err();
        assert_eq!(err, WechatError::HttpStatus(404));
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn garbage_and_truncated_json_are_malformed() {
        let base = session_server(StatusCode::OK, "<html>oops</html>").await;
        assert_eq!(
            login(&base).await.unwrap_err(),
            WechatError::Malformed("body is not JSON")
        );
        let base = session_server(StatusCode::OK, r#"{"openid":"o-1","session_ke"#).await;
        assert_eq!(
            login(&base).await.unwrap_err(),
            WechatError::Malformed("body is truncated JSON")
        );
        let base = session_server(StatusCode::OK, "").await;
        assert!(matches!(
            login(&base).await.unwrap_err(),
            WechatError::Malformed(_)
        ));
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let base = serve(Router::new().route(
            "/sns/jscode2session",
            get(|| async { " ".repeat(MAX_BODY_BYTES + 1) }),
        ))
        .await;
        assert_eq!(
            login(&base).await.unwrap_err(),
            WechatError::Malformed("body is too large")
        );
    }

    #[tokio::test]
    async fn a_slow_answer_times_out() {
        let base = serve(Router::new().route(
            "/sns/jscode2session",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "{}"
            }),
        ))
        .await;
        let started = std::time::Instant::now();
        let err = client(&base, 200)
            .code2session(
                &app(),
                &LoginCode::parse("0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d").unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(err, WechatError::Timeout);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error_without_secrets_or_codes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let err = login(&base).await.unwrap_err();
        assert!(matches!(err, WechatError::Connect(_)), "{err:?}");
        assert!(err.is_retryable());
        let text = format!("{err} {err:?}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains("0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d"), "{text}");
    }

    #[tokio::test]
    async fn unknown_apps_are_refused_without_a_call() {
        // Nothing listens on the base URL: a call would fail with Connect.
        let c = client("http://127.0.0.1:9", 500);
        let other = AppId::parse("wxnotconfigured1").unwrap();
        assert!(!c.has_app(&other));
        assert!(c.has_app(&app()));
        let err = c
            .code2session(&other, &LoginCode::parse("abcabcabcabcabcabc").unwrap())
            .await
            .unwrap_err();
        assert_eq!(err, WechatError::UnknownApp(other.clone()));
        let err = c
            .phone_number(
                &other,
                &PhoneCode::parse("abcabcabcabcabcabc").unwrap(),
                &OpenId::parse("o-1").unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(err, WechatError::UnknownApp(other));
    }

    #[test]
    fn debug_of_the_client_shows_no_secret() {
        let c = client("http://127.0.0.1:9", 500);
        let dbg = format!("{c:?}");
        assert!(dbg.contains(APP));
        assert!(!dbg.contains(SECRET));
    }

    /// A fake WeChat for the phone flow: tokens `t0`, `t1`, ... are handed out
    /// by stable_token; getuserphonenumber answers with `phone(token)`.
    #[derive(Default)]
    struct PhoneMock {
        token_calls: AtomicUsize,
        phone_calls: AtomicUsize,
    }

    type Answer = fn(&str) -> Value;

    async fn phone_server(answer: Answer) -> (String, Arc<PhoneMock>) {
        let mock = Arc::new(PhoneMock::default());
        let router =
            Router::new()
                .route(
                    "/cgi-bin/stable_token",
                    post(
                        |State((m, _)): State<(Arc<PhoneMock>, Answer)>,
                         Json(body): Json<Value>| async move {
                            assert_eq!(body["grant_type"], "client_credential");
                            assert_eq!(body["appid"], APP);
                            assert_eq!(body["secret"], SECRET);
                            assert_eq!(body["force_refresh"], false);
                            let n = m.token_calls.fetch_add(1, Ordering::SeqCst);
                            Json(json!({"access_token": format!("t{n}"), "expires_in": 7200}))
                        },
                    ),
                )
                .route(
                    "/wxa/business/getuserphonenumber",
                    post(
                        |State((m, answer)): State<(Arc<PhoneMock>, Answer)>,
                         Query(q): Query<HashMap<String, String>>,
                         Json(body): Json<Value>| async move {
                            assert_eq!(body["code"], "phone-code-0000000001");
                            assert_eq!(body["openid"], "o-user-1");
                            m.phone_calls.fetch_add(1, Ordering::SeqCst);
                            // WeChat sends JSON as text/plain.
                            (
                                [(header::CONTENT_TYPE, "text/plain")],
                                answer(&q["access_token"]).to_string(),
                            )
                                .into_response()
                        },
                    ),
                )
                .with_state((mock.clone(), answer));
        (serve(router).await, mock)
    }

    async fn phone(c: &WechatClient) -> Result<Phone, WechatError> {
        c.phone_number(
            &app(),
            &PhoneCode::parse("phone-code-0000000001").unwrap(),
            &OpenId::parse("o-user-1").unwrap(),
        )
        .await
    }

    fn ok_phone(country_code: Value) -> Value {
        json!({"errcode": 0, "errmsg": "ok", "phone_info": {
            "phoneNumber": "13580006666", "purePhoneNumber": "13580006666",
            "countryCode": country_code,
            "watermark": {"timestamp": 1_700_000_000, "appid": APP}}})
    }

    #[tokio::test]
    async fn phone_number_accepts_country_code_as_string_or_number() {
        let (base, mock) = phone_server(|_| ok_phone(json!("86"))).await;
        let c = client(&base, 2_000);
        assert_eq!(phone(&c).await.unwrap().e164(), "+8613580006666");
        let (base, _) = phone_server(|_| ok_phone(json!(86))).await;
        assert_eq!(
            phone(&client(&base, 2_000)).await.unwrap().e164(),
            "+8613580006666"
        );
        // The token is cached between calls.
        phone(&c).await.unwrap();
        assert_eq!(mock.token_calls.load(Ordering::SeqCst), 1);
        assert_eq!(mock.phone_calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn phone_number_refuses_a_watermark_of_another_app() {
        let (base, _) = phone_server(|_| {
            let mut v = ok_phone(json!("86"));
            v["phone_info"]["watermark"]["appid"] = json!("wxsomeoneelse000");
            v
        })
        .await;
        assert_eq!(
            phone(&client(&base, 2_000)).await.unwrap_err(),
            WechatError::WatermarkMismatch
        );
    }

    #[tokio::test]
    async fn phone_number_without_phone_info_is_malformed() {
        let (base, _) = phone_server(|_| json!({"errcode": 0, "errmsg": "ok"})).await;
        assert!(matches!(
            phone(&client(&base, 2_000)).await.unwrap_err(),
            WechatError::Malformed(_)
        ));
    }

    #[tokio::test]
    async fn a_stale_token_is_replaced_and_the_call_retried_exactly_once() {
        // t0 is stale; t1 works.
        let (base, mock) = phone_server(|token| {
            if token == "t0" {
                json!({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"})
            } else {
                ok_phone(json!("86"))
            }
        })
        .await;
        let c = client(&base, 2_000);
        assert_eq!(phone(&c).await.unwrap().e164(), "+8613580006666");
        assert_eq!(mock.token_calls.load(Ordering::SeqCst), 2);
        assert_eq!(mock.phone_calls.load(Ordering::SeqCst), 2);
        assert_eq!(c.inner.tokens.cached(&app()).unwrap().expose_secret(), "t1");
    }

    #[tokio::test]
    async fn a_token_refused_twice_gives_access_token_invalid_after_one_retry() {
        let (base, mock) =
            phone_server(|_| json!({"errcode": 42001, "errmsg": "access_token expired"})).await;
        let err = phone(&client(&base, 2_000)).await.unwrap_err();
        assert_eq!(err, WechatError::AccessTokenInvalid { errcode: 42001 });
        assert_eq!(mock.phone_calls.load(Ordering::SeqCst), 2);
        assert_eq!(mock.token_calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn code_errors_on_phone_number_are_never_retried() {
        for (errcode, expected) in [
            (40029, WechatError::InvalidCode),
            (-1, WechatError::Busy),
            (45011, WechatError::RateLimited { errcode: 45011 }),
            (40013, WechatError::InvalidAppId),
            (48001, WechatError::NotAuthorized),
        ] {
            let answer: Answer = match errcode {
                40029 => |_| json!({"errcode": 40029, "errmsg": "invalid code"}),
                -1 => |_| json!({"errcode": -1, "errmsg": "system error"}),
                45011 => |_| json!({"errcode": 45011, "errmsg": "minute-quota"}),
                40013 => |_| json!({"errcode": 40013, "errmsg": "invalid appid"}),
                _ => |_| json!({"errcode": 48001, "errmsg": "api unauthorized"}),
            };
            let (base, mock) = phone_server(answer).await;
            assert_eq!(phone(&client(&base, 2_000)).await.unwrap_err(), expected);
            assert_eq!(mock.phone_calls.load(Ordering::SeqCst), 1, "{errcode}");
        }
    }

    #[tokio::test]
    async fn a_token_endpoint_error_is_typed_and_no_phone_call_is_made() {
        let mock = Arc::new(PhoneMock::default());
        let m = mock.clone();
        let base = serve(
            Router::new()
                .route(
                    "/cgi-bin/stable_token",
                    post(|| async {
                        Json(json!({"errcode": 40001, "errmsg": "invalid credential"}))
                    }),
                )
                .route(
                    "/wxa/business/getuserphonenumber",
                    post(move || async move {
                        m.phone_calls.fetch_add(1, Ordering::SeqCst);
                        Json(json!({}))
                    }),
                ),
        )
        .await;
        let err = phone(&client(&base, 2_000)).await.unwrap_err();
        assert_eq!(err, WechatError::InvalidAppSecret { errcode: 40001 });
        assert_eq!(mock.phone_calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn absurd_token_lifetimes_are_clamped_not_trusted() {
        for expires_in in [json!(u64::MAX), json!(0)] {
            let token_calls = Arc::new(AtomicUsize::new(0));
            let calls = token_calls.clone();
            let base = serve(
                Router::new()
                    .route(
                        "/cgi-bin/stable_token",
                        post(move || {
                            let expires_in = expires_in.clone();
                            let calls = calls.clone();
                            async move {
                                calls.fetch_add(1, Ordering::SeqCst);
                                Json(json!({"access_token": "tok", "expires_in": expires_in}))
                            }
                        }),
                    )
                    .route(
                        "/wxa/business/getuserphonenumber",
                        post(|| async { Json(ok_phone(json!("86"))) }),
                    ),
            )
            .await;
            let c = client(&base, 2_000);
            for _ in 0..3 {
                phone(&c).await.unwrap();
            }
            // u64::MAX did not overflow the cache; 0 did not force a fetch per call.
            assert_eq!(token_calls.load(Ordering::SeqCst), 1);
        }
    }
}
