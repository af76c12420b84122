//! Logs leak nothing: run logins (success and every failure kind) with known
//! secrets, phones, codes and tokens, and assert none of them appears in the
//! captured output of the process, even with mp-auth's own logs at debug.

use crate::{dev::DevProcess, helpers::unique_phone};
use std::{process::Stdio, time::Duration};
use wechat_sim::{Fault, FaultEndpoint, Pressed, SimClient};

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_code_token_session_key_or_phone_reaches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("output.log");
    let out = std::fs::File::create(&log_path).unwrap();
    let dev = DevProcess::start_with(
        dir.path(),
        Stdio::from(out.try_clone().unwrap()),
        Stdio::from(out),
        &[("RUST_LOG", "info,mp_auth=debug")],
    );
    let sim = SimClient::new(&dev.endpoint("simulator"));
    let gateway = dev.endpoint("gateway");
    let app = dev.endpoint("app_id");
    mp_auth::tls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut secrets: Vec<String> = Vec::new();
    let post = |body: serde_json::Value| {
        let http = http.clone();
        let url = format!("{gateway}/auth/mp_login");
        async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };

    // Successes in both flows.
    for (i, flow) in ["code", "legacy", "code"].into_iter().enumerate() {
        let user = format!("leak-user-{i}");
        let phone = unique_phone();
        let Pressed {
            login,
            phone: pressed,
        } = sim.press(&app, &user, Some(&phone)).await.unwrap();
        let body = if flow == "code" {
            serde_json::json!({"code": login.code, "phoneCode": pressed.code})
        } else {
            serde_json::json!({"code": login.code, "encryptedData": pressed.encrypted_data, "iv": pressed.iv})
        };
        let resp = post(body).await;
        let token = resp["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{resp}"))
            .to_owned();
        secrets.extend([
            login.code,
            pressed.code,
            pressed.encrypted_data,
            phone.clone(),
            token,
        ]);
        // The phone also in its E.164 form.
        secrets.push(format!("+86{phone}"));
    }
    // Failures: replayed code, blocked user, rate limit, WeChat down, garbage input.
    let user = "leak-user-fail";
    let phone = unique_phone();
    let Pressed {
        login,
        phone: pressed,
    } = sim.press(&app, user, Some(&phone)).await.unwrap();
    let body = serde_json::json!({"code": login.code, "phoneCode": pressed.code});
    post(body.clone()).await;
    assert_eq!(post(body).await["reason"], "LOGIN_CODE_USED");
    secrets.extend([login.code, pressed.code, phone]);
    for errcode in [40226, 45011, -1, 40029] {
        sim.set_fault(&Fault {
            errcode: Some(errcode),
            ..Fault::on(FaultEndpoint::Jscode2Session)
        })
        .await
        .unwrap();
        let Pressed {
            login,
            phone: pressed,
        } = sim.press(&app, user, None).await.unwrap();
        let resp = post(serde_json::json!({"code": login.code, "phoneCode": pressed.code})).await;
        assert!(resp["reason"].is_string(), "{resp}");
        secrets.extend([login.code, pressed.code]);
    }
    sim.set_fault(&Fault {
        errcode: Some(40029),
        ..Fault::on(FaultEndpoint::GetUserPhoneNumber)
    })
    .await
    .unwrap();
    let Pressed {
        login,
        phone: pressed,
    } = sim.press(&app, user, None).await.unwrap();
    post(serde_json::json!({"code": login.code, "phoneCode": pressed.code})).await;
    secrets.extend([login.code, pressed.code]);
    let login = sim.login(&app, user, None).await.unwrap();
    post(serde_json::json!({"code": login.code, "encryptedData": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": "not-base64!"})).await;
    secrets.push(login.code);

    // Sessions, verification and the Users API (audited actions included).
    let user = "leak-user-sessions";
    let phone = unique_phone();
    let Pressed {
        login,
        phone: pressed,
    } = sim.press(&app, user, Some(&phone)).await.unwrap();
    let first = post(serde_json::json!({"code": login.code, "phoneCode": pressed.code})).await;
    let refresh_token = first["refresh_token"].as_str().unwrap().to_owned();
    let access_token = first["access_token"].as_str().unwrap().to_owned();
    let user_id = first["user_id"].as_str().unwrap().to_owned();
    secrets.extend([
        login.code,
        pressed.code,
        phone.clone(),
        format!("+86{phone}"),
    ]);
    secrets.extend([refresh_token.clone(), access_token.clone()]);
    let refreshed: serde_json::Value = http
        .post(format!("{gateway}/auth/refresh"))
        .json(&serde_json::json!({"refreshToken": refresh_token}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rotated = refreshed["refresh_token"].as_str().unwrap().to_owned();
    secrets.extend([
        rotated.clone(),
        refreshed["access_token"].as_str().unwrap().to_owned(),
    ]);
    // Reuse of the first token (its successor was not used: a retry), then a logout.
    http.post(format!("{gateway}/auth/refresh"))
        .json(&serde_json::json!({"refreshToken": refresh_token}))
        .send()
        .await
        .unwrap();
    let caller_key = std::fs::read_to_string(dir.path().join("dev-caller-key")).unwrap();
    secrets.push(caller_key.trim().to_owned());
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", dev.endpoint("grpc")))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let key = caller_key.trim().to_owned();
    let with_key = |msg| keyed(&key, msg);
    let with_key_delete = |msg| keyed(&key, msg);
    let mut users = mp_auth::proto::users_client::UsersClient::new(channel.clone());
    let full = users
        .get_user(with_key(mp_auth::proto::GetUserRequest {
            user_id: user_id.clone(),
            include_phone: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        full.phone.ends_with(&phone),
        "the dev key may read full phones"
    );
    let mut auth = mp_auth::proto::auth_client::AuthClient::new(channel);
    let mut verify = tonic::Request::new(mp_auth::proto::VerifyTokenRequest {
        access_token: "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.forged-signature".into(),
    });
    verify.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", caller_key.trim()).parse().unwrap(),
    );
    auth.verify_token(verify).await.unwrap_err();
    http.post(format!("{gateway}/auth/logout"))
        .json(&serde_json::json!({"refreshToken": rotated}))
        .send()
        .await
        .unwrap();
    users
        .delete_user(with_key_delete(mp_auth::proto::DeleteUserRequest {
            user_id: user_id.clone(),
            reason: "leak_test".into(),
        }))
        .await
        .unwrap();

    dev.stop();
    let output = std::fs::read_to_string(&log_path).unwrap();
    // Audit lines: the full-phone read and the deletion, with actor, action and user id.
    for action in ["users.read_phone", "users.delete"] {
        let line = output
            .lines()
            .find(|l| l.contains("mp_auth::audit") && l.contains(action))
            .unwrap_or_else(|| panic!("no audit line for {action}:\n{output}"));
        assert!(line.contains("\"actor\":\"dev\""), "{line}");
        assert!(
            line.contains(&format!("\"user_id\":\"{user_id}\"")),
            "{line}"
        );
    }
    assert!(
        output.contains("\"message\":\"login\""),
        "logins were logged at all:\n{output}"
    );
    let dev_secrets: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("dev-secrets.json")).unwrap(),
    )
    .unwrap();
    for key in ["app_secret", "session_key_encryption_key"] {
        secrets.push(dev_secrets[key].as_str().unwrap().to_owned());
    }
    // Every line of the signing key's body.
    let signing_key = std::fs::read_to_string(dir.path().join("dev-signing-key.pem")).unwrap();
    secrets.extend(
        signing_key
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::to_owned),
    );
    for secret in &secrets {
        assert!(
            secret.len() >= 8,
            "test secrets are long enough to be meaningful"
        );
        assert!(
            !output.contains(secret.as_str()),
            "a secret, code, token or phone leaked into the logs: {}…",
            &secret[..6]
        );
    }
    // Masked phones are fine and expected.
    assert!(output.contains("****"));
}

/// A request carrying the internal caller's API key.
fn keyed<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}
