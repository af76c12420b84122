//! Sessions: one per device login, carrying a refresh token that rotates on
//! every use. Refresh, logout and logout-all live here, beside the login use
//! case, which starts sessions through [`SessionService::start`].
//!
//! Rotation rule: a refresh token is `<sid>.<generation>.<user>.<expiry>.<mac>`;
//! only the session's current generation refreshes. Presenting the generation
//! just rotated away is a retry (the client lost the answer) *as long as its
//! successor has never been used* (the Matrix Authentication Service rule) *and
//! the rotation is at most `sessions.refresh_retry_window_secs` old*, and gets
//! that same successor again (it is an HMAC, recomputed, never stored), so the
//! chain never forks. Anything else is reuse: the session is revoked (only that
//! session), so thief and victim are both logged out of it.
//!
//! Why the window on top of the MAS rule: MAS can tell that a successor was
//! used from its access token, which it looks up; ours are stateless JWTs, so
//! "never used" can only mean "never presented for a refresh". Alone, that lets
//! a thief who refreshes a stolen token first share the chain with the victim:
//! the victim's next refresh presents the token the thief just rotated, gets
//! the thief's successor, and so on, each holder's refresh looking like the
//! other's retry, undetected for as long as they alternate. A lost answer is
//! retried within seconds; a victim presenting the token minutes or hours later
//! is exactly the case reuse detection exists for (and costs the real user
//! nothing: a silent login opens a new session without the phone button). The
//! window is measured from the rotation the database recorded (`last_used_at`):
//! the uniqueness of the successor never depends on a clock, only the retry
//! allowance does.

mod limiter;
mod refresh_token;
mod revocations;

pub use limiter::KeyedLimiter;
pub use refresh_token::{ParsedRefreshToken, RefreshCodec, RefreshTokenError};
pub use revocations::{Revocation, RevocationCache, RevocationFeed};

use crate::{
    config::SessionSettings,
    domain::{AppId, UserId},
    store::{NewSession, RevokeReason, Rotation, Store, StoreError},
    tokens::{Claims, TokenError, TokenIssuer},
};
use base64::Engine as _;
use secrecy::SecretString;
use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Why a session call failed. Each variant is one row of the gRPC table.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A field is missing or malformed (INVALID_ARGUMENT, `INVALID_ARGUMENT`).
    #[error(transparent)]
    InvalidField(#[from] crate::domain::FieldError),
    /// `app_id` was omitted but several apps are configured (INVALID_ARGUMENT, `APP_ID_REQUIRED`).
    #[error("`app_id` is required: this service serves several mini programs")]
    AppIdRequired,
    /// The app is not configured here (NOT_FOUND, `UNKNOWN_APP`).
    #[error("unknown app_id")]
    UnknownApp,
    /// Malformed, tampered, unknown or never-issued token (UNAUTHENTICATED, `REFRESH_TOKEN_INVALID`).
    #[error("the refresh token is invalid: log in again")]
    RefreshTokenInvalid,
    /// The token belongs to another mini program (UNAUTHENTICATED, `REFRESH_TOKEN_WRONG_APP`).
    #[error("the refresh token was issued to another mini program")]
    WrongApp,
    /// An already rotated token was presented again after its successor was
    /// used: the session is revoked (UNAUTHENTICATED, `REFRESH_TOKEN_REUSED`).
    #[error("the refresh token was already used: the session is revoked, log in again")]
    Reused,
    /// The session was logged out or revoked (UNAUTHENTICATED, `SESSION_REVOKED`).
    #[error("the session was revoked: log in again")]
    Revoked,
    /// Idle timeout or absolute lifetime reached (UNAUTHENTICATED, `SESSION_EXPIRED`).
    #[error("the session has expired: log in again")]
    Expired,
    /// The access token does not verify (UNAUTHENTICATED, `TOKEN_INVALID`).
    #[error("the access token is invalid or expired")]
    AccessTokenInvalid,
    /// Too many refreshes of one session (RESOURCE_EXHAUSTED, `RATE_LIMITED`).
    #[error("too many refreshes of this session: retry in a minute")]
    RateLimited,
    /// The database is unreachable or saturated (UNAVAILABLE, `DATABASE_UNAVAILABLE`).
    #[error("the user database is unavailable: retry later")]
    DatabaseUnavailable,
    /// Anything else; details are logged, never returned (INTERNAL, `INTERNAL`).
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Contention => Self::DatabaseUnavailable,
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}

