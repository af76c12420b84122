//! Sessions through the gateway: the login answer's refresh token, refresh and
//! logout over HTTP, and a load run whose clients disconnect mid-request while
//! every accepted login is still recorded.

use crate::{
    gateway_e2e::{http, stack},
    helpers::*,
};
use mp_auth::domain::Phone;
use serde_json::{Value, json};
use std::time::Duration;
use wechat_sim::{Fault, FaultEndpoint};

async fn post_json(url: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = http()
        .post(format!("{url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(cache.as_deref(), Some("no-store"), "{path} {status}");
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mini_program_logs_in_silently_refreshes_and_logs_out_over_http() {
    let s = stack(TestAppOptions::default()).await;
    let user = unique_user();
    // First launch: silent login of an unknown user asks for the phone.
    let code = s.app.wx_login(&user).await;
    let (status, body) = post_json(
        &s.gateway,
        "/auth/mp_login",
        json!({"code": code, "phoneCode": null}),
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (428, Some("PHONE_REQUIRED")),
        "{body}"
    );
    // The phone button, then the login with the phone code.
    let code = s.app.wx_login(&user).await;
    let pressed = s.app.sim_client.phone(s.app.app_id(), &user).await.unwrap();
    let (status, login) = post_json(
        &s.gateway,
        "/auth/mp_login",
        json!({"code": code, "phoneCode": pressed.code}),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    for field in ["access_token", "refresh_token", "openid", "user_id"] {
        assert!(
            login[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}: {login}"
        );
    }
    assert!(login["refresh_expires_in"].as_i64().unwrap() > 0);
    // Next launch: silent login works.
    let code = s.app.wx_login(&user).await;
    let (status, silent) = post_json(&s.gateway, "/auth/mp_login", json!({"code": code})).await;
    assert_eq!(status, 200, "{silent}");
    assert_eq!(silent["user_id"], login["user_id"]);
    assert_eq!(silent["is_new_user"], false);
    // Refresh rotates.
    let (status, refreshed) = post_json(
        &s.gateway,
        "/auth/refresh",
        json!({"refreshToken": login["refresh_token"]}),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_ne!(refreshed["refresh_token"], login["refresh_token"]);
    assert_eq!(refreshed["user_id"], login["user_id"]);
    assert_eq!(refreshed["token_type"], "bearer");
    // Logout with the access token of the silent session, then with the refresh token.
    let resp = http()
        .post(format!("{}/auth/logout", s.gateway))
        .bearer_auth(silent["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["sessions_revoked"], 1);
    let (status, out) = post_json(
        &s.gateway,
        "/auth/logout",
        json!({"refreshToken": refreshed["refresh_token"]}),
    )
    .await;
    assert_eq!(
        (status, out["sessions_revoked"].as_u64()),
        (200, Some(1)),
        "{out}"
    );
    // The logged-out session's refresh token is refused with its reason.
    let (status, err) = post_json(
        &s.gateway,
        "/auth/refresh",
        json!({"refreshToken": refreshed["refresh_token"]}),
    )
    .await;
    assert_eq!(
        (status, err["reason"].as_str()),
        (401, Some("SESSION_REVOKED")),
        "{err}"
    );
    assert!(err["action"].as_str().unwrap().contains("silent login"));
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_all_over_http_ends_every_session_and_needs_a_credential() {
    let s = stack(TestAppOptions::default()).await;
    let user = unique_user();
    let first = s
        .app
        .login_with_phone_code(s.app.app_id(), &user, None)
        .await
        .unwrap();
    let code = s.app.wx_login(&user).await;
    let (_, second) = post_json(&s.gateway, "/auth/mp_login", json!({"code": code})).await;
    let (status, err) = post_json(&s.gateway, "/auth/logout?all=true", json!({})).await;
    assert_eq!(
        (status, err["reason"].as_str()),
        (400, Some("INVALID_ARGUMENT")),
        "{err}"
    );
    let (status, out) = post_json(
        &s.gateway,
        "/auth/logout?all=true",
        json!({"refreshToken": second["refresh_token"]}),
    )
    .await;
    assert_eq!(
        (status, out["sessions_revoked"].as_u64()),
        (200, Some(2)),
        "{out}"
    );
    let (status, err) = post_json(
        &s.gateway,
        "/auth/refresh",
        json!({"refreshToken": first.refresh_token}),
    )
    .await;
    assert_eq!(
        (status, err["reason"].as_str()),
        (401, Some("SESSION_REVOKED"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_refuses_a_body_that_is_not_json_and_a_bad_all_precisely() {
    let s = stack(TestAppOptions::default()).await;
    let url = format!("{}/auth/logout", s.gateway);
    let resp = http()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("refreshToken=x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let resp = http()
        .post(format!("{url}?all=maybe"))
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["field"], "all", "{body}");
    // No body and no bearer token: the credential is missing.
    let resp = http().post(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["field"], "refreshToken", "{body}");
}

/// 120 logins through the gateway while WeChat answers slowly; half of the
/// clients hang up after 60 ms, while WeChat still holds their request. Every
/// login that reached WeChat is recorded: a user, its identity and its session.
#[tokio::test(flavor = "multi_thread")]
async fn a_load_run_whose_clients_disconnect_mid_request_records_every_accepted_login() {
    const LOGINS: usize = 120;
    let s = stack(TestAppOptions {
        tweak: Box::new(|s| s.gateway.rate_limit_per_sec = 0),
        ..Default::default()
    })
    .await;
    s.app
        .sim_client
        .set_fault(&Fault {
            latency_ms: Some(150),
            ..Fault::on(FaultEndpoint::Jscode2Session)
        })
        .await
        .unwrap();
    let mut bodies = Vec::new();
    let mut phones = Vec::new();
    for _ in 0..LOGINS {
        let user = unique_user();
        let phone = unique_phone();
        let code = s
            .app
            .sim_client
            .login(s.app.app_id(), &user, Some(&phone))
            .await
            .unwrap()
            .code;
        let pressed = s.app.sim_client.phone(s.app.app_id(), &user).await.unwrap();
        bodies.push(json!({"code": code, "phoneCode": pressed.code}));
        phones.push(phone);
    }
    mp_auth::tls::install_crypto_provider();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(60))
        .build()
        .unwrap();
    let patient = http();
    let url = format!("{}/auth/mp_login", s.gateway);
    let outcomes = futures::future::join_all(bodies.into_iter().enumerate().map(|(i, body)| {
        let client = if i % 2 == 0 {
            impatient.clone()
        } else {
            patient.clone()
        };
        let url = url.clone();
        async move {
            match client.post(&url).json(&body).send().await {
                Ok(resp) => Some(resp.status().as_u16()),
                Err(e) => {
                    assert!(e.is_timeout(), "{e}");
                    None
                }
            }
        }
    }))
    .await;
    let hung_up = outcomes.iter().filter(|o| o.is_none()).count();
    assert!(
        hung_up >= LOGINS / 2,
        "half the clients hung up ({hung_up})"
    );
    assert!(
        outcomes.iter().flatten().all(|status| *status == 200),
        "{outcomes:?}"
    );
    // Every login that reached the service (and so WeChat, which consumed its
    // code) ends recorded, whether or not its client was still there.
    let mut recorded = 0;
    let mut accepted = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stats = s.app.sim_client.stats().await.unwrap();
        accepted = stats.calls.get("jscode2session").copied().unwrap_or(0) as usize;
        recorded = s.app.db.store.user_count().await.unwrap() as usize;
        if recorded == accepted && accepted >= LOGINS / 2 {
            break;
        }
    }
    assert_eq!(recorded, accepted, "every accepted login is recorded");
    assert!(
        accepted > LOGINS - hung_up,
        "some clients hung up after their login was accepted ({accepted} accepted, {hung_up} hung up)"
    );
    let now = mp_auth::sessions::now_ms();
    let mut found = 0;
    for phone in &phones {
        let Some(user) = s
            .app
            .db
            .store
            .user_id_by_phone(&Phone::new("86", phone).unwrap())
            .await
            .unwrap()
        else {
            continue;
        };
        found += 1;
        assert_eq!(s.app.db.store.identity_count(user).await.unwrap(), 1);
        assert_eq!(
            s.app.db.store.user_sessions(user, now).await.unwrap().len(),
            1
        );
    }
    assert_eq!(found, recorded, "each recorded login is one of ours");
}
