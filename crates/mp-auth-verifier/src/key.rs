//! Verification keys: ES256 (ECDSA P-256), EdDSA (Ed25519) and HS256 (a
//! shared secret, for single-service setups; never published). Each key has
//! a `kid` and exactly one algorithm: a token is checked only with the key its
//! `kid` names and only with that key's algorithm.

use crate::jwk::Jwk;
use crate::pem::{self, KeyKind};
use base64::Engine as _;
use ring::{digest, hmac, signature};

/// A JWS algorithm mp-auth signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// ECDSA with P-256 and SHA-256 (the default).
    Es256,
    /// Ed25519.
    EdDsa,
    /// HMAC-SHA256 with a shared secret (single-service setups only).
    Hs256,
}

impl Algorithm {
    /// The JWS `alg` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Hs256 => "HS256",
        }
    }

    /// Parses a JWS `alg` name (case-sensitive, as RFC 7515 says).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            "HS256" => Some(Self::Hs256),
            _ => None,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why key material was refused. Messages name the problem precisely; the
/// service adds how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No `-----BEGIN ...-----` block at all.
    #[error("not a PEM key (expected -----BEGIN PRIVATE KEY----- or -----BEGIN PUBLIC KEY-----)")]
    NotPem,
    /// More than one PEM block where one key was expected.
    #[error("{0} PEM blocks found where one key was expected")]
    SeveralBlocks(usize),
    /// A PEM block that is not a key (e.g. `CERTIFICATE`).
    #[error("a {0} is not a key")]
    NotAKey(String),
    /// A password-protected key.
    #[error("the key is encrypted")]
    Encrypted,
    /// An `EC PRIVATE KEY` (SEC1) instead of PKCS#8.
    #[error("the key is in SEC1 format (BEGIN EC PRIVATE KEY), not PKCS#8 (BEGIN PRIVATE KEY)")]
    Sec1,
    /// An RSA key.
    #[error("RSA keys are not supported (ES256 or EdDSA only)")]
    Rsa,
    /// An EC key on another curve than P-256.
    #[error("the key is on curve {0}, not P-256 (ES256)")]
    WrongCurve(String),
    /// Another key type, by its algorithm OID or JWK `kty`.
    #[error("unsupported key type {0} (ES256 or EdDSA only)")]
    Unsupported(String),
    /// A public key where a private (signing) key is needed.
    #[error("this is a public key; signing needs the PRIVATE key (BEGIN PRIVATE KEY)")]
    PublicNotPrivate,
    /// The encoding is broken.
    #[error("malformed key: {0}")]
    Malformed(String),
    /// An HS256 secret shorter than 32 bytes.
    #[error("an HS256 secret must be at least 32 bytes, got {0}")]
    WeakSecret(usize),
    /// A JWK whose fields do not describe a usable key.
    #[error("unusable JWK: {0}")]
    Jwk(String),
    /// Two keys with one `kid`.
    #[error("two keys have the kid {0:?}")]
    DuplicateKid(String),
}

/// A key that verifies signatures of one algorithm, named by its `kid`.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    material: Material,
}

