//! Access tokens: RFC 9068 JWTs (`typ: at+jwt`) whose `sub` is the user id as a
//! string. Signing sits behind [`TokenSigner`] so asymmetric keys and a JWKS
//! endpoint can be added without touching the login use case.

mod es256;
mod hs256;

pub use es256::Es256Signer;
pub use hs256::Hs256Signer;

/// The RFC 9068 media type of access tokens.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

use crate::{
    config::TokenSettings,
    domain::{AppId, UserId},
};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// The signing key is unusable (weak, malformed): refuse to start.
    #[error("token signing key is unusable: {0}")]
    BadKey(String),
    /// The start-up sign-and-verify self-test failed.
    #[error("token self-test failed: {0}")]
    SelfTest(String),
    /// A token failed verification (signature, algorithm, typ, claims).
    #[error("token is invalid: {0}")]
    Invalid(String),
    /// The token's `exp` has passed (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// The token's `nbf` is still in the future (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// The token names a `kid` this service does not (or no longer) verify with.
    #[error("token was signed by an unknown key")]
    KeyUnknown,
    /// Signing failed unexpectedly.
    #[error("token signing failed: {0}")]
    Unexpected(String),
}

/// Signs and verifies JWTs with one key. Implementations must reject tokens
/// with another algorithm (including `none`) or another key.
pub trait TokenSigner: Send + Sync + 'static {
    /// The JWS `alg` this signer produces.
    fn algorithm(&self) -> &'static str;
    /// Signs `claims` with header `typ: at+jwt`.
    fn sign(&self, claims: &AccessClaims) -> Result<String, TokenError>;
    /// Verifies signature, algorithm, `typ`, `iss`, `aud` and expiry (with
    /// `leeway_secs` of clock skew).
    fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        leeway_secs: u64,
    ) -> Result<AccessClaims, TokenError>;
    /// The public verification keys as JWKs (empty for a symmetric key).
    fn jwks(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }
}

/// Maps a jsonwebtoken failure to the reason a verifier reports.
pub(crate) fn map_jwt_error(e: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        _ => TokenError::Invalid(e.to_string()),
    }
}

/// The signer `settings` describe: ES256 when `token.signing_key[_file]` is
/// set (recommended), HS256 with `token.hs256_secret[_file]` otherwise.
pub fn signer_from_settings(
    settings: &crate::config::Settings,
) -> anyhow::Result<Box<dyn TokenSigner>> {
    use secrecy::ExposeSecret as _;
    let t = &settings.token;
    let signing =
        crate::config::resolve_secret("token.signing_key", &t.signing_key, &t.signing_key_file)?;
    match signing {
        Some(pem) => {
            let mut retained = Vec::new();
            for path in &t.verification_key_files {
                retained.push(std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!(
                        "token.verification_key_files: cannot read {}: {e}",
                        path.display()
                    )
                })?);
            }
            let signer = Es256Signer::new(pem.expose_secret(), &retained)
                .map_err(|e| anyhow::anyhow!("token.signing_key: {e}"))?;
            tracing::info!(
                kid = signer.kid(),
                retained = retained.len(),
                "ES256 signing key loaded"
            );
            Ok(Box::new(signer))
        }
        None => Ok(Box::new(Hs256Signer::new(&settings.token_secret()?)?)),
    }
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
    signer: Box<dyn TokenSigner>,
    issuer: String,
    audience: String,
    ttl: Duration,
    leeway_secs: u64,
}

impl TokenIssuer {
    /// Builds the issuer and runs a sign-and-verify self-test, so a broken crypto
    /// backend or key fails at start-up rather than on the first login.
    pub fn new(settings: &TokenSettings, signer: Box<dyn TokenSigner>) -> Result<Self, TokenError> {
        let issuer = Self {
            signer,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl: Duration::from_secs(settings.ttl_secs),
            leeway_secs: settings.leeway_secs,
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
        if claims.sub != "1" || claims.client_id != "selftest" {
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
        let token = self.signer.sign(&claims)?;
        Ok(IssuedToken {
            token,
            expires_in: exp - now,
            jti,
        })
    }

    /// Verifies a token issued by this service (signature, alg, typ, iss,
    /// aud, exp/nbf with the configured leeway; not revocation).
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        self.signer
            .verify(token, &self.issuer, &self.audience, self.leeway_secs)
    }

    /// The public verification keys (JWKS `keys`).
    pub fn jwks(&self) -> Vec<serde_json::Value> {
        self.signer.jwks()
    }

    /// The issuer (`iss`) and audience (`aud`) of every token.
    pub fn issuer_and_audience(&self) -> (&str, &str) {
        (&self.issuer, &self.audience)
    }

    /// The access-token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The signing algorithm (e.g. `HS256`).
    pub fn algorithm(&self) -> &'static str {
        self.signer.algorithm()
    }
}