impl From<TokenError> for SessionError {
    fn from(e: TokenError) -> Self {
        Self::Internal(anyhow::Error::new(e))
    }
}

impl From<RefreshTokenError> for SessionError {
    fn from(e: RefreshTokenError) -> Self {
        match e {
            RefreshTokenError::Malformed | RefreshTokenError::BadMac => Self::RefreshTokenInvalid,
            RefreshTokenError::WrongApp => Self::WrongApp,
        }
    }
}

/// Why online verification refused a token. Each variant is one row of the gRPC table.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Past `exp` (UNAUTHENTICATED, `TOKEN_EXPIRED`).
    #[error("the access token has expired")]
    Expired,
    /// Before `nbf` (UNAUTHENTICATED, `TOKEN_NOT_YET_VALID`).
    #[error("the access token is not valid yet")]
    NotYetValid,
    /// Signed by a key this service does not verify with (UNAUTHENTICATED, `KEY_UNKNOWN`).
    #[error("the access token was signed by an unknown or retired key")]
    KeyUnknown,
    /// Bad signature, alg, typ, iss, aud or shape; the detail is for logs only
    /// (UNAUTHENTICATED, `TOKEN_INVALID`).
    #[error("the access token is invalid")]
    Invalid(String),
    /// The session was logged out or revoked, or the user deleted (UNAUTHENTICATED, `TOKEN_REVOKED`).
    #[error("the access token's session was revoked")]
    Revoked,
    /// Revocations could not be refreshed recently: fail closed
    /// (UNAVAILABLE, `REVOCATION_UNAVAILABLE`).
    #[error("revocation state is unavailable: retry shortly")]
    RevocationUnavailable,
}

/// The claims of a token that passed online verification.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub claims: Claims,
}

/// The tokens of a session after a login or a refresh.
#[derive(Clone)]
pub struct SessionTokens {
    /// The JWT access token. Secret.
    pub access_token: String,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
    /// The refresh token. Secret.
    pub refresh_token: SecretString,
    /// Seconds until the session ends at the latest (idle or absolute).
    pub refresh_expires_in: u64,
    pub session_id: String,
    pub user_id: UserId,
    pub app_id: AppId,
}

impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTokens")
            .field("access_token", &"[REDACTED]")
            .field("refresh_token", &"[REDACTED]")
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// A session at one generation of its refresh token, and when it ends.
#[derive(Debug, Clone, Copy)]
pub struct SessionAt<'a> {
    pub sid: &'a str,
    pub generation: i64,
    pub idle_expires_at_ms: i64,
    pub expires_at_ms: i64,
}

/// How a logout names its session.
pub enum LogoutCredential<'a> {
    /// The session's refresh token.
    RefreshToken(&'a str),
    /// One of the session's access tokens.
    AccessToken(&'a str),
}

/// What a logout did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutOutcome {
    pub user_id: UserId,
    /// Sessions revoked by this call (0 when already logged out).
    pub sessions_revoked: u64,
}

/// The session use case.
pub struct SessionService {
    store: Store,
    tokens: Arc<TokenIssuer>,
    codec: RefreshCodec,
    apps: Vec<AppId>,
    idle: Duration,
    absolute: Duration,
    refresh_limiter: KeyedLimiter,
    /// How long after a rotation the rotated token may be retried (see the module docs).
    retry_window: Duration,
    revocations: Arc<RevocationCache>,
}

