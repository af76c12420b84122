//! Serving the simulator: both APIs on one listener, in a background task.

use crate::{SimClient, config::SimulatorConfig, control, state::SimState, wechat_api};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Serves the simulator on `listener` (bind port 0 for a free port) in a
    /// spawned task until [`RunningSimulator::shutdown`] or drop.
    pub async fn start(
        listener: tokio::net::TcpListener,
        config: SimulatorConfig,
    ) -> anyhow::Result<RunningSimulator> {
        let addr = listener.local_addr()?;
        let state = Arc::new(SimState::new(&config));
        let router = wechat_api::router()
            .merge(control::router())
            .with_state(state);
        let cancel = CancellationToken::new();
        let stop = cancel.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "wechat simulator server failed");
            }
        });
        Ok(RunningSimulator { addr, cancel, task })
    }
}

/// A simulator serving in the background. Dropping it stops the server.
pub struct RunningSimulator {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSimulator {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, to use in place of `https://api.weixin.qq.com`
    /// (a wildcard listen address is reached through loopback).
    pub fn base_url(&self) -> String {
        base_url(self.addr)
    }

    /// A client of its control API.
    pub fn client(&self) -> SimClient {
        SimClient::new(&self.base_url())
    }

    /// Stops accepting, lets in-flight calls finish (up to 5 s), then returns.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// `http://IP:PORT` for a listen address, with wildcard addresses made loopback.
pub fn base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_reach_wildcard_listeners_through_loopback() {
        assert_eq!(
            base_url(([0, 0, 0, 0], 9400).into()),
            "http://127.0.0.1:9400"
        );
        assert_eq!(
            base_url(([127, 0, 0, 1], 1234).into()),
            "http://127.0.0.1:1234"
        );
        assert_eq!(base_url("[::]:80".parse().unwrap()), "http://[::1]:80");
    }
}
