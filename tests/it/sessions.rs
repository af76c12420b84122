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
    app.login_raw(silent_request(app_id, code)).await
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

/// The case the retry window exists for: a thief refreshes a stolen token first;
/// the victim presents that token again later. Under "successor never used"
/// alone the victim would get the thief's successor and both would share the
/// chain undetected; outside the window it is reuse and the session ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_victim_presenting_a_token_a_thief_rotated_after_the_window_revokes_the_session() {
    let app = TestApp::spawn_with(TestAppOptions {
        tweak: Box::new(|s| s.sessions.refresh_retry_window_secs = 1),
        ..Default::default()
    })
    .await;
    let user = unique_user();
    let login = app
        .login_with_phone_code(app.app_id(), &user, None)
        .await
        .unwrap();
    let stolen = login.refresh_token.clone();
    let thief = refresh(&app, &stolen, app.app_id()).await.unwrap();
    // Within the window the same token is still a retry (a lost answer)...
    let retry = refresh(&app, &stolen, app.app_id()).await.unwrap();
    assert_eq!(retry.refresh_token, thief.refresh_token);
    // ...but the victim comes back later, with the token the thief rotated.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let err = refresh(&app, &stolen, app.app_id()).await.unwrap_err();
    assert_eq!(reason(&err), "REFRESH_TOKEN_REUSED");
    let err = refresh(&app, &thief.refresh_token, app.app_id())
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "SESSION_REVOKED", "the thief is out too");
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
    assert_eq!(deleted, 2, "both ended sessions are deleted");
    assert!(app.db.store.session(&b.session_id).await.unwrap().is_none());
    assert!(
        app.db.store.session(&a.session_id).await.unwrap().is_none(),
        "a session past its idle timeout goes too, long before its absolute lifetime"
    );
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
            app.login_raw(phone_code_request(app.app_id(), code, pressed.code))
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

/// The retry window the store cases use (one minute, in ms).
const WINDOW: i64 = 60_000;

/// A login of `(app, openid, phone)` at `now` that starts `session` (session key `b"k"`
/// valid until `key_expires_at_ms`).
fn login_starting<'a>(
    session: &'a NewSession,
    app: &'a AppId,
    openid: &'a OpenId,
    phone: &'a Phone,
    now: i64,
    key_expires_at_ms: i64,
) -> LoginRecord<'a> {
    LoginRecord {
        app_id: app,
        openid,
        unionid: None,
        phone,
        sealed_session_key: b"k",
        session_key_expires_at_ms: key_expires_at_ms,
        session: Some(session),
        now_ms: now,
    }
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
        .record_login(&login_starting(&s, &app, &openid, &phone, now, now + 1000))
        .await
        .unwrap();
    let store = &db.store;
    let idle = now + 3_600_000;
    assert_eq!(
        store
            .rotate_session(&s.id, 1, now + 1, idle, WINDOW)
            .await
            .unwrap(),
        Rotation::Rotated { generation: 2 }
    );
    assert_eq!(
        store
            .rotate_session(&s.id, 1, now + 2, idle, WINDOW)
            .await
            .unwrap(),
        Rotation::Retry { current: 2 }
    );
    assert_eq!(
        store
            .rotate_session(&s.id, 2, now + 3, idle, WINDOW)
            .await
            .unwrap(),
        Rotation::Rotated { generation: 3 }
    );
    assert_eq!(
        store
            .rotate_session(&s.id, 1, now + 4, idle, WINDOW)
            .await
            .unwrap(),
        Rotation::Reused
    );
    assert!(matches!(
        store
            .rotate_session(&s.id, 3, now + 5, idle, WINDOW)
            .await
            .unwrap(),
        Rotation::Revoked { .. }
    ));
    let revoked = store.sessions_revoked_since(now).await.unwrap();
    assert!(
        revoked
            .iter()
            .any(|r| r.sid == s.id && r.user_id == out.user_id)
    );
    assert_eq!(
        store
            .rotate_session("nope", 1, now, idle, WINDOW)
            .await
            .unwrap(),
        Rotation::NotFound
    );
    // The retry window: the just-rotated token, successor unused, is a retry
    // only until the window has passed since the rotation; then it is reuse.
    let s3 = new_session(now);
    db.store
        .record_login(&login_starting(&s3, &app, &openid, &phone, now, now + 1000))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_session(&s3.id, 1, now + 10, idle, WINDOW)
            .await
            .unwrap(),
        Rotation::Rotated { generation: 2 }
    );
    assert_eq!(
        store
            .rotate_session(&s3.id, 1, now + 10 + WINDOW, idle, WINDOW)
            .await
            .unwrap(),
        Rotation::Retry { current: 2 }
    );
    assert_eq!(
        store
            .rotate_session(&s3.id, 1, now + 11 + WINDOW, idle, WINDOW)
            .await
            .unwrap(),
        Rotation::Reused
    );
    // A zero window allows no retry at all.
    let s4 = new_session(now);
    db.store
        .record_login(&login_starting(&s4, &app, &openid, &phone, now, now + 1000))
        .await
        .unwrap();
    store
        .rotate_session(&s4.id, 1, now + 1, idle, 0)
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_session(&s4.id, 1, now + 1, idle, 0)
            .await
            .unwrap(),
        Rotation::Reused
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

