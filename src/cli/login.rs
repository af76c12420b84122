//! `mp-auth login` (dev feature): plays a mini-program user against a running gateway
//! (or the gRPC service directly) and a simulator. It mints the codes through
//! the simulator's control API, logs in, and prints the response and the
//! decoded token claims. This is how people try the service by hand.

use crate::proto;
use anyhow::Context as _;
use base64::Engine as _;
use serde_json::Value;
use std::{process::ExitCode, time::Duration};
use wechat_sim::{Pressed, SimClient};

/// The demo mini program: `login`'s default app, and the one dev mode configures.
pub const DEMO_APP_ID: &str = "wx_demo_app";

/// Which phone flow the simulated user takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flow {
    /// New flow: the phone button's `code`, exchanged server-side.
    Code,
    /// Legacy flow: `encryptedData` + `iv`, decrypted server-side.
    Legacy,
}

/// Arguments of `mp-auth login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The gateway's base URL.
    #[arg(
        long,
        env = "MP_AUTH_LOGIN_GATEWAY",
        default_value = "http://127.0.0.1:8080"
    )]
    pub gateway: String,
    /// Call the gRPC service directly at this address (e.g. http://127.0.0.1:50051) instead of the gateway.
    #[arg(long, env = "MP_AUTH_LOGIN_GRPC")]
    pub grpc: Option<String>,
    /// The WeChat simulator's base URL.
    #[arg(
        long,
        env = "MP_AUTH_LOGIN_SIMULATOR",
        default_value = "http://127.0.0.1:9400"
    )]
    pub simulator: String,
    /// The mini program's AppID.
    #[arg(long, default_value = DEMO_APP_ID)]
    pub app_id: String,
    /// The simulated WeChat user (a stable handle: same handle, same openid).
    #[arg(long, default_value = "demo-user")]
    pub user: String,
    /// Give the simulated user this phone number (e.g. 13800138000 or +12025550123).
    #[arg(long)]
    pub phone: Option<String>,
    /// Phone flow.
    #[arg(long, value_enum, default_value_t = Flow::Code)]
    pub flow: Flow,
    /// Print only the raw JSON response.
    #[arg(long)]
    pub json: bool,
}

/// Decodes a JWT's header and payload without verifying it (for display).
pub fn decode_claims(token: &str) -> anyhow::Result<(Value, Value)> {
    let mut parts = token.split('.');
    let mut part = |name: &str| -> anyhow::Result<Value> {
        let p = parts
            .next()
            .with_context(|| format!("token has no {name}"))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .with_context(|| format!("token {name} is not base64url"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("token {name} is not JSON"))
    };
    Ok((part("header")?, part("payload")?))
}

/// Mints codes for `user` and logs in through the gateway; returns the JSON response.
pub async fn login_via_gateway(
    sim: &SimClient,
    gateway: &str,
    app_id: &str,
    user: &str,
    phone: Option<&str>,
    flow: Flow,
) -> anyhow::Result<(u16, Value)> {
    let Pressed { login, phone } = sim.press(app_id, user, phone).await?;
    let body = match flow {
        Flow::Code => {
            serde_json::json!({"code": login.code, "phoneCode": phone.code, "appId": app_id})
        }
        Flow::Legacy => {
            serde_json::json!({"code": login.code, "encryptedData": phone.encrypted_data, "iv": phone.iv, "appId": app_id})
        }
    };
    crate::tls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let resp = http
        .post(format!("{}/auth/mp_login", gateway.trim_end_matches('/')))
        .json(&body)
        .send()
        .await
        .context("calling the gateway")?;
    let status = resp.status().as_u16();
    let json: Value = resp
        .json()
        .await
        .context("the gateway's answer is not JSON")?;
    Ok((status, json))
}

/// Mints codes for `user` and calls `Auth/MiniProgramLogin` directly.
pub async fn login_via_grpc(
    sim: &SimClient,
    grpc: &str,
    app_id: &str,
    user: &str,
    phone: Option<&str>,
    flow: Flow,
) -> anyhow::Result<Result<proto::MiniProgramLoginResponse, tonic::Status>> {
    let Pressed { login, phone } = sim.press(app_id, user, phone).await?;
    let phone = match flow {
        Flow::Code => proto::mini_program_login_request::Phone::PhoneCode(phone.code),
        Flow::Legacy => {
            proto::mini_program_login_request::Phone::Encrypted(proto::EncryptedPhone {
                encrypted_data: phone.encrypted_data,
                iv: phone.iv,
            })
        }
    };
    let mut client = proto::auth_client::AuthClient::connect(grpc.to_owned())
        .await
        .with_context(|| format!("connecting to {grpc}"))?;
    let req = proto::MiniProgramLoginRequest {
        app_id: app_id.to_owned(),
        code: login.code,
        phone: Some(phone),
    };
    Ok(client
        .mini_program_login(req)
        .await
        .map(tonic::Response::into_inner))
}

/// The one demo login dev mode performs at start-up; returns a printable summary.
pub async fn demo_login(simulator: &str, gateway: &str, app_id: &str) -> anyhow::Result<String> {
    let sim = SimClient::new(simulator);
    let (status, body) =
        login_via_gateway(&sim, gateway, app_id, "demo-user", None, Flow::Code).await?;
    if status != 200 {
        anyhow::bail!("gateway answered {status}: {body}");
    }
    let token = body["access_token"]
        .as_str()
        .context("no access_token in the response")?;
    let (_, claims) = decode_claims(token)?;
    Ok(format!(
        "  user_id {} (new user: {}), openid {}\n  token claims: {}",
        body["user_id"], body["is_new_user"], body["openid"], claims
    ))
}

/// Runs `mp-auth login`.
pub async fn run(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let sim = SimClient::new(&args.simulator);
    let (ok, response, token) = match &args.grpc {
        Some(grpc) => match login_via_grpc(
            &sim,
            grpc,
            &args.app_id,
            &args.user,
            args.phone.as_deref(),
            args.flow,
        )
        .await?
        {
            Ok(r) => {
                let token = r.access_token.clone();
                let json = serde_json::json!({
                    "access_token": r.access_token, "token_type": r.token_type, "expires_in": r.expires_in,
                    "user_id": r.user_id, "openid": r.openid, "unionid": r.unionid, "is_new_user": r.is_new_user, "app_id": r.app_id,
                });
                (true, json, Some(token))
            }
            Err(status) => {
                let reason = crate::grpc::error::reason_of(&status).unwrap_or_default();
                (
                    false,
                    serde_json::json!({"grpc_code": format!("{:?}", status.code()), "reason": reason, "message": status.message()}),
                    None,
                )
            }
        },
        None => {
            let (status, body) = login_via_gateway(
                &sim,
                &args.gateway,
                &args.app_id,
                &args.user,
                args.phone.as_deref(),
                args.flow,
            )
            .await?;
            let token = body["access_token"].as_str().map(str::to_owned);
            (status == 200, body, token)
        }
    };
    println!("{}", serde_json::to_string_pretty(&response)?);
    if !args.json
        && let Some(token) = token
    {
        let (header, claims) = decode_claims(&token)?;
        println!(
            "token header: {header}\ntoken claims: {}",
            serde_json::to_string_pretty(&claims)?
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
