//! Sessions: silent login, refresh rotation with its retry and reuse rules,
//! concurrency, expiry, logout, app binding, and logins that finish after the
//! caller hung up. Store-level cases also run on SQLite (dev mode).

use crate::{db::TestDb, helpers::*};
use mp_auth::{
    domain::{AppId, OpenId, Phone, UserId},
    proto::{self, logout_request::Credential},
    store::{Backend, LoginRecord, NewSession, RevokeReason, Rotation, SilentLogin, SilentOutcome},
};
use std::{sync::Arc, time::Duration};
use tonic::Code;
use wechat_sim::{Fault, FaultEndpoint, Pressed};

async fn refresh(
    app: &TestApp,
    token: &str,
    app_id: &str,
) -> Result<proto::RefreshSessionResponse, tonic::Status> {
    app.client()
        .await
        .refresh_session(proto::RefreshSessionRequest {
            refresh_token: token.into(),
            app_id: app_id.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn silent(
    app: &TestApp,
    app_id: &str,
    user: &str,
) -> Result<proto::MiniProgramLoginResponse, tonic::Status> {
    let code = app.sim_client.login(app_id, user, None).await.unwrap().code;
    app.login_raw(proto::MiniProgramLoginRequest {
        app_id: app_id.into(),
        code,
        phone: None,
    })
    .await
}

fn sid_of(access_token: &str, app: &TestApp) -> String {
    app.token_issuer()
        .verify(access_token)
        .unwrap()
        .sid
        .expect("access tokens carry the session id")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_known_user_logs_in_silently_without_the_phone_button() {
    let app = TestApp::spawn().await;
    let user = unique_user();
    let first = app
        .login_with_phone_code(app.app_id(), &user, None)
        .await
        .unwrap();
    assert!(!first.refresh_token.is_empty() && first.refresh_expires_in > 0);
    let before = app.sim_client.stats().await.unwrap();
    let again = silent(&app, app.app_id(), &user).await.unwrap();
    assert_eq!(again.user_id, first.user_id);
    assert!(!again.is_new_user && !again.linked_by_unionid);
    assert_ne!(
        again.session_id, first.session_id,
        "one session per device login"
    );
    assert_eq!(sid_of(&again.access_token, &app), again.session_id);
    let after = app.sim_client.stats().await.unwrap();
    assert_eq!(
        after.calls.get("getuserphonenumber"),
        before.calls.get("getuserphonenumber"),
        "no paid phone call"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_identity_with_a_known_unionid_is_linked_to_that_user() {
    let app = TestApp::spawn_with(TestAppOptions {
        apps: 2,
        ..Default::default()
    })
    .await;
    let user = unique_user();
    let first = app
        .login_with_phone_code(&app.app_ids[0], &user, None)
        .await
        .unwrap();
    let linked = silent(&app, &app.app_ids[1], &user).await.unwrap();
    assert_eq!(linked.user_id, first.user_id);
    assert!(linked.linked_by_unionid);
    assert_eq!(linked.unionid, first.unionid);
    // From then on the second app's identity is bound: a plain known login.
    let again = silent(&app, &app.app_ids[1], &user).await.unwrap();
    assert!(!again.linked_by_unionid);
    assert_eq!(again.user_id, first.user_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_user_gets_phone_required_and_the_legacy_login_that_follows_succeeds() {
    // Every wx.login rotates the session_key, as on a real device after a while.
    let app = TestApp::spawn_with(TestAppOptions {
        session_refresh: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let user = unique_user();
    let err = silent(&app, app.app_id(), &user).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "PHONE_REQUIRED");
    assert_eq!(app.db.store.user_count().await.unwrap(), 0);
    // The phone button's data is encrypted with the silent login's session_key;
    // the next wx.login rotated it, and the kept key rescues the login.
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
    assert!(ok.is_new_user);
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_rotates_a_retry_gets_the_same_successor_and_reuse_revokes_only_that_session() {
    let app = TestApp::spawn().await;
    let user = unique_user();
    let login = app
        .login_with_phone_code(app.app_id(), &user, None)
        .await
        .unwrap();
    let other = silent(&app, app.app_id(), &user).await.unwrap();
    let t1 = login.refresh_token.clone();
    let r2 = refresh(&app, &t1, app.app_id()).await.unwrap();
    assert_ne!(r2.refresh_token, t1);
    assert_eq!(r2.session_id, login.session_id);
    assert_ne!(r2.access_token, login.access_token);
    // The answer was lost: the same token again (its successor unused) gets the same successor.
    let retry = refresh(&app, &t1, app.app_id()).await.unwrap();
    assert_eq!(retry.refresh_token, r2.refresh_token);
    // The successor is used...
    let r3 = refresh(&app, &r2.refresh_token, "").await.unwrap();
    // ...so presenting the first token again is reuse: this session is revoked.
    let err = refresh(&app, &t1, app.app_id()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "REFRESH_TOKEN_REUSED");
    let err = refresh(&app, &r3.refresh_token, app.app_id())
        .await
        .unwrap_err();
    assert_eq!(
        reason(&err),
        "SESSION_REVOKED",
        "thief and victim are both out"
    );
    let row = app
        .db
        .store
        .session(&login.session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.revoke_reason.as_deref(), Some("reuse_detected"));
    // The user's other session is untouched.
    refresh(&app, &other.refresh_token, app.app_id())
        .await
        .expect("reuse revokes one session, never every session of the user");
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_refreshes_of_one_token_produce_exactly_one_successor() {
    let app = Arc::new(
        TestApp::spawn_with(TestAppOptions {
            tweak: Box::new(|s| s.sessions.refreshes_per_minute = 0),
            ..Default::default()
        })
        .await,
    );
    let login = app
        .login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let app = app.clone();
        let token = login.refresh_token.clone();
        tasks.push(tokio::spawn(async move {
            refresh(&app, &token, app.app_id()).await
        }));
    }
    let mut successors = std::collections::HashSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                successors.insert(r.refresh_token);
            }
            Err(e) => panic!("a concurrent refresh failed: {e}"),
        }
    }
    assert_eq!(successors.len(), 1, "never two valid successors");
    let row = app
        .db
        .store
        .session(&login.session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.generation, 2, "exactly one rotation");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_absolute_expiry_end_a_session() {
    use mysql_async::prelude::Queryable as _;
    let app = TestApp::spawn().await;
    let a = app
        .login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .unwrap();
    let b = app
        .login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .unwrap();
    let mut db = mysql_async::Conn::from_url(app.db.url()).await.unwrap();
    db.exec_drop(
        "UPDATE sessions SET idle_expires_at = 1 WHERE id = ?",
        (a.session_id.as_str(),),
    )
    .await
    .unwrap();
    db.exec_drop(
        "UPDATE sessions SET expires_at = 1 WHERE id = ?",
        (b.session_id.as_str(),),
    )
    .await
    .unwrap();
    for token in [&a.refresh_token, &b.refresh_token] {
        let err = refresh(&app, token, app.app_id()).await.unwrap_err();
        assert_eq!(reason(&err), "SESSION_EXPIRED");
    }
    // Ended sessions are cleaned up in bounded batches, not on the login path.
    let deleted = app
        .db
        .store
        .delete_ended_sessions(mp_auth::sessions::now_ms(), 10)
        .await
        .unwrap();
    assert!(
        deleted >= 1,
        "the session past its absolute lifetime is deleted"
    );
    assert!(app.db.store.session(&b.session_id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_ends_one_session_and_logout_all_ends_every_session_of_the_user() {
    let app = TestApp::spawn().await;
    let user = unique_user();
    let s1 = app
        .login_with_phone_code(app.app_id(), &user, None)
        .await
        .unwrap();
    let s2 = silent(&app, app.app_id(), &user).await.unwrap();
    let s3 = silent(&app, app.app_id(), &user).await.unwrap();
    let mut client = app.client().await;
    let out = client
        .logout(proto::LogoutRequest {
            credential: Some(Credential::RefreshToken(s1.refresh_token.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (out.user_id.as_str(), out.sessions_revoked),
        (s1.user_id.as_str(), 1)
    );
    let err = refresh(&app, &s1.refresh_token, app.app_id())
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "SESSION_REVOKED");
    refresh(&app, &s2.refresh_token, app.app_id())
        .await
        .unwrap();
    // Logout-all with an access token of another session.
    let out = client
        .logout_all(proto::LogoutRequest {
            credential: Some(Credential::AccessToken(s3.access_token.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.sessions_revoked, 2);
    for sid in [&s2.session_id, &s3.session_id] {
        let row = app.db.store.session(sid).await.unwrap().unwrap();
        assert_eq!(row.revoke_reason.as_deref(), Some("logout_all"));
    }
    // Logging out twice is harmless; a garbage credential is refused precisely.
    let again = client
        .logout(proto::LogoutRequest {
            credential: Some(Credential::RefreshToken(s1.refresh_token.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.sessions_revoked, 0);
    let err = client
        .logout(proto::LogoutRequest {
            credential: Some(Credential::AccessToken("not.a.jwt".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "TOKEN_INVALID");
    let err = client
        .logout(proto::LogoutRequest { credential: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_token_of_another_app_or_tampered_is_refused_precisely() {
    let app = TestApp::spawn_with(TestAppOptions {
        apps: 2,
        ..Default::default()
    })
    .await;
    let login = app
        .login_with_phone_code(&app.app_ids[0], &unique_user(), None)
        .await
        .unwrap();
    let err = refresh(&app, &login.refresh_token, &app.app_ids[1])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "REFRESH_TOKEN_WRONG_APP");
    let mut tampered = login.refresh_token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [tampered.as_str(), "garbage", ""] {
        let err = refresh(&app, bad, &app.app_ids[0]).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{bad}");
        assert_eq!(reason(&err), "REFRESH_TOKEN_INVALID", "{bad}");
    }
    // A forged generation (the MAC covers it) is invalid too.
    let forged = login.refresh_token.replacen(".1.", ".9.", 1);
    let err = refresh(&app, &forged, &app.app_ids[0]).await.unwrap_err();
    assert_eq!(reason(&err), "REFRESH_TOKEN_INVALID");
    // With several apps, the app is required.
    let err = refresh(&app, &login.refresh_token, "").await.unwrap_err();
    assert_eq!(reason(&err), "APP_ID_REQUIRED");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_whose_caller_hangs_up_still_completes_and_is_recorded() {
    let handle = mp_auth::telemetry::prometheus().unwrap();
    let metric = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("mp_auth_logins_completed_after_caller_left_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = metric(&handle.render());
    let app = Arc::new(TestApp::spawn().await);
    let user = unique_user();
    let phone = unique_phone();
    let Pressed {
        login,
        phone: pressed,
    } = app
        .sim_client
        .press(app.app_id(), &user, Some(&phone))
        .await
        .unwrap();
    let code = login.code;
    app.sim_client
        .set_fault(&Fault {
            latency_ms: Some(600),
            count: Some(1),
            ..Fault::on(FaultEndpoint::Jscode2Session)
        })
        .await
        .unwrap();
    let caller = {
        let app = app.clone();
        tokio::spawn(async move {
            app.login_raw(proto::MiniProgramLoginRequest {
                app_id: app.app_id().into(),
                code,
                phone: Some(proto::mini_program_login_request::Phone::PhoneCode(
                    pressed.code,
                )),
            })
            .await
        })
    };
    // The request reaches the service (and WeChat, which holds it), then the caller leaves.
    tokio::time::sleep(Duration::from_millis(200)).await;
    caller.abort();
    let _ = caller.await;
    let p = Phone::new("86", &phone).unwrap();
    let mut user_id = None;
    for _ in 0..50 {
        if let Some(id) = app.db.store.user_id_by_phone(&p).await.unwrap() {
            user_id = Some(id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let user_id = user_id.expect("the login completed although its caller left");
    assert_eq!(app.db.store.identity_count(user_id).await.unwrap(), 1);
    let sessions = app
        .db
        .store
        .user_sessions(user_id, mp_auth::sessions::now_ms())
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1, "its session was recorded too");
    let mut counted = false;
    for _ in 0..20 {
        if metric(&handle.render()) > before {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        counted,
        "mp_auth_logins_completed_after_caller_left_total counted it"
    );
}

// --- the store on both backends ------------------------------------------------------

fn ids() -> (AppId, OpenId, Phone) {
    (
        AppId::parse("wxsessionstore01").unwrap(),
        OpenId::parse(&format!("o-{}", uuid::Uuid::new_v4().simple())).unwrap(),
        Phone::new("86", &unique_phone()).unwrap(),
    )
}

fn new_session(now: i64) -> NewSession {
    NewSession {
        id: uuid::Uuid::new_v4().simple().to_string(),
        created_at_ms: now,
        idle_expires_at_ms: now + 3_600_000,
        expires_at_ms: now + 7_200_000,
    }
}

async fn store_sessions_rotate_and_revoke(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (app, openid, phone) = ids();
    let now = 1_790_000_000_000;
    let s = new_session(now);
    let out = db
        .store
        .record_login(&LoginRecord {
            app_id: &app,
            openid: &openid,
            unionid: None,
            phone: &phone,
            sealed_session_key: b"k",
            session_key_expires_at_ms: now + 1000,
            session: Some(&s),
            now_ms: now,
        })
        .await
        .unwrap();
    let store = &db.store;
    let idle = now + 3_600_000;
    assert_eq!(
        store.rotate_session(&s.id, 1, now + 1, idle).await.unwrap(),
        Rotation::Rotated { generation: 2 }
    );
    assert_eq!(
        store.rotate_session(&s.id, 1, now + 2, idle).await.unwrap(),
        Rotation::Retry { current: 2 }
    );
    assert_eq!(
        store.rotate_session(&s.id, 2, now + 3, idle).await.unwrap(),
        Rotation::Rotated { generation: 3 }
    );
    assert_eq!(
        store.rotate_session(&s.id, 1, now + 4, idle).await.unwrap(),
        Rotation::Reused
    );
    assert!(matches!(
        store.rotate_session(&s.id, 3, now + 5, idle).await.unwrap(),
        Rotation::Revoked { .. }
    ));
    let revoked = store.sessions_revoked_since(now).await.unwrap();
    assert!(
        revoked
            .iter()
            .any(|r| r.sid == s.id && r.user_id == out.user_id)
    );
    assert_eq!(
        store.rotate_session("nope", 1, now, idle).await.unwrap(),
        Rotation::NotFound
    );
    // Silent logins: known, then a new identity without unionid is unknown.
    let s2 = new_session(now);
    let known = store
        .silent_login(&SilentLogin {
            app_id: &app,
            openid: &openid,
            unionid: None,
            sealed_session_key: b"k2",
            session_key_expires_at_ms: now + 1000,
            session: &s2,
            now_ms: now,
        })
        .await
        .unwrap();
    assert_eq!(known, SilentOutcome::Known(out.user_id));
    let (_, stranger, _) = ids();
    let unknown = store
        .silent_login(&SilentLogin {
            app_id: &app,
            openid: &stranger,
            unionid: None,
            sealed_session_key: b"k3",
            session_key_expires_at_ms: now + 1000,
            session: &new_session(now),
            now_ms: now,
        })
        .await
        .unwrap();
    assert_eq!(unknown, SilentOutcome::Unknown);
    assert!(
        store
            .session_key(&app, &stranger, now)
            .await
            .unwrap()
            .is_some(),
        "the session_key is kept for the phone step"
    );
    assert_eq!(
        store
            .revoke_user_sessions(out.user_id, RevokeReason::LogoutAll, now)
            .await
            .unwrap(),
        1,
        "the one live session (s2) is revoked"
    );
    assert!(
        store
            .user_sessions(out.user_id, now)
            .await
            .unwrap()
            .is_empty()
    );
    let _ = UserId(0);
}

mod mysql {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_sessions_rotate_and_revoke() {
        super::store_sessions_rotate_and_revoke(mp_auth::store::Backend::Mysql).await
    }
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_sessions_rotate_and_revoke() {
        super::store_sessions_rotate_and_revoke(mp_auth::store::Backend::Sqlite).await
    }
}
