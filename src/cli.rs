//! Command-line interface: one subcommand per process role. Each subcommand
//! loads the layered settings, applies its flags on top, and hands off to the
//! module that owns the role.

use crate::config::{LogFormat, Settings};
use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::ExitCode};

/// mp-auth: WeChat Mini Program login service (小程序一键登录).
#[derive(Debug, Parser)]
#[command(name = "mp-auth", version, about)]
pub struct Cli {
    /// Optional TOML configuration file (layered under MP_AUTH_* environment variables).
    #[arg(long, global = true, env = "MP_AUTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format override: json or pretty.
    #[arg(long, global = true, value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "json" => Ok(LogFormat::Json),
        "pretty" => Ok(LogFormat::Pretty),
        other => Err(format!("unknown log format {other:?}: use json or pretty")),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the faithful WeChat API simulator (jscode2session, stable_token,
    /// getuserphonenumber, and the /_sim/ control API).
    WechatSim(crate::simulator::cli::SimArgs),
    /// Decrypt a legacy encryptedData payload and explain exactly what is wrong with it.
    Decrypt(crate::wechat::decrypt_cmd::DecryptArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(format) = cli.log_format {
        settings.log.format = format;
    }
    let result = match cli.command {
        Command::WechatSim(args) => run_async(crate::simulator::cli::run(settings, args)),
        Command::Decrypt(args) => crate::wechat::decrypt_cmd::run(&settings, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an async role on a multi-threaded tokio runtime.
pub fn run_async<F>(fut: F) -> anyhow::Result<ExitCode>
where
    F: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(fut)
}
