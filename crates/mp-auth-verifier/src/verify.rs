//! Verification of a compact JWS access token against a fixed set of keys:
//! the `kid` picks the key, the key fixes the algorithm (the header's `alg`
//! must name it and be allowed), the signature is checked before anything in
//! the token is believed, then `typ`, `iss`, `aud` and the times.

use crate::{
    claims::Claims,
    key::{Algorithm, KeyError, VerifyingKey},
};
use base64::Engine as _;
use serde::Deserialize;
use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

/// Longest token accepted (mp-auth's are ~500 bytes).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused. [`VerifyError::reason`] is the stable name
/// (`TOKEN_INVALID`, `TOKEN_EXPIRED`, ...); the message is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a compact JWS, bad base64url or JSON, or too long (`TOKEN_INVALID`).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not allowed (`none`, `RS256`, ...) (`TOKEN_INVALID`).
    #[error("algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    /// No key has the token's `kid` (or it has none) (`KEY_UNKNOWN`).
    #[error("no key with kid {0:?}")]
    KeyUnknown(Option<String>),
    /// The header's `alg` is not the algorithm of the key its `kid` names
    /// (algorithm confusion) (`TOKEN_INVALID`).
    #[error("algorithm {header} does not match the key's {key}")]
    AlgorithmMismatch {
        /// The header's `alg`.
        header: String,
        /// The key's algorithm.
        key: Algorithm,
    },
    /// The signature does not verify (tampered, or another key) (`TOKEN_INVALID`).
    #[error("bad signature")]
    BadSignature,
    /// A header member this verifier must understand but does not (`crit`) (`TOKEN_INVALID`).
    #[error("unsupported header: {0}")]
    UnsupportedHeader(&'static str),
    /// `typ` is not `at+jwt` (RFC 9068) (`TOKEN_INVALID`).
    #[error("typ is {0:?}, not at+jwt")]
    WrongType(Option<String>),
    /// `iss` is not the configured issuer (`TOKEN_INVALID`).
    #[error("issuer {0:?} is not the expected one")]
    WrongIssuer(String),
    /// `aud` does not contain the configured audience (`TOKEN_INVALID`).
    #[error("audience does not include the expected one")]
    WrongAudience,
    /// A required claim is missing or has the wrong type (`TOKEN_INVALID`).
    #[error("invalid claims: {0}")]
    InvalidClaims(String),
    /// `exp` has passed (beyond the leeway) (`TOKEN_EXPIRED`).
    #[error("expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway) (`TOKEN_NOT_YET_VALID`).
    #[error("not yet valid")]
    NotYetValid,
    /// The keys could not be obtained (JWKS unreachable) (`KEYS_UNAVAILABLE`).
    #[error("verification keys unavailable: {0}")]
    KeysUnavailable(String),
}

impl VerifyError {
    /// The stable, machine-readable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::KeyUnknown(_) => "KEY_UNKNOWN",
            Self::Expired => "TOKEN_EXPIRED",
            Self::NotYetValid => "TOKEN_NOT_YET_VALID",
            Self::KeysUnavailable(_) => "KEYS_UNAVAILABLE",
            Self::Malformed(_)
            | Self::AlgorithmNotAllowed(_)
            | Self::AlgorithmMismatch { .. }
            | Self::BadSignature
            | Self::UnsupportedHeader(_)
            | Self::WrongType(_)
            | Self::WrongIssuer(_)
            | Self::WrongAudience
            | Self::InvalidClaims(_) => "TOKEN_INVALID",
        }
    }
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The expected `iss`.
    pub issuer: String,
    /// The audience that `aud` must contain.
    pub audience: String,
    /// Tolerated clock difference for `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// The algorithms accepted at all (pinned); a key of another algorithm
    /// is never used.
    pub algorithms: Vec<Algorithm>,
}

impl Rules {
    /// `iss` and `aud` as configured in mp-auth (`token.issuer`,
    /// `token.audience`), 30 s of leeway, ES256 and EdDSA.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_secs: 30,
            algorithms: vec![Algorithm::Es256, Algorithm::EdDsa],
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// The current time in seconds since the epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Verifies tokens against a fixed key set and [`Rules`]. Cheap to share
/// (`Arc`); verification takes no lock.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: HashMap<String, VerifyingKey>,
    /// The key tokens without a `kid` are checked with (legacy HS256 tokens).
    kidless: Option<String>,
    rules: Rules,
}

