//! Health that tells the truth: `""` and `mpauth.v1.Auth` follow the database
//! (reachable and migrated), `liveness` follows only the process; logins fail
//! fast with DATABASE_UNAVAILABLE while the database is down.

use crate::{
    db::TestDb,
    helpers::{TestApp, TestAppOptions, reason, test_settings, unique_app_id, unique_user},
    private_db::PrivateDb,
};
use mp_auth::{
    api::health::{HEALTH_AUTH, HEALTH_LIVENESS},
    store::Backend,
};
use secrecy::SecretString;
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response, health_client::HealthClient};

type Status = health_check_response::ServingStatus;

/// A health client of the server at `addr`.
pub async fn health_client(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

/// The status of `service` (an RPC error is a test failure).
pub async fn check(client: &mut HealthClient<Channel>, service: &str) -> Status {
    let res = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("Health/Check({service:?}) failed: {e}"))
        .into_inner();
    res.status()
}

/// Polls until `service` reports `want`; panics with the last status after `within`.
pub async fn wait_for(
    client: &mut HealthClient<Channel>,
    service: &str,
    want: Status,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let got = check(client, service).await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{service:?} still {got:?} after {within:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_follows_the_database_down_and_up_while_liveness_stays_serving() {
    let mut db = PrivateDb::start().await;
    let url = db.create_database().await;
    let app = TestApp::spawn_with(TestAppOptions {
        tweak: Box::new(move |s| {
            s.database.url = Some(SecretString::from(url));
            s.database.migrate_on_start = true;
            s.database.acquire_timeout_ms = 1_000;
            s.grpc.health_check_interval_ms = mp_auth::config::Millis::clamped(200);
        }),
        ..Default::default()
    })
    .await;
    let mut health = health_client(app.grpc_addr).await;

    // Up: everything SERVING, logins work.
    for service in ["", HEALTH_AUTH, HEALTH_LIVENESS] {
        wait_for(
            &mut health,
            service,
            Status::Serving,
            Duration::from_secs(5),
        )
        .await;
    }
    app.login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .expect("login with the database up");

    // Down: readiness flips within a few health intervals; liveness does not.
    db.stop().await;
    for service in ["", HEALTH_AUTH] {
        let took = wait_for(
            &mut health,
            service,
            Status::NotServing,
            Duration::from_secs(5),
        )
        .await;
        eprintln!("{service:?} NOT_SERVING {took:?} after the database died");
    }
    assert_eq!(check(&mut health, HEALTH_LIVENESS).await, Status::Serving);

    // Logins fail fast (bounded by the 1 s acquire timeout), not hang.
    for _ in 0..2 {
        let started = Instant::now();
        let err = app
            .login_with_phone_code(app.app_id(), &unique_user(), None)
            .await
            .expect_err("no login without a database");
        let took = started.elapsed();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert_eq!(reason(&err), "DATABASE_UNAVAILABLE");
        assert!(took < Duration::from_secs(5), "login took {took:?}");
        eprintln!("login without a database: UNAVAILABLE after {took:?}");
    }
    assert_eq!(check(&mut health, HEALTH_LIVENESS).await, Status::Serving);

    // Back up: SERVING again and logins succeed, with no restart of the service.
    db.start_again().await;
    for service in ["", HEALTH_AUTH] {
        wait_for(
            &mut health,
            service,
            Status::Serving,
            Duration::from_secs(10),
        )
        .await;
    }
    app.login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .expect("login after the database came back");
    assert_eq!(check(&mut health, HEALTH_LIVENESS).await, Status::Serving);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_not_serving_until_migrations_have_run() {
    crate::helpers::init_test_log();
    let db = TestDb::unmigrated(Backend::Mysql).await;
    let apps = [(unique_app_id(), "unused-secret".to_owned())];
    // No login is made: the WeChat URL is never called.
    let mut settings = test_settings(&apps, "http://127.0.0.1:9", db.url());
    settings.database.migrate_on_start = false;
    settings.grpc.health_check_interval_ms = mp_auth::config::Millis::clamped(100);
    let server = mp_auth::startup::grpc_server(&settings)
        .await
        .expect("server builds");
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let mut health = health_client(addr).await;

    wait_for(
        &mut health,
        HEALTH_LIVENESS,
        Status::Serving,
        Duration::from_secs(5),
    )
    .await;
    // Several health intervals pass: the database answers, but it has no tables.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(check(&mut health, "").await, Status::NotServing);
    assert_eq!(check(&mut health, HEALTH_AUTH).await, Status::NotServing);

    let applied = db.store.migrate().await.unwrap();
    assert!(applied > 0);
    for service in ["", HEALTH_AUTH] {
        wait_for(
            &mut health,
            service,
            Status::Serving,
            Duration::from_secs(5),
        )
        .await;
    }

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_service_name_is_not_found() {
    let app = TestApp::spawn().await;
    let mut health = health_client(app.grpc_addr).await;
    let err = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_saturated_by_blocked_logins_stays_serving() {
    use mysql_async::prelude::Queryable as _;
    let app = std::sync::Arc::new(
        TestApp::spawn_with(TestAppOptions {
            tweak: Box::new(|s| {
                s.database.pool_size = 2;
                s.database.acquire_timeout_ms = 20_000;
                s.grpc.health_check_interval_ms = mp_auth::config::Millis::clamped(100);
            }),
            ..Default::default()
        })
        .await,
    );
    let mut health = health_client(app.grpc_addr).await;
    wait_for(
        &mut health,
        HEALTH_AUTH,
        Status::Serving,
        Duration::from_secs(10),
    )
    .await;
    // Another session locks the whole (empty) `users` index, gap included:
    // every login blocks in its transaction holding a pooled connection, and
    // the rest queue at the pool's gate.
    let mut locker = mysql_async::Conn::from_url(app.db.url()).await.unwrap();
    locker.query_drop("START TRANSACTION").await.unwrap();
    locker
        .query_drop("SELECT * FROM users FOR UPDATE")
        .await
        .unwrap();
    let mut logins = Vec::new();
    for _ in 0..8 {
        let app = app.clone();
        logins.push(tokio::spawn(async move {
            app.login_with_phone_code(app.app_id(), &unique_user(), None)
                .await
        }));
    }
    // Several health periods with the pool saturated: still SERVING throughout.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2_500) {
        assert_eq!(
            check(&mut health, HEALTH_AUTH).await,
            Status::Serving,
            "a busy replica must not be marked unready after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        logins.iter().all(|l| !l.is_finished()),
        "the logins were blocked all along"
    );
    locker.query_drop("ROLLBACK").await.unwrap();
    for login in logins {
        login.await.unwrap().expect("the blocked logins complete");
    }
    drop(locker);
}
