//! ES256 (ECDSA P-256) signing keys from PKCS#8 PEM: exactly one active
//! signing key plus verification-only keys kept until they are retired. Every
//! key's `kid` is its RFC 7638 JWK thumbprint, so it needs no configuration
//! and two replicas with the same key agree on it.

use super::{ACCESS_TOKEN_TYP, AccessClaims, TokenError, TokenSigner, map_jwt_error};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::{
    rand::SystemRandom,
    signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    },
};
use std::collections::HashMap;

/// The DER prefix of a P-256 SubjectPublicKeyInfo before its 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A public verification key with its JWK.
struct PublicKey {
    decoding: DecodingKey,
    jwk: serde_json::Value,
}

/// ES256 signer: the active key signs, every configured key verifies.
pub struct Es256Signer {
    kid: String,
    encoding: EncodingKey,
    keys: HashMap<String, PublicKey>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The label and DER body of a PEM document.
fn pem_body(pem: &str) -> Result<(String, Vec<u8>), TokenError> {
    let text = pem.trim();
    let first = text.lines().next().unwrap_or_default().trim();
    let label = first
        .strip_prefix("-----BEGIN ")
        .and_then(|l| l.strip_suffix("-----"))
        .ok_or_else(|| {
            TokenError::BadKey(
                "not a PEM file (expected -----BEGIN PRIVATE KEY-----): generate one with \
                 `mp-auth keys generate`"
                    .into(),
            )
        })?
        .to_owned();
    let body: String = text
        .lines()
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("-----END"))
        .map(str::trim)
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| TokenError::BadKey("the PEM body is not valid base64".into()))?;
    Ok((label, der))
}

/// The 65-byte uncompressed P-256 point of a private (PKCS#8) or public (SPKI) PEM.
fn p256_point(pem: &str, need_private: bool) -> Result<(Vec<u8>, Option<Vec<u8>>), TokenError> {
    let (label, der) = pem_body(pem)?;
    match label.as_str() {
        "PRIVATE KEY" => {
            let rng = SystemRandom::new();
            match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng) {
                Ok(pair) => Ok((pair.public_key().as_ref().to_vec(), Some(der))),
                Err(_)
                    if EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &der, &rng)
                        .is_ok() =>
                {
                    Err(TokenError::BadKey(
                        "the key is on curve P-384; ES256 needs P-256 (prime256v1): \
                         generate one with `mp-auth keys generate`"
                            .into(),
                    ))
                }
                Err(_) => Err(TokenError::BadKey(
                    "the private key is not a PKCS#8 P-256 (prime256v1) EC key: generate one with \
                     `mp-auth keys generate` or `openssl genpkey -algorithm EC -pkeyopt \
                     ec_paramgen_curve:P-256`"
                        .into(),
                )),
            }
        }
        "PUBLIC KEY" if need_private => Err(TokenError::BadKey(
            "this is a public key; the signing key must be the PRIVATE key (the public half \
             goes to verifiers through the JWKS)"
                .into(),
        )),
        "PUBLIC KEY" => {
            if der.len() == P256_SPKI_PREFIX.len() + 65 && der.starts_with(&P256_SPKI_PREFIX) {
                Ok((der[P256_SPKI_PREFIX.len()..].to_vec(), None))
            } else {
                Err(TokenError::BadKey(
                    "the public key is not an uncompressed P-256 (prime256v1) key".into(),
                ))
            }
        }
        "EC PRIVATE KEY" => Err(TokenError::BadKey(
            "this is a SEC1 key; convert it to PKCS#8: `openssl pkcs8 -topk8 -nocrypt -in key.pem`"
                .into(),
        )),
        other => Err(TokenError::BadKey(format!(
            "unsupported PEM type {other:?}: use a PKCS#8 P-256 private key (`mp-auth keys generate`)"
        ))),
    }
}

fn public_key(point: &[u8]) -> Result<(String, PublicKey), TokenError> {
    if point.len() != 65 || point[0] != 4 {
        return Err(TokenError::BadKey("not an uncompressed P-256 point".into()));
    }
    let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
    // RFC 7638: the SHA-256 of the required members in lexicographic order.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = b64(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref());
    let decoding = DecodingKey::from_ec_components(&x, &y)
        .map_err(|e| TokenError::BadKey(format!("unusable public key: {e}")))?;
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": x, "y": y,
        "kid": kid, "alg": "ES256", "use": "sig",
    });
    Ok((kid, PublicKey { decoding, jwk }))
}