impl Verifier {
    /// A verifier of `keys` under `rules`. Keys whose algorithm `rules` does
    /// not allow are kept out; two keys with one `kid` are an error.
    pub fn new(keys: Vec<VerifyingKey>, rules: Rules) -> Result<Self, KeyError> {
        let mut by_kid = HashMap::with_capacity(keys.len());
        for key in keys {
            if !rules.algorithms.contains(&key.algorithm()) {
                continue;
            }
            let kid = key.kid().to_owned();
            if by_kid.insert(kid.clone(), key).is_some() {
                return Err(KeyError::DuplicateKid(kid));
            }
        }
        Ok(Self {
            keys: by_kid,
            kidless: None,
            rules,
        })
    }

    /// Checks tokens that carry no `kid` with the key `kid` (tokens issued
    /// before keys had ids). Only takes effect if that key is in the set.
    pub fn with_kidless_key(mut self, kid: &str) -> Self {
        if self.keys.contains_key(kid) {
            self.kidless = Some(kid.to_owned());
        }
        self
    }

    /// The keys, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.values()
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Verifies `token` now: [`Self::authenticate`] then [`Self::check_time`].
    pub fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        self.verify_at(token, now_secs())
    }

    /// Verifies `token` at `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Claims, VerifyError> {
        let claims = self.authenticate(token)?;
        self.check_time(&claims, now)?;
        Ok(claims)
    }

    /// Everything that does not depend on the clock: structure, key,
    /// algorithm, signature, `typ`, `iss`, `aud` and claim types. Its result
    /// may be cached by token; [`Self::check_time`] must still run per use.
    pub fn authenticate(&self, token: &str) -> Result<Claims, VerifyError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::Malformed("longer than 8 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed("not three dot-separated parts"));
        };
        let header: Header = serde_json::from_slice(&decode(header_b64, "header")?)
            .map_err(|_| VerifyError::Malformed("the header is not a JSON object with alg"))?;
        if header.crit.is_some() {
            return Err(VerifyError::UnsupportedHeader("crit"));
        }
        let alg = Algorithm::from_name(&header.alg)
            .filter(|alg| self.rules.algorithms.contains(alg))
            .ok_or_else(|| VerifyError::AlgorithmNotAllowed(truncated(&header.alg)))?;
        let key = match &header.kid {
            Some(kid) => self.keys.get(kid),
            None => self.kidless.as_ref().and_then(|kid| self.keys.get(kid)),
        }
        .ok_or_else(|| VerifyError::KeyUnknown(header.kid.as_deref().map(truncated)))?;
        if key.algorithm() != alg {
            return Err(VerifyError::AlgorithmMismatch {
                header: header.alg,
                key: key.algorithm(),
            });
        }
        let signature = decode(signature_b64, "signature")?;
        let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        if !key.verify(signed, &signature) {
            return Err(VerifyError::BadSignature);
        }
        // From here on the token is authentic: what it says was said by mp-auth.
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(VerifyError::WrongType(header.typ.as_deref().map(truncated)));
        }
        let mut claims: Claims = serde_json::from_slice(&decode(payload_b64, "payload")?)
            .map_err(|e| VerifyError::InvalidClaims(e.to_string()))?;
        if claims.iss != self.rules.issuer {
            return Err(VerifyError::WrongIssuer(truncated(&claims.iss)));
        }
        if !claims.aud.contains(&self.rules.audience) {
            return Err(VerifyError::WrongAudience);
        }
        claims.key_id = key.kid().to_owned();
        Ok(claims)
    }

    /// `exp`, `nbf` and `iat` against `now`, with the leeway.
    pub fn check_time(&self, claims: &Claims, now: i64) -> Result<(), VerifyError> {
        let leeway = i64::try_from(self.rules.leeway_secs).unwrap_or(i64::MAX);
        if now >= claims.exp.saturating_add(leeway) {
            return Err(VerifyError::Expired);
        }
        let future = now.saturating_add(leeway);
        if claims.nbf.is_some_and(|nbf| nbf > future) || claims.iat > future {
            return Err(VerifyError::NotYetValid);
        }
        Ok(())
    }
}

