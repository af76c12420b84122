#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The integration tests: one test binary, one module per area.

mod cluster;
mod db;
mod decrypt_cmd;
mod dev;
mod galera;
mod gateway;
mod gateway_e2e;
mod gateway_memory;
mod grpcurl;
mod health;
mod helpers;
mod k8s;
mod limits;
mod log_leaks;
mod login;
mod metrics;
mod offline;
mod private_db;
mod sessions;
mod sessions_gateway;
mod shutdown;
mod simulator;
mod store;
mod users;
mod verify;
mod wechat_client;
