//! Command-line interface: one subcommand per process role, one file per
//! subcommand. Each loads the layered settings, applies its flags on top, and
//! hands off to the module that owns the role. `dev`, `login` and `wechat-sim`
//! are dev tooling, compiled only with the `dev` feature (on by default).

pub mod callers;
pub mod decrypt;
#[cfg(feature = "dev")]
pub mod dev;
pub mod gateway;
pub mod keys;
#[cfg(feature = "dev")]
pub mod login;
pub mod migrate;
pub mod serve;
#[cfg(feature = "dev")]
pub mod wechat_sim;

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
    #[cfg(feature = "dev")]
    WechatSim(wechat_sim::SimArgs),
    /// Decrypt a legacy encryptedData payload and explain exactly what is wrong with it.
    Decrypt(decrypt::DecryptArgs),
    /// Run the gRPC login service (`mpauth.v1.Auth`, health, reflection).
    Serve(serve::ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// All-in-one dev mode: simulator + gRPC service + gateway on an embedded SQLite database.
    #[cfg(feature = "dev")]
    Dev(dev::DevArgs),
    /// Play a mini-program user: mint codes at the simulator, log in, print the token's claims.
    #[cfg(feature = "dev")]
    Login(login::LoginArgs),
    /// Run the HTTP+JSON gateway for mini-programs (`POST /auth/mp_login`), a client of `serve`.
    Gateway(gateway::GatewayArgs),
    /// Token signing keys: `keys generate` writes a new key pair, `keys show` names a key.
    Keys(keys::KeysArgs),
    /// Internal callers: `callers new-key` makes an API key and its config entry.
    #[command(subcommand)]
    Callers(callers::CallersCommand),
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
        #[cfg(feature = "dev")]
        Command::WechatSim(args) => run_async(wechat_sim::run(settings, args)),
        Command::Decrypt(args) => decrypt::run(&settings, args),
        Command::Serve(args) => run_async(serve::run(settings, args)),
        Command::Migrate => run_async(migrate::run(settings)),
        #[cfg(feature = "dev")]
        Command::Dev(args) => run_async(dev::run(settings, args)),
        #[cfg(feature = "dev")]
        Command::Login(args) => run_async(login::run(args)),
        Command::Gateway(args) => run_async(gateway::run(settings, args)),
        Command::Keys(args) => keys::run(args),
        Command::Callers(command) => callers::run(command),
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

/// Serves `/metrics` on `admin.metrics_listen`, when set, for the life of the process.
async fn start_metrics(settings: &Settings) -> anyhow::Result<()> {
    if let Some(addr) = settings.admin.metrics_listen {
        crate::telemetry::serve_metrics(addr, std::future::pending()).await?;
    }
    Ok(())
}
