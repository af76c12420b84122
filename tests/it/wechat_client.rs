//! The WeChat client against the real simulator: success paths, every errcode
//! a caller acts on, transport failures, the token single-flight and the
//! stale-token self-heal. Each test starts its own simulator on a free port.

use mp_auth::{
    config::{AppCredentials, WechatSettings},
    domain::{AppId, LoginCode, OpenId, PhoneCode},
    wechat::{WechatClient, WechatError},
};
use secrecy::SecretString;
use std::time::Duration;
use wechat_sim::{
    Fault, FaultEndpoint, RunningSimulator, SimApp, SimClient, Simulator, SimulatorConfig,
};

const APP: &str = "wxclientintegr01";
const SECRET: &str = "integration-app-secret";

struct TestWechat {
    /// Kept alive for the test's duration.
    _sim: RunningSimulator,
    base_url: String,
    control: SimClient,
    client: WechatClient,
    app: AppId,
}

async fn start(timeout_ms: u64) -> TestWechat {
    let app = AppId::parse(APP).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimulatorConfig {
        apps: vec![SimApp {
            app_id: APP.to_owned(),
            app_secret: SecretString::from(SECRET),
            open_platform: Some("open-platform-1".into()),
        }],
        force_refresh_min_interval: Duration::ZERO,
        ..SimulatorConfig::default()
    };
    let sim = Simulator::start(listener, config).await.unwrap();
    let settings = WechatSettings {
        base_url: mp_auth::config::HttpUrl::parse(sim.base_url()).unwrap(),
        timeout_ms: mp_auth::config::Millis::clamped(timeout_ms),
        connect_timeout_ms: mp_auth::config::Millis::clamped(1_000),
        rate_limit_cooldown_secs: 0,
        ..WechatSettings::default()
    };
    let client = WechatClient::new(
        &settings,
        &[AppCredentials {
            app_id: app.clone(),
            app_secret: SecretString::from(SECRET),
        }],
    )
    .unwrap();
    TestWechat {
        base_url: sim.base_url(),
        control: sim.client(),
        _sim: sim,
        client,
        app,
    }
}

impl TestWechat {
    async fn fault(&self, endpoint: FaultEndpoint, set: impl FnOnce(&mut Fault)) {
        let mut fault = Fault::on(endpoint);
        set(&mut fault);
        self.control.set_fault(&fault).await.unwrap();
    }

    async fn login_code(&self, user: &str) -> LoginCode {
        let minted = self.control.login(APP, user, None).await.unwrap();
        LoginCode::parse(&minted.code).unwrap()
    }

    async fn code2session(&self, user: &str) -> Result<mp_auth::wechat::WxSession, WechatError> {
        let code = self.login_code(user).await;
        self.client.code2session(&self.app, &code).await
    }

    /// Logs `user` in (for the openid) and exchanges a fresh phone code.
    async fn phone_number(&self, user: &str) -> Result<mp_auth::domain::Phone, WechatError> {
        let (code, openid) = self.phone_code(user).await;
        self.client.phone_number(&self.app, &code, &openid).await
    }

    async fn phone_code(&self, user: &str) -> (PhoneCode, OpenId) {
        let pressed = self.control.press(APP, user, None).await.unwrap();
        (
            PhoneCode::parse(&pressed.phone.code).unwrap(),
            OpenId::parse(&pressed.login.openid).unwrap(),
        )
    }

    async fn calls(&self, endpoint: &str) -> u64 {
        let stats = self.control.stats().await.unwrap();
        stats.calls_to(endpoint)
    }

    async fn tokens_minted(&self) -> u64 {
        let stats = self.control.stats().await.unwrap();
        stats.tokens_minted.get(APP).copied().unwrap_or(0)
    }
}

#[tokio::test]
async fn code2session_returns_the_users_openid_unionid_and_session_key() {
    let t = start(2_000).await;
    let minted = t.control.login(APP, "alice", None).await.unwrap();
    let session = t
        .client
        .code2session(&t.app, &LoginCode::parse(&minted.code).unwrap())
        .await
        .unwrap();
    assert_eq!(session.openid.as_str(), minted.openid);
    assert_eq!(
        session.unionid.as_ref().map(|u| u.as_str().to_owned()),
        minted.unionid
    );
    assert!(session.unionid.is_some());
    assert!(!format!("{session:?}").contains(&session.session_key.to_base64()));
}

