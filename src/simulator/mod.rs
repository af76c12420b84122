//! A faithful WeChat API simulator for dev mode, tests and benchmarks.
//! (Being built: see issue 3.)

pub mod cli;