// --- migrating a database that predates sessions --------------------------------------

/// The migrations that add sessions: the table and its idle-expiry index.
const SESSIONS_MIGRATIONS: [&str; 2] = ["20261129000100", "20261129001100"];

/// Applies every embedded migration except the sessions one: the schema a
/// deployment had before this feature (including migrations newer than it).
async fn migrate_all_but_sessions(db: &TestDb) {
    use diesel::migration::MigrationSource as _;
    use diesel_migrations::MigrationHarness;
    fn run<DB: diesel::backend::Backend, H: MigrationHarness<DB>>(
        harness: &mut H,
        source: diesel_migrations::EmbeddedMigrations,
    ) -> Vec<String>
    where
        diesel_migrations::EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
    {
        // Creates the migrations table, as `run_pending_migrations` would.
        harness.applied_migrations().unwrap();
        let mut applied = Vec::new();
        for m in source.migrations().unwrap() {
            let version = m.name().version().to_string();
            if !SESSIONS_MIGRATIONS.contains(&version.as_str()) {
                harness.run_migration(&*m).unwrap();
                applied.push(version);
            }
        }
        applied
    }
    let url = db.url().to_owned();
    let applied = match db.backend() {
        Backend::Mysql => tokio::task::spawn_blocking(move || {
            let conn = futures::executor::block_on(
                <diesel_async::AsyncMysqlConnection as diesel_async::AsyncConnection>::establish(
                    &url,
                ),
            )
            .unwrap();
            let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
            run(&mut harness, mp_auth::store::MYSQL_MIGRATIONS)
        })
        .await
        .unwrap(),
        Backend::Sqlite => {
            use diesel::Connection as _;
            let mut conn =
                diesel::SqliteConnection::establish(url.trim_start_matches("sqlite://")).unwrap();
            run(&mut conn, mp_auth::store::SQLITE_MIGRATIONS)
        }
    };
    assert!(
        applied.len() >= 2,
        "the schema before sessions: {applied:?}"
    );
}