#[tokio::test]
async fn a_login_code_exchanged_twice_is_reported_as_used() {
    let t = start(2_000).await;
    let code = t.login_code("bob").await;
    t.client.code2session(&t.app, &code).await.unwrap();
    assert_eq!(
        t.client.code2session(&t.app, &code).await.unwrap_err(),
        WechatError::CodeUsed
    );
    let unknown = LoginCode::parse("0000-not-a-real-code").unwrap();
    assert_eq!(
        t.client.code2session(&t.app, &unknown).await.unwrap_err(),
        WechatError::InvalidCode
    );
}

#[tokio::test]
async fn code2session_maps_each_injected_errcode_to_its_variant() {
    let t = start(2_000).await;
    let cases = [
        (-1, WechatError::Busy),
        (40029, WechatError::InvalidCode),
        (40163, WechatError::CodeUsed),
        (40226, WechatError::UserBlocked),
        (45011, WechatError::RateLimited { errcode: 45011 }),
        (40125, WechatError::InvalidAppSecret { errcode: 40125 }),
        (40013, WechatError::InvalidAppId),
    ];
    let n = cases.len() as u64;
    for (i, (errcode, expected)) in cases.into_iter().enumerate() {
        t.fault(FaultEndpoint::Jscode2Session, |f| f.errcode = Some(errcode))
            .await;
        let err = t.code2session(&format!("user-{i}")).await.unwrap_err();
        assert_eq!(err, expected, "errcode {errcode}");
        assert_eq!(err.errcode(), Some(errcode));
    }
    // Never retried: one WeChat call per attempt.
    assert_eq!(t.calls("jscode2session").await, n);
}

#[tokio::test]
async fn code2session_is_not_retried_on_a_server_error() {
    let t = start(2_000).await;
    t.fault(FaultEndpoint::Jscode2Session, |f| f.http_status = Some(502))
        .await;
    let err = t.code2session("carol").await.unwrap_err();
    assert_eq!(err, WechatError::HttpStatus(502));
    assert!(err.is_retryable());
    assert_eq!(t.calls("jscode2session").await, 1);
}

