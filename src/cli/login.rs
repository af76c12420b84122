//! `mp-auth login` (dev feature): plays a mini-program user against a running gateway
//! (or the gRPC service directly) and a simulator. It mints the codes through
//! the simulator's control API, logs in, and prints the response and the
//! decoded token claims. This is how people try the service by hand:
//!
//! ```text
//! mp-auth login --user alice                 # phone-code login (the 一键登录 button)
//! mp-auth login --user alice --silent        # silent login: the wx.login code alone
//! mp-auth login refresh --refresh-token rt   # rotate the refresh token
//! mp-auth login logout --refresh-token rt    # end the session (--all: every session)
//! ```

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
#[command(args_conflicts_with_subcommands = true)]
pub struct LoginArgs {
    /// `refresh` or `logout` a session instead of logging in.
    #[command(subcommand)]
    pub action: Option<SessionAction>,
    /// The gateway's base URL.
    #[arg(
        long,
        global = true,
        env = "MP_AUTH_LOGIN_GATEWAY",
        default_value = "http://127.0.0.1:8080"
    )]
    pub gateway: String,
    /// Call the gRPC service directly at this address (e.g. http://127.0.0.1:50051) instead of the gateway.
    #[arg(long, global = true, env = "MP_AUTH_LOGIN_GRPC")]
    pub grpc: Option<String>,
    /// The WeChat simulator's base URL.
    #[arg(
        long,
        global = true,
        env = "MP_AUTH_LOGIN_SIMULATOR",
        default_value = "http://127.0.0.1:9400"
    )]
    pub simulator: String,
    /// The mini program's AppID.
    #[arg(long, global = true, default_value = DEMO_APP_ID)]
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
    /// Silent login (静默登录): send the wx.login code alone, no phone button.
    /// Works for a user who logged in before (or whose unionid is known);
    /// otherwise the service answers PHONE_REQUIRED.
    #[arg(long, conflicts_with_all = ["flow", "phone"])]
    pub silent: bool,
    /// Print only the raw JSON response.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What `mp-auth login refresh|logout` does with a session.
#[derive(Debug, clap::Subcommand)]
pub enum SessionAction {
    /// Exchange a refresh token for a new pair (`POST /auth/refresh`, `Auth/RefreshSession`).
    Refresh {
        /// The refresh token of the login or of the last refresh (it may start with `-`).
        #[arg(
            long,
            env = "MP_AUTH_REFRESH_TOKEN",
            hide_env_values = true,
            allow_hyphen_values = true
        )]
        refresh_token: String,
    },
    /// End the session of a refresh token or access token (`POST /auth/logout`, `Auth/Logout`).
    Logout {
        /// A refresh token of the session (it may start with `-`).
        #[arg(
            long,
            env = "MP_AUTH_REFRESH_TOKEN",
            hide_env_values = true,
            allow_hyphen_values = true,
            required_unless_present = "access_token"
        )]
        refresh_token: Option<String>,
        /// An access token of the session (used when no refresh token is given).
        #[arg(long, env = "MP_AUTH_ACCESS_TOKEN", hide_env_values = true)]
        access_token: Option<String>,
        /// End every session of the user (`?all=true`, `Auth/LogoutAll`).
        #[arg(long)]
        all: bool,
    },
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
    post_json(gateway, "/auth/mp_login", &body, None).await
}

/// A silent login through the gateway: a fresh wx.login code alone.
pub async fn silent_login_via_gateway(
    sim: &SimClient,
    gateway: &str,
    app_id: &str,
    user: &str,
) -> anyhow::Result<(u16, Value)> {
    let login = sim.login(app_id, user, None).await?;
    let body = serde_json::json!({"code": login.code, "appId": app_id});
    post_json(gateway, "/auth/mp_login", &body, None).await
}

