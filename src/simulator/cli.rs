//! The `wechat-sim` command: serve the simulator until SIGINT/SIGTERM.

use super::{SimApp, Simulator, SimulatorConfig};
use crate::{config::Settings, domain::AppId};
use anyhow::Context as _;
use secrecy::SecretString;
use std::{net::SocketAddr, process::ExitCode, time::Duration};

/// Arguments of `mp-auth wechat-sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Address to listen on (default: `simulator.listen`, 127.0.0.1:9400).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// An app to simulate, as APPID:SECRET (repeatable; added to `apps` from the config).
    #[arg(long = "app", value_name = "APPID:SECRET", value_parser = parse_app)]
    pub apps: Vec<(AppId, SecretString)>,
    /// `wx.login` replaces a session_key older than this (0 = every login;
    /// default: `simulator.session_refresh_secs`).
    #[arg(long)]
    pub session_refresh_secs: Option<u64>,
    /// Bind every app to this open platform account, so users get a unionid.
    #[arg(long, value_name = "NAME")]
    pub open_platform: Option<String>,
}

fn parse_app(s: &str) -> Result<(AppId, SecretString), String> {
    let (id, secret) = s
        .split_once(':')
        .ok_or_else(|| "expected APPID:SECRET, e.g. wx_demo_app:demo_secret".to_owned())?;
    let id = AppId::parse(id).map_err(|e| e.to_string())?;
    if secret.is_empty() {
        return Err("the SECRET after ':' must not be empty".into());
    }
    Ok((id, SecretString::from(secret)))
}

/// Runs the simulator until SIGINT/SIGTERM.
pub async fn run(settings: Settings, args: SimArgs) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(&settings.log);
    let mut apps: Vec<SimApp> = Vec::new();
    if !settings.apps.is_empty() {
        for app in settings.app_credentials()? {
            apps.push(SimApp {
                app_id: app.app_id,
                app_secret: app.app_secret,
                open_platform: None,
            });
        }
    }
    for (app_id, app_secret) in args.apps {
        apps.retain(|a| a.app_id != app_id);
        apps.push(SimApp {
            app_id,
            app_secret,
            open_platform: None,
        });
    }
    for app in &mut apps {
        app.open_platform.clone_from(&args.open_platform);
    }
    let config = SimulatorConfig {
        session_refresh: Duration::from_secs(
            args.session_refresh_secs
                .unwrap_or(settings.simulator.session_refresh_secs),
        ),
        token_ttl: Duration::from_secs(settings.simulator.token_ttl_secs),
        apps,
        ..SimulatorConfig::default()
    };
    if config.token_ttl.is_zero() {
        anyhow::bail!("simulator.token_ttl_secs: must be positive. Fix: use 7200 (WeChat's value)");
    }
    let listen = args.listen.unwrap_or(settings.simulator.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen}: pick a free address with --listen 127.0.0.1:PORT")
        })?;
    let app_ids: Vec<&str> = config.apps.iter().map(|a| a.app_id.as_str()).collect();
    tracing::info!(
        apps = ?app_ids,
        session_refresh_secs = config.session_refresh.as_secs(),
        "wechat simulator starting"
    );
    if app_ids.is_empty() {
        eprintln!("note: no app configured; pass --app APPID:SECRET or POST /_sim/apps");
    }
    let sim = Simulator::start(listener, config).await?;
    println!("wechat-sim listening on {}", sim.base_url());
    crate::shutdown::signal().await;
    tracing::info!("wechat simulator stopping");
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn app_flags_parse_id_and_secret() {
        let (id, secret) = parse_app("wx_demo_app:demo:secret").unwrap();
        assert_eq!(id.as_str(), "wx_demo_app");
        assert_eq!(secret.expose_secret(), "demo:secret");
        assert!(parse_app("wx_demo_app").is_err());
        assert!(parse_app("wx_demo_app:").is_err());
        assert!(parse_app("bad id:x").is_err());
    }
}
