//! Verifies mp-auth access tokens in the service that receives them, without
//! calling mp-auth per request: the keys come from mp-auth's JWKS
//! (`/.well-known/jwks.json` on its gateway), fetched once and cached,
//! refetched when a token names a key not seen yet (rate-limited). Algorithms
//! are pinned (ES256 and EdDSA; never `none`, never HS256 from a JWKS),
//! `typ` must be `at+jwt`, `iss` and `aud` must match, times are checked with
//! a small leeway.
//!
//! Offline verification cannot see logouts: a token stays valid until its
//! `exp` (at most `token.ttl_secs`). Services that must see a logout within a
//! second call mp-auth's `Auth.VerifyToken` instead.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mp_auth_verifier::{JwksVerifier, Rules};
//! let verifier = JwksVerifier::new(
//!     "http://mp-auth-gateway:8080/.well-known/jwks.json",
//!     Rules::new("mp-auth", "mp-auth-clients"),
//! )?;
//! let claims = verifier.verify("eyJ...").await?;
//! println!("user {} of app {:?}", claims.user_id(), claims.app_id());
//! # Ok(()) }
//! ```
//!
//! With the `tower` feature, [`layer::RequireToken`] admits only requests
//! bearing a valid token, for axum and tonic servers alike.

mod claims;
mod jwk;
mod key;
pub mod pem;
mod verify;

#[cfg(feature = "tower")]
pub mod layer;
#[cfg(feature = "remote")]
mod remote;

pub use claims::Claims;
pub use jwk::{Jwk, JwkSet};
pub use key::{Algorithm, KeyError, VerifyingKey};
#[cfg(feature = "remote")]
pub use remote::{JwksOptions, JwksVerifier};
pub use verify::{MAX_TOKEN_BYTES, Rules, Verifier, VerifyError, now_secs};

use std::future::Future;

/// Anything that turns a bearer token into verified claims: a [`Verifier`]
/// with fixed keys, or a [`JwksVerifier`] that fetches them.
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token` now.
    fn verify_token(&self, token: &str)
    -> impl Future<Output = Result<Claims, VerifyError>> + Send;
}

impl TokenVerifier for Verifier {
    fn verify_token(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Claims, VerifyError>> + Send {
        std::future::ready(self.verify(token))
    }
}
