//! End-to-end tests of `Auth/MiniProgramLogin`: real gRPC over a socket, the
//! WeChat simulator on its own port, a fresh MariaDB database per test.

use crate::helpers::*;
use mp_auth::{
    domain::SessionKey,
    proto::{self, mini_program_login_request::Phone as WirePhone},
};
use std::{collections::HashSet, time::Duration};
use tonic::Code;
use wechat_sim::{
    Fault, FaultEndpoint, Pressed,
    crypto::{self, encrypt_b64, phone_record},
    phone::Phone,
};

#[tokio::test(flavor = "multi_thread")]
async fn new_user_then_returning_user_with_the_phone_code_flow() {
    let app = TestApp::spawn().await;
    let user = unique_user();
    let phone = unique_phone();
    let first = app
        .login_with_phone_code(app.app_id(), &user, Some(&phone))
        .await
        .unwrap();
    assert!(first.is_new_user);
    assert_eq!(first.token_type, "Bearer");
    assert_eq!(first.expires_in, 7200);
    assert!(!first.openid.is_empty());
    assert_eq!(first.app_id, app.app_id());
    let second = app
        .login_with_phone_code(app.app_id(), &user, None)
        .await
        .unwrap();
    assert!(!second.is_new_user);
    assert_eq!(second.user_id, first.user_id);
    assert_eq!(second.openid, first.openid);
    let claims = app.token_issuer().verify(&second.access_token).unwrap();
    assert_eq!(claims.sub, second.user_id);
    assert_eq!(app.db.store.user_count().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn new_user_then_returning_user_with_the_legacy_encrypted_flow() {
    let app = TestApp::spawn().await;
    let user = unique_user();
    let first = app
        .login_with_encrypted_data(app.app_id(), &user, None)
        .await
        .unwrap();
    assert!(first.is_new_user);
    let second = app
        .login_with_encrypted_data(app.app_id(), &user, None)
        .await
        .unwrap();
    assert!(!second.is_new_user);
    assert_eq!(second.user_id, first.user_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn app_id_may_be_omitted_when_one_app_is_configured() {
    let app = TestApp::spawn().await;
    let user = unique_user();
    let pressed = app.press(&user).await;
    let ok = app
        .login_raw(proto::MiniProgramLoginRequest {
            app_id: String::new(),
            code: pressed.login.code,
            phone: Some(WirePhone::PhoneCode(pressed.phone.code)),
        })
        .await
        .unwrap();
    assert_eq!(ok.app_id, app.app_id());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_phone_from_two_apps_gives_one_user_with_two_identities_and_the_unionid() {
    let app = TestApp::spawn_with(TestAppOptions {
        apps: 2,
        ..Default::default()
    })
    .await;
    let user = unique_user();
    let a = app
        .login_with_phone_code(&app.app_ids[0], &user, None)
        .await
        .unwrap();
    let b = app
        .login_with_phone_code(&app.app_ids[1], &user, None)
        .await
        .unwrap();
    assert!(a.is_new_user);
    assert!(!b.is_new_user);
    assert_eq!(a.user_id, b.user_id);
    assert_ne!(a.openid, b.openid, "openids differ per app");
    assert!(!a.unionid.is_empty());
    assert_eq!(a.unionid, b.unionid, "one open platform, one unionid");
    let user_id = mp_auth::domain::UserId(a.user_id.parse().unwrap());
    assert_eq!(app.db.store.identity_count(user_id).await.unwrap(), 2);
    assert_eq!(app.db.store.user_count().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn app_id_is_required_when_several_apps_are_configured_and_unknown_apps_are_refused() {
    let app = TestApp::spawn_with(TestAppOptions {
        apps: 2,
        ..Default::default()
    })
    .await;
    let user = unique_user();
    let code = app
        .sim_client
        .login(&app.app_ids[0], &user, None)
        .await
        .unwrap()
        .code;
    let err = app
        .login_raw(proto::MiniProgramLoginRequest {
            app_id: String::new(),
            code: code.clone(),
            phone: Some(WirePhone::PhoneCode(WELL_FORMED_PHONE_CODE.into())),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "APP_ID_REQUIRED");
    let err = app
        .login_raw(proto::MiniProgramLoginRequest {
            app_id: "wx_not_configured".into(),
            code,
            phone: Some(WirePhone::PhoneCode(WELL_FORMED_PHONE_CODE.into())),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(reason(&err), "UNKNOWN_APP");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_and_malformed_fields_are_invalid_argument_naming_the_field() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            proto::MiniProgramLoginRequest {
                app_id: app.app_id().into(),
                code: String::new(),
                phone: Some(WirePhone::PhoneCode(WELL_FORMED_PHONE_CODE.into())),
            },
            "code",
        ),
        (
            proto::MiniProgramLoginRequest {
                app_id: app.app_id().into(),
                code: WELL_FORMED_CODE.into(),
                phone: Some(WirePhone::PhoneCode(String::new())),
            },
            "phone_code",
        ),
        (
            encrypted_request(
                app.app_id(),
                WELL_FORMED_CODE.into(),
                String::new(),
                "iv".into(),
            ),
            "encrypted_data",
        ),
        (
            encrypted_request(
                app.app_id(),
                WELL_FORMED_CODE.into(),
                "data".into(),
                String::new(),
            ),
            "iv",
        ),
        (
            proto::MiniProgramLoginRequest {
                app_id: "wx bad id".into(),
                code: WELL_FORMED_CODE.into(),
                phone: Some(WirePhone::PhoneCode(WELL_FORMED_PHONE_CODE.into())),
            },
            "app_id",
        ),
    ];
    for (req, field) in cases {
        let err = app.login_raw(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert_eq!(reason(&err), "INVALID_ARGUMENT");
        let info = tonic_types::StatusExt::get_details_error_info(&err).unwrap();
        assert_eq!(info.metadata.get("field").map(String::as_str), Some(field));
    }
    let stats = app.sim_client.stats().await.unwrap();
    assert_eq!(
        stats.calls_to("jscode2session"),
        0,
        "bad input never reaches WeChat"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_encrypted_data_is_invalid_argument_naming_the_field() {
    let app = TestApp::spawn().await;
    let user = unique_user();
    let pressed = app.press(&user).await;
    let err = app
        .login_raw(encrypted_request(
            app.app_id(),
            pressed.login.code,
            pressed.phone.encrypted_data,
            "AAAA".into(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        tonic_types::StatusExt::get_details_error_info(&err)
            .unwrap()
            .metadata["field"],
        "iv"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_login_code_is_unauthenticated_login_code_used() {
    let app = TestApp::spawn().await;
    let user = unique_user();
    let first = app.press(&user).await;
    app.login_raw(proto::MiniProgramLoginRequest {
        app_id: app.app_id().into(),
        code: first.login.code.clone(),
        phone: Some(WirePhone::PhoneCode(first.phone.code)),
    })
    .await
    .unwrap();
    let p2 = app.sim_client.phone(app.app_id(), &user).await.unwrap();
    let err = app
        .login_raw(proto::MiniProgramLoginRequest {
            app_id: app.app_id().into(),
            code: first.login.code,
            phone: Some(WirePhone::PhoneCode(p2.code.clone())),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "LOGIN_CODE_USED");
    // The phone code of the failed attempt was not spent: it still works.
    let code = app.wx_login(&user).await;
    app.login_raw(proto::MiniProgramLoginRequest {
        app_id: app.app_id().into(),
        code,
        phone: Some(WirePhone::PhoneCode(p2.code)),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn wechat_errcodes_map_to_status_codes_and_reasons() {
    let app = TestApp::spawn().await;
    let cases: [(i64, Code, &str); 6] = [
        (40029, Code::Unauthenticated, "LOGIN_CODE_INVALID"),
        (40163, Code::Unauthenticated, "LOGIN_CODE_USED"),
        (40226, Code::PermissionDenied, "USER_BLOCKED"),
        (45011, Code::ResourceExhausted, "WECHAT_RATE_LIMITED"),
        (-1, Code::Unavailable, "WECHAT_UNAVAILABLE"),
        (40125, Code::Internal, "WECHAT_APP_MISCONFIGURED"),
    ];
    for (errcode, code, expected) in cases {
        app.sim_client
            .set_fault(&Fault {
                errcode: Some(errcode),
                count: Some(1),
                ..Fault::on(FaultEndpoint::Jscode2Session)
            })
            .await
            .unwrap();
        let err = app
            .login_with_phone_code(app.app_id(), &unique_user(), None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "errcode {errcode}");
        assert_eq!(reason(&err), expected, "errcode {errcode}");
    }
    assert_eq!(
        app.db.store.user_count().await.unwrap(),
        0,
        "failed logins create no user"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn phone_errcodes_reachable_from_client_input_are_never_internal() {
    let app = TestApp::spawn().await;
    // 40013: a phone code minted for another mini program. 40001 twice: the
    // token is refused again after the one retry with a fresh token.
    let cases: [(i64, u64, Code, &str); 3] = [
        (40013, 1, Code::Unauthenticated, "PHONE_CODE_INVALID"),
        (40029, 1, Code::Unauthenticated, "PHONE_CODE_INVALID"),
        (40001, 2, Code::Unavailable, "WECHAT_UNAVAILABLE"),
    ];
    for (errcode, count, code, expected) in cases {
        app.sim_client
            .set_fault(&Fault {
                errcode: Some(errcode),
                count: Some(count),
                ..Fault::on(FaultEndpoint::GetUserPhoneNumber)
            })
            .await
            .unwrap();
        let err = app
            .login_with_phone_code(app.app_id(), &unique_user(), None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "errcode {errcode}");
        assert_eq!(reason(&err), expected, "errcode {errcode}");
        app.sim_client.clear_faults().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wechat_5xx_garbage_and_timeouts_are_unavailable() {
    let app = TestApp::spawn_with(TestAppOptions {
        tweak: Box::new(|s| s.wechat.timeout_ms = 300),
        ..Default::default()
    })
    .await;
    let faults = [
        Fault {
            http_status: Some(502),
            ..Fault::on(FaultEndpoint::Jscode2Session)
        },
        Fault {
            body: Some("<html>busy</html>".into()),
            ..Fault::on(FaultEndpoint::Jscode2Session)
        },
        Fault {
            body: Some("{\"openid\":\"o".into()),
            ..Fault::on(FaultEndpoint::Jscode2Session)
        },
        Fault {
            latency_ms: Some(1_000),
            count: Some(1),
            ..Fault::on(FaultEndpoint::Jscode2Session)
        },
        Fault {
            http_status: Some(503),
            ..Fault::on(FaultEndpoint::GetUserPhoneNumber)
        },
    ];
    for fault in faults {
        app.sim_client.set_fault(&fault).await.unwrap();
        let err = app
            .login_with_phone_code(app.app_id(), &unique_user(), None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{fault:?}");
        assert_eq!(reason(&err), "WECHAT_UNAVAILABLE");
        app.sim_client.clear_faults().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn phone_codes_are_single_use_and_bound_to_their_user() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (unique_user(), unique_user());
    let bob_phone = app.sim_client.phone(app.app_id(), &bob).await.unwrap();
    let code = app.wx_login(&alice).await;
    let err = app
        .login_raw(proto::MiniProgramLoginRequest {
            app_id: app.app_id().into(),
            code,
            phone: Some(WirePhone::PhoneCode(bob_phone.code)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "PHONE_CODE_INVALID");

    let pressed = app.sim_client.phone(app.app_id(), &alice).await.unwrap();
    for attempt in 0..2 {
        let code = app.wx_login(&alice).await;
        let res = app
            .login_raw(proto::MiniProgramLoginRequest {
                app_id: app.app_id().into(),
                code,
                phone: Some(WirePhone::PhoneCode(pressed.code.clone())),
            })
            .await;
        if attempt == 0 {
            res.unwrap();
        } else {
            assert_eq!(reason(&res.unwrap_err()), "PHONE_CODE_INVALID");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_access_token_heals_itself_with_one_retry() {
    let app = TestApp::spawn().await;
    app.login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .unwrap();
    // Someone force-refreshes the token behind the service's back.
    let http = reqwest::Client::new();
    let secret =
        secrecy::ExposeSecret::expose_secret(app.settings.apps[0].app_secret.as_ref().unwrap())
            .to_owned();
    let body: serde_json::Value = http
        .post(format!("{}/cgi-bin/stable_token", app.sim.base_url()))
        .json(&serde_json::json!({"grant_type": "client_credential", "appid": app.app_id(), "secret": secret, "force_refresh": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body["access_token"].is_string(), "{body}");
    let before = app.sim_client.stats().await.unwrap();
    app.login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .unwrap();
    let after = app.sim_client.stats().await.unwrap();
    assert_eq!(
        after.calls_to("getuserphonenumber") - before.calls_to("getuserphonenumber"),
        2,
        "one failure, one retry"
    );
    assert_eq!(
        after.calls_to("stable_token") - before.calls_to("stable_token"),
        1,
        "one refetch"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_previous_session_key_rescues_wx_login_called_after_the_phone_button() {
    // session_refresh 0: every wx.login rotates the key, the worst case.
    let app = TestApp::spawn_with(TestAppOptions {
        session_refresh: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let user = unique_user();
    let first = app
        .login_with_encrypted_data(app.app_id(), &user, None)
        .await
        .unwrap();
    // Phone button first (encrypted with the current key), then wx.login rotates it.
    let pressed = app.sim_client.phone(app.app_id(), &user).await.unwrap();
    let code = app.wx_login(&user).await;
    let ok = app
        .login_raw(encrypted_request(
            app.app_id(),
            code,
            pressed.encrypted_data,
            pressed.iv,
        ))
        .await
        .unwrap();
    assert_eq!(ok.user_id, first.user_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_previous_session_key_a_rotated_session_is_session_key_stale() {
    let app = TestApp::spawn_with(TestAppOptions {
        session_refresh: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let user = unique_user();
    let pressed = app.sim_client.phone(app.app_id(), &user).await.unwrap();
    let code = app.wx_login(&user).await;
    let err = app
        .login_raw(encrypted_request(
            app.app_id(),
            code,
            pressed.encrypted_data,
            pressed.iv,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "SESSION_KEY_STALE");
    assert_eq!(app.db.store.user_count().await.unwrap(), 0);
}

/// Mints a code and learns its session_key by exchanging a twin code (the
/// simulator keeps the key while the session is fresh).
async fn session_key_of(app: &TestApp, user: &str) -> SessionKey {
    let probe = app.wx_login(user).await;
    let secret =
        secrecy::ExposeSecret::expose_secret(app.settings.apps[0].app_secret.as_ref().unwrap())
            .to_owned();
    let body: serde_json::Value = serde_json::from_str(
        &reqwest::Client::new()
            .get(format!("{}/sns/jscode2session", app.sim.base_url()))
            .query(&[
                ("appid", app.app_id()),
                ("secret", &secret),
                ("js_code", &probe),
                ("grant_type", "authorization_code"),
            ])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    SessionKey::from_base64(body["session_key"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_data_for_another_app_is_a_watermark_mismatch_and_old_data_is_expired() {
    let app = TestApp::spawn().await;
    let user = unique_user();
    let key = crypto::SessionKey::from_bytes(*session_key_of(&app, &user).await.bytes());
    let phone = Phone::new("86", &unique_phone()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let iv = [1u8; 16];
    let iv_b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, iv);

    let foreign = encrypt_b64(&key, &iv, &phone_record("wx_someone_else", &phone, now));
    let code = app.wx_login(&user).await;
    let err = app
        .login_raw(encrypted_request(
            app.app_id(),
            code,
            foreign,
            iv_b64.clone(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "WATERMARK_MISMATCH");

    let stale = encrypt_b64(&key, &iv, &phone_record(app.app_id(), &phone, now - 3_600));
    let code = app.wx_login(&user).await;
    let err = app
        .login_raw(encrypted_request(app.app_id(), code, stale, iv_b64))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "ENCRYPTED_DATA_EXPIRED");
    assert_eq!(app.db.store.user_count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_logins_for_one_new_phone_create_one_user() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let phone = unique_phone();
    let mut minted = Vec::new();
    for _ in 0..200 {
        let user = unique_user();
        let pressed = app
            .sim_client
            .press(app.app_id(), &user, Some(&phone))
            .await
            .unwrap();
        minted.push((pressed.login.code, pressed.phone.code));
    }
    let mut tasks = Vec::new();
    for (code, phone_code) in minted {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.login_raw(proto::MiniProgramLoginRequest {
                app_id: app.app_id().into(),
                code,
                phone: Some(WirePhone::PhoneCode(phone_code)),
            })
            .await
        }));
    }
    let mut subs = HashSet::new();
    let mut new_users = 0;
    for t in tasks {
        let ok = t.await.unwrap().unwrap();
        new_users += usize::from(ok.is_new_user);
        subs.insert(app.token_issuer().verify(&ok.access_token).unwrap().sub);
    }
    assert_eq!(subs.len(), 1, "one user id in every token");
    assert_eq!(new_users, 1, "exactly one login created the user");
    assert_eq!(app.db.store.user_count().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_logins_for_one_openid_create_one_user_and_one_identity() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let user = unique_user();
    let mut minted = Vec::new();
    for _ in 0..200 {
        let pressed = app.press(&user).await;
        minted.push((pressed.login.code, pressed.phone));
    }
    let mut tasks = Vec::new();
    for (i, (code, pressed)) in minted.into_iter().enumerate() {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            // Mix both flows.
            if i % 2 == 0 {
                app.login_raw(proto::MiniProgramLoginRequest {
                    app_id: app.app_id().into(),
                    code,
                    phone: Some(WirePhone::PhoneCode(pressed.code)),
                })
                .await
            } else {
                app.login_raw(encrypted_request(
                    app.app_id(),
                    code,
                    pressed.encrypted_data,
                    pressed.iv,
                ))
                .await
            }
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().unwrap().user_id);
    }
    assert_eq!(ids.len(), 1);
    let user_id = mp_auth::domain::UserId(ids.into_iter().next().unwrap().parse().unwrap());
    assert_eq!(app.db.store.user_count().await.unwrap(), 1);
    assert_eq!(app.db.store.identity_count(user_id).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_between_the_statements_of_the_login_transaction_leaves_nothing_half_written() {
    let app = TestApp::spawn().await;
    let user = unique_user();
    let openid = app
        .sim_client
        .login(app.app_id(), &user, None)
        .await
        .unwrap()
        .openid;
    app.db
        .execute(&format!(
            "CREATE TRIGGER fail_identity BEFORE INSERT ON wechat_identities FOR EACH ROW \
             IF NEW.openid = '{openid}' AND NEW.user_id IS NOT NULL THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected'; END IF"
        ))
        .await;
    let err = app
        .login_with_phone_code(app.app_id(), &user, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(reason(&err), "INTERNAL");
    assert!(
        !err.message().contains("injected"),
        "internal details are not returned"
    );
    assert_eq!(
        app.db.store.user_count().await.unwrap(),
        0,
        "the user insert was rolled back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_verifies_independently_with_the_configured_key() {
    let app = TestApp::spawn().await;
    let ok = app
        .login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(&ok.access_token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert!(header.kid.is_some());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&["mp-auth"]);
    validation.set_audience(&["mp-auth-clients"]);
    let public = mp_auth::tokens::SigningKey::from_pem(TEST_SIGNING_KEY)
        .unwrap()
        .verifying_key()
        .to_public_pem()
        .unwrap();
    let data = jsonwebtoken::decode::<serde_json::Value>(
        &ok.access_token,
        &jsonwebtoken::DecodingKey::from_ec_pem(public.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(
        data.claims["sub"],
        serde_json::Value::String(ok.user_id.clone())
    );
    assert_eq!(
        data.claims["client_id"],
        serde_json::Value::String(app.app_id().into())
    );
    assert!(data.claims["jti"].is_string());
    let another = mp_auth::tokens::SigningKey::generate(mp_auth::tokens::Algorithm::Es256).unwrap();
    let wrong = jsonwebtoken::decode::<serde_json::Value>(
        &ok.access_token,
        &jsonwebtoken::DecodingKey::from_ec_pem(another.public_pem.as_bytes()).unwrap(),
        &validation,
    );
    assert!(wrong.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_double_submitted_code_logs_in_once_and_both_taps_get_the_answer() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let user = unique_user();
    let pressed = app.press(&user).await;
    // Hold the code exchange so the two requests overlap.
    app.sim_client
        .set_fault(&Fault {
            latency_ms: Some(300),
            count: Some(1),
            ..Fault::on(FaultEndpoint::Jscode2Session)
        })
        .await
        .unwrap();
    let before = app.sim_client.stats().await.unwrap();
    let request = proto::MiniProgramLoginRequest {
        app_id: app.app_id().into(),
        code: pressed.login.code,
        phone: Some(WirePhone::PhoneCode(pressed.phone.code)),
    };
    let (a, b) = tokio::join!(
        app.login_raw(request.clone()),
        app.login_raw(request.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.user_id, b.user_id);
    assert_eq!(a.access_token, b.access_token, "one login, one token");
    let after = app.sim_client.stats().await.unwrap();
    assert_eq!(
        after.calls_to("jscode2session") - before.calls_to("jscode2session"),
        1,
        "the code is exchanged once"
    );
    assert_eq!(
        after.calls_to("getuserphonenumber") - before.calls_to("getuserphonenumber"),
        1
    );
    // Once the login is over, the code is spent: a replay fails as it should.
    let err = app.login_raw(request).await.unwrap_err();
    assert_eq!(reason(&err), "LOGIN_CODE_USED");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_request_with_the_same_code_but_another_phone_proof_gets_no_token() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let user = unique_user();
    let Pressed {
        login,
        phone: pressed,
    } = app.press(&user).await;
    let code = login.code;
    app.sim_client
        .set_fault(&Fault {
            latency_ms: Some(400),
            count: Some(1),
            ..Fault::on(FaultEndpoint::Jscode2Session)
        })
        .await
        .unwrap();
    let genuine = proto::MiniProgramLoginRequest {
        app_id: app.app_id().into(),
        code: code.clone(),
        phone: Some(WirePhone::PhoneCode(pressed.code)),
    };
    let leader = {
        let app = app.clone();
        tokio::spawn(async move { app.login_raw(genuine).await })
    };
    // Let the leader reach the (delayed) code exchange first.
    tokio::time::sleep(Duration::from_millis(150)).await;
    for bogus in [
        WirePhone::PhoneCode(WELL_FORMED_PHONE_CODE.into()),
        WirePhone::Encrypted(proto::EncryptedPhone {
            encrypted_data: "AAAA".into(),
            iv: "AAAAAAAAAAAAAAAAAAAAAA==".into(),
        }),
    ] {
        let err = app
            .login_raw(proto::MiniProgramLoginRequest {
                app_id: app.app_id().into(),
                code: code.clone(),
                phone: Some(bogus),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "LOGIN_CODE_USED");
        assert!(
            !format!("{err:?}").contains("eyJ"),
            "no token in the refusal"
        );
    }
    let ok = leader.await.unwrap().unwrap();
    assert!(
        !ok.access_token.is_empty(),
        "the genuine login still succeeds"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn codes_of_shapes_wechat_never_issues_cost_no_wechat_call() {
    let app = TestApp::spawn().await;
    let before = app.sim_client.stats().await.unwrap();
    for code in [
        "x",
        "short",
        "has spaces in it 0000",
        &"a".repeat(200),
        "{\"$ne\":null}000000000",
    ] {
        let err = app
            .login_raw(proto::MiniProgramLoginRequest {
                app_id: app.app_id().into(),
                code: code.into(),
                phone: Some(WirePhone::PhoneCode(WELL_FORMED_PHONE_CODE.into())),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "INVALID_ARGUMENT", "{code}");
    }
    let err = app
        .login_raw(proto::MiniProgramLoginRequest {
            app_id: app.app_id().into(),
            code: WELL_FORMED_CODE.into(),
            phone: Some(WirePhone::PhoneCode("0000".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_ARGUMENT");
    let after = app.sim_client.stats().await.unwrap();
    assert_eq!(
        after.calls_to("jscode2session"),
        before.calls_to("jscode2session"),
        "no upstream call for a malformed code"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_per_app_upstream_budget_bounds_wechat_calls_under_a_garbage_flood() {
    let app = std::sync::Arc::new(
        TestApp::spawn_with(TestAppOptions {
            tweak: Box::new(|s| {
                s.wechat.upstream_calls_per_sec = 1;
                s.wechat.upstream_burst = 5;
            }),
            ..Default::default()
        })
        .await,
    );
    let before = app.sim_client.stats().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            // Well-formed codes WeChat never issued, as a flood from many addresses would send.
            let code = format!("0garbage{i:024}");
            app.login_raw(proto::MiniProgramLoginRequest {
                app_id: app.app_id().into(),
                code,
                phone: Some(WirePhone::PhoneCode(WELL_FORMED_PHONE_CODE.into())),
            })
            .await
            .unwrap_err()
        }));
    }
    let mut limited = 0;
    for t in tasks {
        let err = t.await.unwrap();
        match reason(&err).as_str() {
            "WECHAT_RATE_LIMITED" => limited += 1,
            "LOGIN_CODE_INVALID" => {}
            other => panic!("unexpected {other}"),
        }
    }
    let after = app.sim_client.stats().await.unwrap();
    let calls = after.calls_to("jscode2session") - before.calls_to("jscode2session");
    assert!(calls <= 7, "the budget bounds upstream calls: {calls}");
    assert_eq!(limited as u64 + calls, 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_wechat_says_45011_the_endpoint_pauses_for_the_cooldown() {
    let app = TestApp::spawn_with(TestAppOptions {
        tweak: Box::new(|s| s.wechat.rate_limit_cooldown_secs = 60),
        ..Default::default()
    })
    .await;
    app.sim_client
        .set_fault(&Fault {
            errcode: Some(45011),
            count: Some(1),
            ..Fault::on(FaultEndpoint::Jscode2Session)
        })
        .await
        .unwrap();
    let err = app
        .login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "WECHAT_RATE_LIMITED");
    let before = app.sim_client.stats().await.unwrap();
    for _ in 0..5 {
        let err = app
            .login_with_phone_code(app.app_id(), &unique_user(), None)
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "WECHAT_RATE_LIMITED");
    }
    let after = app.sim_client.stats().await.unwrap();
    assert_eq!(
        after.calls_to("jscode2session"),
        before.calls_to("jscode2session"),
        "no call while the breaker is open"
    );
}
