//! mp-auth: an authentication service for WeChat Mini Programs (小程序一键登录).
//!
//! Layout:
//! - [`domain`]: newtypes parsed once at the edge (AppId, LoginCode, Phone, ...).
//! - [`config`]: typed, layered settings validated at start-up.
//! - [`wechat`]: the WeChat API client, access-token cache, encrypted-data crypto.
//! - [`store`]: users and WeChat identities in MySQL/MariaDB or SQLite (diesel-async).
//! - [`simulator`]: a faithful fake WeChat for dev mode, tests and benchmarks.
//! - [`gateway`]: the HTTP+JSON edge for mini-programs, a gRPC client of the service.
//! - [`bench`]: the load generator (`mp-auth bench`) and the database limit run.
//! - [`proto`]: the generated gRPC contract (used only by the edges).

pub mod cli;
pub mod config;
pub mod domain;
pub mod gateway;
pub mod grpc;
pub mod login;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod wechat;

/// Generated code for `proto/mpauth/v1/auth.proto`.
#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used, missing_docs)]
pub mod proto {
    tonic::include_proto!("mpauth.v1");
    /// The encoded descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mpauth_descriptor");
}
