//! JSON Web Keys (RFC 7517) as mp-auth publishes them: public `EC` (P-256) and
//! `OKP` (Ed25519) signing keys with `kid`, `alg` and `use`.

use crate::key::{KeyError, VerifyingKey};
use serde::{Deserialize, Serialize};

/// One JWK. Members mp-auth does not use are ignored when reading; private
/// members (`d`) are never read or written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `EC` or `OKP`.
    pub kty: String,
    /// Key id, named by tokens' `kid` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The one algorithm the key is for: `ES256` or `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Curve: `P-256` or `Ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// base64url x coordinate (EC) or public key (OKP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// base64url y coordinate (EC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// A JWK Set: `{"keys": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// The usable verification keys, and the refusal of each key that is not
    /// (an RSA key, an encryption key...), so that one foreign key in a shared
    /// set does not make the whole set unusable.
    pub fn verifying_keys(&self) -> (Vec<VerifyingKey>, Vec<KeyError>) {
        let mut keys = Vec::new();
        let mut refused = Vec::new();
        for jwk in &self.keys {
            match VerifyingKey::from_jwk(jwk) {
                Ok(key) => keys.push(key),
                Err(e) => refused.push(e),
            }
        }
        (keys, refused)
    }
}

impl FromIterator<Jwk> for JwkSet {
    fn from_iter<T: IntoIterator<Item = Jwk>>(iter: T) -> Self {
        Self {
            keys: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pem::fixtures::*;

    #[test]
    fn a_set_keeps_its_usable_keys_and_reports_the_others() {
        let es = VerifyingKey::from_pem(P256_PUBLIC).unwrap();
        let json = format!(
            r#"{{"keys":[{},{{"kty":"RSA","kid":"r1","n":"AQAB","e":"AQAB"}},{{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA","d":"secret"}}]}}"#,
            serde_json::to_string(&es.to_jwk().unwrap()).unwrap()
        );
        let set: JwkSet = serde_json::from_str(&json).unwrap();
        let (keys, refused) = set.verifying_keys();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid(), es.kid());
        assert_eq!(refused.len(), 2);
    }

    #[test]
    fn published_jwks_have_exactly_the_public_members() {
        let jwk = VerifyingKey::from_pem(P256_PRIVATE)
            .unwrap()
            .to_jwk()
            .unwrap();
        let value = serde_json::to_value(&jwk).unwrap();
        let mut members: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        members.sort_unstable();
        assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
        assert_eq!(value["alg"], "ES256");
        assert_eq!(value["use"], "sig");
    }
}
