//! `mp-auth keys ...`: token signing keys.

use anyhow::Context as _;
use clap::Subcommand;
use std::{path::PathBuf, process::ExitCode};

/// `mp-auth keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new ES256 (P-256) key pair: `<out>.pem` (PKCS#8 private key,
    /// mode 0600: the Secret) and `<out>.pub.pem` (public key), and print its kid.
    Generate {
        /// Path prefix of the files written.
        #[arg(long, default_value = "mp-auth-signing-key")]
        out: PathBuf,
    },
}

/// Runs `mp-auth keys ...`.
pub fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Generate { out } => generate(&out),
    }
}

/// `mp-auth keys generate`: a new ES256 key pair on disk.
fn generate(out: &std::path::Path) -> anyhow::Result<ExitCode> {
    let (private, public) = crate::tokens::Es256Signer::generate()?;
    let kid = crate::tokens::Es256Signer::new(&private, &[])?
        .kid()
        .to_owned();
    let private_path = out.with_extension("pem");
    let public_path = out.with_extension("pub.pem");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&private_path).with_context(|| {
        format!(
            "creating {} (it must not exist yet)",
            private_path.display()
        )
    })?;
    std::io::Write::write_all(&mut file, private.as_bytes())?;
    std::fs::write(&public_path, public)
        .with_context(|| format!("writing {}", public_path.display()))?;
    println!("kid: {kid}");
    println!("private key (the Secret): {}", private_path.display());
    println!("public key: {}", public_path.display());
    println!(
        "use: MP_AUTH_TOKEN__SIGNING_KEY_FILE={}",
        private_path.display()
    );
    Ok(ExitCode::SUCCESS)
}
