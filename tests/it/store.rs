//! The store against real databases: every case in `on_both_backends!` runs on a
//! fresh MariaDB database and on a temp-file SQLite database.

use crate::db::{TestDb, mysql_server_url, test_settings};
use mp_auth::{
    config::DatabaseSettings,
    domain::{AppId, OpenId, Phone, UnionId},
    store::{Backend, LoginOutcome, LoginRecord, LoginSql, Store, StoreError},
};
use secrecy::SecretString;
use std::time::{Duration, Instant};

fn app(id: &str) -> AppId {
    AppId::parse(id).unwrap()
}
fn openid(id: &str) -> OpenId {
    OpenId::parse(id).unwrap()
}
fn phone(number: &str) -> Phone {
    Phone::new("86", number).unwrap()
}

const NOW: i64 = 1_790_000_000_000;
const HOUR_MS: i64 = 3_600_000;

async fn login(
    store: &Store,
    app_id: &AppId,
    openid: &OpenId,
    phone: &Phone,
    unionid: Option<&UnionId>,
) -> Result<LoginOutcome, StoreError> {
    store
        .record_login(&LoginRecord {
            app_id,
            openid,
            unionid,
            phone,
            sealed_session_key: b"sealed-key-bytes",
            session_key_expires_at_ms: NOW + HOUR_MS,
            session: None,
            now_ms: NOW,
        })
        .await
}

/// `count` concurrent logins of one phone, openids `<prefix>-<i>`; every one must succeed.
async fn burst(
    store: &Store,
    app_id: &AppId,
    phone: &Phone,
    count: usize,
    prefix: &str,
) -> Vec<LoginOutcome> {
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let (store, a, p) = (store.clone(), app_id.clone(), phone.clone());
            let o = openid(&format!("{prefix}-{i}"));
            tokio::spawn(async move { login(&store, &a, &o, &p, None).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().unwrap());
    }
    outcomes
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(mp_auth::store::Backend::Mysql).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(mp_auth::store::Backend::Sqlite).await
                }
            )*
        }
    };
}

on_both_backends!(
    sessions_that_ended_in_each_way_are_deleted_in_one_batch_and_live_ones_stay,
    a_new_user_is_created_once_and_returns_with_the_same_id,
    one_phone_from_two_apps_is_one_user_with_two_identities,
    a_login_without_unionid_keeps_the_stored_unionid,
    an_openid_moves_to_the_new_user_when_its_phone_changes,
    concurrent_logins_of_one_new_phone_create_exactly_one_user,
    concurrent_logins_of_one_openid_leave_one_user_and_one_identity,
    a_saved_session_key_is_read_back_until_it_expires,
    saving_a_session_key_keeps_the_identity_linked_to_its_user,
    a_failure_between_the_two_statements_leaves_nothing_written,
    contention_that_never_clears_ends_as_contention,
    migrations_are_current_after_migrate_and_not_before,
    ping_and_pool_state_report_a_live_pool,
);

async fn a_new_user_is_created_once_and_returns_with_the_same_id(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, o, p) = (app("wxapp1"), openid("o-first"), phone("13580006666"));
    let first = login(&db.store, &a, &o, &p, None).await.unwrap();
    assert!(first.is_new_user);
    let second = login(&db.store, &a, &o, &p, None).await.unwrap();
    assert!(!second.is_new_user);
    assert_eq!(first.user_id, second.user_id);
    assert!(first.user_id.0 > 0);
    assert_eq!(db.store.user_count().await.unwrap(), 1);
    let row = db.store.identity(&a, &o).await.unwrap().unwrap();
    assert_eq!(row.user_id, Some(first.user_id.0));
    assert_eq!(row.session_key.as_deref(), Some(&b"sealed-key-bytes"[..]));
    assert_eq!(
        db.store.user_id_by_phone(&p).await.unwrap(),
        Some(first.user_id)
    );
}

