//! `mp-auth gateway`: the HTTP+JSON edge for mini-programs, a client of `serve`.

use crate::config::Settings;
use std::process::ExitCode;

/// Arguments of `mp-auth gateway`.
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// HTTP listen address (default 0.0.0.0:8080; MP_AUTH_GATEWAY__LISTEN).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// URL of the gRPC service (default http://127.0.0.1:50051; MP_AUTH_GATEWAY__BACKEND_URL).
    #[arg(long)]
    pub backend: Option<String>,
}

/// Runs `mp-auth gateway`.
pub async fn run(mut settings: Settings, args: GatewayArgs) -> anyhow::Result<ExitCode> {
    if let Some(listen) = args.listen {
        settings.gateway.listen = listen;
    }
    if let Some(backend) = args.backend {
        settings.gateway.backend_url = backend;
    }
    crate::telemetry::init(&settings.log);
    super::start_metrics(&settings).await?;
    let gateway = crate::gateway::Gateway::build(&settings).await?;
    tracing::info!(
        addr = %gateway.local_addr(),
        backend = %settings.gateway.backend_url,
        "HTTP gateway listening"
    );
    gateway.run_until(crate::shutdown::signal()).await?;
    Ok(ExitCode::SUCCESS)
}
