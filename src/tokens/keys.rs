//! The key set: exactly one active signing key and the retired keys that
//! still verify, loaded from the settings (PEM inline or `*_file`), checked at
//! start-up with messages that say how to fix the key, and published as a
//! JWKS (public keys only; an HS256 secret is never published).
//!
//! Rotation is a configuration change plus a rolling restart (see the README):
//! publish the next key as a verification key, make it the signing key, and
//! remove the old one once every token it signed has expired.

use super::signing::SigningKey;
use crate::config::{ConfigError, TokenSettings, invalid, resolve_secret};
use mp_auth_verifier::{Algorithm, JwkSet, KeyError, Rules, Verifier, VerifyingKey};
use secrecy::{ExposeSecret, SecretString};
use std::{path::Path, sync::Arc};

/// The active signing key, every verification key, and the JWKS.
pub struct KeyRing {
    signing: SigningKey,
    verifier: Arc<Verifier>,
    jwks: JwkSet,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing", &self.signing)
            .field("verifying", &self.kids())
            .finish()
    }
}

impl KeyRing {
    /// The ring of `signing` plus the `retained` keys, verifying under
    /// `issuer`/`audience` with `leeway_secs`. A retained key identical to the
    /// signing key (same `kid`) is the same key and is listed once.
    pub fn new(
        signing: SigningKey,
        retained: Vec<VerifyingKey>,
        issuer: &str,
        audience: &str,
        leeway_secs: u64,
    ) -> Result<Self, KeyError> {
        let mut keys = vec![signing.verifying_key().clone()];
        for key in retained {
            if !keys.iter().any(|k| k.kid() == key.kid()) {
                keys.push(key);
            }
        }
        // Publish the active key first, then the retained ones in configured order.
        let jwks: JwkSet = keys.iter().filter_map(VerifyingKey::to_jwk).collect();
        let mut algorithms: Vec<Algorithm> = keys.iter().map(VerifyingKey::algorithm).collect();
        algorithms.sort();
        algorithms.dedup();
        let rules = Rules {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway_secs,
            algorithms,
        };
        // Tokens from before keys had ids carry no kid: only an HS256 key can have made them.
        let legacy = keys
            .iter()
            .find(|k| k.algorithm() == Algorithm::Hs256)
            .map(|k| k.kid().to_owned());
        let mut verifier = Verifier::new(keys, rules)?;
        if let Some(kid) = legacy {
            verifier = verifier.with_kidless_key(&kid);
        }
        Ok(Self {
            signing,
            verifier: Arc::new(verifier),
            jwks,
        })
    }

    /// Loads and checks the keys of `token` (see [`TokenSettings`]).
    pub fn from_settings(token: &TokenSettings) -> Result<Self, ConfigError> {
        let hs256 = resolve_secret(
            "token.hs256_secret",
            &token.hs256_secret,
            &token.hs256_secret_file,
        )?;
        let hs256_key = |secret: &SecretString| {
            SigningKey::hs256(secret.expose_secret().as_bytes())
                .map_err(|e| key_error("token.hs256_secret", &e))
        };
        let signing_pem = resolve_secret(
            "token.signing_key",
            &token.signing_key,
            &token.signing_key_file,
        )?;
        let signing_setting = match &token.signing_key_file {
            Some(path) if token.signing_key.is_none() => {
                format!("token.signing_key_file ({})", path.display())
            }
            _ => "token.signing_key".to_owned(),
        };
        let mut retained = Vec::new();
        let signing = match (signing_pem, &hs256) {
            (Some(pem), _) => {
                let key = SigningKey::from_pem(pem.expose_secret())
                    .map_err(|e| key_error(&signing_setting, &e))?;
                if let Some(secret) = &hs256 {
                    // Migrating from HS256: its tokens keep verifying until they expire.
                    retained.push(hs256_key(secret)?.verifying_key().clone());
                    tracing::warn!(
                        "token.hs256_secret is set beside token.signing_key: HS256 tokens still \
                         verify; remove the secret once token.ttl_secs has passed"
                    );
                }
                key
            }
            (None, Some(secret)) => hs256_key(secret)?,
            (None, None) => {
                return Err(invalid(
                    "token.signing_key",
                    "no token signing key is configured",
                    "generate one with `mp-auth keys generate --out signing-key.pem` and set \
                     MP_AUTH_TOKEN__SIGNING_KEY_FILE=/path/signing-key.pem (ES256, recommended), or \
                     set MP_AUTH_TOKEN__HS256_SECRET_FILE to a file of at least 32 random bytes \
                     (`openssl rand -base64 48`) for a single-service setup",
                ));
            }
        };
        for (i, pem) in token.verification_keys.iter().enumerate() {
            let key = VerifyingKey::from_pem(pem.expose_secret())
                .map_err(|e| key_error(&format!("token.verification_keys[{i}]"), &e))?;
            retained.push(key);
        }
        for path in &token.verification_key_files {
            retained.push(read_verification_key(path)?);
        }
        Self::new(
            signing,
            retained,
            &token.issuer,
            &token.audience,
            token.leeway_secs,
        )
        .map_err(|e| key_error("token.verification_keys", &e))
    }

