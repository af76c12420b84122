//! The WeChat simulator, driven over HTTP exactly as mp-auth and the tests use it.

use mp_auth::{
    domain::{AppId, SessionKey},
    wechat::crypto::decrypt_phone,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime};
use wechat_sim::{
    Fault, FaultEndpoint, RunningSimulator, SimApp, SimClient, Simulator, SimulatorConfig,
};

const APP_A: &str = "wx_app_a";
const APP_B: &str = "wx_app_b";
const APP_C: &str = "wx_app_c";

fn app(id: &str, open_platform: Option<&str>) -> SimApp {
    SimApp {
        app_id: id.to_owned(),
        app_secret: SecretString::from(secret(id)),
        open_platform: open_platform.map(str::to_owned),
    }
}

fn secret(id: &str) -> String {
    format!("{id}_secret")
}

struct Sim {
    sim: RunningSimulator,
    ctl: SimClient,
    http: reqwest::Client,
}

/// A simulator on a free port with apps A and B (same open platform) and C (none).
async fn start(config: SimulatorConfig) -> Sim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimulatorConfig {
        apps: vec![
            app(APP_A, Some("op_main")),
            app(APP_B, Some("op_main")),
            app(APP_C, None),
        ],
        force_refresh_min_interval: Duration::ZERO,
        ..config
    };
    let sim = Simulator::start(listener, config).await.unwrap();
    let ctl = sim.client();
    Sim {
        sim,
        ctl,
        http: reqwest::Client::new(),
    }
}

async fn start_default() -> Sim {
    start(SimulatorConfig::default()).await
}

