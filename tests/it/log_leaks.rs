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

    dev.stop();
    let output = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        output.contains("\"message\":\"login\""),
        "logins were logged at all:\n{output}"
    );
    let dev_secrets: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("dev-secrets.json")).unwrap(),
    )
    .unwrap();
    for key in ["app_secret", "token_secret", "session_key_encryption_key"] {
        secrets.push(dev_secrets[key].as_str().unwrap().to_owned());
    }
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