async fn one_phone_from_two_apps_is_one_user_with_two_identities(backend: Backend) {
    let db = TestDb::new(backend).await;
    let p = phone("13580006666");
    let one = login(&db.store, &app("wxone"), &openid("o-in-one"), &p, None)
        .await
        .unwrap();
    let two = login(&db.store, &app("wxtwo"), &openid("o-in-two"), &p, None)
        .await
        .unwrap();
    assert!(one.is_new_user);
    assert!(!two.is_new_user);
    assert_eq!(one.user_id, two.user_id);
    assert_eq!(db.store.user_count().await.unwrap(), 1);
    assert_eq!(db.store.identity_count(one.user_id).await.unwrap(), 2);
}

async fn a_login_without_unionid_keeps_the_stored_unionid(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, o, p) = (app("wxapp1"), openid("o-union"), phone("13580006666"));
    let union = UnionId::parse("u-123").unwrap();
    login(&db.store, &a, &o, &p, Some(&union)).await.unwrap();
    login(&db.store, &a, &o, &p, None).await.unwrap();
    let row = db.store.identity(&a, &o).await.unwrap().unwrap();
    assert_eq!(row.unionid.as_deref(), Some("u-123"));
}

async fn an_openid_moves_to_the_new_user_when_its_phone_changes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, o) = (app("wxapp1"), openid("o-mover"));
    let old = login(&db.store, &a, &o, &phone("13580006666"), None)
        .await
        .unwrap();
    let new = login(&db.store, &a, &o, &phone("13900001111"), None)
        .await
        .unwrap();
    assert!(new.is_new_user);
    assert_ne!(old.user_id, new.user_id);
    let row = db.store.identity(&a, &o).await.unwrap().unwrap();
    assert_eq!(row.user_id, Some(new.user_id.0));
    assert_eq!(db.store.identity_count(old.user_id).await.unwrap(), 0);
    assert_eq!(db.store.user_count().await.unwrap(), 2);
}

async fn concurrent_logins_of_one_new_phone_create_exactly_one_user(backend: Backend) {
    let db = TestDb::new(backend).await;
    let a = app("wxapp1");
    let p = phone("13580006666");
    let outcomes = burst(&db.store, &a, &p, 200, "o-burst").await;
    let id = outcomes[0].user_id;
    assert!(outcomes.iter().all(|o| o.user_id == id));
    assert_eq!(outcomes.iter().filter(|o| o.is_new_user).count(), 1);
    assert_eq!(db.store.user_count().await.unwrap(), 1);
    assert_eq!(db.store.identity_count(id).await.unwrap(), 200);
}

async fn concurrent_logins_of_one_openid_leave_one_user_and_one_identity(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, o, p) = (app("wxapp1"), openid("o-same"), phone("13580006666"));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (store, a, o, p) = (db.store.clone(), a.clone(), o.clone(), p.clone());
            tokio::spawn(async move { login(&store, &a, &o, &p, None).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().user_id);
    }
    assert!(ids.iter().all(|id| *id == ids[0]));
    assert_eq!(db.store.user_count().await.unwrap(), 1);
    assert_eq!(db.store.identity_count(ids[0]).await.unwrap(), 1);
}

async fn a_saved_session_key_is_read_back_until_it_expires(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, o) = (app("wxapp1"), openid("o-key"));
    assert_eq!(db.store.session_key(&a, &o, NOW).await.unwrap(), None);
    db.store
        .save_session_key(&a, &o, b"sealed-1", NOW + HOUR_MS)
        .await
        .unwrap();
    assert_eq!(
        db.store.session_key(&a, &o, NOW).await.unwrap().as_deref(),
        Some(&b"sealed-1"[..])
    );
    db.store
        .save_session_key(&a, &o, b"sealed-2", NOW + HOUR_MS)
        .await
        .unwrap();
    assert_eq!(
        db.store.session_key(&a, &o, NOW).await.unwrap().as_deref(),
        Some(&b"sealed-2"[..])
    );
    assert_eq!(
        db.store.session_key(&a, &o, NOW + HOUR_MS).await.unwrap(),
        None
    );
    let row = db.store.identity(&a, &o).await.unwrap().unwrap();
    assert_eq!(row.user_id, None, "a saved key alone links no user");
}