impl Sim {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    /// Raw jscode2session: (status, content type, body text).
    async fn code2session_raw(&self, params: &[(&str, &str)]) -> (u16, String, String) {
        let resp = self
            .http
            .get(self.url("/sns/jscode2session"))
            .query(params)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, ct, resp.text().await.unwrap())
    }

    async fn code2session_as(&self, appid: &str, secret: &str, code: &str) -> Value {
        let (_, _, body) = self
            .code2session_raw(&[
                ("appid", appid),
                ("secret", secret),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ])
            .await;
        serde_json::from_str(&body).unwrap()
    }

    async fn code2session(&self, appid: &str, code: &str) -> Value {
        self.code2session_as(appid, &secret(appid), code).await
    }

    async fn stable_token_raw(&self, body: Value) -> Value {
        self.http
            .post(self.url("/cgi-bin/stable_token"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn token(&self, appid: &str, force: bool) -> Value {
        self.stable_token_raw(json!({
            "grant_type": "client_credential",
            "appid": appid,
            "secret": secret(appid),
            "force_refresh": force,
        }))
        .await
    }

    async fn access_token(&self, appid: &str) -> String {
        self.token(appid, false).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn phone_number(&self, token: &str, body: Value) -> Value {
        self.http
            .post(self.url("/wxa/business/getuserphonenumber"))
            .query(&[("access_token", token)])
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn errcode(v: &Value) -> i64 {
    v["errcode"].as_i64().unwrap_or(0)
}

fn session_key(v: &Value) -> SessionKey {
    SessionKey::from_base64(v["session_key"].as_str().expect("session_key")).unwrap()
}

// ---- jscode2session ----

#[tokio::test]
async fn jscode2session_answers_text_plain_with_session_key_openid_and_unionid() {
    let s = start_default().await;
    let minted = s.ctl.login(APP_A, "alice", None).await.unwrap();
    let (status, ct, body) = s
        .code2session_raw(&[
            ("appid", APP_A),
            ("secret", &secret(APP_A)),
            ("js_code", &minted.code),
            ("grant_type", "authorization_code"),
        ])
        .await;
    assert_eq!(status, 200);
    assert_eq!(ct, "text/plain");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v.get("errcode").is_none(), "{v}");
    assert_eq!(v["openid"], minted.openid.as_str());
    assert_eq!(v["unionid"], minted.unionid.clone().unwrap().as_str());
    assert_eq!(v["openid"].as_str().unwrap().len(), 28);
    session_key(&v);
}

#[tokio::test]
async fn jscode2session_errors_are_text_plain_http_200_with_a_rid() {
    let s = start_default().await;
    let (status, ct, body) = s
        .code2session_raw(&[
            ("appid", APP_A),
            ("secret", &secret(APP_A)),
            ("js_code", "nonexistent"),
            ("grant_type", "authorization_code"),
        ])
        .await;
    assert_eq!((status, ct.as_str()), (200, "text/plain"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(errcode(&v), 40029);
    let msg = v["errmsg"].as_str().unwrap();
    assert!(msg.starts_with("invalid code, rid: "), "{msg}");
}

#[tokio::test]
async fn apps_without_an_open_platform_get_no_unionid() {
    let s = start_default().await;
    let minted = s.ctl.login(APP_C, "alice", None).await.unwrap();
    assert_eq!(minted.unionid, None);
    let v = s.code2session(APP_C, &minted.code).await;
    assert!(v.get("unionid").is_none(), "{v}");
    assert!(v.get("openid").is_some(), "{v}");
}

#[tokio::test]
async fn apps_sharing_an_open_platform_give_one_user_the_same_unionid() {
    let s = start_default().await;
    let a = s.ctl.login(APP_A, "alice", None).await.unwrap();
    let b = s.ctl.login(APP_B, "alice", None).await.unwrap();
    assert_ne!(a.openid, b.openid);
    let va = s.code2session(APP_A, &a.code).await;
    let vb = s.code2session(APP_B, &b.code).await;
    assert_eq!(va["unionid"], vb["unionid"]);
    let bob = s.ctl.login(APP_A, "bob", None).await.unwrap();
    assert_ne!(bob.unionid, a.unionid);
}

#[tokio::test]
async fn login_codes_are_single_use() {
    let s = start_default().await;
    let minted = s.ctl.login(APP_A, "alice", None).await.unwrap();
    assert_eq!(errcode(&s.code2session(APP_A, &minted.code).await), 0);
    let again = s.code2session(APP_A, &minted.code).await;
    assert_eq!(errcode(&again), 40163);
    assert!(
        again["errmsg"]
            .as_str()
            .unwrap()
            .starts_with("code been used, rid: ")
    );
}

#[tokio::test]
async fn login_codes_expire_after_the_code_ttl() {
    let s = start(SimulatorConfig {
        code_ttl: Duration::from_millis(200),
        ..SimulatorConfig::default()
    })
    .await;
    let minted = s.ctl.login(APP_A, "alice", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(errcode(&s.code2session(APP_A, &minted.code).await), 40029);
}

#[tokio::test]
async fn a_code_of_another_app_is_an_invalid_code() {
    let s = start_default().await;
    let minted = s.ctl.login(APP_B, "alice", None).await.unwrap();
    assert_eq!(errcode(&s.code2session(APP_A, &minted.code).await), 40029);
    // The failed attempt did not spend it for its own app.
    assert_eq!(errcode(&s.code2session(APP_B, &minted.code).await), 0);
}

#[tokio::test]
async fn wrong_secret_is_invalid_appsecret_and_unknown_appid_is_invalid_appid() {
    let s = start_default().await;
    let minted = s.ctl.login(APP_A, "alice", None).await.unwrap();
    let v = s.code2session_as(APP_A, "wrong", &minted.code).await;
    assert_eq!(errcode(&v), 40125);
    assert!(
        v["errmsg"]
            .as_str()
            .unwrap()
            .starts_with("invalid appsecret")
    );
    let v = s
        .code2session_as("wx_unknown", "whatever", &minted.code)
        .await;
    assert_eq!(errcode(&v), 40013);
    // Neither consumed the code.
    assert_eq!(errcode(&s.code2session(APP_A, &minted.code).await), 0);
}

#[tokio::test]
async fn missing_parameters_and_bad_grant_type_get_wechats_errcodes() {
    let s = start_default().await;
    let sec = secret(APP_A);
    let cases: [(&[(&str, &str)], i64); 4] = [
        (
            &[
                ("secret", &sec),
                ("js_code", "c"),
                ("grant_type", "authorization_code"),
            ],
            41002,
        ),
        (
            &[
                ("appid", APP_A),
                ("js_code", "c"),
                ("grant_type", "authorization_code"),
            ],
            41004,
        ),
        (
            &[
                ("appid", APP_A),
                ("secret", &sec),
                ("grant_type", "authorization_code"),
            ],
            41008,
        ),
        (
            &[
                ("appid", APP_A),
                ("secret", &sec),
                ("js_code", "c"),
                ("grant_type", "client_credential"),
            ],
            40002,
        ),
    ];
    for (params, expected) in cases {
        let (_, _, body) = s.code2session_raw(params).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(errcode(&v), expected, "{params:?}: {v}");
    }
}

// ---- session keys ----

#[tokio::test]
async fn session_refresh_zero_rotates_the_key_on_every_login() {
    let s = start(SimulatorConfig {
        session_refresh: Duration::ZERO,
        ..SimulatorConfig::default()
    })
    .await;
    let first = s.ctl.login(APP_A, "alice", None).await.unwrap();
    let second = s.ctl.login(APP_A, "alice", None).await.unwrap();
    let k1 = session_key(&s.code2session(APP_A, &first.code).await);
    let k2 = session_key(&s.code2session(APP_A, &second.code).await);
    assert_ne!(k1, k2);
}

#[tokio::test]
async fn a_long_session_refresh_keeps_the_key_across_logins() {
    let s = start(SimulatorConfig {
        session_refresh: Duration::from_secs(3600),
        ..SimulatorConfig::default()
    })
    .await;
    let first = s.ctl.login(APP_A, "alice", None).await.unwrap();
    let second = s.ctl.login(APP_A, "alice", None).await.unwrap();
    assert_ne!(first.code, second.code);
    let k1 = session_key(&s.code2session(APP_A, &first.code).await);
    let k2 = session_key(&s.code2session(APP_A, &second.code).await);
    assert_eq!(k1, k2);
    // Users and apps have their own keys.
    let bob = s.ctl.login(APP_A, "bob", None).await.unwrap();
    assert_ne!(session_key(&s.code2session(APP_A, &bob.code).await), k1);
}

#[tokio::test]
async fn encrypted_data_decrypts_with_the_key_of_a_code_minted_before_it() {
    let s = start(SimulatorConfig {
        session_refresh: Duration::ZERO,
        ..SimulatorConfig::default()
    })
    .await;
    let login = s
        .ctl
        .login(APP_A, "alice", Some("13912345678"))
        .await
        .unwrap();
    let phone = s.ctl.phone(APP_A, "alice").await.unwrap();
    let key = session_key(&s.code2session(APP_A, &login.code).await);
    let app_id = AppId::parse(APP_A).unwrap();
    let record = decrypt_phone(
        &app_id,
        &key,
        &phone.encrypted_data,
        &phone.iv,
        SystemTime::now(),
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(record.phone.e164(), "+8613912345678");
}

#[tokio::test]
async fn wx_login_inside_the_phone_callback_breaks_decryption_once_the_session_rotates() {
    let s = start(SimulatorConfig {
        session_refresh: Duration::ZERO,
        ..SimulatorConfig::default()
    })
    .await;
    s.ctl.login(APP_A, "alice", None).await.unwrap();
    let phone = s.ctl.phone(APP_A, "alice").await.unwrap();
    let late_login = s.ctl.login(APP_A, "alice", None).await.unwrap();
    let key = session_key(&s.code2session(APP_A, &late_login.code).await);
    let err = decrypt_phone(
        &AppId::parse(APP_A).unwrap(),
        &key,
        &phone.encrypted_data,
        &phone.iv,
        SystemTime::now(),
        Duration::from_secs(60),
    )
    .unwrap_err();
    assert!(err.is_key_failure(), "{err:?}");
}

#[tokio::test]
async fn wx_login_inside_the_phone_callback_works_while_the_session_is_fresh() {
    let s = start_default().await;
    s.ctl.login(APP_A, "alice", None).await.unwrap();
    let phone = s.ctl.phone(APP_A, "alice").await.unwrap();
    let late_login = s.ctl.login(APP_A, "alice", None).await.unwrap();
    let key = session_key(&s.code2session(APP_A, &late_login.code).await);
    assert!(
        decrypt_phone(
            &AppId::parse(APP_A).unwrap(),
            &key,
            &phone.encrypted_data,
            &phone.iv,
            SystemTime::now(),
            Duration::from_secs(60),
        )
        .is_ok()
    );
}

#[tokio::test]
async fn the_phone_button_creates_a_session_for_a_user_who_never_logged_in() {
    let s = start_default().await;
    let phone = s.ctl.phone(APP_A, "newcomer").await.unwrap();
    let login = s.ctl.login(APP_A, "newcomer", None).await.unwrap();
    let key = session_key(&s.code2session(APP_A, &login.code).await);
    let record = decrypt_phone(
        &AppId::parse(APP_A).unwrap(),
        &key,
        &phone.encrypted_data,
        &phone.iv,
        SystemTime::now(),
        Duration::from_secs(60),
    )
    .unwrap();
    let n = record.phone.number().as_bytes();
    assert_eq!((n.len(), n[0]), (11, b'1'));
}

// ---- getuserphonenumber ----

#[tokio::test]
async fn phone_codes_give_the_users_phone_once() {
    let s = start_default().await;
    let login = s
        .ctl
        .login(APP_A, "alice", Some("13800138000"))
        .await
        .unwrap();
    let phone = s.ctl.phone(APP_A, "alice").await.unwrap();
    let token = s.access_token(APP_A).await;
    let v = s
        .phone_number(&token, json!({"code": phone.code, "openid": login.openid}))
        .await;
    assert_eq!(errcode(&v), 0, "{v}");
    assert_eq!(v["errmsg"], "ok");
    let info = &v["phone_info"];
    assert_eq!(info["phoneNumber"], "13800138000");
    assert_eq!(info["purePhoneNumber"], "13800138000");
    assert_eq!(info["countryCode"], "86");
    assert_eq!(info["watermark"]["appid"], APP_A);
    assert!(info["watermark"]["timestamp"].as_i64().unwrap() > 1_600_000_000);
    let again = s.phone_number(&token, json!({"code": phone.code})).await;
    assert_eq!(errcode(&again), 40029);
}

#[tokio::test]
async fn phone_codes_are_bound_to_their_openid() {
    let s = start_default().await;
    let bob = s.ctl.login(APP_A, "bob", None).await.unwrap();
    let phone = s.ctl.phone(APP_A, "alice").await.unwrap();
    let token = s.access_token(APP_A).await;
    let v = s
        .phone_number(&token, json!({"code": phone.code, "openid": bob.openid}))
        .await;
    assert_eq!(errcode(&v), 40029);
    // The mismatch did not spend the code.
    assert_eq!(
        errcode(&s.phone_number(&token, json!({"code": phone.code})).await),
        0
    );
}

#[tokio::test]
async fn phone_codes_expire_after_the_code_ttl() {
    let s = start(SimulatorConfig {
        code_ttl: Duration::from_millis(200),
        ..SimulatorConfig::default()
    })
    .await;
    let phone = s.ctl.phone(APP_A, "alice").await.unwrap();
    let token = s.access_token(APP_A).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v = s.phone_number(&token, json!({"code": phone.code})).await;
    assert_eq!(errcode(&v), 40029);
}

#[tokio::test]
async fn non_cn_phones_carry_their_country_code() {
    let s = start_default().await;
    s.ctl
        .login(APP_A, "alice", Some("+12025550123"))
        .await
        .unwrap();
    let phone = s.ctl.phone(APP_A, "alice").await.unwrap();
    let token = s.access_token(APP_A).await;
    let v = s.phone_number(&token, json!({"code": phone.code})).await;
    let info = &v["phone_info"];
    assert_eq!(info["phoneNumber"], "+12025550123");
    assert_eq!(info["purePhoneNumber"], "2025550123");
    assert_eq!(info["countryCode"], "1");
}

#[tokio::test]
async fn the_two_kinds_of_code_are_not_interchangeable() {
    let s = start_default().await;
    let login = s.ctl.login(APP_A, "alice", None).await.unwrap();
    let phone = s.ctl.phone(APP_A, "alice").await.unwrap();
    let token = s.access_token(APP_A).await;
    let v = s.phone_number(&token, json!({"code": login.code})).await;
    assert_eq!(errcode(&v), 40029);
    assert_eq!(errcode(&s.code2session(APP_A, &phone.code).await), 40029);
}

#[tokio::test]
async fn a_token_of_another_app_is_an_invalid_appid() {
    let s = start_default().await;
    let phone = s.ctl.phone(APP_A, "alice").await.unwrap();
    let token_b = s.access_token(APP_B).await;
    let v = s.phone_number(&token_b, json!({"code": phone.code})).await;
    assert_eq!(errcode(&v), 40013);
}

#[tokio::test]
async fn missing_unknown_and_expired_tokens_get_their_errcodes() {
    let s = start(SimulatorConfig {
        token_ttl: Duration::from_secs(1),
        ..SimulatorConfig::default()
    })
    .await;
    let phone = s.ctl.phone(APP_A, "alice").await.unwrap();
    let missing: Value = s
        .http
        .post(s.url("/wxa/business/getuserphonenumber"))
        .json(&json!({"code": phone.code}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(errcode(&missing), 41001);
    let unknown = s
        .phone_number("not-a-token", json!({"code": phone.code}))
        .await;
    assert_eq!(errcode(&unknown), 40001);
    assert!(
        unknown["errmsg"]
            .as_str()
            .unwrap()
            .starts_with("invalid credential, access_token is invalid or not latest")
    );
    let token = s.access_token(APP_A).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = s.phone_number(&token, json!({"code": phone.code})).await;
    assert_eq!(errcode(&expired), 42001);
}

#[tokio::test]
async fn getuserphonenumber_requires_post_and_a_json_body() {
    let s = start_default().await;
    let token = s.access_token(APP_A).await;
    let get: Value = s
        .http
        .get(s.url("/wxa/business/getuserphonenumber"))
        .query(&[("access_token", &token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(errcode(&get), 43002);
    let garbage: Value = s
        .http
        .post(s.url("/wxa/business/getuserphonenumber"))
        .query(&[("access_token", &token)])
        .body("code=abc")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(errcode(&garbage), 47001);
}

// ---- stable_token ----

#[tokio::test]
async fn stable_token_in_normal_mode_returns_the_same_token() {
    let s = start_default().await;
    let first = s.token(APP_A, false).await;
    let second = s.token(APP_A, false).await;
    assert!(first.get("errcode").is_none(), "{first}");
    assert_eq!(first["access_token"], second["access_token"]);
    assert_eq!(first["expires_in"], 7200);
    let remaining = second["expires_in"].as_u64().unwrap();
    assert!((7199..=7200).contains(&remaining));
    assert!(first["access_token"].as_str().unwrap().len() > 100);
    let other = s.token(APP_B, false).await;
    assert_ne!(other["access_token"], first["access_token"]);
    let stats = s.ctl.stats().await.unwrap();
    assert_eq!(stats.tokens_minted[APP_A], 1);
    assert_eq!(stats.calls["stable_token"], 3);
}

#[tokio::test]
async fn stable_token_rolls_over_five_minutes_before_expiry_keeping_both_valid() {
    let s = start(SimulatorConfig {
        token_ttl: Duration::from_secs(301),
        ..SimulatorConfig::default()
    })
    .await;
    let first = s.token(APP_A, false).await;
    assert_eq!(first["expires_in"], 301);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = s.token(APP_A, false).await;
    assert_ne!(first["access_token"], second["access_token"]);
    assert!(second["expires_in"].as_u64().unwrap() >= 300, "{second}");
    // The old token still works until its own expiry.
    let phone = s.ctl.phone(APP_A, "alice").await.unwrap();
    let old = first["access_token"].as_str().unwrap();
    assert_eq!(
        errcode(&s.phone_number(old, json!({"code": phone.code})).await),
        0
    );
    assert_eq!(s.ctl.stats().await.unwrap().tokens_minted[APP_A], 2);
}

#[tokio::test]
async fn force_refresh_invalidates_the_previous_token_at_once() {
    let s = start_default().await;
    let old = s.access_token(APP_A).await;
    let forced = s.token(APP_A, true).await;
    let new = forced["access_token"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(forced["expires_in"], 7200);
    let phone = s.ctl.phone(APP_A, "alice").await.unwrap();
    let v = s.phone_number(&old, json!({"code": phone.code})).await;
    assert_eq!(errcode(&v), 40001);
    assert_eq!(
        errcode(&s.phone_number(new, json!({"code": phone.code})).await),
        0
    );
    // Normal mode now hands out the new token.
    assert_eq!(s.access_token(APP_A).await, new);
    assert_eq!(s.ctl.stats().await.unwrap().force_refreshes, 1);
}

#[tokio::test]
async fn force_refresh_honours_the_minimum_interval() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::start(
        listener,
        SimulatorConfig {
            apps: vec![app(APP_A, None)],
            ..SimulatorConfig::default()
        },
    )
    .await
    .unwrap();
    let s = Sim {
        ctl: sim.client(),
        sim,
        http: reqwest::Client::new(),
    };
    assert!(s.token(APP_A, true).await.get("errcode").is_none());
    assert_eq!(errcode(&s.token(APP_A, true).await), 45011);
}

#[tokio::test]
async fn stable_token_validates_like_wechat() {
    let s = start_default().await;
    let ok = || json!({"grant_type": "client_credential", "appid": APP_A, "secret": secret(APP_A)});
    let mut cases = Vec::new();
    let mut v = ok();
    v["grant_type"] = json!("authorization_code");
    cases.push((v, 40002));
    let mut v = ok();
    v["appid"] = json!("wx_nope");
    cases.push((v, 40013));
    let mut v = ok();
    v["secret"] = json!("wrong");
    cases.push((v, 40125));
    let mut v = ok();
    v.as_object_mut().unwrap().remove("appid");
    cases.push((v, 41002));
    let mut v = ok();
    v.as_object_mut().unwrap().remove("secret");
    cases.push((v, 41004));
    for (body, expected) in cases {
        let got = s.stable_token_raw(body.clone()).await;
        assert_eq!(errcode(&got), expected, "{body}: {got}");
    }
    let get: Value = s
        .http
        .get(s.url("/cgi-bin/stable_token"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(errcode(&get), 43002);
    assert!(
        get["errmsg"]
            .as_str()
            .unwrap()
            .starts_with("require POST method")
    );
}

// ---- faults ----

#[tokio::test]
async fn a_latency_fault_delays_the_answer_without_changing_it() {
    let s = start_default().await;
    let mut fault = Fault::on(FaultEndpoint::Jscode2Session);
    fault.latency_ms = Some(300);
    fault.count = Some(1);
    s.ctl.set_fault(&fault).await.unwrap();
    let minted = s.ctl.login(APP_A, "alice", None).await.unwrap();
    let started = Instant::now();
    let v = s.code2session(APP_A, &minted.code).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(errcode(&v), 0);
    let minted = s.ctl.login(APP_A, "alice", None).await.unwrap();
    let started = Instant::now();
    s.code2session(APP_A, &minted.code).await;
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn a_latency_fault_without_count_lasts_until_cleared() {
    let s = start_default().await;
    let mut fault = Fault::on(FaultEndpoint::Any);
    fault.latency_ms = Some(100);
    s.ctl.set_fault(&fault).await.unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        s.token(APP_A, false).await;
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
    s.ctl.clear_faults().await.unwrap();
    let started = Instant::now();
    s.token(APP_A, false).await;
    assert!(started.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn an_http_status_fault_does_not_consume_the_code() {
    let s = start_default().await;
    let mut fault = Fault::on(FaultEndpoint::Jscode2Session);
    fault.http_status = Some(502);
    s.ctl.set_fault(&fault).await.unwrap();
    let minted = s.ctl.login(APP_A, "alice", None).await.unwrap();
    let params = [
        ("appid", APP_A),
        ("secret", &secret(APP_A)),
        ("js_code", &minted.code),
        ("grant_type", "authorization_code"),
    ];
    let (status, _, _) = s.code2session_raw(&params).await;
    assert_eq!(status, 502);
    assert_eq!(errcode(&s.code2session(APP_A, &minted.code).await), 0);
}

#[tokio::test]
async fn a_system_error_fault_answers_minus_one_and_keeps_the_code() {
    let s = start_default().await;
    let mut fault = Fault::on(FaultEndpoint::GetUserPhoneNumber);
    fault.errcode = Some(-1);
    s.ctl.set_fault(&fault).await.unwrap();
    let phone = s.ctl.phone(APP_A, "alice").await.unwrap();
    let token = s.access_token(APP_A).await;
    let v = s.phone_number(&token, json!({"code": phone.code})).await;
    assert_eq!(errcode(&v), -1);
    assert!(
        v["errmsg"]
            .as_str()
            .unwrap()
            .starts_with("system error, rid: ")
    );
    let v = s.phone_number(&token, json!({"code": phone.code})).await;
    assert_eq!(errcode(&v), 0, "{v}");
}

#[tokio::test]
async fn an_errcode_fault_uses_wechats_real_errmsg() {
    let s = start_default().await;
    let mut fault = Fault::on(FaultEndpoint::StableToken);
    fault.errcode = Some(45011);
    s.ctl.set_fault(&fault).await.unwrap();
    let v = s.token(APP_A, false).await;
    assert_eq!(errcode(&v), 45011);
    assert!(
        v["errmsg"]
            .as_str()
            .unwrap()
            .starts_with("api minute-quota reach limit mustslower retry next minute")
    );
}

#[tokio::test]
async fn a_garbage_body_fault_answers_the_raw_text_after_processing_the_call() {
    let s = start_default().await;
    let mut fault = Fault::on(FaultEndpoint::Jscode2Session);
    fault.body = Some(r#"{"session_key":"abc","ope"#.into());
    s.ctl.set_fault(&fault).await.unwrap();
    let minted = s.ctl.login(APP_A, "alice", None).await.unwrap();
    let params = [
        ("appid", APP_A),
        ("secret", &secret(APP_A)),
        ("js_code", &minted.code),
        ("grant_type", "authorization_code"),
    ];
    let (status, ct, body) = s.code2session_raw(&params).await;
    assert_eq!((status, ct.as_str()), (200, "text/plain"));
    assert_eq!(body, r#"{"session_key":"abc","ope"#);
    // WeChat processed it before the answer was garbled: the code is spent.
    assert_eq!(errcode(&s.code2session(APP_A, &minted.code).await), 40163);
}

#[tokio::test]
async fn faults_are_consumed_one_per_matching_call() {
    let s = start_default().await;
    let mut fault = Fault::on(FaultEndpoint::StableToken);
    fault.errcode = Some(-1);
    fault.count = Some(2);
    s.ctl.set_fault(&fault).await.unwrap();
    // A call to another endpoint does not consume it.
    let minted = s.ctl.login(APP_A, "alice", None).await.unwrap();
    assert_eq!(errcode(&s.code2session(APP_A, &minted.code).await), 0);
    assert_eq!(errcode(&s.token(APP_A, false).await), -1);
    assert_eq!(errcode(&s.token(APP_A, false).await), -1);
    assert_eq!(errcode(&s.token(APP_A, false).await), 0);
}

#[tokio::test]
async fn clearing_faults_disarms_them() {
    let s = start_default().await;
    let mut fault = Fault::on(FaultEndpoint::Any);
    fault.errcode = Some(-1);
    fault.count = Some(100);
    s.ctl.set_fault(&fault).await.unwrap();
    assert_eq!(errcode(&s.token(APP_A, false).await), -1);
    s.ctl.clear_faults().await.unwrap();
    assert_eq!(errcode(&s.token(APP_A, false).await), 0);
}

// ---- control API ----

#[tokio::test]
async fn the_control_api_answers_json_errors() {
    let s = start_default().await;
    let err = s.ctl.login("wx_unknown", "alice", None).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    assert!(err.to_string().contains("unknown app_id"), "{err}");
    let resp = s
        .http
        .post(s.url("/_sim/login"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("JSON"), "{v}");
    let err = s
        .ctl
        .login(APP_A, "alice", Some("not a phone"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    let mut useless = Fault::on(FaultEndpoint::Any);
    useless.count = Some(1);
    assert!(s.ctl.set_fault(&useless).await.is_err());
}

#[tokio::test]
async fn apps_registered_at_runtime_can_log_in() {
    let s = start_default().await;
    s.ctl.register_app(&app("wx_new_app", None)).await.unwrap();
    let minted = s.ctl.login("wx_new_app", "alice", None).await.unwrap();
    assert_eq!(
        errcode(&s.code2session("wx_new_app", &minted.code).await),
        0
    );
    let token = s.token("wx_new_app", false).await;
    assert!(token["access_token"].is_string());
}

#[tokio::test]
async fn stats_count_calls_per_endpoint() {
    let s = start_default().await;
    let minted = s.ctl.login(APP_A, "alice", None).await.unwrap();
    s.code2session(APP_A, &minted.code).await;
    s.code2session(APP_A, &minted.code).await;
    let token = s.access_token(APP_A).await;
    s.phone_number(&token, json!({"code": "x"})).await;
    let stats = s.ctl.stats().await.unwrap();
    assert_eq!(stats.calls["jscode2session"], 2);
    assert_eq!(stats.calls["stable_token"], 1);
    assert_eq!(stats.calls["getuserphonenumber"], 1);
    assert_eq!(stats.tokens_minted[APP_A], 1);
    assert_eq!(stats.tokens_minted[APP_B], 0);
    assert_eq!(stats.force_refreshes, 0);
}

#[tokio::test]
async fn concurrent_normal_mode_token_calls_mint_one_token() {
    let s = start_default().await;
    let calls = (0..32).map(|_| s.access_token(APP_A));
    let tokens = futures::future::join_all(calls).await;
    assert!(tokens.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(s.ctl.stats().await.unwrap().tokens_minted[APP_A], 1);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let s = start_default().await;
    let url = s.url("/_sim/stats");
    s.sim.shutdown().await;
    assert!(reqwest::get(url).await.is_err());
}