    /// The active signing key.
    pub fn signing(&self) -> &SigningKey {
        &self.signing
    }

    /// The verifier of every key (active and retained).
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// The public keys, active first (HS256 keys are never published).
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// The `kid` of every verification key, active first.
    pub fn kids(&self) -> Vec<String> {
        let mut kids = vec![self.signing.kid().to_owned()];
        kids.extend(
            self.verifier
                .keys()
                .map(|k| k.kid().to_owned())
                .filter(|k| k != self.signing.kid()),
        );
        kids
    }
}

fn read_verification_key(path: &Path) -> Result<VerifyingKey, ConfigError> {
    let setting = format!("token.verification_key_files ({})", path.display());
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        setting: "token.verification_key_files".into(),
        path: path.to_owned(),
        source,
    })?;
    VerifyingKey::from_pem(&text).map_err(|e| key_error(&setting, &e))
}

/// The start-up error for bad key material in `setting`, with the fix.
fn key_error(setting: &str, error: &KeyError) -> ConfigError {
    const GENERATE: &str = "generate a key with `mp-auth keys generate --out signing-key.pem` \
        (ES256; `--alg eddsa` for Ed25519), or with OpenSSL: \
        `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out signing-key.pem`";
    let fix = match error {
        KeyError::NotPem | KeyError::Malformed(_) => GENERATE,
        KeyError::SeveralBlocks(_) => {
            "put exactly one key in each file; list retired keys one per file in \
             token.verification_key_files"
        }
        KeyError::NotAKey(_) => "give the key itself (BEGIN PRIVATE KEY), not a certificate",
        KeyError::Encrypted => {
            "decrypt it (`openssl pkey -in encrypted.pem -out signing-key.pem`) and protect the \
             file instead (a Kubernetes Secret, mode 0600)"
        }
        KeyError::Sec1 => {
            "convert it to PKCS#8: `openssl pkcs8 -topk8 -nocrypt -in ec-key.pem -out signing-key.pem`"
        }
        KeyError::Rsa | KeyError::WrongCurve(_) | KeyError::Unsupported(_) => {
            "mp-auth signs with P-256 (ES256) or Ed25519 (EdDSA) keys only: generate one with \
             `mp-auth keys generate --out signing-key.pem`"
        }
        KeyError::PublicNotPrivate => {
            "token.signing_key needs the private key (BEGIN PRIVATE KEY); public keys belong in \
             token.verification_key_files"
        }
        KeyError::WeakSecret(_) => {
            "use at least 32 random bytes (`openssl rand -base64 48`), or better an ES256 key \
             (`mp-auth keys generate`)"
        }
        KeyError::Jwk(_) | KeyError::DuplicateKid(_) => "list each key once",
    };
    invalid(setting, error.to_string(), fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> (TokenSettings, ()) {
        (TokenSettings::default(), ())
    }

    fn pem_file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_generated_key_loads_signs_and_is_published() {
        let generated = SigningKey::generate(Algorithm::Es256).unwrap();
        let (mut token, ()) = settings();
        token.signing_key = Some(SecretString::from(generated.private_pem.clone()));
        let ring = KeyRing::from_settings(&token).unwrap();
        assert_eq!(ring.signing().kid(), generated.kid);
        assert_eq!(ring.signing().algorithm(), Algorithm::Es256);
        assert_eq!(ring.jwks().keys.len(), 1);
        assert_eq!(
            ring.jwks().keys[0].kid.as_deref(),
            Some(generated.kid.as_str())
        );
        let public = VerifyingKey::from_pem(&generated.public_pem).unwrap();
        assert_eq!(public.kid(), generated.kid);
    }

    #[test]
    fn retained_keys_verify_and_are_published_after_the_active_one() {
        let dir = tempfile::tempdir().unwrap();
        let old = SigningKey::generate(Algorithm::Es256).unwrap();
        let new = SigningKey::generate(Algorithm::EdDsa).unwrap();
        let (mut token, ()) = settings();
        token.signing_key_file = Some(pem_file(dir.path(), "new.pem", &new.private_pem));
        token.verification_key_files = vec![
            pem_file(dir.path(), "old.pub.pem", &old.public_pem),
            // The active key listed again (a half-finished edit) is harmless.
            pem_file(dir.path(), "new.pub.pem", &new.public_pem),
        ];
        let ring = KeyRing::from_settings(&token).unwrap();
        assert_eq!(ring.kids(), [new.kid.clone(), old.kid.clone()]);
        let published: Vec<_> = ring
            .jwks()
            .keys
            .iter()
            .filter_map(|k| k.kid.clone())
            .collect();
        assert_eq!(published, [new.kid, old.kid]);
        assert_eq!(
            ring.verifier().rules().algorithms,
            [Algorithm::Es256, Algorithm::EdDsa]
        );
    }

    #[test]
    fn hs256_alone_signs_and_beside_a_key_only_verifies() {
        let (mut token, ()) = settings();
        token.hs256_secret = Some(SecretString::from("0123456789abcdef0123456789abcdef-hs"));
        let ring = KeyRing::from_settings(&token).unwrap();
        assert_eq!(ring.signing().algorithm(), Algorithm::Hs256);
        assert!(
            ring.jwks().keys.is_empty(),
            "an HS256 secret is never published"
        );
        token.signing_key = Some(SecretString::from(
            SigningKey::generate(Algorithm::Es256).unwrap().private_pem,
        ));
        let ring = KeyRing::from_settings(&token).unwrap();
        assert_eq!(ring.signing().algorithm(), Algorithm::Es256);
        assert_eq!(ring.kids().len(), 2);
        assert_eq!(ring.jwks().keys.len(), 1);
    }

    fn start_up_error(token: &TokenSettings) -> String {
        KeyRing::from_settings(token).unwrap_err().to_string()
    }

    #[test]
    fn bad_key_material_stops_start_up_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let (token, _) = settings();
        let err = start_up_error(&token);
        assert!(err.contains("no token signing key"), "{err}");
        assert!(err.contains("mp-auth keys generate"), "{err}");

        let mut t = token.clone();
        t.hs256_secret = Some(SecretString::from("short"));
        let err = start_up_error(&t);
        assert!(err.contains("at least 32 bytes"), "{err}");
        assert!(err.contains("openssl rand"), "{err}");

        let generated = SigningKey::generate(Algorithm::Es256).unwrap();
        let mut t = token.clone();
        t.signing_key_file = Some(pem_file(dir.path(), "pub.pem", &generated.public_pem));
        let err = start_up_error(&t);
        assert!(err.contains("signing_key_file"), "{err}");
        assert!(err.contains("public key"), "{err}");
        assert!(err.contains("BEGIN PRIVATE KEY"), "{err}");

        let mut t = token.clone();
        t.signing_key = Some(SecretString::from(P384));
        let err = start_up_error(&t);
        assert!(err.contains("P-384"), "{err}");
        assert!(err.contains("mp-auth keys generate"), "{err}");

        let mut t = token.clone();
        t.signing_key = Some(SecretString::from(SEC1));
        let err = start_up_error(&t);
        assert!(err.contains("openssl pkcs8 -topk8"), "{err}");

        let mut t = token.clone();
        t.signing_key = Some(SecretString::from("not a key at all"));
        let err = start_up_error(&t);
        assert!(err.contains("not a PEM key"), "{err}");

        let mut t = token.clone();
        t.signing_key = Some(SecretString::from(generated.private_pem.clone()));
        t.verification_key_files = vec![dir.path().join("missing.pem")];
        let err = start_up_error(&t);
        assert!(err.contains("missing.pem"), "{err}");

        let mut t = token;
        t.signing_key = Some(SecretString::from(generated.private_pem));
        t.verification_keys = vec![SecretString::from(P384)];
        let err = start_up_error(&t);
        assert!(err.contains("verification_keys[0]"), "{err}");
    }

    #[test]
    fn errors_never_contain_the_key() {
        let generated = SigningKey::generate(Algorithm::Es256).unwrap();
        let body: String = generated.private_pem.lines().nth(1).unwrap().to_owned();
        // A private key where a PEM with one block is expected: two blocks.
        let t = TokenSettings {
            signing_key: Some(SecretString::from(format!(
                "{}{}",
                generated.private_pem, generated.private_pem
            ))),
            ..TokenSettings::default()
        };
        let err = start_up_error(&t);
        assert!(!err.contains(&body), "{err}");
        let ring_debug = {
            let t = TokenSettings {
                signing_key: Some(SecretString::from(generated.private_pem)),
                ..TokenSettings::default()
            };
            format!("{:?}", KeyRing::from_settings(&t).unwrap())
        };
        assert!(!ring_debug.contains(&body), "{ring_debug}");
    }

    /// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384` (test only).
    const P384: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDDLXxRu1nMYsD66jec1
8hmNe7DWrbdhNUydhidSjpqQWedTS6gXgEc/O5uGy3czTiGhZANiAAQBxHyQ5gg8
1WkFqGXej8kgzSlhE7IhKpvKSAYUyYhcyprP1rx/3Ee0++fwTjjL2gv7jh7BYsy1
GP3d656x1/sTzS11CQA2Sb1nBAGAEhBlqQ3PdLQAFuMKgzQtDTd7g8k=
-----END PRIVATE KEY-----
";
    /// A P-256 key in SEC1 form (`openssl ec`), test only.
    const SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIJuLalIqUB7T9rXA/1gL/062HLN6o/fVByerUR+Vr053oAoGCCqGSM49
AwEHoUQDQgAEISev3HgovKodHf68YSfFK7Nriw0dJWElVePRrvzCUhg09hgswhW8
0+QO5uD8DwXH7VIhblcrhSevUvi+LJHFAg==
-----END EC PRIVATE KEY-----
";
}
