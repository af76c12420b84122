//! A faithful WeChat API simulator for dev mode, tests and benchmarks: the
//! server API mp-auth calls (`jscode2session`, `stable_token`,
//! `getuserphonenumber`) plus a `/_sim/` control API that plays the WeChat
//! client (wx.login, the phone button) and injects faults.
//!
//! Layout:
//! - [`state`]: the in-memory world (apps, users, session keys, codes, tokens).
//! - `wechat_api`: the WeChat endpoints, byte-for-byte like the real ones.
//! - [`control`]: the `/_sim/` control API.
//! - [`faults`]: injected latency, HTTP errors, garbage and errcodes.
//! - [`client`]: [`SimClient`], a typed client of the control API.
//! - [`cli`]: the `mp-auth wechat-sim` command.

pub mod cli;
pub mod client;
pub mod control;
pub mod faults;
pub mod state;
mod wechat_api;

pub use client::SimClient;
pub use control::{MintedLogin, MintedPhone, SimStats};
pub use faults::{Fault, FaultEndpoint};

use crate::domain::AppId;
use secrecy::SecretString;
use serde::Deserialize;
use state::SimState;
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// A mini program the simulator knows.
#[derive(Debug, Clone, Deserialize)]
pub struct SimApp {
    /// Its AppID.
    pub app_id: AppId,
    /// Its AppSecret.
    pub app_secret: SecretString,
    /// The WeChat Open Platform account it is bound to: apps sharing one give
    /// a user the same unionid. `None`: jscode2session returns no unionid.
    #[serde(default)]
    pub open_platform: Option<String>,
}

/// How the simulated WeChat behaves.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Apps known from the start (more can be registered with `POST /_sim/apps`).
    pub apps: Vec<SimApp>,
    /// `wx.login` replaces a user's session_key once it is at least this old
    /// (zero: every `wx.login` replaces it).
    pub session_refresh: Duration,
    /// Lifetime of a stable access_token (WeChat: 7200 s).
    pub token_ttl: Duration,
    /// Lifetime of login and phone codes (WeChat: 300 s).
    pub code_ttl: Duration,
    /// Minimum time between `force_refresh=true` calls (WeChat: 30 s; tests use 0).
    pub force_refresh_min_interval: Duration,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            apps: Vec::new(),
            session_refresh: Duration::from_secs(300),
            token_ttl: Duration::from_secs(7200),
            code_ttl: Duration::from_secs(300),
            force_refresh_min_interval: Duration::from_secs(30),
        }
    }
}

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

    #[test]
    fn app_secrets_do_not_show_in_debug() {
        let app = SimApp {
            app_id: AppId::parse("wx1").unwrap(),
            app_secret: SecretString::from("topsecret"),
            open_platform: None,
        };
        assert!(!format!("{app:?}").contains("topsecret"));
    }
}
