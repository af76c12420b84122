//! `mp-auth keys generate` writes a new signing key pair (the private key
//! owner-only, never overwriting a file); `mp-auth keys show` prints the `kid`,
//! algorithm and public JWK of a PEM key, to tell keys apart during a rotation.

use super::signing::SigningKey;
use anyhow::Context as _;
use mp_auth_verifier::{Algorithm, VerifyingKey};
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

/// Arguments of `mp-auth keys`.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// What `mp-auth keys` does.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Write a new key pair: `<out>.pem` (PKCS#8 private key, mode 0600: the
    /// Secret) and `<out>.pub.pem` (public key), and print its kid.
    Generate {
        /// ES256 (P-256, the default: every JWT library has it) or EdDSA (Ed25519).
        #[arg(long, value_enum, default_value = "es256")]
        alg: KeyAlg,
        /// Path prefix of the files written (never overwritten).
        #[arg(long, default_value = "mp-auth-signing-key")]
        out: PathBuf,
    },
    /// Print the kid, algorithm and public JWK of a PEM key (private or public).
    Show {
        /// The PEM file.
        path: PathBuf,
    },
}

/// The algorithm of a generated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlg {
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// Ed25519.
    Eddsa,
}

/// Runs `mp-auth keys ...`.
pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KeysCommand::Generate { alg, out } => {
            let alg = match alg {
                KeyAlg::Es256 => Algorithm::Es256,
                KeyAlg::Eddsa => Algorithm::EdDsa,
            };
            let private_path = out.with_extension("pem");
            let public_path = out.with_extension("pub.pem");
            let key = SigningKey::generate(alg)?;
            write_new(&private_path, &key.private_pem, true)?;
            write_new(&public_path, &key.public_pem, false)?;
            println!("kid: {}", key.kid);
            println!("alg: {alg}");
            println!("private key (the Secret): {}", private_path.display());
            println!("public key: {}", public_path.display());
            println!(
                "use: MP_AUTH_TOKEN__SIGNING_KEY_FILE={} (rotation: see the README's key rotation steps)",
                private_path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Show { path } => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let key = VerifyingKey::from_pem(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            println!("kid: {}", key.kid());
            println!("alg: {}", key.algorithm());
            if let Some(jwk) = key.to_jwk() {
                println!("jwk: {}", serde_json::to_string(&jwk)?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Creates `path` (never overwrites); owner-only from the first byte when `secret`.
pub(crate) fn write_new(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).with_context(|| {
        format!(
            "creating {} (an existing key is never overwritten: choose another path)",
            path.display()
        )
    })?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_writes_a_private_key_owner_only_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("signing-key.pem");
        let args = || KeysArgs {
            command: KeysCommand::Generate {
                alg: KeyAlg::Eddsa,
                out: dir.path().join("signing-key"),
            },
        };
        run(args()).unwrap();
        let private = std::fs::read_to_string(&out).unwrap();
        let public = std::fs::read_to_string(dir.path().join("signing-key.pub.pem")).unwrap();
        let signing = SigningKey::from_pem(&private).unwrap();
        assert_eq!(signing.algorithm(), Algorithm::EdDsa);
        assert_eq!(
            VerifyingKey::from_pem(&public).unwrap().kid(),
            signing.kid()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        let err = run(args()).unwrap_err().to_string();
        assert!(err.contains("never overwritten"), "{err}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), private);
    }
}
