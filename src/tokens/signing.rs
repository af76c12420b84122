//! The active signing key: ES256 (P-256) or EdDSA (Ed25519) through ring, or
//! HS256 for a single-service setup. Every token's header is
//! `{"alg","typ":"at+jwt","kid"}`, encoded once when the key is loaded.

use super::TokenError;
use base64::Engine as _;
use mp_auth_verifier::{
    Algorithm, KeyError, VerifyingKey,
    pem::{self, KeyKind},
};
use ring::{
    hmac,
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _},
};
use serde::Serialize;

/// A private key tokens are signed with, and its public half.
pub struct SigningKey {
    inner: Inner,
    public: VerifyingKey,
    /// base64url of the JOSE header, ready to prefix every token.
    header_b64: String,
}

enum Inner {
    Es256 {
        pair: EcdsaKeyPair,
        rng: SystemRandom,
    },
    EdDsa(Ed25519KeyPair),
    Hs256(hmac::Key),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid())
            .field("alg", &self.algorithm())
            .finish()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A freshly generated key pair, as PEM.
pub struct GeneratedKey {
    /// The private key, PKCS#8 (`BEGIN PRIVATE KEY`). Secret.
    pub private_pem: String,
    /// The public key, SPKI (`BEGIN PUBLIC KEY`).
    pub public_pem: String,
    /// Its `kid` (RFC 7638 thumbprint).
    pub kid: String,
}

impl SigningKey {
    /// A key from a PKCS#8 PEM private key. A public key, a SEC1 or encrypted
    /// key, RSA or another curve is refused with its own error.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let block = pem::parse_single_key(text)?;
        if block.label == "PUBLIC KEY" {
            return Err(KeyError::PublicNotPrivate);
        }
        Self::from_pkcs8(&block.der)
    }

    /// A key from PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        match pem::pkcs8_kind(der)?.supported()? {
            KeyKind::EcP256 => {
                let rng = SystemRandom::new();
                let pair = EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der,
                    &rng,
                )
                .map_err(|e| {
                    KeyError::Malformed(format!(
                        "the P-256 key was rejected ({e}); PKCS#8 EC keys must include their public key"
                    ))
                })?;
                let public = VerifyingKey::es256(pair.public_key().as_ref())?;
                Ok(Self::with(Inner::Es256 { pair, rng }, public))
            }
            _ => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| {
                    KeyError::Malformed(format!("the Ed25519 key was rejected ({e})"))
                })?;
                let public = VerifyingKey::eddsa(pair.public_key().as_ref())?;
                Ok(Self::with(Inner::EdDsa(pair), public))
            }
        }
    }

    /// An HS256 key from a secret of at least 32 bytes.
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        let public = VerifyingKey::hs256(secret)?;
        Ok(Self::with(
            Inner::Hs256(hmac::Key::new(hmac::HMAC_SHA256, secret)),
            public,
        ))
    }

    /// Generates a new ES256 or EdDSA key pair.
    pub fn generate(alg: Algorithm) -> Result<GeneratedKey, KeyError> {
        let rng = SystemRandom::new();
        let failed = |_| KeyError::Malformed("the random generator failed".into());
        let pkcs8 = match alg {
            Algorithm::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(failed)?
            }
            Algorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng).map_err(failed)?,
            Algorithm::Hs256 => {
                return Err(KeyError::Unsupported(
                    "HS256 (a shared secret: `openssl rand -base64 48`)".into(),
                ));
            }
        };
        let key = Self::from_pkcs8(pkcs8.as_ref())?;
        let public_pem = key
            .public
            .to_public_pem()
            .ok_or_else(|| KeyError::Unsupported("HS256".into()))?;
        Ok(GeneratedKey {
            private_pem: pem::encode_pem("PRIVATE KEY", pkcs8.as_ref()),
            public_pem,
            kid: key.kid().to_owned(),
        })
    }

    fn with(inner: Inner, public: VerifyingKey) -> Self {
        let header = serde_json::json!({
            "alg": public.algorithm().as_str(),
            "typ": super::ACCESS_TOKEN_TYP,
            "kid": public.kid(),
        });
        Self {
            inner,
            header_b64: b64url(header.to_string().as_bytes()),
            public,
        }
    }

    /// The key id every token it signs names.
    pub fn kid(&self) -> &str {
        self.public.kid()
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    /// The key that verifies its signatures.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The compact JWS of `claims`.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, TokenError> {
        let payload =
            serde_json::to_vec(claims).map_err(|e| TokenError::Unexpected(e.to_string()))?;
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&self.header_b64);
        token.push('.');
        token.push_str(&b64url(&payload));
        let signature = match &self.inner {
            Inner::Es256 { pair, rng } => pair
                .sign(rng, token.as_bytes())
                .map_err(|_| TokenError::Unexpected("ECDSA signing failed".into()))?
                .as_ref()
                .to_vec(),
            Inner::EdDsa(pair) => pair.sign(token.as_bytes()).as_ref().to_vec(),
            Inner::Hs256(key) => hmac::sign(key, token.as_bytes()).as_ref().to_vec(),
        };
        token.push('.');
        token.push_str(&b64url(&signature));
        Ok(token)
    }
}