async fn migrations_apply_to_a_database_holding_the_schema_and_data_from_before_sessions(
    backend: Backend,
) {
    let db = TestDb::unmigrated(backend).await;
    migrate_all_but_sessions(&db).await;
    assert!(!db.store.migrations_current().await.unwrap());
    // Data as the service wrote it before sessions: a user with a bound identity
    // (and unionid), an identity that only holds a session key, a tombstone.
    let now = 1_790_000_000_000i64;
    let phone = Phone::new("86", &unique_phone()).unwrap();
    db.execute(&format!(
        "INSERT INTO users (phone, country_code, login_count, created_at, updated_at, last_login_at) \
         VALUES ('{}', '86', 3, {now}, {now}, {now})",
        phone.e164()
    ))
    .await;
    let user = db.store.user_id_by_phone(&phone).await.unwrap().unwrap();
    db.execute(&format!(
        "INSERT INTO wechat_identities (app_id, openid, user_id, unionid, session_key, \
         session_key_expires_at, created_at, updated_at) VALUES \
         ('wxbeforesessions', 'o-before', {}, 'u-before', X'00', {}, {now}, {now}), \
         ('wxbeforesessions', 'o-unbound', NULL, NULL, X'01', {}, {now}, {now})",
        user.0,
        now + 3_600_000,
        now + 3_600_000
    ))
    .await;
    db.execute(&format!(
        "INSERT INTO deleted_users (id, deleted_at, reason) VALUES (999999, {now}, 'user_request')"
    ))
    .await;

    assert_eq!(
        db.store.migrate().await.unwrap(),
        SESSIONS_MIGRATIONS.len(),
        "only the sessions migrations were pending"
    );
    assert!(db.store.migrations_current().await.unwrap());

    // Everything is still there and works with sessions.
    let app = AppId::parse("wxbeforesessions").unwrap();
    let openid = OpenId::parse("o-before").unwrap();
    assert_eq!(db.store.user_count().await.unwrap(), 1);
    let identity = db.store.identity(&app, &openid).await.unwrap().unwrap();
    assert_eq!(identity.user_id, Some(user.0));
    assert_eq!(identity.unionid.as_deref(), Some("u-before"));
    assert!(db.store.tombstone(UserId(999_999)).await.unwrap().is_some());
    let s = new_session(now + 1);
    let silent = db
        .store
        .silent_login(&SilentLogin {
            app_id: &app,
            openid: &openid,
            unionid: None,
            sealed_session_key: b"k",
            session_key_expires_at_ms: now + 3_600_000,
            session: &s,
            now_ms: now + 1,
        })
        .await
        .unwrap();
    assert_eq!(
        silent,
        SilentOutcome::Known(user),
        "an identity bound before sessions logs in silently"
    );
    let again = db
        .store
        .record_login(&login_starting(
            &new_session(now + 2),
            &app,
            &openid,
            &phone,
            now + 2,
            now + 3_600_000,
        ))
        .await
        .unwrap();
    assert_eq!(again.user_id, user);
    assert!(!again.is_new_user);
    assert_eq!(
        db.store.user_sessions(user, now + 3).await.unwrap().len(),
        2
    );
}

mod migration_mysql {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_apply_to_a_database_holding_the_schema_and_data_from_before_sessions() {
        super::migrations_apply_to_a_database_holding_the_schema_and_data_from_before_sessions(
            mp_auth::store::Backend::Mysql,
        )
        .await
    }
}

mod migration_sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_apply_to_a_database_holding_the_schema_and_data_from_before_sessions() {
        super::migrations_apply_to_a_database_holding_the_schema_and_data_from_before_sessions(
            mp_auth::store::Backend::Sqlite,
        )
        .await
    }
}

/// A deadlock (on Galera: a certification conflict) rolls the rotation back; it
/// is run again and rotates exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlocked_rotation_is_retried_and_rotates_once() {
    let db = TestDb::mysql().await;
    let (app, openid, phone) = ids();
    let now = 1_790_000_000_000;
    let s = new_session(now);
    db.store
        .record_login(&login_starting(&s, &app, &openid, &phone, now, now + 1000))
        .await
        .unwrap();
    // A per-connection counter survives the rollback: the first two attempts deadlock.
    db.execute(
        "CREATE TRIGGER flaky_rotation BEFORE UPDATE ON sessions FOR EACH ROW BEGIN \
         SET @mp_attempts = COALESCE(@mp_attempts, 0) + 1; \
         IF @mp_attempts < 3 THEN SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, \
         MESSAGE_TEXT = 'Deadlock found when trying to get lock; try restarting transaction'; \
         END IF; END",
    )
    .await;
    let store = db
        .connect_with(&mp_auth::config::DatabaseSettings {
            pool_size: 1,
            max_tx_attempts: 5,
            ..crate::db::test_settings()
        })
        .await;
    assert_eq!(
        store
            .rotate_session(&s.id, 1, now + 1, now + 3_600_000, WINDOW)
            .await
            .unwrap(),
        Rotation::Rotated { generation: 2 }
    );
    assert_eq!(store.session(&s.id).await.unwrap().unwrap().generation, 2);
}

