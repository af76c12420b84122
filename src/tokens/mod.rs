//! Access tokens: RFC 9068 JWTs (`typ: at+jwt`) whose `sub` is the user id as a
//! string, signed with the active key of the [`KeyRing`] (ES256 by default,
//! EdDSA, or HS256 for a single-service setup) and naming it in `kid`.
//! Verification (here and in `mp-auth-verifier`) accepts every key of the ring.

pub mod keygen;
mod keys;
mod signing;
mod verified;

pub use keys::KeyRing;
pub use mp_auth_verifier::{Algorithm, Claims, VerifyError};
pub use signing::{GeneratedKey, SigningKey};
pub use verified::VerifiedCache;

use crate::{
    config::TokenSettings,
    domain::{AppId, UserId},
};
use serde::{Deserialize, Serialize};
use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// The RFC 9068 media type of access tokens (the JOSE `typ`).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer (`token.issuer`).
    pub iss: String,
    /// The user id, as a decimal string.
    pub sub: String,
    /// Audience (`token.audience`).
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// A unique token id (UUID v7), for revocation later.
    pub jti: String,
    /// The mini program the user logged in to.
    pub client_id: String,
    /// The session the token belongs to: logging it out (or revoking it) makes
    /// online verification refuse the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Why a token could not be issued or verified.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The start-up sign-and-verify self-test failed.
    #[error("token self-test failed: {0}")]
    SelfTest(String),
    /// A token failed verification (see the reason of the [`VerifyError`]).
    #[error("token is invalid: {0}")]
    Invalid(#[from] VerifyError),
    /// Signing failed unexpectedly.
    #[error("token signing failed: {0}")]
    Unexpected(String),
}

/// A freshly issued access token.
pub struct IssuedToken {
    /// The compact JWT. Secret: never log it.
    pub token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// The token's `jti`.
    pub jti: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"[REDACTED]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Issues access tokens for logged-in users.
pub struct TokenIssuer {
    keys: Arc<KeyRing>,
    issuer: String,
    audience: String,
    ttl: Duration,
    verified: VerifiedCache,
}

impl TokenIssuer {
    /// Builds the issuer and runs a sign-and-verify self-test, so a broken key
    /// fails at start-up rather than on the first login.
    pub fn new(settings: &TokenSettings, keys: Arc<KeyRing>) -> Result<Self, TokenError> {
        let issuer = Self {
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl: Duration::from_secs(settings.ttl_secs),
            verified: VerifiedCache::default(),
        };
        issuer.self_test()?;
        Ok(issuer)
    }

    fn self_test(&self) -> Result<(), TokenError> {
        let app = AppId::parse("selftest").map_err(|e| TokenError::SelfTest(e.to_string()))?;
        let issued = self
            .issue(UserId(1), &app)
            .map_err(|e| TokenError::SelfTest(e.to_string()))?;
        let claims = self
            .verify(&issued.token)
            .map_err(|e| TokenError::SelfTest(e.to_string()))?;
        if claims.sub != "1" || claims.app_id() != Some("selftest") {
            return Err(TokenError::SelfTest("claims did not round-trip".into()));
        }
        Ok(())
    }

    /// Issues a token for `user` logged in to `app`, outside any session.
    pub fn issue(&self, user: UserId, app: &AppId) -> Result<IssuedToken, TokenError> {
        self.issue_inner(user, app, None, u64::MAX)
    }

    /// Issues a token of session `sid`, expiring no later than the session
    /// itself (`session_expires_at_secs`, unix seconds).
    pub fn issue_for_session(
        &self,
        user: UserId,
        app: &AppId,
        sid: &str,
        session_expires_at_secs: u64,
    ) -> Result<IssuedToken, TokenError> {
        self.issue_inner(user, app, Some(sid), session_expires_at_secs)
    }