async fn saving_a_session_key_keeps_the_identity_linked_to_its_user(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, o) = (app("wxapp1"), openid("o-linked"));
    let out = login(&db.store, &a, &o, &phone("13580006666"), None)
        .await
        .unwrap();
    db.store
        .save_session_key(&a, &o, b"newer", NOW + 2 * HOUR_MS)
        .await
        .unwrap();
    let row = db.store.identity(&a, &o).await.unwrap().unwrap();
    assert_eq!(row.user_id, Some(out.user_id.0));
    assert_eq!(row.session_key.as_deref(), Some(&b"newer"[..]));
}

async fn a_failure_between_the_two_statements_leaves_nothing_written(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.execute(match backend {
        Backend::Mysql => {
            "CREATE TRIGGER inject_failure BEFORE INSERT ON wechat_identities FOR EACH ROW \
             BEGIN IF NEW.openid = 'o-boom' THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected failure'; END IF; END"
        }
        Backend::Sqlite => {
            "CREATE TRIGGER inject_failure BEFORE INSERT ON wechat_identities \
             WHEN NEW.openid = 'o-boom' BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
        }
    })
    .await;
    let (a, o, p) = (app("wxapp1"), openid("o-boom"), phone("13580006666"));
    let err = login(&db.store, &a, &o, &p, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Unexpected(_)), "{err:?}");
    assert!(!err.to_string().contains("13580006666"), "{err}");
    assert_eq!(db.store.user_id_by_phone(&p).await.unwrap(), None);
    assert_eq!(db.store.user_count().await.unwrap(), 0);
    assert_eq!(db.store.identity(&a, &o).await.unwrap(), None);
    // The store is still usable afterwards.
    login(&db.store, &a, &openid("o-fine"), &p, None)
        .await
        .unwrap();
}

async fn contention_that_never_clears_ends_as_contention(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.execute(match backend {
        Backend::Mysql => {
            "CREATE TRIGGER always_deadlock BEFORE INSERT ON wechat_identities FOR EACH ROW \
             SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, \
             MESSAGE_TEXT = 'Deadlock found when trying to get lock; try restarting transaction'"
        }
        Backend::Sqlite => {
            "CREATE TRIGGER always_deadlock BEFORE INSERT ON wechat_identities \
             BEGIN SELECT RAISE(ABORT, 'database is locked'); END;"
        }
    })
    .await;
    let store = db
        .connect_with(&DatabaseSettings {
            max_tx_attempts: 3,
            ..test_settings()
        })
        .await;
    let p = phone("13580006666");
    let err = login(&store, &app("wxapp1"), &openid("o-stuck"), &p, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Contention), "{err:?}");
    assert_eq!(store.user_count().await.unwrap(), 0);
}

async fn migrations_are_current_after_migrate_and_not_before(backend: Backend) {
    let db = TestDb::unmigrated(backend).await;
    assert!(!db.store.migrations_current().await.unwrap());
    assert!(db.store.migrate().await.unwrap() >= 1);
    assert!(db.store.migrations_current().await.unwrap());
    assert_eq!(db.store.migrate().await.unwrap(), 0);
}

async fn ping_and_pool_state_report_a_live_pool(backend: Backend) {
    let db = TestDb::new(backend).await;
    assert_eq!(db.store.backend(), backend);
    db.store.ping().await.unwrap();
    let state = db.store.pool_state();
    assert!(state.connections >= 1, "{state:?}");
    assert!(state.idle <= state.connections, "{state:?}");
}

