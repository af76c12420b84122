//! `mp-auth keys ...`: token signing keys (generation and inspection live in
//! `tokens::keygen`; this is only the command's entry).

pub use crate::tokens::keygen::KeysArgs;
use std::process::ExitCode;

/// Runs `mp-auth keys ...`.
pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    crate::tokens::keygen::run(args)
}
