//! `mp-auth wechat-sim` (dev feature): the standalone simulator's command with
//! its defaults taken from mp-auth's settings (`simulator.*`, `apps`).

use crate::config::Settings;
use std::{process::ExitCode, time::Duration};
use wechat_sim::{SimApp, cli::SimDefaults};

pub use wechat_sim::cli::SimArgs;

/// Runs the simulator until SIGINT/SIGTERM.
pub async fn run(settings: Settings, args: SimArgs) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(&settings.log);
    let mut apps = Vec::new();
    if !settings.apps.is_empty() {
        for app in settings.app_credentials()? {
            apps.push(SimApp {
                app_id: app.app_id.as_str().to_owned(),
                app_secret: app.app_secret,
                open_platform: None,
            });
        }
    }
    let defaults = SimDefaults {
        listen: settings.simulator.listen,
        apps,
        session_refresh: Duration::from_secs(settings.simulator.session_refresh_secs),
        token_ttl: Duration::from_secs(settings.simulator.token_ttl_secs),
    };
    wechat_sim::cli::run(args, defaults, crate::shutdown::signal()).await?;
    Ok(ExitCode::SUCCESS)
}