impl Es256Signer {
    /// `active` signs (a PKCS#8 private key PEM); `retained` (private or public
    /// PEMs of previous keys) only verify, until they are removed.
    pub fn new(active: &str, retained: &[String]) -> Result<Self, TokenError> {
        let (point, der) = p256_point(active, true)?;
        let der =
            der.ok_or_else(|| TokenError::BadKey("the signing key must be private".into()))?;
        let (kid, key) = public_key(&point)?;
        let mut keys = HashMap::from([(kid.clone(), key)]);
        for (i, pem) in retained.iter().enumerate() {
            let (point, _) = p256_point(pem, false)
                .map_err(|e| TokenError::BadKey(format!("verification key #{}: {e}", i + 1)))?;
            let (kid, key) = public_key(&point)?;
            keys.entry(kid).or_insert(key);
        }
        Ok(Self {
            kid,
            encoding: EncodingKey::from_ec_der(&der),
            keys,
        })
    }

    /// A new P-256 key pair: (PKCS#8 private PEM, SPKI public PEM).
    pub fn generate() -> Result<(String, String), TokenError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| TokenError::Unexpected("key generation failed".into()))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| TokenError::Unexpected("key generation failed".into()))?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        Ok((
            to_pem("PRIVATE KEY", pkcs8.as_ref()),
            to_pem("PUBLIC KEY", &spki),
        ))
    }

    /// The active key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl TokenSigner for Es256Signer {
    fn algorithm(&self) -> &'static str {
        "ES256"
    }

    fn sign(&self, claims: &AccessClaims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| TokenError::Unexpected(e.to_string()))
    }

    fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        leeway_secs: u64,
    ) -> Result<AccessClaims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Invalid(format!(
                "alg {:?} is not ES256",
                header.alg
            )));
        }
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYP) {
            return Err(TokenError::Invalid("typ is not at+jwt".into()));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no kid".into()))?;
        let key = self.keys.get(&kid).ok_or(TokenError::KeyUnknown)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = leeway_secs;
        jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(map_jwt_error)
    }

    fn jwks(&self) -> Vec<serde_json::Value> {
        let mut keys: Vec<(&String, &PublicKey)> = self.keys.iter().collect();
        // The active key first, then the retained ones in a stable order.
        keys.sort_by_key(|(kid, _)| (**kid != self.kid, (*kid).clone()));
        keys.into_iter().map(|(_, k)| k.jwk.clone()).collect()
    }
}

impl std::fmt::Debug for Es256Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Es256Signer")
            .field("kid", &self.kid)
            .field("verification_keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_and_its_jwk_has_a_thumbprint_kid() {
        let (private, public) = Es256Signer::generate().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
        let signer = Es256Signer::new(&private, &[]).unwrap();
        let from_public = Es256Signer::new(&Es256Signer::generate().unwrap().0, &[public]).unwrap();
        let jwks = from_public.jwks();
        assert_eq!(jwks.len(), 2);
        assert!(jwks.iter().any(|k| k["kid"] == signer.kid()));
        let jwk = &signer.jwks()[0];
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        assert_eq!(
            (jwk["alg"].as_str(), jwk["use"].as_str()),
            (Some("ES256"), Some("sig"))
        );
        assert!(jwk.get("d").is_none(), "never the private part");
        assert_eq!(signer.kid().len(), 43);
    }

    #[test]
    fn bad_key_material_is_refused_with_a_fix() {
        let (_, public) = Es256Signer::generate().unwrap();
        let cases = [
            (public.as_str(), "PRIVATE key"),
            ("not a pem", "mp-auth keys generate"),
            (
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----",
                "pkcs8",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                "P-256",
            ),
        ];
        for (pem, hint) in cases {
            let err = Es256Signer::new(pem, &[]).unwrap_err().to_string();
            assert!(err.contains(hint), "{err} lacks {hint}");
        }
        // A P-384 key names the curve.
        let rng = SystemRandom::new();
        let p384 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        let err = Es256Signer::new(&to_pem("PRIVATE KEY", p384.as_ref()), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("P-384"), "{err}");
    }
}