// MySQL-only behaviour.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlocked_login_is_retried_and_then_succeeds() {
    let db = TestDb::mysql().await;
    // A per-connection counter survives the rollback: the first two attempts deadlock.
    db.execute(
        "CREATE TRIGGER flaky BEFORE INSERT ON wechat_identities FOR EACH ROW BEGIN \
         SET @mp_attempts = COALESCE(@mp_attempts, 0) + 1; \
         IF @mp_attempts < 3 THEN SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, \
         MESSAGE_TEXT = 'Deadlock found when trying to get lock; try restarting transaction'; \
         END IF; END",
    )
    .await;
    let store = db
        .connect_with(&DatabaseSettings {
            pool_size: 1,
            max_tx_attempts: 5,
            ..test_settings()
        })
        .await;
    let p = phone("13580006666");
    let out = login(&store, &app("wxapp1"), &openid("o-flaky"), &p, None)
        .await
        .unwrap();
    assert!(
        out.is_new_user,
        "the rolled-back attempts left no user behind"
    );
    assert_eq!(store.user_count().await.unwrap(), 1);
}

/// A store of `pool_size` connections on plain MariaDB, where logins go as one batch.
async fn batching_store(db: &TestDb, pool_size: u32) -> Store {
    let store = db
        .connect_with(&DatabaseSettings {
            pool_size,
            ..test_settings()
        })
        .await;
    assert_eq!(store.login_sql(), LoginSql::Batch);
    store
}