/// POSTs `body` to the gateway (with a bearer token, if any); the status and JSON answer.
async fn post_json(
    gateway: &str,
    path: &str,
    body: &Value,
    bearer: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    crate::tls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let mut request = http
        .post(format!("{}{path}", gateway.trim_end_matches('/')))
        .json(body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let resp = request.send().await.context("calling the gateway")?;
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
    let mut client = auth_client(grpc).await?;
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

/// A silent login over gRPC: a fresh wx.login code and no phone proof.
pub async fn silent_login_via_grpc(
    sim: &SimClient,
    grpc: &str,
    app_id: &str,
    user: &str,
) -> anyhow::Result<Result<proto::MiniProgramLoginResponse, tonic::Status>> {
    let login = sim.login(app_id, user, None).await?;
    let mut client = auth_client(grpc).await?;
    Ok(client
        .mini_program_login(proto::MiniProgramLoginRequest {
            app_id: app_id.to_owned(),
            code: login.code,
            phone: None,
        })
        .await
        .map(tonic::Response::into_inner))
}

async fn auth_client(
    grpc: &str,
) -> anyhow::Result<proto::auth_client::AuthClient<tonic::transport::Channel>> {
    proto::auth_client::AuthClient::connect(grpc.to_owned())
        .await
        .with_context(|| format!("connecting to {grpc}"))
}

/// The JSON printed for a failed gRPC call.
fn status_json(status: &tonic::Status) -> Value {
    let reason = crate::api::reason_of(status).unwrap_or_default();
    serde_json::json!({"grpc_code": format!("{:?}", status.code()), "reason": reason, "message": status.message()})
}

fn login_json(r: proto::MiniProgramLoginResponse) -> Value {
    serde_json::json!({
        "access_token": r.access_token, "token_type": r.token_type, "expires_in": r.expires_in,
        "refresh_token": r.refresh_token, "refresh_expires_in": r.refresh_expires_in,
        "session_id": r.session_id, "user_id": r.user_id, "openid": r.openid, "unionid": r.unionid,
        "is_new_user": r.is_new_user, "linked_by_unionid": r.linked_by_unionid, "app_id": r.app_id,
    })
}

/// Runs `mp-auth login refresh|logout`: (success, JSON answer, access token to decode).
async fn session_action(
    args: &LoginArgs,
    action: &SessionAction,
) -> anyhow::Result<(bool, Value, Option<String>)> {
    let app_id = args.app_id.clone();
    match (action, &args.grpc) {
        (SessionAction::Refresh { refresh_token }, None) => {
            let (status, body) = post_json(
                &args.gateway,
                "/auth/refresh",
                &serde_json::json!({"refreshToken": refresh_token, "appId": app_id}),
                None,
            )
            .await?;
            let token = body["access_token"].as_str().map(str::to_owned);
            Ok((status == 200, body, token))
        }
        (SessionAction::Refresh { refresh_token }, Some(grpc)) => {
            let answer = auth_client(grpc)
                .await?
                .refresh_session(proto::RefreshSessionRequest {
                    refresh_token: refresh_token.clone(),
                    app_id,
                })
                .await;
            Ok(match answer {
                Ok(r) => {
                    let r = r.into_inner();
                    let token = r.access_token.clone();
                    let json = serde_json::json!({
                        "access_token": r.access_token, "token_type": r.token_type, "expires_in": r.expires_in,
                        "refresh_token": r.refresh_token, "refresh_expires_in": r.refresh_expires_in,
                        "session_id": r.session_id, "user_id": r.user_id, "app_id": r.app_id,
                    });
                    (true, json, Some(token))
                }
                Err(status) => (false, status_json(&status), None),
            })
        }
        (
            SessionAction::Logout {
                refresh_token,
                access_token,
                all,
            },
            None,
        ) => {
            let path = if *all {
                "/auth/logout?all=true"
            } else {
                "/auth/logout"
            };
            let (status, body) = match refresh_token {
                Some(token) => {
                    post_json(
                        &args.gateway,
                        path,
                        &serde_json::json!({"refreshToken": token}),
                        None,
                    )
                    .await?
                }
                None => {
                    post_json(
                        &args.gateway,
                        path,
                        &serde_json::json!({}),
                        access_token.as_deref(),
                    )
                    .await?
                }
            };
            Ok((status == 200, body, None))
        }
        (
            SessionAction::Logout {
                refresh_token,
                access_token,
                all,
            },
            Some(grpc),
        ) => {
            use proto::logout_request::Credential;
            let credential = match (refresh_token, access_token) {
                (Some(token), _) => Credential::RefreshToken(token.clone()),
                (None, Some(token)) => Credential::AccessToken(token.clone()),
                (None, None) => anyhow::bail!("pass --refresh-token or --access-token"),
            };
            let request = proto::LogoutRequest {
                credential: Some(credential),
            };
            let mut client = auth_client(grpc).await?;
            let answer = if *all {
                client.logout_all(request).await
            } else {
                client.logout(request).await
            };
            Ok(match answer {
                Ok(r) => {
                    let r = r.into_inner();
                    (
                        true,
                        serde_json::json!({"user_id": r.user_id, "sessions_revoked": r.sessions_revoked}),
                        None,
                    )
                }
                Err(status) => (false, status_json(&status), None),
            })
        }
    }
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
    let (ok, response, token) = match (&args.action, &args.grpc) {
        (Some(action), _) => session_action(&args, action).await?,
        (None, Some(grpc)) => {
            let answer = if args.silent {
                silent_login_via_grpc(&sim, grpc, &args.app_id, &args.user).await?
            } else {
                login_via_grpc(
                    &sim,
                    grpc,
                    &args.app_id,
                    &args.user,
                    args.phone.as_deref(),
                    args.flow,
                )
                .await?
            };
            match answer {
                Ok(r) => {
                    let token = r.access_token.clone();
                    (true, login_json(r), Some(token))
                }
                Err(status) => (false, status_json(&status), None),
            }
        }
        (None, None) => {
            let (status, body) = if args.silent {
                silent_login_via_gateway(&sim, &args.gateway, &args.app_id, &args.user).await?
            } else {
                login_via_gateway(
                    &sim,
                    &args.gateway,
                    &args.app_id,
                    &args.user,
                    args.phone.as_deref(),
                    args.flow,
                )
                .await?
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Wrapper {
        #[command(subcommand)]
        action: SessionAction,
    }

    #[test]
    fn a_refresh_token_that_starts_with_a_hyphen_is_a_value_not_a_flag() {
        let parsed =
            Wrapper::try_parse_from(["t", "refresh", "--refresh-token", "-abc.1.2.3.mac"]).unwrap();
        assert!(matches!(
            parsed.action,
            SessionAction::Refresh { refresh_token } if refresh_token == "-abc.1.2.3.mac"
        ));
        let parsed =
            Wrapper::try_parse_from(["t", "logout", "--refresh-token", "-x.1.2.3.mac"]).unwrap();
        assert!(matches!(
            parsed.action,
            SessionAction::Logout { refresh_token: Some(t), .. } if t == "-x.1.2.3.mac"
        ));
    }
}