#[tokio::test]
async fn garbage_and_truncated_bodies_are_malformed() {
    let t = start(2_000).await;
    t.fault(FaultEndpoint::Jscode2Session, |f| {
        f.body = Some("<html>502 Bad Gateway</html>".into())
    })
    .await;
    assert_eq!(
        t.code2session("dave").await.unwrap_err(),
        WechatError::Malformed("body is not JSON")
    );
    t.fault(FaultEndpoint::Jscode2Session, |f| {
        f.body = Some(r#"{"session_key":"tiihtNczf5v6AK"#.into())
    })
    .await;
    assert_eq!(
        t.code2session("dave").await.unwrap_err(),
        WechatError::Malformed("body is truncated JSON")
    );
    t.fault(FaultEndpoint::GetUserPhoneNumber, |f| {
        f.body = Some(r#"{"errcode":0,"errmsg":"ok","phone_info":{"phoneNum"#.into())
    })
    .await;
    assert!(matches!(
        t.phone_number("dave").await.unwrap_err(),
        WechatError::Malformed(_)
    ));
}

#[tokio::test]
async fn a_latency_beyond_the_client_timeout_is_a_timeout() {
    let t = start(300).await;
    t.fault(FaultEndpoint::Jscode2Session, |f| {
        f.latency_ms = Some(1_500);
        f.count = Some(1);
    })
    .await;
    let started = std::time::Instant::now();
    let err = t.code2session("erin").await.unwrap_err();
    assert_eq!(err, WechatError::Timeout);
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_millis(1_400));
}

#[tokio::test]
async fn phone_number_returns_the_users_phone() {
    let t = start(2_000).await;
    let pressed = t
        .control
        .press(APP, "frank", Some("13800138000"))
        .await
        .unwrap();
    let got = t
        .client
        .phone_number(
            &t.app,
            &PhoneCode::parse(&pressed.phone.code).unwrap(),
            &OpenId::parse(&pressed.login.openid).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(got.e164(), "+8613800138000");
}

#[tokio::test]
async fn a_phone_code_bound_to_another_openid_or_used_twice_is_invalid_and_not_retried() {
    let t = start(2_000).await;
    let (code, _) = t.phone_code("grace").await;
    let other = OpenId::parse(&t.control.login(APP, "heidi", None).await.unwrap().openid).unwrap();
    assert_eq!(
        t.client
            .phone_number(&t.app, &code, &other)
            .await
            .unwrap_err(),
        WechatError::InvalidCode
    );
    assert_eq!(t.calls("getuserphonenumber").await, 1);

    let (code, openid) = t.phone_code("ivan").await;
    t.client.phone_number(&t.app, &code, &openid).await.unwrap();
    assert_eq!(
        t.client
            .phone_number(&t.app, &code, &openid)
            .await
            .unwrap_err(),
        WechatError::InvalidCode
    );
    assert_eq!(t.calls("getuserphonenumber").await, 3);
}

#[tokio::test]
async fn phone_number_maps_injected_errcodes_without_retrying() {
    let t = start(2_000).await;
    let cases = [
        (-1, WechatError::Busy),
        (40029, WechatError::InvalidCode),
        (45011, WechatError::RateLimited { errcode: 45011 }),
        (40013, WechatError::InvalidAppId),
        (48001, WechatError::NotAuthorized),
    ];
    let n = cases.len() as u64;
    for (i, (errcode, expected)) in cases.into_iter().enumerate() {
        t.fault(FaultEndpoint::GetUserPhoneNumber, |f| {
            f.errcode = Some(errcode)
        })
        .await;
        assert_eq!(
            t.phone_number(&format!("p-{i}")).await.unwrap_err(),
            expected,
            "errcode {errcode}"
        );
    }
    assert_eq!(t.calls("getuserphonenumber").await, n);
}

#[tokio::test]
async fn token_endpoint_errors_are_typed_and_spend_no_phone_code() {
    let t = start(2_000).await;
    let cases = [
        (40125, WechatError::InvalidAppSecret { errcode: 40125 }),
        (40013, WechatError::InvalidAppId),
        (40164, WechatError::IpNotWhitelisted { errcode: 40164 }),
        (-1, WechatError::Busy),
    ];
    let (code, openid) = t.phone_code("judy").await;
    for (errcode, expected) in cases {
        t.fault(FaultEndpoint::StableToken, |f| f.errcode = Some(errcode))
            .await;
        assert_eq!(
            t.client
                .phone_number(&t.app, &code, &openid)
                .await
                .unwrap_err(),
            expected,
            "errcode {errcode}"
        );
    }
    assert_eq!(t.calls("getuserphonenumber").await, 0);
    // The code is still good once the token endpoint recovers.
    t.client.phone_number(&t.app, &code, &openid).await.unwrap();
}

#[tokio::test]
async fn fifty_concurrent_phone_calls_on_a_cold_cache_mint_one_token() {
    let t = start(5_000).await;
    let mut codes = Vec::new();
    for i in 0..50 {
        codes.push(t.phone_code(&format!("crowd-{i}")).await);
    }
    // Slow the token endpoint so every caller arrives while the fetch is in flight.
    t.fault(FaultEndpoint::StableToken, |f| {
        f.latency_ms = Some(200);
        f.count = Some(1);
    })
    .await;
    let calls = codes.iter().map(|(code, openid)| {
        let client = t.client.clone();
        let app = t.app.clone();
        async move { client.phone_number(&app, code, openid).await }
    });
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(t.tokens_minted().await, 1);
    assert_eq!(t.calls("stable_token").await, 1);
    assert_eq!(t.calls("getuserphonenumber").await, 50);
}

#[tokio::test]
async fn a_token_replaced_behind_the_clients_back_is_healed_with_exactly_one_retry() {
    let t = start(2_000).await;
    t.phone_number("kim").await.unwrap();
    assert_eq!(t.calls("stable_token").await, 1);

    // Another party force-refreshes the stable token: ours is now revoked (40001).
    let forced: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/cgi-bin/stable_token", t.base_url))
        .json(&serde_json::json!({
            "grant_type": "client_credential",
            "appid": APP,
            "secret": SECRET,
            "force_refresh": true,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(forced["access_token"].is_string(), "{forced}");

    let phone = t.phone_number("kim").await.unwrap();
    assert_eq!(phone.country_code(), "86");
    let stats = t.control.stats().await.unwrap();
    assert_eq!(stats.force_refreshes, 1);
    // 1 + 1 (stale) + 1 (retry) phone calls; 1 + 1 (forced) + 1 (re-fetch) token calls.
    assert_eq!(stats.calls["getuserphonenumber"], 3);
    assert_eq!(stats.calls["stable_token"], 3);

    // The healed token is cached again.
    t.phone_number("kim").await.unwrap();
    assert_eq!(t.calls("stable_token").await, 3);
}
