#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The integration tests: one test binary, one module per area.

mod k8s;
mod simulator;
mod wechat_client;
