//! Token verification for internal services: ES256 keys with kid and JWKS,
//! rotation (old tokens verify until their key is removed), every refusal
//! with its reason, revocation seen by another `serve` process, and start-up checks.

use crate::helpers::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mp_auth::{
    callers::{generate_key, key_hash_hex},
    config::{CallerSettings, Settings},
    grpc::GrpcServer,
    proto::{self, auth_client::AuthClient, logout_request::Credential},
    tokens::SigningKey,
};
use secrecy::SecretString;
use std::{
    net::SocketAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tonic::{Code, Request};

struct Keys {
    private: String,
    public: String,
}

fn key_pair() -> Keys {
    let key = SigningKey::generate(mp_auth::tokens::Algorithm::Es256).unwrap();
    Keys {
        private: key.private_pem,
        public: key.public_pem,
    }
}

/// A server signing with `key`, allowed `verifier` (tokens:verify).
async fn spawn_es256(key: &Keys, verifier: &str) -> TestApp {
    let private = key.private.clone();
    let hash = key_hash_hex(verifier);
    TestApp::spawn_with(TestAppOptions {
        tweak: Box::new(move |s| {
            s.token.signing_key = Some(SecretString::from(private));
            s.callers = vec![CallerSettings {
                name: "orders".into(),
                key_sha256: hash,
                permissions: vec!["tokens:verify".into()],
            }];
        }),
        ..Default::default()
    })
    .await
}

/// Another `serve` replica on the same database with `settings` changed by `tweak`.
async fn replica(base: &Settings, tweak: impl FnOnce(&mut Settings)) -> SocketAddr {
    let mut settings = base.clone();
    settings.grpc.listen = ([127, 0, 0, 1], 0).into();
    tweak(&mut settings);
    let server = GrpcServer::build(&settings).await.expect("replica builds");
    let addr = server.local_addr();
    tokio::spawn(server.run_until(std::future::pending()));
    addr
}

async fn verify_at(
    addr: SocketAddr,
    key: Option<&str>,
    token: &str,
) -> Result<proto::VerifyTokenResponse, tonic::Status> {
    let mut client = AuthClient::connect(format!("http://{addr}")).await.unwrap();
    let mut req = Request::new(proto::VerifyTokenRequest {
        access_token: token.into(),
    });
    if let Some(key) = key {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    client
        .verify_token(req)
        .await
        .map(tonic::Response::into_inner)
}

/// Polls until verification at `addr` answers `reason` (or OK when `None`).
async fn eventually(
    addr: SocketAddr,
    key: &str,
    token: &str,
    reason_want: Option<&str>,
) -> Duration {
    let started = Instant::now();
    loop {
        let got = verify_at(addr, Some(key), token).await;
        let got_reason = got.as_ref().err().map(reason);
        if got_reason.as_deref() == reason_want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {got_reason:?} after 10 s, want {reason_want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn es256_tokens_carry_a_kid_from_the_jwks_and_verify_online() {
    let key = key_pair();
    let verifier = generate_key();
    let app = spawn_es256(&key, &verifier).await;
    let login = app
        .login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(&login.access_token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let jwks = app
        .client()
        .await
        .get_jwks(proto::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(Some(jwks.keys[0].kid.clone()), header.kid);
    assert_eq!(
        (jwks.keys[0].alg.as_str(), jwks.keys[0].r#use.as_str()),
        ("ES256", "sig")
    );
    eventually(app.grpc_addr, &verifier, &login.access_token, None).await;
    let ok = verify_at(app.grpc_addr, Some(&verifier), &login.access_token)
        .await
        .unwrap();
    assert_eq!(ok.user_id, login.user_id);
    assert_eq!(ok.session_id, login.session_id);
    assert_eq!(ok.app_id, app.app_id());
    // Without the permission: no verification.
    let err = verify_at(app.grpc_addr, None, &login.access_token)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "CALLER_UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_rotation_old_tokens_verify_until_their_key_is_removed() {
    let old = key_pair();
    let new = key_pair();
    let verifier = generate_key();
    let app = spawn_es256(&old, &verifier).await;
    let login = app
        .login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let old_pub = dir.path().join("old.pub.pem");
    std::fs::write(&old_pub, &old.public).unwrap();
    // Rolled out: the new key signs, the old one still verifies.
    let new_private = new.private.clone();
    let rotated = replica(&app.settings, |s| {
        s.token.signing_key = Some(SecretString::from(new_private));
        s.token.verification_key_files = vec![old_pub.clone()];
    })
    .await;
    // (A fresh replica answers REVOCATION_UNAVAILABLE until its first revocation poll.)
    eventually(rotated, &verifier, &login.access_token, None).await;
    let mut client = AuthClient::connect(format!("http://{rotated}"))
        .await
        .unwrap();
    let jwks = client
        .get_jwks(proto::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jwks.keys.len(), 2, "active and retained keys are published");
    // Retired: the old key is removed from the configuration.
    let new_private = new.private.clone();
    let retired = replica(&app.settings, |s| {
        s.token.signing_key = Some(SecretString::from(new_private));
        s.token.verification_key_files = vec![];
    })
    .await;
    eventually(retired, &verifier, &login.access_token, Some("KEY_UNKNOWN")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_tampered_and_out_of_time_tokens_are_refused_each_with_its_reason() {
    let key = key_pair();
    let verifier = generate_key();
    let app = spawn_es256(&key, &verifier).await;
    let login = app
        .login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .unwrap();
    let good = jsonwebtoken::decode_header(&login.access_token).unwrap();
    let claims: serde_json::Value = {
        use base64::Engine as _;
        let payload = login.access_token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    let signing = EncodingKey::from_ec_pem(key.private.as_bytes()).unwrap();
    let es256 = |typ: Option<&str>, kid: Option<String>, claims: &serde_json::Value| {
        let mut h = Header::new(Algorithm::ES256);
        h.typ = typ.map(str::to_owned);
        h.kid = kid;
        jsonwebtoken::encode(&h, claims, &signing).unwrap()
    };
    let with = |k: &str, v: serde_json::Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let parts: Vec<&str> = login.access_token.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&with("sub", serde_json::json!("1")).to_string()),
        parts[2]
    );
    let alg_none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"at+jwt"}"#), parts[1]);
    // Algorithm confusion: HS256 "signed" with the public key as the secret.
    let confused = {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = good.kid.clone();
        jsonwebtoken::encode(
            &h,
            &claims,
            &EncodingKey::from_secret(key.public.as_bytes()),
        )
        .unwrap()
    };
    let cases: Vec<(&str, String)> = vec![
        ("TOKEN_INVALID", tampered),
        ("TOKEN_INVALID", alg_none),
        ("TOKEN_INVALID", confused),
        (
            "TOKEN_INVALID",
            es256(Some("JWT"), good.kid.clone(), &claims),
        ),
        (
            "TOKEN_INVALID",
            es256(
                Some("at+jwt"),
                good.kid.clone(),
                &with("aud", serde_json::json!("someone-else")),
            ),
        ),
        (
            "TOKEN_INVALID",
            es256(
                Some("at+jwt"),
                good.kid.clone(),
                &with("iss", serde_json::json!("evil")),
            ),
        ),
        (
            "TOKEN_EXPIRED",
            es256(
                Some("at+jwt"),
                good.kid.clone(),
                &with("exp", serde_json::json!(now() - 3600)),
            ),
        ),
        (
            "TOKEN_NOT_YET_VALID",
            es256(
                Some("at+jwt"),
                good.kid.clone(),
                &with("nbf", serde_json::json!(now() + 3600)),
            ),
        ),
        (
            "KEY_UNKNOWN",
            es256(Some("at+jwt"), Some("no-such-kid".into()), &claims),
        ),
        ("TOKEN_INVALID", "not-a-jwt".into()),
    ];
    for (want, token) in cases {
        let err = verify_at(app.grpc_addr, Some(&verifier), &token)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{want}");
        assert_eq!(reason(&err), want, "{token}");
    }
    // The untouched token still verifies.
    eventually(app.grpc_addr, &verifier, &login.access_token, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_refuses_bad_key_material_with_a_helpful_message() {
    let key = key_pair();
    let app = TestApp::spawn().await;
    let cases = [
        (key.public.clone(), "PRIVATE key"),
        ("garbage".to_owned(), "mp-auth keys generate"),
    ];
    for (pem, hint) in cases {
        let mut settings = app.settings.clone();
        settings.grpc.listen = ([127, 0, 0, 1], 0).into();
        settings.token.signing_key = Some(SecretString::from(pem));
        let err = GrpcServer::build(&settings).await.err().expect("refused");
        assert!(format!("{err:#}").contains(hint), "{err:#} lacks {hint}");
    }
    let mut settings = app.settings.clone();
    settings.token.signing_key = None;
    settings.token.hs256_secret = Some(SecretString::from("too-short"));
    let err = GrpcServer::build(&settings).await.err().expect("refused");
    assert!(format!("{err:#}").contains("32"), "{err:#}");
}

/// `mp-auth serve` as a child process (its own revocation cache, like a pod)
/// on the app's database, signing with the test key, with `verifier` allowed
/// to call `VerifyToken`.
struct ServeProcess {
    child: tokio::process::Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl ServeProcess {
    async fn start(app: &TestApp, verifier: &str) -> ServeProcess {
        use secrecy::ExposeSecret as _;
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("signing-key.pem");
        std::fs::write(&key_file, TEST_SIGNING_KEY).unwrap();
        let ready = dir.path().join("ready");
        let apps = app
            .settings
            .apps
            .iter()
            .map(|a| {
                format!(
                    "{{app_id=\"{}\",app_secret=\"{}\"}}",
                    a.app_id,
                    a.app_secret.as_ref().unwrap().expose_secret()
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mp-auth"))
            .env_clear()
            .env("MP_AUTH_APPS", format!("[{apps}]"))
            .env("MP_AUTH_WECHAT__BASE_URL", &app.settings.wechat.base_url)
            .env(
                "DATABASE_URL",
                app.settings.database.url.as_ref().unwrap().expose_secret(),
            )
            .env("MP_AUTH_TOKEN__SIGNING_KEY_FILE", &key_file)
            .env("MP_AUTH_SESSION_KEYS__ENCRYPTION_KEY", TEST_VAULT_KEY)
            .env(
                "MP_AUTH_CALLERS",
                format!(
                    "[{{name=\"orders\",key_sha256=\"{}\",permissions=[\"tokens:verify\"]}}]",
                    key_hash_hex(verifier)
                ),
            )
            .env("MP_AUTH_GRPC__HEALTH_CHECK_INTERVAL_MS", "200")
            .env("MP_AUTH_LOG__FORMAT", "json")
            .args(["serve", "--listen", "127.0.0.1:0", "--ready-file"])
            .arg(&ready)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mp-auth serve");
        let mut process = ServeProcess {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            dir,
        };
        let started = Instant::now();
        process.addr = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                break text.trim().parse().unwrap();
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("mp-auth serve exited ({status}): {}", process.stderr());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{}",
                process.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        process
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_on_one_serve_process_is_seen_by_verify_token_on_another_within_a_second() {
    let app = TestApp::spawn().await;
    let verifier = generate_key();
    let (a, b) = tokio::join!(
        ServeProcess::start(&app, &verifier),
        ServeProcess::start(&app, &verifier)
    );
    let mut logins = Vec::new();
    for _ in 0..5 {
        let user = unique_user();
        let code = app.wx_login(&user).await;
        let phone = app.sim_client.phone(app.app_id(), &user).await.unwrap();
        let login = AuthClient::connect(format!("http://{}", a.addr))
            .await
            .unwrap()
            .mini_program_login(proto::MiniProgramLoginRequest {
                app_id: app.app_id().into(),
                code,
                phone: Some(proto::mini_program_login_request::Phone::PhoneCode(
                    phone.code,
                )),
            })
            .await
            .unwrap()
            .into_inner();
        // B vouches for it (after its first revocation poll).
        eventually(b.addr, &verifier, &login.access_token, None).await;
        logins.push(login);
    }
    let mut delays = Vec::new();
    let mut client_b = AuthClient::connect(format!("http://{}", b.addr))
        .await
        .unwrap();
    for login in &logins {
        AuthClient::connect(format!("http://{}", a.addr))
            .await
            .unwrap()
            .logout(proto::LogoutRequest {
                credential: Some(Credential::AccessToken(login.access_token.clone())),
            })
            .await
            .unwrap();
        let logged_out = Instant::now();
        loop {
            let mut req = Request::new(proto::VerifyTokenRequest {
                access_token: login.access_token.clone(),
            });
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {verifier}").parse().unwrap(),
            );
            match client_b.verify_token(req).await {
                Err(status) if reason(&status) == "TOKEN_REVOKED" => break,
                Ok(_) => {}
                Err(status) => panic!("unexpected {status:?}"),
            }
            assert!(
                logged_out.elapsed() < Duration::from_secs(5),
                "B still vouches for the token 5 s after the logout on A: {}",
                b.stderr()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        delays.push(logged_out.elapsed());
    }
    eprintln!("logout on A seen by VerifyToken on B after {delays:?}");
    // The stated bound: one poll interval (250 ms) plus one query, well under a second.
    let worst = delays.iter().max().unwrap();
    assert!(*worst < Duration::from_secs(1), "{delays:?}");
}
