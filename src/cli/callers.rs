//! `mp-auth callers ...`: API keys of internal callers.

use clap::Subcommand;
use std::process::ExitCode;

/// `mp-auth callers ...`.
#[derive(Debug, Subcommand)]
pub enum CallersCommand {
    /// Print a new API key (give it to the calling service only) and the
    /// `[[callers]]` entry with its SHA-256 for mp-auth's configuration.
    NewKey {
        /// The calling service's name (audit logs, metrics).
        #[arg(long)]
        name: String,
        /// Comma-separated permissions, e.g. `users:read,tokens:verify`.
        #[arg(long, value_delimiter = ',')]
        permissions: Vec<String>,
    },
}

/// Runs `mp-auth callers ...`.
pub fn run(command: CallersCommand) -> anyhow::Result<ExitCode> {
    match command {
        CallersCommand::NewKey { name, permissions } => new_key(&name, &permissions),
    }
}

/// `mp-auth callers new-key`: an API key and its configuration entry.
fn new_key(name: &str, permissions: &[String]) -> anyhow::Result<ExitCode> {
    for p in permissions {
        if crate::callers::Permission::parse(p).is_none() {
            let known: Vec<&str> = crate::callers::Permission::ALL
                .iter()
                .map(|p| p.as_str())
                .collect();
            anyhow::bail!("unknown permission {p:?}; known: {}", known.join(", "));
        }
    }
    let key = crate::callers::generate_key();
    let list: Vec<String> = permissions.iter().map(|p| format!("\"{p}\"")).collect();
    println!("# The API key: give it to {name} only (its own Secret), never to mp-auth.");
    println!("{key}");
    println!();
    println!("# mp-auth's callers.toml entry (only the SHA-256 of the key):");
    println!("[[callers]]");
    println!("name = \"{name}\"");
    println!("key_sha256 = \"{}\"", crate::callers::key_hash_hex(&key));
    println!("permissions = [{}]", list.join(", "));
    Ok(ExitCode::SUCCESS)
}