#[derive(Clone)]
enum Material {
    /// The uncompressed P-256 point (`04 || x || y`).
    Es256(Vec<u8>),
    /// The 32-byte Ed25519 public key.
    EdDsa([u8; 32]),
    /// The HMAC key (secret).
    Hs256(hmac::Key),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the material: an HS256 key is a secret.
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.algorithm())
            .finish()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl VerifyingKey {
    /// An ES256 key from its uncompressed SEC1 point (65 bytes, `04 || x || y`);
    /// its `kid` is the RFC 7638 thumbprint.
    pub fn es256(point: &[u8]) -> Result<Self, KeyError> {
        if point.len() != 65 || point[0] != 4 {
            return Err(KeyError::Malformed(
                "a P-256 public key is an uncompressed point of 65 bytes".into(),
            ));
        }
        let mut key = Self {
            kid: String::new(),
            material: Material::Es256(point.to_vec()),
        };
        key.kid = key.thumbprint();
        Ok(key)
    }

    /// An EdDSA key from its 32-byte Ed25519 public key; `kid` = RFC 7638 thumbprint.
    pub fn eddsa(public: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; 32] = public
            .try_into()
            .map_err(|_| KeyError::Malformed("an Ed25519 public key is 32 bytes".into()))?;
        let mut key = Self {
            kid: String::new(),
            material: Material::EdDsa(bytes),
        };
        key.kid = key.thumbprint();
        Ok(key)
    }

    /// An HS256 key from a secret of at least 32 bytes. Its `kid` is derived
    /// from the secret with HMAC (stable across replicas, reveals nothing).
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::WeakSecret(secret.len()));
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let tag = hmac::sign(&key, b"mp-auth key id");
        Ok(Self {
            kid: format!("hs256-{}", &b64url(tag.as_ref())[..16]),
            material: Material::Hs256(key),
        })
    }

    /// A public key from PEM: `PUBLIC KEY` (SPKI), or `PRIVATE KEY` (PKCS#8)
    /// whose public half is taken. P-256 gives ES256, Ed25519 gives EdDSA.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let block = pem::parse_single_key(text)?;
        if block.label == "PUBLIC KEY" {
            let (kind, bits) = pem::spki_kind(&block.der)?;
            return match kind.supported()? {
                KeyKind::EcP256 => Self::es256(bits),
                _ => Self::eddsa(bits),
            };
        }
        match pem::pkcs8_kind(&block.der)?.supported()? {
            KeyKind::EcP256 => {
                let rng = ring::rand::SystemRandom::new();
                let pair = signature::EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &block.der,
                    &rng,
                )
                .map_err(|e| KeyError::Malformed(format!("P-256 key rejected: {e}")))?;
                Self::es256(signature::KeyPair::public_key(&pair).as_ref())
            }
            _ => {
                let pair = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&block.der)
                    .map_err(|e| KeyError::Malformed(format!("Ed25519 key rejected: {e}")))?;
                Self::eddsa(signature::KeyPair::public_key(&pair).as_ref())
            }
        }
    }

    /// A key from a JWK (`EC`/`P-256` or `OKP`/`Ed25519`, `use` absent or
    /// `sig`, `alg` absent or matching). Without a `kid`, the thumbprint.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        if let Some(usage) = &jwk.key_use
            && usage != "sig"
        {
            return Err(KeyError::Jwk(format!("use is {usage:?}, not \"sig\"")));
        }
        let coordinate = |value: &Option<String>, name: &str| -> Result<Vec<u8>, KeyError> {
            let text = value
                .as_deref()
                .ok_or_else(|| KeyError::Jwk(format!("{name} is missing")))?;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| KeyError::Jwk(format!("{name} is not base64url")))
        };
        let crv = jwk.crv.as_deref().unwrap_or("");
        let (key, expected_alg): (Self, &[&str]) = match jwk.kty.as_str() {
            "EC" => {
                if crv != "P-256" {
                    return Err(KeyError::WrongCurve(crv.to_owned()));
                }
                let (x, y) = (coordinate(&jwk.x, "x")?, coordinate(&jwk.y, "y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(KeyError::Jwk("P-256 x and y are 32 bytes each".into()));
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (Self::es256(&point)?, &["ES256"])
            }
            "OKP" => {
                if crv != "Ed25519" {
                    return Err(KeyError::Unsupported(format!("OKP curve {crv}")));
                }
                (
                    Self::eddsa(&coordinate(&jwk.x, "x")?)?,
                    &["EdDSA", "Ed25519"],
                )
            }
            "RSA" => return Err(KeyError::Rsa),
            other => return Err(KeyError::Unsupported(format!("kty {other}"))),
        };
        if let Some(alg) = &jwk.alg
            && !expected_alg.contains(&alg.as_str())
        {
            return Err(KeyError::Jwk(format!(
                "alg {alg:?} does not match a {} key",
                jwk.kty
            )));
        }
        Ok(match &jwk.kid {
            Some(kid) if !kid.is_empty() => key.with_kid(kid),
            _ => key,
        })
    }

    /// Replaces the `kid`.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = kid.into();
        self
    }

    /// The key id tokens name in their header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        match self.material {
            Material::Es256(_) => Algorithm::Es256,
            Material::EdDsa(_) => Algorithm::EdDsa,
            Material::Hs256(_) => Algorithm::Hs256,
        }
    }

    /// The public JWK (`use: sig`, with `kid` and `alg`); `None` for HS256,
    /// whose secret is never published.
    pub fn to_jwk(&self) -> Option<Jwk> {
        let mut jwk = self.bare_jwk()?;
        jwk.kid = Some(self.kid.clone());
        jwk.alg = Some(self.algorithm().as_str().to_owned());
        jwk.key_use = Some("sig".to_owned());
        Some(jwk)
    }

    /// The JWK of only the required members (what the thumbprint hashes).
    fn bare_jwk(&self) -> Option<Jwk> {
        match &self.material {
            Material::Es256(point) => Some(Jwk {
                kty: "EC".into(),
                crv: Some("P-256".into()),
                x: Some(b64url(&point[1..33])),
                y: Some(b64url(&point[33..65])),
                ..Jwk::default()
            }),
            Material::EdDsa(public) => Some(Jwk {
                kty: "OKP".into(),
                crv: Some("Ed25519".into()),
                x: Some(b64url(public)),
                ..Jwk::default()
            }),
            Material::Hs256(_) => None,
        }
    }

    /// The public key as PEM (`BEGIN PUBLIC KEY`, SPKI); `None` for HS256.
    pub fn to_public_pem(&self) -> Option<String> {
        let der = match &self.material {
            Material::Es256(point) => pem::p256_spki(point),
            Material::EdDsa(public) => pem::ed25519_spki(public),
            Material::Hs256(_) => return None,
        };
        Some(pem::encode_pem("PUBLIC KEY", &der))
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url); for HS256 the kid.
    pub fn thumbprint(&self) -> String {
        let Some(jwk) = self.bare_jwk() else {
            return self.kid.clone();
        };
        // RFC 7638: the required members in lexicographic order, no whitespace.
        let canonical = match (jwk.kty.as_str(), &jwk.crv, &jwk.x, &jwk.y) {
            ("EC", Some(crv), Some(x), Some(y)) => {
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
            (_, Some(crv), Some(x), _) => format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{x}"}}"#),
            _ => String::new(),
        };
        b64url(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// Whether `signature` is this key's signature of `message`.
    pub(crate) fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match &self.material {
            Material::Es256(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            Material::EdDsa(public) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, public)
                    .verify(message, sig)
                    .is_ok()
            }
            Material::Hs256(key) => hmac::verify(key, message, sig).is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pem::fixtures::*;

    #[test]
    fn pem_public_and_private_keys_give_the_same_key() {
        let from_private = VerifyingKey::from_pem(P256_PRIVATE).unwrap();
        let from_public = VerifyingKey::from_pem(P256_PUBLIC).unwrap();
        assert_eq!(from_private.kid(), from_public.kid());
        assert_eq!(from_private.algorithm(), Algorithm::Es256);
        let ed = VerifyingKey::from_pem(ED25519_PRIVATE).unwrap();
        assert_eq!(
            ed.kid(),
            VerifyingKey::from_pem(ED25519_PUBLIC).unwrap().kid()
        );
        assert_eq!(ed.algorithm(), Algorithm::EdDsa);
    }

    #[test]
    fn unsupported_pem_keys_are_refused_precisely() {
        assert_eq!(
            VerifyingKey::from_pem(P384_PRIVATE).unwrap_err(),
            KeyError::WrongCurve("P-384".into())
        );
        assert_eq!(
            VerifyingKey::from_pem(P384_PUBLIC).unwrap_err(),
            KeyError::WrongCurve("P-384".into())
        );
        assert_eq!(
            VerifyingKey::from_pem(RSA_PUBLIC).unwrap_err(),
            KeyError::Rsa
        );
        assert_eq!(
            VerifyingKey::from_pem(P256_SEC1).unwrap_err(),
            KeyError::Sec1
        );
    }

    #[test]
    fn jwk_round_trips_and_the_thumbprint_is_the_kid() {
        for pem in [P256_PUBLIC, ED25519_PUBLIC] {
            let key = VerifyingKey::from_pem(pem).unwrap();
            let jwk = key.to_jwk().unwrap();
            assert_eq!(jwk.kid.as_deref(), Some(key.kid()));
            assert_eq!(jwk.key_use.as_deref(), Some("sig"));
            let back = VerifyingKey::from_jwk(&jwk).unwrap();
            assert_eq!(back.kid(), key.kid());
            assert_eq!(back.thumbprint(), key.kid());
            assert_eq!(back.algorithm(), key.algorithm());
        }
    }

    #[test]
    fn rfc_7638_thumbprint_matches_the_rfc_example_shape() {
        // RFC 8037 appendix A.3: the thumbprint of the Ed25519 example key.
        let key = VerifyingKey::from_jwk(&Jwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into()),
            ..Jwk::default()
        })
        .unwrap();
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn jwks_of_other_kinds_are_refused() {
        let mut jwk = VerifyingKey::from_pem(P256_PUBLIC)
            .unwrap()
            .to_jwk()
            .unwrap();
        jwk.alg = Some("ES384".into());
        assert!(matches!(
            VerifyingKey::from_jwk(&jwk),
            Err(KeyError::Jwk(_))
        ));
        jwk.alg = None;
        jwk.key_use = Some("enc".into());
        assert!(matches!(
            VerifyingKey::from_jwk(&jwk),
            Err(KeyError::Jwk(_))
        ));
        jwk.key_use = None;
        jwk.crv = Some("P-384".into());
        assert_eq!(
            VerifyingKey::from_jwk(&jwk).unwrap_err(),
            KeyError::WrongCurve("P-384".into())
        );
        let rsa = Jwk {
            kty: "RSA".into(),
            ..Jwk::default()
        };
        assert_eq!(VerifyingKey::from_jwk(&rsa).unwrap_err(), KeyError::Rsa);
        let oct = Jwk {
            kty: "oct".into(),
            ..Jwk::default()
        };
        assert!(matches!(
            VerifyingKey::from_jwk(&oct),
            Err(KeyError::Unsupported(_))
        ));
    }

    #[test]
    fn hs256_needs_32_bytes_is_never_published_and_hides_its_secret() {
        assert_eq!(
            VerifyingKey::hs256(b"short").unwrap_err(),
            KeyError::WeakSecret(5)
        );
        let secret = b"0123456789abcdef0123456789abcdef-secret";
        let key = VerifyingKey::hs256(secret).unwrap();
        assert!(key.to_jwk().is_none());
        assert!(key.kid().starts_with("hs256-"));
        assert_eq!(key.kid(), VerifyingKey::hs256(secret).unwrap().kid());
        let debug = format!("{key:?}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
    }
}
