#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Integration tests: one binary, one module per area.

mod gateway;
