//! Offline verification, as internal services do it, against the JWKS the
//! gateway serves: the Rust verifier (`mp-auth-verifier`) inside the example
//! service of `examples/internal_service.rs` (HTTP with axum and gRPC with
//! tonic behind one layer), Node's `jose` (`examples/node-verifier`), and a
//! key rotation seen through the JWKS.

#[allow(dead_code)]
#[path = "../../examples/internal_service.rs"]
mod example;

use crate::helpers::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mp_auth::tokens::SigningKey;
use mp_auth_verifier::JwksVerifier;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn payload(token: &str) -> Value {
    use base64::Engine as _;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// Tokens every verifier must refuse, by case: forged from a real token's
/// claims, signed (where a signature is needed) with the server's own key.
fn bad_tokens(good: &str) -> BTreeMap<&'static str, String> {
    let claims = payload(good);
    let kid = jsonwebtoken::decode_header(good).unwrap().kid;
    let ours = EncodingKey::from_ec_pem(TEST_SIGNING_KEY.as_bytes()).unwrap();
    let sign = |typ: &str, kid: Option<String>, claims: &Value, key: &EncodingKey| {
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some(typ.to_owned());
        h.kid = kid;
        jsonwebtoken::encode(&h, claims, key).unwrap()
    };
    let with = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    let parts: Vec<&str> = good.split('.').collect();
    let public_pem = SigningKey::from_pem(TEST_SIGNING_KEY)
        .unwrap()
        .verifying_key()
        .to_public_pem()
        .unwrap();
    let confused = {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = kid.clone();
        jsonwebtoken::encode(
            &h,
            &claims,
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap()
    };
    let stranger = SigningKey::generate(mp_auth::tokens::Algorithm::Es256).unwrap();
    let stranger_key = EncodingKey::from_ec_pem(stranger.private_pem.as_bytes()).unwrap();
    BTreeMap::from([
        (
            "tampered",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(with("sub", json!("1")).to_string().as_bytes()),
                parts[2]
            ),
        ),
        (
            "alg_none",
            format!(
                "{}.{}.",
                b64(json!({"alg":"none","typ":"at+jwt","kid": kid})
                    .to_string()
                    .as_bytes()),
                parts[1]
            ),
        ),
        ("hs256_with_the_public_key", confused),
        (
            "expired",
            sign(
                "at+jwt",
                kid.clone(),
                &with("exp", json!(now() - 3600)),
                &ours,
            ),
        ),
        (
            "not_yet_valid",
            sign(
                "at+jwt",
                kid.clone(),
                &with("nbf", json!(now() + 3600)),
                &ours,
            ),
        ),
        ("wrong_typ", sign("JWT", kid.clone(), &claims, &ours)),
        (
            "wrong_audience",
            sign(
                "at+jwt",
                kid.clone(),
                &with("aud", json!("someone-else")),
                &ours,
            ),
        ),
        (
            "wrong_issuer",
            sign("at+jwt", kid, &with("iss", json!("evil")), &ours),
        ),
        (
            "unknown_kid",
            sign("at+jwt", Some(stranger.kid), &claims, &stranger_key),
        ),
    ])
}

/// What `mp-auth-verifier` answers for each bad token.
fn rust_reason(case: &str) -> &'static str {
    match case {
        "expired" => "TOKEN_EXPIRED",
        "not_yet_valid" => "TOKEN_NOT_YET_VALID",
        "unknown_kid" => "KEY_UNKNOWN",
        _ => "TOKEN_INVALID",
    }
}

