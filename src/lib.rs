//! mp-auth: an authentication service for WeChat Mini Programs (小程序一键登录).
//!
//! Layout (every module):
//! - [`cli`]: one file per subcommand (`serve`, `gateway`, `migrate`, `decrypt`;
//!   `dev`, `login` and `wechat-sim` with the default `dev` feature).
//! - [`config`]: typed, layered settings validated at start-up.
//! - [`domain`]: newtypes parsed once at the edge (AppId, LoginCode, Phone, ...).
//! - [`login`]: the login use case, its errors, the session-key vault.
//! - [`sessions`]: sessions and rotating refresh tokens; refresh, logout.
//! - [`users`]: the user directory for internal callers.
//! - [`callers`]: internal callers' API keys and permissions.
//! - [`wechat`]: the WeChat API client, access-token cache, encrypted-data crypto.
//! - [`store`]: users and WeChat identities in MySQL/MariaDB or SQLite (diesel-async).
//! - [`tokens`]: access tokens (JWT) behind a signer trait.
//! - [`grpc`]: the gRPC service, its status table, health and reflection.
//! - [`gateway`]: the HTTP+JSON edge for mini-programs, a gRPC client of the service.
//! - [`telemetry`]: logs and Prometheus metrics; [`shutdown`]: SIGTERM/SIGINT;
//!   [`tls`]: the process-wide rustls provider.
//! - [`proto`]: the generated gRPC contract (used only by the edges);
//!   `proto_debug`: redacting `Debug` for its messages that carry secrets.
//!
//! Tooling lives in other workspace members: the WeChat simulator in
//! `crates/wechat-sim`, the load generator in `crates/mp-auth-bench`.

pub mod api;
pub mod callers;
pub mod cli;
pub mod config;
pub mod domain;
#[cfg(test)]
mod edges_agree;
pub mod gateway;
pub mod grpc;
pub mod login;
mod proto_debug;
pub mod sessions;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod users;
pub mod wechat;

/// Generated code for `proto/mpauth/v1/auth.proto`.
#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used, missing_docs)]
pub mod proto {
    tonic::include_proto!("mpauth.v1");
    /// The encoded descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mpauth_descriptor");
}