fn silent_record<'a>(
    app: &'a AppId,
    openid: &'a OpenId,
    session: &'a NewSession,
    now: i64,
) -> SilentLogin<'a> {
    SilentLogin {
        app_id: app,
        openid,
        unionid: None,
        sealed_session_key: b"k",
        session_key_expires_at_ms: now + 3_600_000,
        session,
        now_ms: now,
    }
}

/// Account deletion racing silent logins of the same identity, many rounds:
/// every silent login answers (no error), and afterwards the deleted user has
/// no identity and no live session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletion_racing_silent_logins_leaves_no_live_session_and_no_identity() {
    let db = TestDb::mysql().await;
    let store = Arc::new(db.store.clone());
    for round in 0..20 {
        let (app, openid, phone) = ids();
        let now = mp_auth::sessions::now_ms();
        let out = store
            .record_login(&login_starting(
                &new_session(now),
                &app,
                &openid,
                &phone,
                now,
                now + 3_600_000,
            ))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (store, app, openid) = (store.clone(), app.clone(), openid.clone());
            tasks.push(tokio::spawn(async move {
                let s = new_session(now);
                store
                    .silent_login(&silent_record(&app, &openid, &s, now))
                    .await
            }));
        }
        let deleted = store.delete_user(out.user_id, "race", now).await.unwrap();
        assert!(
            matches!(deleted, mp_auth::store::Deletion::Deleted { .. }),
            "round {round}"
        );
        for t in tasks {
            let outcome = t
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(
                matches!(outcome, SilentOutcome::Known(u) if u == out.user_id)
                    || outcome == SilentOutcome::Unknown,
                "round {round}: {outcome:?}"
            );
        }
        assert!(
            store
                .user_sessions(out.user_id, now)
                .await
                .unwrap()
                .is_empty(),
            "round {round}: a deleted user with a live session"
        );
        assert_eq!(
            store.identity_count(out.user_id).await.unwrap(),
            0,
            "round {round}"
        );
        if let Some(row) = store.identity(&app, &openid).await.unwrap() {
            assert_eq!(
                row.user_id, None,
                "round {round}: an identity bound to a deleted user"
            );
        }
    }
}

/// A phone login that moves an openid to another user (the phone changed)
/// racing silent logins of that openid: the move always stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_login_racing_a_phone_login_that_moves_the_identity_never_undoes_the_move() {
    let db = TestDb::mysql().await;
    let store = Arc::new(db.store.clone());
    for round in 0..20 {
        let (app, openid, phone) = ids();
        let now = mp_auth::sessions::now_ms();
        let login = |phone: Phone, now: i64| {
            let (store, app, openid) = (store.clone(), app.clone(), openid.clone());
            async move {
                store
                    .record_login(&login_starting(
                        &new_session(now),
                        &app,
                        &openid,
                        &phone,
                        now,
                        now + 3_600_000,
                    ))
                    .await
            }
        };
        let old = login(phone, now).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (store, app, openid) = (store.clone(), app.clone(), openid.clone());
            tasks.push(tokio::spawn(async move {
                let s = new_session(now);
                store
                    .silent_login(&silent_record(&app, &openid, &s, now))
                    .await
            }));
        }
        let new_phone = Phone::new("86", &unique_phone()).unwrap();
        let moved = tokio::spawn(login(new_phone, now + 1))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(moved.user_id, old.user_id);
        for t in tasks {
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        let row = store.identity(&app, &openid).await.unwrap().unwrap();
        assert_eq!(
            row.user_id,
            Some(moved.user_id.0),
            "round {round}: the move was undone"
        );
    }
}