fn verifier_of(gateway: &str, settings: &mp_auth::config::Settings) -> JwksVerifier {
    example::verifier(
        &format!("{gateway}/.well-known/jwks.json"),
        &settings.token.issuer,
        &settings.token.audience,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_service_accepts_only_mp_auth_tokens_over_http_and_grpc() {
    let app = TestApp::spawn().await;
    let gateway = start_gateway(&app.settings, app.grpc_addr).await;
    let login = app
        .login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .unwrap();
    let verifier = verifier_of(&gateway.url, &app.settings);
    let claims = verifier.verify(&login.access_token).await.unwrap();
    assert_eq!(claims.user_id(), login.user_id);
    assert_eq!(claims.session_id(), Some(login.session_id.as_str()));
    assert_eq!(claims.app_id(), Some(app.app_id()));

    // HTTP (axum).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = listener.local_addr().unwrap();
    let api = example::http_api(verifier_of(&gateway.url, &app.settings));
    tokio::spawn(async move { axum::serve(listener, api).await });
    let http = reqwest::Client::new();
    let me = |token: Option<String>| {
        let mut request = http.get(format!("http://{http_addr}/me"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        async move {
            let response = request.send().await.unwrap();
            let reason = response
                .headers()
                .get("x-mp-auth-reason")
                .map(|v| v.to_str().unwrap().to_owned());
            (
                response.status().as_u16(),
                reason,
                response.text().await.unwrap(),
            )
        }
    };
    let (status, _, body) = me(Some(login.access_token.clone())).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["user_id"], login.user_id);
    assert_eq!(body["session_id"], login.session_id);
    assert_eq!(me(None).await.1.as_deref(), Some("TOKEN_MISSING"));
    for (case, token) in bad_tokens(&login.access_token) {
        let (status, reason, _) = me(Some(token)).await;
        assert_eq!(
            (status, reason.as_deref()),
            (401, Some(rust_reason(case))),
            "{case}"
        );
    }

    // gRPC (tonic), the same layer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = listener.local_addr().unwrap();
    let grpc = example::grpc_server(verifier_of(&gateway.url, &app.settings));
    tokio::spawn(grpc.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let check = |token: Option<&str>| {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let mut client = HealthClient::new(channel.clone());
        async move { client.check(request).await }
    };
    assert!(check(Some(&login.access_token)).await.is_ok());
    let refused = check(None).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(refused.message(), "TOKEN_MISSING");
    let refused = check(Some("not.a.token")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(refused.message(), "TOKEN_INVALID");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_rotation_the_rust_verifier_accepts_both_keys_until_the_old_one_is_retired() {
    let old = TEST_SIGNING_KEY.to_owned();
    let new = SigningKey::generate(mp_auth::tokens::Algorithm::Es256).unwrap();
    let app = TestApp::spawn().await;
    let before = app
        .login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .unwrap();

    // Rolled out: the new key signs, the old one only verifies (and is still published).
    let mut rolled = app.settings.clone();
    rolled.token.signing_key = Some(SecretString::from(new.private_pem.clone()));
    rolled.token.verification_keys = vec![SecretString::from(old)];
    let (rolled_addr, _rolled) = replica(&rolled).await;
    let rolled_gateway = start_gateway(&rolled, rolled_addr).await;
    let after = login_at(&app, rolled_addr).await;
    assert_eq!(
        jsonwebtoken::decode_header(&after).unwrap().kid.as_deref(),
        Some(new.kid.as_str())
    );
    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", rolled_gateway.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
    assert_eq!(
        jwks["keys"][0]["kid"],
        new.kid.as_str(),
        "the active key first"
    );
    let v = verifier_of(&rolled_gateway.url, &rolled);
    assert_eq!(
        v.verify(&before.access_token).await.unwrap().user_id(),
        before.user_id
    );
    assert!(v.verify(&after).await.is_ok());

    // Retired: the old key is gone from the configuration and the JWKS.
    let mut retired = rolled.clone();
    retired.token.verification_keys = Vec::new();
    let (retired_addr, _retired) = replica(&retired).await;
    let retired_gateway = start_gateway(&retired, retired_addr).await;
    let v = verifier_of(&retired_gateway.url, &retired);
    assert!(v.verify(&after).await.is_ok());
    assert_eq!(
        v.verify(&before.access_token).await.unwrap_err().reason(),
        "KEY_UNKNOWN"
    );
}

#[test]
fn jose_in_node_verifies_tokens_against_the_served_jwks() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "Node.js is required for the jose test (Node 20+)"
    );
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = format!("{root}/examples/node-verifier");
    assert!(
        std::path::Path::new(&format!("{dir}/node_modules/jose/package.json")).exists(),
        "jose is not installed in examples/node-verifier: run scripts/tools.sh (scripts/test.sh does)"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (app, gateway, login) = rt.block_on(async {
        let app = TestApp::spawn().await;
        let gateway = start_gateway(&app.settings, app.grpc_addr).await;
        let login = app
            .login_with_phone_code(app.app_id(), &unique_user(), None)
            .await
            .unwrap();
        (app, gateway, login)
    });
    let bad = serde_json::to_string(&bad_tokens(&login.access_token)).unwrap();
    let out = Command::new("node")
        .args(["--test", "examples/node-verifier/"])
        .current_dir(root)
        .env(
            "MP_AUTH_JWKS_URL",
            format!("{}/.well-known/jwks.json", gateway.url),
        )
        .env("MP_AUTH_ISSUER", &app.settings.token.issuer)
        .env("MP_AUTH_AUDIENCE", &app.settings.token.audience)
        .env("MP_AUTH_TOKEN", &login.access_token)
        .env("MP_AUTH_USER_ID", &login.user_id)
        .env("MP_AUTH_SESSION_ID", &login.session_id)
        .env("MP_AUTH_BAD_TOKENS", bad)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the jose tests failed:\n{report}");
    assert!(report.contains("# fail 0"), "{report}");
    assert!(report.contains("# pass 11"), "{report}");
    drop((gateway, app));
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// Another `serve` replica on the app's database with `settings`; stopped when
/// the returned sender drops.
async fn replica(
    settings: &mp_auth::config::Settings,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let mut settings = settings.clone();
    settings.grpc.listen = ([127, 0, 0, 1], 0).into();
    let server = mp_auth::grpc::GrpcServer::build(&settings).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Logs a new user in at the replica `addr`; its access token.
async fn login_at(app: &TestApp, addr: std::net::SocketAddr) -> String {
    let user = unique_user();
    let code = app.wx_login(&user).await;
    let phone = app.sim_client.phone(app.app_id(), &user).await.unwrap();
    mp_auth::proto::auth_client::AuthClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .mini_program_login(mp_auth::proto::MiniProgramLoginRequest {
            app_id: app.app_id().into(),
            code,
            phone: Some(mp_auth::proto::mini_program_login_request::Phone::PhoneCode(phone.code)),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token
}