/// The current time in unix milliseconds (the clock sessions are stamped with).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn new_session_id() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl SessionService {
    pub fn new(
        store: Store,
        tokens: Arc<TokenIssuer>,
        codec: RefreshCodec,
        apps: Vec<AppId>,
        settings: &SessionSettings,
    ) -> Self {
        Self {
            store,
            tokens,
            codec,
            apps,
            idle: Duration::from_secs(settings.idle_timeout_secs),
            absolute: Duration::from_secs(settings.absolute_lifetime_secs),
            refresh_limiter: KeyedLimiter::per_minute(settings.refreshes_per_minute),
            retry_window: Duration::from_secs(settings.refresh_retry_window_secs),
            // Stale after a few missed polls: then online verification fails closed.
            revocations: Arc::new(RevocationCache::new(Duration::from_secs(5))),
        }
    }

    /// The revocation cache (its poller is started by the server).
    pub fn revocations(&self) -> &Arc<RevocationCache> {
        &self.revocations
    }

    /// The store this service writes sessions to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Online verification: signature, pinned alg, typ, iss, aud, exp/nbf with
    /// leeway, and revocation of the token's session (one hash lookup).
    pub fn verify_online(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        use crate::tokens::VerifyError as Refused;
        let claims = self.tokens.verify(token).map_err(|e| match e {
            TokenError::Invalid(Refused::Expired) => VerifyError::Expired,
            TokenError::Invalid(Refused::NotYetValid) => VerifyError::NotYetValid,
            TokenError::Invalid(Refused::KeyUnknown(_)) => VerifyError::KeyUnknown,
            other => VerifyError::Invalid(other.to_string()),
        })?;
        if let Some(sid) = &claims.sid {
            match self.revocations.check(sid, now_ms()) {
                Revocation::Live => {}
                Revocation::Revoked => return Err(VerifyError::Revoked),
                Revocation::Unknown => return Err(VerifyError::RevocationUnavailable),
            }
        }
        Ok(VerifiedToken { claims })
    }

    /// The token issuer (online verification of access tokens).
    pub fn tokens(&self) -> &TokenIssuer {
        &self.tokens
    }

    /// A new session starting at `now_ms` (to be written by the login transaction).
    pub fn start(&self, now_ms: i64) -> NewSession {
        NewSession {
            id: new_session_id(),
            created_at_ms: now_ms,
            idle_expires_at_ms: now_ms + self.idle.as_millis() as i64,
            expires_at_ms: now_ms + self.absolute.as_millis() as i64,
        }
    }

    /// The tokens of a session at one generation of its refresh token.
    pub fn tokens_for(
        &self,
        user_id: UserId,
        app_id: &AppId,
        at: SessionAt<'_>,
        now_ms: i64,
    ) -> Result<SessionTokens, SessionError> {
        let SessionAt {
            sid,
            generation,
            idle_expires_at_ms,
            expires_at_ms,
        } = at;
        let expires_at_secs = (expires_at_ms / 1000).max(0) as u64;
        let access = self
            .tokens
            .issue_for_session(user_id, app_id, sid, expires_at_secs)?;
        let refresh = self
            .codec
            .encode(sid, generation, user_id, expires_at_secs, app_id);
        let ends = idle_expires_at_ms.min(expires_at_ms);
        Ok(SessionTokens {
            access_token: access.token,
            expires_in: access.expires_in,
            refresh_token: refresh,
            refresh_expires_in: ((ends - now_ms).max(0) / 1000) as u64,
            session_id: sid.to_owned(),
            user_id,
            app_id: app_id.clone(),
        })
    }

    fn resolve_app(&self, requested: Option<&AppId>) -> Result<AppId, SessionError> {
        match requested {
            Some(app) if self.apps.contains(app) => Ok(app.clone()),
            Some(_) => Err(SessionError::UnknownApp),
            None => match self.apps.as_slice() {
                [only] => Ok(only.clone()),
                _ => Err(SessionError::AppIdRequired),
            },
        }
    }

    /// Rotates a refresh token: the presented token stops working and a new
    /// pair is returned (see the module docs for the retry and reuse rules).
    pub async fn refresh(
        &self,
        app: Option<&AppId>,
        token: &str,
    ) -> Result<SessionTokens, SessionError> {
        let app = self.resolve_app(app)?;
        let parsed = self.codec.decode(token, &app, &self.apps)?;
        if !self.refresh_limiter.allow(&parsed.sid) {
            metrics::counter!("mp_auth_sessions_refreshed_total", "outcome" => "rate_limited")
                .increment(1);
            return Err(SessionError::RateLimited);
        }
        let now = now_ms();
        let idle_until =
            (now + self.idle.as_millis() as i64).min(parsed.expires_at_secs as i64 * 1000);
        let rotation = self
            .store
            .rotate_session(
                &parsed.sid,
                parsed.generation,
                now,
                idle_until,
                self.retry_window.as_millis() as i64,
            )
            .await?;
        let (generation, outcome) = match rotation {
            Rotation::Rotated { generation } => (generation, "rotated"),
            Rotation::Retry { current } => (current, "retry"),
            Rotation::Reused => {
                metrics::counter!("mp_auth_refresh_reuse_detected_total").increment(1);
                metrics::counter!("mp_auth_sessions_refreshed_total", "outcome" => "reused")
                    .increment(1);
                tracing::warn!(
                    session_id = %parsed.sid,
                    user_id = %parsed.user_id,
                    "refresh token reuse detected: session revoked"
                );
                return Err(SessionError::Reused);
            }
            Rotation::Revoked { .. } => {
                metrics::counter!("mp_auth_sessions_refreshed_total", "outcome" => "revoked")
                    .increment(1);
                return Err(SessionError::Revoked);
            }
            Rotation::Expired => {
                metrics::counter!("mp_auth_sessions_refreshed_total", "outcome" => "expired")
                    .increment(1);
                return Err(SessionError::Expired);
            }
            Rotation::NotFound => return Err(SessionError::RefreshTokenInvalid),
        };
        metrics::counter!("mp_auth_sessions_refreshed_total", "outcome" => outcome).increment(1);
        self.tokens_for(
            parsed.user_id,
            &app,
            SessionAt {
                sid: &parsed.sid,
                generation,
                idle_expires_at_ms: idle_until,
                expires_at_ms: parsed.expires_at_secs as i64 * 1000,
            },
            now,
        )
    }

    /// The session (and user) a logout credential names. An access token needs
    /// a valid signature and a `sid`; expiry is tolerated (logging out with an
    /// expired token still ends the session).
    async fn session_of(
        &self,
        credential: LogoutCredential<'_>,
    ) -> Result<(String, UserId), SessionError> {
        match credential {
            LogoutCredential::RefreshToken(token) => {
                let parsed = self.codec.decode_any_app(token, &self.apps)?;
                Ok((parsed.sid, parsed.user_id))
            }
            LogoutCredential::AccessToken(token) => {
                let claims = self.verify_access_token(token)?;
                let sid = claims.sid.ok_or(SessionError::AccessTokenInvalid)?;
                let user = claims
                    .sub
                    .parse::<i64>()
                    .map(UserId)
                    .map_err(|_| SessionError::AccessTokenInvalid)?;
                Ok((sid, user))
            }
        }
    }

    /// Verifies an access token's signature and claims (not revocation).
    pub fn verify_access_token(&self, token: &str) -> Result<Claims, SessionError> {
        self.tokens
            .verify(token)
            .map_err(|_| SessionError::AccessTokenInvalid)
    }

    /// Revokes the credential's session (`all`: every session of its user).
    pub async fn logout(
        &self,
        credential: LogoutCredential<'_>,
        all: bool,
    ) -> Result<LogoutOutcome, SessionError> {
        let (sid, user_id) = self.session_of(credential).await?;
        let Some(row) = self.store.session(&sid).await? else {
            return Err(SessionError::RefreshTokenInvalid);
        };
        if row.user_id != user_id {
            return Err(SessionError::RefreshTokenInvalid);
        }
        let now = now_ms();
        let sessions_revoked = if all {
            self.store
                .revoke_user_sessions(user_id, RevokeReason::LogoutAll, now)
                .await?
        } else {
            u64::from(
                self.store
                    .revoke_session(&sid, RevokeReason::Logout, now)
                    .await?,
            )
        };
        Ok(LogoutOutcome {
            user_id,
            sessions_revoked,
        })
    }

    /// Deletes ended sessions in batches until none is left; run periodically.
    /// Rows are kept until every access token of theirs has expired (the
    /// revocation feed still needs them), hence the `retention` margin.
    pub async fn cleanup(&self, retention: Duration) -> Result<u64, SessionError> {
        let before = now_ms() - retention.as_millis() as i64;
        let mut total = 0;
        loop {
            let n = self.store.delete_ended_sessions(before, 500).await?;
            total += n;
            if n < 500 {
                return Ok(total);
            }
        }
    }
}
