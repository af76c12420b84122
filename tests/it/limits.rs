//! Robustness limits of the gRPC server: oversized messages are refused with a
//! status (not a crash), and connections are recycled after
//! `max_connection_age_secs` (GOAWAY, then closed) without clients noticing.

use crate::helpers::{TestApp, TestAppOptions, phone_code_request, pressed_request, unique_user};
use std::time::{Duration, Instant};
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_request_is_refused_with_a_status_and_the_server_keeps_serving() {
    let app = TestApp::spawn_with(TestAppOptions {
        tweak: Box::new(|s| s.grpc.max_message_bytes = 4 * 1024),
        ..Default::default()
    })
    .await;
    let mut client = app.client().await;
    let err = client
        .mini_program_login(phone_code_request(
            app.app_id(),
            "x".repeat(64 * 1024),
            "y".repeat(16),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    // Same client and connection: a normal login still works.
    let ok = app
        .login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .expect("the server survived the oversized request");
    assert!(!ok.access_token.is_empty());
    client
        .mini_program_login(phone_code_request(
            app.app_id(),
            "not-a-real-code",
            "nor-this",
        ))
        .await
        .expect_err("a bogus code is refused by WeChat, over the same connection");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_closed_after_max_connection_age_and_clients_reconnect() {
    let app = TestApp::spawn_with(TestAppOptions {
        tweak: Box::new(|s| {
            s.grpc.max_connection_age_secs = 1;
            s.grpc.drain_timeout_ms = 500; // also the age grace
        }),
        ..Default::default()
    })
    .await;

    // A bare HTTP/2 connection with no calls: the server ends it after its age.
    let tcp = tokio::net::TcpStream::connect(app.grpc_addr).await.unwrap();
    let (_send, conn) = hyper::client::conn::http2::handshake::<_, _, tonic::body::Body>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let opened = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the server closes the connection after max_connection_age");
    let age = opened.elapsed();
    // The server sends GOAWAY and closes; the client may see that as a clean
    // end or as a broken pipe, depending on what it was writing.
    assert!(
        age >= Duration::from_millis(800) && age < Duration::from_secs(3),
        "closed after {age:?} ({closed:?})"
    );

    // A tonic client rides over it: calls before and after the age both work.
    let mut client = app.client().await;
    let user = unique_user();
    for _ in 0..2 {
        let pressed = app.press(&user).await;
        client
            .mini_program_login(pressed_request(app.app_id(), pressed))
            .await
            .expect("a login on a recycled connection");
        tokio::time::sleep(Duration::from_millis(1_600)).await;
    }
}
