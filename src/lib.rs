//! mp-auth: an authentication service for WeChat Mini Programs (小程序一键登录).
//!
//! Layout (every module):
//! - [`cli`]: one file per subcommand (`serve`, `gateway`, `migrate`, `decrypt`,
//!   `keys`, `callers`; `dev`, `login` and `wechat-sim` with the default `dev` feature).
//! - [`app`]: the application's long-lived parts and its background work.
//! - [`startup`]: the composition root: settings to the [`app::App`], built once.
//! - [`config`]: typed, layered settings; [`config::types`] validate while they parse.
//! - [`api`]: the contract both edges share: error reasons, metadata and health
//!   names, the login JSON bodies.
//! - [`domain`]: newtypes parsed once at the edge (AppId, LoginCode, Phone,
//!   AccessToken, ...).
//! - [`login`]: the login use case, its errors and settings, the session-key vault.
//! - [`sessions`]: sessions and rotating refresh tokens; refresh, logout; the
//!   revocation cache.
//! - [`users`]: the user directory for internal callers.
//! - [`callers`]: internal callers' API keys and permissions.
//! - [`wechat`]: the WeChat API client, access-token cache, encrypted-data crypto.
//! - [`store`]: users, identities and sessions in MySQL/MariaDB or SQLite (diesel-async).
//! - [`tokens`]: access tokens (JWT): the key ring, signing, verification, JWKS.
//! - [`grpc`]: the gRPC edge: the services, their status table, health and
//!   reflection, run for a built [`app::App`].
//! - [`gateway`]: the HTTP+JSON edge for mini-programs, a gRPC client of the
//!   service; imports [`api`], never [`grpc`].
//! - [`clock`]: the one wall clock; [`telemetry`]: logs and Prometheus metrics;
//!   [`shutdown`]: SIGTERM/SIGINT; [`tls`]: the process-wide rustls provider.
//! - [`proto`]: the generated gRPC contract (used only by the edges and [`api`]);
//!   `proto_debug`: redacting `Debug` for its messages that carry secrets;
//!   `edges_agree` (tests only): the gRPC and HTTP tables checked against each other.
//!
//! Tooling lives in other workspace members: the WeChat simulator in
//! `crates/wechat-sim`, the load generator in `crates/mp-auth-bench`.

pub mod api;
pub mod app;
pub mod callers;
pub mod cli;
pub mod clock;
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

/// Generated code for `proto/mpauth/v1/*.proto` (auth, users, errors).
#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used, missing_docs)]
pub mod proto {
    tonic::include_proto!("mpauth.v1");
    /// The encoded descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mpauth_descriptor");
}