/// With the login batched, logins and everything else have a pool each, and the two
/// together stay within `pool_size` connections (what operators budget against the
/// server's `max_connections`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_and_other_work_together_hold_at_most_pool_size_connections() {
    let db = TestDb::mysql().await;
    let store = batching_store(&db, 4).await;
    let a = app("wxapp1");
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (store, a) = (store.clone(), a.clone());
            tokio::spawn(async move {
                if i % 2 == 0 {
                    let p = phone(&format!("1358{:07}", i));
                    login(&store, &a, &openid(&format!("o-{i}")), &p, None)
                        .await
                        .map(|_| ())
                } else {
                    store.ping().await
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.user_count().await.unwrap(), 32);
    let state = store.pool_state();
    assert!(
        (2..=4).contains(&state.connections),
        "both pools were used, within pool_size: {state:?}"
    );
}

/// A login whose caller stops waiting mid-transaction (the service cancels logins only
/// at shutdown) writes all of itself or nothing, and the connection it held is not
/// handed to the next login while the server may still be inside its transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_cancelled_midway_writes_all_or_nothing_and_its_connection_is_not_reused() {
    let db = TestDb::mysql().await;
    db.execute(
        "CREATE TRIGGER slow BEFORE INSERT ON wechat_identities FOR EACH ROW BEGIN \
         IF NEW.openid = 'o-slow' THEN DO SLEEP(0.5); END IF; END",
    )
    .await;
    let store = batching_store(&db, 1).await;
    let (a, slow, next) = (app("wxapp1"), phone("13580006666"), phone("13580007777"));
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        login(&store, &a, &openid("o-slow"), &slow, None),
    )
    .await;
    assert!(cancelled.is_err(), "the slow login finished: {cancelled:?}");
    let out = login(&store, &a, &openid("o-next"), &next, None)
        .await
        .unwrap();
    assert!(out.is_new_user);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let user = store.user_id_by_phone(&slow).await.unwrap();
    let identity = store.identity(&a, &openid("o-slow")).await.unwrap();
    assert_eq!(
        user.is_some(),
        identity.is_some(),
        "half a login was written: user {user:?}, identity {identity:?}"
    );
    assert_eq!(
        store.user_id_by_phone(&next).await.unwrap(),
        Some(out.user_id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_is_replaced_without_failing_the_login() {
    use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let db = TestDb::mysql().await;
    let p = phone("13580006666");
    login(&db.store, &app("wxapp1"), &openid("o-1"), &p, None)
        .await
        .unwrap();
    let mut admin = AsyncMysqlConnection::establish(db.url()).await.unwrap();
    let pids: Vec<Pid> = diesel::sql_query(
        "SELECT CAST(ID AS SIGNED) AS id FROM information_schema.PROCESSLIST \
         WHERE DB = DATABASE() AND ID <> CONNECTION_ID()",
    )
    .load(&mut admin)
    .await
    .unwrap();
    assert!(!pids.is_empty());
    for pid in pids {
        diesel::sql_query(format!("KILL CONNECTION {}", pid.id))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let out = db
        .store
        .record_login(&LoginRecord {
            app_id: &app("wxapp1"),
            openid: &openid("o-2"),
            unionid: None,
            phone: &p,
            sealed_session_key: b"sealed-key-bytes",
            session_key_expires_at_ms: NOW + 2 * HOUR_MS,
            // A later login, as every real one is.
            session: None,
            now_ms: NOW + 1,
        })
        .await
        .unwrap();
    assert!(!out.is_new_user);
    db.store.ping().await.unwrap();
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_unavailable_and_fast() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = SecretString::from(format!("mysql://u:pw-not-shown@127.0.0.1:{port}/db"));
    let settings = DatabaseSettings {
        acquire_timeout_ms: 1_000,
        ..DatabaseSettings::default()
    };
    let started = Instant::now();
    let err = Store::connect(&url, &settings).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match err {
        StoreError::Unavailable(m) => {
            assert!(m.to_lowercase().contains("refused"), "{m}");
            assert!(!m.contains("pw-not-shown"), "{m}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_never_answers_is_unavailable_within_the_acquire_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = SecretString::from(format!("mysql://u:p@127.0.0.1:{port}/db"));
    let settings = DatabaseSettings {
        acquire_timeout_ms: 300,
        ..DatabaseSettings::default()
    };
    let started = Instant::now();
    let err = Store::connect(&url, &settings).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    silent.abort();
}

#[tokio::test]
async fn a_wrong_password_is_reported_without_echoing_it() {
    let server = mysql_server_url();
    let (scheme_user, host) = server.rsplit_once('@').unwrap();
    let user = scheme_user
        .trim_start_matches("mysql://")
        .split(':')
        .next()
        .unwrap();
    let url = SecretString::from(format!("mysql://{user}:Wrong-Password-42@{host}/mysql"));
    let err = Store::connect(&url, &test_settings()).await.unwrap_err();
    match err {
        StoreError::Unavailable(m) => {
            assert!(m.contains("Access denied"), "{m}");
            assert!(!m.contains("Wrong-Password-42"), "{m}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unsupported_url_is_rejected_with_a_hint() {
    let url = SecretString::from("postgres://u:p@localhost/db".to_owned());
    let err = Store::connect(&url, &test_settings()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unexpected(ref m) if m.contains("sqlite://")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_sqlite_file_that_cannot_be_opened_is_unavailable() {
    let url = SecretString::from("sqlite:///nonexistent-dir-mp-auth/x/y.db".to_owned());
    let err = Store::connect(&url, &test_settings()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_answers_unavailable_after_the_acquire_timeout() {
    let db = TestDb::mysql().await;
    // Logins of this openid hold their connection for a second.
    db.execute(
        "CREATE TRIGGER slow BEFORE INSERT ON wechat_identities FOR EACH ROW \
         BEGIN IF NEW.openid = 'o-slow' THEN DO SLEEP(1); END IF; END",
    )
    .await;
    let store = db
        .connect_with(&DatabaseSettings {
            pool_size: 1,
            acquire_timeout_ms: 200,
            ..test_settings()
        })
        .await;
    let slow = {
        let store = store.clone();
        tokio::spawn(async move {
            login(
                &store,
                &app("wxapp1"),
                &openid("o-slow"),
                &phone("13580006666"),
                None,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let err = login(
        &store,
        &app("wxapp1"),
        &openid("o-queued"),
        &phone("13580007777"),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(ref m) if m.contains("200 ms")),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    slow.await.unwrap().unwrap();
    store.ping().await.unwrap();
}

#[tokio::test]
async fn migrations_also_run_on_a_current_thread_runtime() {
    let db = TestDb::unmigrated(Backend::Mysql).await;
    assert!(db.store.migrate().await.unwrap() >= 1);
    let db = TestDb::unmigrated(Backend::Sqlite).await;
    assert!(db.store.migrate().await.unwrap() >= 1);
}

/// Every form of the login transaction (the one-round-trip batch of plain MySQL-family
/// servers, and the statement-by-statement forms of Galera nodes with and without
/// `RETURNING`) gives one user and one "new" answer under a burst on one phone, and
/// sees the returning user afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_of_the_login_transaction_creates_one_user_under_a_burst_and_sees_returning_users()
 {
    let db = TestDb::new(Backend::Mysql).await;
    assert_eq!(
        db.store.login_sql(),
        LoginSql::Batch,
        "plain MariaDB batches"
    );
    let a = app("wxapp1");
    for (n, form) in [LoginSql::Batch, LoginSql::Returning, LoginSql::Portable]
        .into_iter()
        .enumerate()
    {
        let store = db.store.clone().with_login_sql(form);
        let p = phone(&format!("1358000666{n}"));
        let outcomes = burst(&store, &a, &p, 100, &format!("o-{n}")).await;
        let id = outcomes[0].user_id;
        assert!(outcomes.iter().all(|o| o.user_id == id), "{form:?}");
        assert_eq!(
            outcomes.iter().filter(|o| o.is_new_user).count(),
            1,
            "{form:?}"
        );
        let again = login(&store, &a, &openid(&format!("o-{n}-0")), &p, None)
            .await
            .unwrap();
        assert_eq!((again.user_id, again.is_new_user), (id, false), "{form:?}");
        assert_eq!(store.user_count().await.unwrap(), n as i64 + 1, "{form:?}");
    }
}

/// A TCP proxy to MariaDB that, once armed, forwards the next `COMMIT` to the
/// server and then cuts the connection before the server's answer gets back:
/// the transaction is committed, but the client never hears it.
struct CommitDropper {
    addr: std::net::SocketAddr,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CommitDropper {
    async fn start(server: std::net::SocketAddr) -> CommitDropper {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = armed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = tokio::net::TcpStream::connect(server).await else {
                    continue;
                };
                let flag = flag.clone();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut ur, mut uw) = upstream.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut ur, &mut cw).await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        // A COM_QUERY packet that commits: `COMMIT` alone or at the end of
                        // the login's multi-statement batch.
                        let is_commit =
                            n > 4 && buf[4] == 0x03 && buf[..n].windows(6).any(|w| w == b"COMMIT");
                        if is_commit && flag.swap(false, Ordering::SeqCst) {
                            // Stop relaying answers (the client has had every earlier
                            // one: it waits for each), let the server commit, then cut.
                            down.abort();
                            let _ = uw.write_all(&buf[..n]).await;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            return;
                        }
                        if uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    down.abort();
                });
            }
        });
        CommitDropper { addr, armed }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_user_whose_commit_acknowledgement_was_lost_is_still_reported_new() {
    let db = TestDb::mysql().await;
    let url = db.url().to_owned();
    let rest = url.trim_start_matches("mysql://");
    let (creds, host_and_db) = rest.split_once('@').unwrap();
    let (host, name) = host_and_db.split_once('/').unwrap();
    let server: std::net::SocketAddr = tokio::net::lookup_host(host).await.unwrap().next().unwrap();
    let proxy = CommitDropper::start(server).await;
    // prefer_socket=false: mysql_async would otherwise switch to the server's
    // Unix socket on loopback and bypass the proxy.
    let proxied = format!("mysql://{creds}@{}/{name}?prefer_socket=false", proxy.addr);
    let store = Store::connect(&SecretString::from(proxied), &test_settings())
        .await
        .unwrap();
    proxy.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let outcome = login(
        &store,
        &app("wxlostcommit0001"),
        &openid("o-lost-commit"),
        &phone("13900001111"),
        None,
    )
    .await
    .unwrap();
    assert!(
        !proxy.armed.load(std::sync::atomic::Ordering::SeqCst),
        "the COMMIT answer was dropped"
    );
    assert!(
        outcome.is_new_user,
        "the login that created the user says so, though its first COMMIT went unanswered"
    );
    assert_eq!(db.store.user_count().await.unwrap(), 1);
    // A later login of the same phone is a returning user, as always.
    let again = store
        .record_login(&LoginRecord {
            app_id: &app("wxlostcommit0001"),
            openid: &openid("o-lost-commit"),
            unionid: None,
            phone: &phone("13900001111"),
            sealed_session_key: b"sealed-key-bytes",
            session_key_expires_at_ms: NOW + 2 * HOUR_MS,
            session: None,
            now_ms: NOW + HOUR_MS,
        })
        .await
        .unwrap();
    assert!(!again.is_new_user);
    assert_eq!(again.user_id, outcome.user_id);
}

/// Values reach the login batch as hex literals: quotes, backslashes and comment
/// markers in an openid are stored as they are, never interpreted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_characters_in_login_values_are_stored_verbatim() {
    let db = TestDb::new(Backend::Mysql).await;
    let hostile = r#"o'");DROP_TABLE_users;--\x"#;
    let out = login(
        &db.store,
        &app("wxapp1"),
        &openid(hostile),
        &phone("13580007777"),
        None,
    )
    .await
    .unwrap();
    assert!(out.is_new_user);
    let row = db
        .store
        .identity(&app("wxapp1"), &openid(hostile))
        .await
        .unwrap()
        .expect("the identity is stored under its exact openid");
    assert_eq!(row.openid, hostile);
    assert_eq!(db.store.user_count().await.unwrap(), 1);
}

/// The background cleanup finds sessions that ended by their absolute lifetime, by a
/// revocation and by their idle timeout (one query, a union over the three indexes),
/// deletes them, and leaves live sessions alone.
async fn sessions_that_ended_in_each_way_are_deleted_in_one_batch_and_live_ones_stay(
    backend: Backend,
) {
    use mp_auth::store::{NewSession, RevokeReason};
    let db = TestDb::new(backend).await;
    let a = app("wxapp1");
    let session = |id: &str, idle: i64, expires: i64| NewSession {
        id: id.to_owned(),
        created_at_ms: NOW,
        idle_expires_at_ms: idle,
        expires_at_ms: expires,
    };
    let later = NOW + 10 * HOUR_MS;
    let sessions = [
        session("s-expired", later, NOW + 1),
        session("s-idle", NOW + 1, later),
        session("s-revoked", later, later),
        session("s-live", later, later),
    ];
    for (i, s) in sessions.iter().enumerate() {
        db.store
            .record_login(&LoginRecord {
                app_id: &a,
                openid: &openid(&format!("o-cleanup-{i}")),
                unionid: None,
                phone: &phone("13580008888"),
                sealed_session_key: b"sealed-key-bytes",
                session_key_expires_at_ms: NOW + HOUR_MS,
                session: Some(s),
                now_ms: NOW,
            })
            .await
            .unwrap();
    }
    assert!(
        db.store
            .revoke_session("s-revoked", RevokeReason::Logout, NOW + 2)
            .await
            .unwrap()
    );
    let deleted = db
        .store
        .delete_ended_sessions(NOW + 1000, 10)
        .await
        .unwrap();
    assert_eq!(deleted, 3);
    for gone in ["s-expired", "s-idle", "s-revoked"] {
        assert!(db.store.session(gone).await.unwrap().is_none(), "{gone}");
    }
    assert!(db.store.session("s-live").await.unwrap().is_some());
    // Nothing left to do: a second pass deletes nothing.
    assert_eq!(
        db.store
            .delete_ended_sessions(NOW + 1000, 10)
            .await
            .unwrap(),
        0
    );
}
