//! The `wechat-sim` command (the standalone binary, and `mp-auth wechat-sim`
//! with defaults from mp-auth's settings): serve the simulator until told to stop.

use crate::{
    config::{SimApp, SimulatorConfig, check_app_id},
    server::Simulator,
};
use anyhow::Context as _;
use secrecy::SecretString;
use std::{future::Future, net::SocketAddr, time::Duration};

/// Arguments of `wechat-sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Address to listen on (default 127.0.0.1:9400).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// An app to simulate, as APPID:SECRET (repeatable; replaces a default app of that id).
    #[arg(long = "app", value_name = "APPID:SECRET", value_parser = parse_app)]
    pub apps: Vec<(String, SecretString)>,
    /// `wx.login` replaces a session_key older than this (0 = every login; default 300).
    #[arg(long)]
    pub session_refresh_secs: Option<u64>,
    /// Lifetime of simulated access tokens (default 7200, WeChat's value).
    #[arg(long)]
    pub token_ttl_secs: Option<u64>,
    /// Bind every app to this open platform account, so users get a unionid.
    #[arg(long, value_name = "NAME")]
    pub open_platform: Option<String>,
}

fn parse_app(s: &str) -> Result<(String, SecretString), String> {
    let (id, secret) = s
        .split_once(':')
        .ok_or_else(|| "expected APPID:SECRET, e.g. wx_demo_app:demo_secret".to_owned())?;
    let id = id.trim();
    check_app_id(id)?;
    if secret.is_empty() {
        return Err("the SECRET after ':' must not be empty".into());
    }
    Ok((id.to_owned(), SecretString::from(secret)))
}

/// What the flags fall back to.
#[derive(Debug, Clone)]
pub struct SimDefaults {
    /// The listen address.
    pub listen: SocketAddr,
    /// Apps to simulate besides the `--app` ones.
    pub apps: Vec<SimApp>,
    /// The session_key refresh period.
    pub session_refresh: Duration,
    /// The access-token lifetime.
    pub token_ttl: Duration,
}

impl Default for SimDefaults {
    fn default() -> Self {
        let config = SimulatorConfig::default();
        Self {
            listen: ([127, 0, 0, 1], 9400).into(),
            apps: Vec::new(),
            session_refresh: config.session_refresh,
            token_ttl: config.token_ttl,
        }
    }
}

/// The listen address and simulator configuration `args` ask for.
pub fn config(
    args: SimArgs,
    defaults: SimDefaults,
) -> anyhow::Result<(SocketAddr, SimulatorConfig)> {
    let mut apps = defaults.apps;
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
        session_refresh: args
            .session_refresh_secs
            .map_or(defaults.session_refresh, Duration::from_secs),
        token_ttl: args
            .token_ttl_secs
            .map_or(defaults.token_ttl, Duration::from_secs),
        apps,
        ..SimulatorConfig::default()
    };
    if config.token_ttl.is_zero() {
        anyhow::bail!(
            "the access-token lifetime (--token-ttl-secs; simulator.token_ttl_secs in mp-auth) must be positive. Fix: use 7200 (WeChat's value)"
        );
    }
    Ok((args.listen.unwrap_or(defaults.listen), config))
}

/// Serves the simulator `args` describe until `shutdown` resolves.
pub async fn run(
    args: SimArgs,
    defaults: SimDefaults,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (listen, config) = config(args, defaults)?;
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
    shutdown.await;
    tracing::info!("wechat simulator stopping");
    sim.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn app_flags_parse_id_and_secret() {
        let (id, secret) = parse_app("wx_demo_app:demo:secret").unwrap();
        assert_eq!(id, "wx_demo_app");
        assert_eq!(secret.expose_secret(), "demo:secret");
        assert!(parse_app("wx_demo_app").is_err());
        assert!(parse_app("wx_demo_app:").is_err());
        assert!(parse_app("bad id:x").is_err());
    }

    #[test]
    fn flags_override_defaults_and_a_zero_token_lifetime_is_refused() {
        let args = |token_ttl_secs| SimArgs {
            listen: None,
            apps: vec![("wx_b".into(), SecretString::from("s"))],
            session_refresh_secs: Some(0),
            token_ttl_secs,
            open_platform: Some("op".into()),
        };
        let defaults = SimDefaults {
            apps: vec![SimApp {
                app_id: "wx_a".into(),
                app_secret: SecretString::from("a"),
                open_platform: None,
            }],
            ..SimDefaults::default()
        };
        let (listen, built) = config(args(None), defaults.clone()).unwrap();
        assert_eq!(listen, SimDefaults::default().listen);
        assert_eq!(built.apps.len(), 2);
        assert!(
            built
                .apps
                .iter()
                .all(|a| a.open_platform.as_deref() == Some("op"))
        );
        assert_eq!(built.session_refresh, Duration::ZERO);
        assert!(config(args(Some(0)), defaults).is_err());
    }
}