fn decode(part: &str, what: &'static str) -> Result<Vec<u8>, VerifyError> {
    // Strict: no padding, no whitespace, no non-canonical trailing bits.
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| {
            VerifyError::Malformed(match what {
                "header" => "the header is not base64url",
                "payload" => "the payload is not base64url",
                _ => "the signature is not base64url",
            })
        })
}

/// Attacker-controlled strings are cut short before they reach a log line.
fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pem::fixtures::*;
    use ring::signature::{self, KeyPair};
    use serde_json::json;

    const ISS: &str = "https://auth.example.com";
    const AUD: &str = "internal";
    const NOW: i64 = 1_800_000_000;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    enum Signer {
        Es(signature::EcdsaKeyPair),
        Ed(signature::Ed25519KeyPair),
        Hs(Vec<u8>),
    }

    impl Signer {
        fn es256() -> Self {
            let der = crate::pem::parse_single_key(P256_PRIVATE).unwrap().der;
            Self::Es(
                signature::EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &der,
                    &ring::rand::SystemRandom::new(),
                )
                .unwrap(),
            )
        }

        fn eddsa() -> Self {
            let der = crate::pem::parse_single_key(ED25519_PRIVATE).unwrap().der;
            Self::Ed(signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap())
        }

        fn key(&self) -> VerifyingKey {
            match self {
                Self::Es(pair) => VerifyingKey::es256(pair.public_key().as_ref()).unwrap(),
                Self::Ed(pair) => VerifyingKey::eddsa(pair.public_key().as_ref()).unwrap(),
                Self::Hs(secret) => VerifyingKey::hs256(secret).unwrap(),
            }
        }

        fn sign(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
            let signed = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let sig = match self {
                Self::Es(pair) => pair
                    .sign(&ring::rand::SystemRandom::new(), signed.as_bytes())
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                Self::Ed(pair) => pair.sign(signed.as_bytes()).as_ref().to_vec(),
                Self::Hs(secret) => ring::hmac::sign(
                    &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
                    signed.as_bytes(),
                )
                .as_ref()
                .to_vec(),
            };
            format!("{signed}.{}", b64(&sig))
        }
    }

    fn claims() -> serde_json::Value {
        json!({"iss": ISS, "sub": "42", "aud": AUD, "iat": NOW - 10, "exp": NOW + 600,
               "jti": "j", "client_id": "wxapp", "sid": "s1"})
    }

    fn header(signer: &Signer, alg: &str) -> serde_json::Value {
        json!({"alg": alg, "typ": "at+jwt", "kid": signer.key().kid()})
    }

    fn verifier(keys: Vec<VerifyingKey>) -> Verifier {
        Verifier::new(keys, Rules::new(ISS, AUD)).unwrap()
    }

    #[test]
    fn es256_and_eddsa_tokens_verify_with_their_claims_and_kid() {
        let es = Signer::es256();
        let ed = Signer::eddsa();
        let v = verifier(vec![es.key(), ed.key()]);
        for (signer, alg) in [(&es, "ES256"), (&ed, "EdDSA")] {
            let token = signer.sign(&header(signer, alg), &claims());
            let c = v.verify_at(&token, NOW).unwrap();
            assert_eq!(c.user_id(), "42");
            assert_eq!(c.app_id(), Some("wxapp"));
            assert_eq!(c.session_id(), Some("s1"));
            assert_eq!(c.key_id, signer.key().kid());
        }
    }

    #[test]
    fn a_tampered_payload_or_signature_is_refused() {
        let es = Signer::es256();
        let v = verifier(vec![es.key()]);
        let token = es.sign(&header(&es, "ES256"), &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims();
        forged["sub"] = json!("1");
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(forged.to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(v.verify_at(&tampered, NOW), Err(VerifyError::BadSignature));
        let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap();
        sig[10] ^= 1;
        let bad_sig = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
        assert_eq!(v.verify_at(&bad_sig, NOW), Err(VerifyError::BadSignature));
        let other = Signer::eddsa();
        let v2 = verifier(vec![es.key(), other.key()]);
        // Signed by another (known) key but naming this one: bad signature.
        let mixed = other.sign(
            &json!({"alg":"EdDSA","typ":"at+jwt","kid": es.key().kid()}),
            &claims(),
        );
        assert!(matches!(
            v2.verify_at(&mixed, NOW),
            Err(VerifyError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn alg_none_and_unlisted_algorithms_are_refused() {
        let es = Signer::es256();
        let v = verifier(vec![es.key()]);
        let none = format!(
            "{}.{}.",
            b64(json!({"alg":"none","typ":"at+jwt","kid": es.key().kid()})
                .to_string()
                .as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        let err = v.verify_at(&none, NOW).unwrap_err();
        assert_eq!(err, VerifyError::AlgorithmNotAllowed("none".into()));
        assert_eq!(err.reason(), "TOKEN_INVALID");
        for alg in ["RS256", "ES384", "HS512", "es256", ""] {
            let t = es.sign(
                &json!({"alg": alg, "typ":"at+jwt", "kid": es.key().kid()}),
                &claims(),
            );
            assert!(
                matches!(
                    v.verify_at(&t, NOW),
                    Err(VerifyError::AlgorithmNotAllowed(_))
                ),
                "{alg}"
            );
        }
    }

    #[test]
    fn hs256_signed_with_the_public_key_as_secret_is_refused() {
        // The classic algorithm confusion: the attacker knows the public key.
        let es = Signer::es256();
        let public_pem = P256_PUBLIC.as_bytes().to_vec();
        let attacker = Signer::Hs(public_pem.clone());
        let forged = attacker.sign(
            &json!({"alg":"HS256","typ":"at+jwt","kid": es.key().kid()}),
            &claims(),
        );
        // Default rules do not even allow HS256.
        assert!(matches!(
            verifier(vec![es.key()]).verify_at(&forged, NOW),
            Err(VerifyError::AlgorithmNotAllowed(_))
        ));
        // With HS256 allowed (a legacy key configured), the kid's key is still ES256.
        let mut rules = Rules::new(ISS, AUD);
        rules.algorithms.push(Algorithm::Hs256);
        let hs = VerifyingKey::hs256(b"a-legacy-secret-of-at-least-32-bytes!").unwrap();
        let v = Verifier::new(vec![es.key(), hs], rules).unwrap();
        assert!(matches!(
            v.verify_at(&forged, NOW),
            Err(VerifyError::AlgorithmMismatch { .. })
        ));
        let point = es.key().to_jwk().unwrap();
        let raw = Signer::Hs(serde_json::to_vec(&point).unwrap());
        let forged2 = raw.sign(
            &json!({"alg":"HS256","typ":"at+jwt","kid": es.key().kid()}),
            &claims(),
        );
        assert!(v.verify_at(&forged2, NOW).is_err());
    }

    #[test]
    fn kid_missing_or_unknown_is_key_unknown() {
        let es = Signer::es256();
        let v = verifier(vec![es.key()]);
        let unknown = es.sign(
            &json!({"alg":"ES256","typ":"at+jwt","kid":"retired"}),
            &claims(),
        );
        let err = v.verify_at(&unknown, NOW).unwrap_err();
        assert_eq!(err, VerifyError::KeyUnknown(Some("retired".into())));
        assert_eq!(err.reason(), "KEY_UNKNOWN");
        let kidless = es.sign(&json!({"alg":"ES256","typ":"at+jwt"}), &claims());
        assert_eq!(
            v.verify_at(&kidless, NOW),
            Err(VerifyError::KeyUnknown(None))
        );
    }

    #[test]
    fn kidless_legacy_hs256_tokens_use_the_designated_key() {
        let secret = b"a-legacy-secret-of-at-least-32-bytes!".to_vec();
        let hs = Signer::Hs(secret);
        let mut rules = Rules::new(ISS, AUD);
        rules.algorithms = vec![Algorithm::Hs256];
        let v = Verifier::new(vec![hs.key()], rules)
            .unwrap()
            .with_kidless_key(hs.key().kid());
        let legacy = hs.sign(&json!({"alg":"HS256","typ":"at+jwt"}), &claims());
        assert_eq!(v.verify_at(&legacy, NOW).unwrap().sub, "42");
    }

    #[test]
    fn typ_iss_and_aud_are_checked() {
        let es = Signer::es256();
        let v = verifier(vec![es.key()]);
        for typ in [json!("JWT"), json!(null), json!("at+JWT-ish")] {
            let t = es.sign(
                &json!({"alg":"ES256","typ": typ,"kid": es.key().kid()}),
                &claims(),
            );
            assert!(
                matches!(v.verify_at(&t, NOW), Err(VerifyError::WrongType(_))),
                "{typ}"
            );
        }
        let t = es.sign(
            &json!({"alg":"ES256","typ":"application/AT+JWT","kid": es.key().kid()}),
            &claims(),
        );
        assert!(v.verify_at(&t, NOW).is_ok());
        let mut c = claims();
        c["iss"] = json!("https://evil.example.com");
        let t = es.sign(&header(&es, "ES256"), &c);
        assert!(matches!(
            v.verify_at(&t, NOW),
            Err(VerifyError::WrongIssuer(_))
        ));
        let mut c = claims();
        c["aud"] = json!(["other", "another"]);
        let t = es.sign(&header(&es, "ES256"), &c);
        assert_eq!(v.verify_at(&t, NOW), Err(VerifyError::WrongAudience));
        let mut c = claims();
        c["aud"] = json!(["other", AUD]);
        let t = es.sign(&header(&es, "ES256"), &c);
        assert!(v.verify_at(&t, NOW).is_ok());
    }

    #[test]
    fn expiry_and_not_before_respect_the_leeway() {
        let es = Signer::es256();
        let v = verifier(vec![es.key()]);
        let t = es.sign(&header(&es, "ES256"), &claims());
        let exp = NOW + 600;
        assert!(v.verify_at(&t, exp + 29).is_ok());
        let err = v.verify_at(&t, exp + 30).unwrap_err();
        assert_eq!(err, VerifyError::Expired);
        assert_eq!(err.reason(), "TOKEN_EXPIRED");
        let mut c = claims();
        c["nbf"] = json!(NOW + 100);
        let t = es.sign(&header(&es, "ES256"), &c);
        assert_eq!(v.verify_at(&t, NOW), Err(VerifyError::NotYetValid));
        assert!(v.verify_at(&t, NOW + 71).is_ok());
        let mut c = claims();
        c["iat"] = json!(NOW + 3600);
        let t = es.sign(&header(&es, "ES256"), &c);
        assert_eq!(
            v.verify_at(&t, NOW).unwrap_err().reason(),
            "TOKEN_NOT_YET_VALID"
        );
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        let es = Signer::es256();
        let v = verifier(vec![es.key()]);
        let good = es.sign(&header(&es, "ES256"), &claims());
        for bad in [
            String::new(),
            "a.b".into(),
            "a.b.c.d".into(),
            format!("{good}.x"),
            format!("{good}="),
            format!(" {good}"),
            good.replace('.', ".."),
            "e30.e30.e30".into(),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(v.verify_at(&bad, NOW).is_err(), "{bad}");
        }
        for cut in 0..good.len() {
            assert!(v.verify_at(&good[..cut], NOW).is_err());
        }
        let crit = es.sign(
            &json!({"alg":"ES256","typ":"at+jwt","kid": es.key().kid(),"crit":["b64"],"b64":false}),
            &claims(),
        );
        assert_eq!(
            v.verify_at(&crit, NOW),
            Err(VerifyError::UnsupportedHeader("crit"))
        );
        let dup = format!(
            "{}.{}.AAAA",
            b64(br#"{"alg":"ES256","alg":"none","typ":"at+jwt"}"#),
            b64(claims().to_string().as_bytes())
        );
        assert!(matches!(
            v.verify_at(&dup, NOW),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn duplicate_kids_are_refused_and_disallowed_algorithms_are_left_out() {
        let es = Signer::es256();
        assert_eq!(
            Verifier::new(vec![es.key(), es.key()], Rules::new(ISS, AUD)).unwrap_err(),
            KeyError::DuplicateKid(es.key().kid().to_owned())
        );
        let hs = VerifyingKey::hs256(b"a-legacy-secret-of-at-least-32-bytes!").unwrap();
        let v = verifier(vec![es.key(), hs]);
        assert_eq!(v.keys().count(), 1);
    }
}
