#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The integration tests: one binary, one module per area.

mod db;
mod store;
