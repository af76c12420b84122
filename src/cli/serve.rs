//! `mp-auth serve`: the gRPC login service (`mpauth.v1.Auth`, health, reflection)
//! until SIGTERM/SIGINT, then a bounded drain.

use crate::config::Settings;
use std::{path::PathBuf, process::ExitCode};

/// Arguments of `mp-auth serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// gRPC listen address (default 0.0.0.0:50051; MP_AUTH_GRPC__LISTEN).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Run pending migrations before serving (MP_AUTH_DATABASE__MIGRATE_ON_START).
    #[arg(long)]
    pub migrate: bool,
    /// Once listening, write the bound gRPC address (e.g. `127.0.0.1:40123`) to
    /// this file, atomically: for scripts and tests that pass `--listen 127.0.0.1:0`.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

/// Runs `mp-auth serve`.
pub async fn run(mut settings: Settings, args: ServeArgs) -> anyhow::Result<ExitCode> {
    if let Some(listen) = args.listen {
        settings.grpc.listen = listen;
    }
    settings.database.migrate_on_start |= args.migrate;
    crate::telemetry::init(&settings.log);
    super::start_metrics(&settings).await?;
    let server = crate::startup::grpc_server(&settings).await?;
    // Poll the signal future once so its SIGTERM/SIGINT handlers are installed
    // before anyone learns the address: an early signal then drains, not kills.
    let mut shutdown = Box::pin(crate::shutdown::signal());
    if futures::poll!(&mut shutdown).is_ready() {
        return Ok(ExitCode::SUCCESS);
    }
    let addr = server.local_addr();
    tracing::info!(%addr, "gRPC server listening");
    if let Some(path) = &args.ready_file {
        write_ready_file(path, addr)?;
    }
    server.run_until(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `addr` to `path` through a temporary file and a rename, so a reader
/// polling for the file never sees it half-written.
fn write_ready_file(path: &std::path::Path, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{addr}\n"))
        .with_context(|| format!("writing --ready-file {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("writing --ready-file {}", path.display()))?;
    Ok(())
}
