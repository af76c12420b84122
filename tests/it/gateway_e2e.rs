//! The gateway in front of the real gRPC service (MariaDB, simulator): the
//! original front end's request shape byte for byte, and the error mapping
//! end to end.

use crate::helpers::*;
use mp_auth::gateway::Gateway;
use std::time::Duration;

/// The real service behind a real gateway (shared with the sessions tests).
pub(crate) struct Stack {
    pub(crate) app: TestApp,
    pub(crate) gateway: String,
    _running: RunningGateway,
}

pub(crate) async fn stack(opts: TestAppOptions) -> Stack {
    let app = TestApp::spawn_with(opts).await;
    let running = start_gateway(&app.settings, app.grpc_addr).await;
    Stack {
        app,
        gateway: running.url.clone(),
        _running: running,
    }
}

pub(crate) fn http() -> reqwest::Client {
    mp_auth::tls::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn post(url: &str, body: String) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let resp = http()
        .post(format!("{url}/auth/mp_login"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap(), headers)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_original_front_end_body_logs_in_through_the_gateway() {
    let s = stack(TestAppOptions::default()).await;
    let user = unique_user();
    let pressed = s.app.press(&user).await;
    // Exactly what the original product's front end sends.
    let body = format!(
        r#"{{"code":"{}","encryptedData":"{}","iv":"{}"}}"#,
        pressed.login.code, pressed.phone.encrypted_data, pressed.phone.iv
    );
    let (status, json, headers) = post(&s.gateway, body).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["token_type"], "bearer");
    assert_eq!(json["is_new_user"], true);
    assert_eq!(json["expires_in"], 7200);
    assert!(json["user_id"].is_string());
    assert!(json["openid"].is_string());
    assert_eq!(headers["cache-control"], "no-store");
    let claims = s
        .app
        .token_issuer()
        .verify(json["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(serde_json::Value::String(claims.sub), json["user_id"]);

    let pressed = s.app.press(&user).await;
    let body = serde_json::json!({"code": pressed.login.code, "phoneCode": pressed.phone.code, "appId": s.app.app_id()})
        .to_string();
    let (status, again, _) = post(&s.gateway, body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["is_new_user"], false);
    assert_eq!(again["user_id"], json["user_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn service_errors_reach_the_mini_program_as_http_statuses_with_reasons() {
    let s = stack(TestAppOptions {
        session_refresh: Duration::ZERO,
        ..Default::default()
    })
    .await;
    // Stale session: phone button, then wx.login rotates the key, no stored key.
    let user = unique_user();
    let pressed = s.app.sim_client.phone(s.app.app_id(), &user).await.unwrap();
    let code = s.app.wx_login(&user).await;
    let body = serde_json::json!({"code": code, "encryptedData": pressed.encrypted_data, "iv": pressed.iv}).to_string();
    let (status, json, _) = post(&s.gateway, body.clone()).await;
    assert_eq!(
        (status, json["reason"].as_str()),
        (409, Some("SESSION_KEY_STALE")),
        "{json}"
    );
    // The same code again: used.
    let (status, json, _) = post(&s.gateway, body).await;
    assert_eq!(
        (status, json["reason"].as_str()),
        (401, Some("LOGIN_CODE_USED")),
        "{json}"
    );
    // WeChat rate limit: 429 with Retry-After.
    s.app
        .sim_client
        .set_fault(&wechat_sim::Fault {
            errcode: Some(45011),
            ..wechat_sim::Fault::on(wechat_sim::FaultEndpoint::Jscode2Session)
        })
        .await
        .unwrap();
    let code = s.app.wx_login(&user).await;
    let (status, json, headers) = post(
        &s.gateway,
        serde_json::json!({"code": code, "phoneCode": "0123456789abcdef0123456789abcdef"})
            .to_string(),
    )
    .await;
    assert_eq!(
        (status, json["reason"].as_str()),
        (429, Some("WECHAT_RATE_LIMITED")),
        "{json}"
    );
    assert!(headers.contains_key("retry-after"));
    assert_eq!(s.app.db.store.user_count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_protected_login_rpcs_only_the_gateway_s_key_logs_in() {
    let key = mp_auth::callers::generate_key();
    let hash = mp_auth::callers::key_hash_hex(&key);
    let gateway_key = key.clone();
    let s = stack(TestAppOptions {
        tweak: Box::new(move |s| {
            s.grpc.protect_login_rpcs = true;
            s.callers = vec![mp_auth::config::CallerSettings {
                name: "gateway".into(),
                key_sha256: hash,
                permissions: vec!["auth:login".into()],
            }];
            s.gateway.api_key = Some(secrecy::SecretString::from(gateway_key));
        }),
        ..Default::default()
    })
    .await;
    // Through the gateway (which holds the key): a normal login.
    let user = unique_user();
    let pressed = s.app.press(&user).await;
    let (status, json, _) = post(
        &s.gateway,
        serde_json::json!({"code": pressed.login.code, "phoneCode": pressed.phone.code})
            .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    // Straight to the gRPC port without a key: refused before any WeChat call.
    let err = s
        .app
        .login_with_phone_code(s.app.app_id(), &unique_user(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason(&err), "CALLER_UNAUTHENTICATED");
    // A gateway without the key is an operator error (500), not a bad wx.login code.
    let mut settings = s.app.settings.clone();
    settings.gateway.backend_url = format!("http://{}", s.app.grpc_addr);
    settings.gateway.api_key = None;
    settings.gateway.listen = ([127, 0, 0, 1], 0).into();
    let keyless = Gateway::build(&settings).await.unwrap();
    let keyless_url = format!("http://{}", keyless.local_addr());
    tokio::spawn(keyless.run_until(std::future::pending()));
    let code = s.app.wx_login(&unique_user()).await;
    let (status, json, _) = post(
        &keyless_url,
        serde_json::json!({"code": code, "phoneCode": WELL_FORMED_PHONE_CODE}).to_string(),
    )
    .await;
    assert_eq!(
        (status, json["reason"].as_str()),
        (500, Some("INTERNAL")),
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_deletes_its_own_account_with_a_valid_token_only() {
    let s = stack(TestAppOptions::default()).await;
    let delete = |token: String| {
        let url = format!("{}/auth/account/delete", s.gateway);
        async move {
            let resp = http()
                .post(url)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(r#"{"reason":"user_request"}"#)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    // An expired token (signed with the right key, `exp` in the past): refused.
    let user = unique_user();
    let login = s
        .app
        .login_with_phone_code(s.app.app_id(), &user, None)
        .await
        .unwrap();
    let mut claims = s.app.token_issuer().verify(&login.access_token).unwrap();
    claims.exp = claims.iat - 3600;
    claims.iat -= 7200;
    let expired = mp_auth::tokens::SigningKey::from_pem(TEST_SIGNING_KEY)
        .unwrap()
        .sign(&claims)
        .unwrap();
    let (status, body) = delete(expired).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (401, Some("TOKEN_EXPIRED")),
        "{body}"
    );
    // A revoked token (its session logged out): refused.
    let other = s
        .app
        .login_with_phone_code(s.app.app_id(), &unique_user(), None)
        .await
        .unwrap();
    s.app
        .client()
        .await
        .logout(mp_auth::proto::LogoutRequest {
            credential: Some(mp_auth::proto::logout_request::Credential::RefreshToken(
                other.refresh_token.clone(),
            )),
        })
        .await
        .unwrap();
    let mut status_body = (0, serde_json::Value::Null);
    for _ in 0..40 {
        status_body = delete(other.access_token.clone()).await;
        if status_body.1["reason"] == "TOKEN_REVOKED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (status_body.0, status_body.1["reason"].as_str()),
        (401, Some("TOKEN_REVOKED")),
        "{}",
        status_body.1
    );
    // No token at all: a 400 naming the header.
    let resp = http()
        .post(format!("{}/auth/account/delete", s.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // The valid token deletes the account; its tokens then fail verification.
    let (status, body) = delete(login.access_token.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], login.user_id);
    assert_eq!(body["sessions_revoked"], 1);
    let uid = mp_auth::domain::UserId(login.user_id.parse().unwrap());
    assert!(s.app.db.store.user(uid).await.unwrap().is_none());
    assert!(s.app.db.store.tombstone(uid).await.unwrap().is_some());
    // The same phone logs in again as a new user.
    let again = s
        .app
        .login_with_phone_code(s.app.app_id(), &user, None)
        .await
        .unwrap();
    assert!(again.is_new_user);
    assert_ne!(again.user_id, login.user_id);
}
