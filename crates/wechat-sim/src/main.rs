//! The standalone `wechat-sim` binary: a fake WeChat on 127.0.0.1:9400 until
//! SIGINT/SIGTERM. `RUST_LOG` sets the log filter (default `info`).

use clap::Parser;
use std::process::ExitCode;
use wechat_sim::cli::{SimArgs, SimDefaults};

/// A faithful WeChat API simulator (jscode2session, stable_token,
/// getuserphonenumber, and the /_sim/ control API).
#[derive(Debug, Parser)]
#[command(name = "wechat-sim", version, about)]
struct Cli {
    #[command(flatten)]
    args: SimArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(wechat_sim::cli::run(
                cli.args,
                SimDefaults::default(),
                stop_signal(),
            ))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