    fn issue_inner(
        &self,
        user: UserId,
        app: &AppId,
        sid: Option<&str>,
        not_after: u64,
    ) -> Result<IssuedToken, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let jti = uuid::Uuid::now_v7().to_string();
        let exp = now
            .saturating_add(self.ttl.as_secs())
            .min(not_after)
            .max(now + 1);
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: user.to_string(),
            aud: self.audience.clone(),
            iat: now,
            exp,
            jti: jti.clone(),
            client_id: app.as_str().to_owned(),
            sid: sid.map(str::to_owned),
        };
        let token = self.keys.signing().sign(&claims)?;
        Ok(IssuedToken {
            token,
            expires_in: exp - now,
            jti,
        })
    }

    /// Verifies a token issued by this service with any key of the ring
    /// (signature, algorithm, `typ`, `iss`, `aud`, times; not revocation).
    /// A token seen before skips the signature check (see [`VerifiedCache`]);
    /// the times are checked on every call.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let verifier = self.keys.verifier();
        let key = VerifiedCache::key(token);
        let claims = match self.verified.get(&key) {
            Some(claims) => claims,
            None => {
                let claims = verifier.authenticate(token)?;
                self.verified.insert(key, claims.clone());
                claims
            }
        };
        verifier.check_time(&claims, mp_auth_verifier::now_secs())?;
        Ok(claims)
    }

    /// The key ring (signing key, verifier, JWKS).
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// The public verification keys (JWKS), active first.
    pub fn jwks(&self) -> &mp_auth_verifier::JwkSet {
        self.keys.jwks()
    }

    /// The issuer (`iss`) and audience (`aud`) of every token.
    pub fn issuer_and_audience(&self) -> (&str, &str) {
        (&self.issuer, &self.audience)
    }

    /// The access-token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.keys.signing().algorithm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use mp_auth_verifier::VerifyingKey;

    fn ring(alg: Algorithm) -> Arc<KeyRing> {
        let signing = match alg {
            Algorithm::Hs256 => {
                SigningKey::hs256(b"0123456789abcdef0123456789abcdef-test").unwrap()
            }
            _ => SigningKey::from_pem(&SigningKey::generate(alg).unwrap().private_pem).unwrap(),
        };
        let t = TokenSettings::default();
        Arc::new(KeyRing::new(signing, Vec::new(), &t.issuer, &t.audience, 30).unwrap())
    }

    fn issuer(alg: Algorithm) -> TokenIssuer {
        TokenIssuer::new(&TokenSettings::default(), ring(alg)).unwrap()
    }

    fn part(token: &str, i: usize) -> serde_json::Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(i).unwrap())
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn issued_tokens_have_the_rfc9068_header_with_kid_and_a_string_sub() {
        for alg in [Algorithm::Es256, Algorithm::EdDsa, Algorithm::Hs256] {
            let iss = issuer(alg);
            let app = AppId::parse("wx4f4bc4dec97d474b").unwrap();
            let t = iss
                .issue_for_session(UserId(42), &app, "sid-1", u64::MAX)
                .unwrap();
            let header = part(&t.token, 0);
            assert_eq!(header["typ"], "at+jwt");
            assert_eq!(header["alg"], alg.as_str());
            assert_eq!(header["kid"], iss.keys().signing().kid());
            let json = part(&t.token, 1);
            assert_eq!(json["sub"], serde_json::json!("42"));
            assert_eq!(json["client_id"], "wx4f4bc4dec97d474b");
            assert_eq!(json["sid"], "sid-1");
            assert!(json["jti"].as_str().unwrap().len() >= 32);
            assert_eq!(
                json["exp"].as_u64().unwrap() - json["iat"].as_u64().unwrap(),
                7200
            );
            let claims = iss.verify(&t.token).unwrap();
            assert_eq!(claims.sub, "42");
            assert_eq!(claims.key_id, iss.keys().signing().kid());
        }
    }

    #[test]
    fn es256_tokens_verify_with_an_independent_implementation() {
        // jsonwebtoken (RustCrypto) checks what ring signed, from the published JWK.
        let iss = issuer(Algorithm::Es256);
        let t = iss.issue(UserId(7), &AppId::parse("wxa").unwrap()).unwrap();
        let jwk = iss.keys().jwks().keys[0].clone();
        let key = jsonwebtoken::DecodingKey::from_ec_components(
            jwk.x.as_deref().unwrap(),
            jwk.y.as_deref().unwrap(),
        )
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&["mp-auth-clients"]);
        validation.set_issuer(&["mp-auth"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(&t.token, &key, &validation).unwrap();
        assert_eq!(data.claims["sub"], "7");
        assert_eq!(data.header.kid.as_deref(), Some(iss.keys().signing().kid()));
    }

    #[test]
    fn tokens_of_another_key_or_algorithm_do_not_verify() {
        let app = AppId::parse("wxa").unwrap();
        let a = issuer(Algorithm::Es256);
        let b = issuer(Algorithm::Es256);
        let t = b.issue(UserId(1), &app).unwrap();
        assert_eq!(
            a.verify(&t.token).unwrap_err().to_string(),
            TokenError::Invalid(VerifyError::KeyUnknown(Some(
                b.keys().signing().kid().into()
            )))
            .to_string()
        );
        let hs = issuer(Algorithm::Hs256);
        assert!(a.verify(&hs.issue(UserId(1), &app).unwrap().token).is_err());
    }

    #[test]
    fn a_ring_with_a_retained_key_verifies_both_and_signs_with_the_active_one() {
        let app = AppId::parse("wxa").unwrap();
        let old = issuer(Algorithm::Es256);
        let old_token = old.issue(UserId(5), &app).unwrap().token;
        let t = TokenSettings::default();
        let new_signing =
            SigningKey::from_pem(&SigningKey::generate(Algorithm::Es256).unwrap().private_pem)
                .unwrap();
        let retained: VerifyingKey = old.keys().signing().verifying_key().clone();
        let ring = KeyRing::new(new_signing, vec![retained], &t.issuer, &t.audience, 30).unwrap();
        let new = TokenIssuer::new(&t, Arc::new(ring)).unwrap();
        assert_eq!(new.verify(&old_token).unwrap().sub, "5");
        let fresh = new.issue(UserId(6), &app).unwrap().token;
        assert_eq!(part(&fresh, 0)["kid"], new.keys().signing().kid());
        assert_eq!(new.keys().jwks().keys.len(), 2);
    }

    #[test]
    fn a_cached_token_still_expires_and_a_tampered_copy_is_not_a_hit() {
        let iss = issuer(Algorithm::Es256);
        let app = AppId::parse("wxa").unwrap();
        let t = iss.issue(UserId(9), &app).unwrap().token;
        assert_eq!(iss.verify(&t).unwrap().sub, "9");
        assert_eq!(
            iss.verify(&t).unwrap().sub,
            "9",
            "second time from the cache"
        );
        let mut tampered = t.clone();
        tampered.pop();
        tampered.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert!(iss.verify(&tampered).is_err());
        // The cache keeps what does not depend on the clock: an expired token
        // is authentic (and remembered) but refused on every call.
        let mut claims = iss.verify(&t).unwrap();
        claims.iat -= 7200;
        claims.exp = claims.iat + 60;
        let expired = iss.keys().signing().sign(&claims).unwrap();
        let held = iss.verified.len();
        for _ in 0..2 {
            assert!(matches!(
                iss.verify(&expired),
                Err(TokenError::Invalid(VerifyError::Expired))
            ));
        }
        assert_eq!(
            iss.verified.len(),
            held + 1,
            "remembered once, refused twice"
        );
    }

    #[test]
    fn debug_of_issued_token_is_redacted() {
        let t = issuer(Algorithm::Es256)
            .issue(UserId(1), &AppId::parse("wxa").unwrap())
            .unwrap();
        assert!(!format!("{t:?}").contains(&t.token));
    }
}
