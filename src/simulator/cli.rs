//! The `wechat-sim` command.

use crate::config::Settings;
use std::process::ExitCode;

/// Arguments of `mp-auth wechat-sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {}

/// Runs the simulator until SIGINT/SIGTERM.
pub async fn run(_settings: Settings, _args: SimArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the simulator is not built yet")
}
