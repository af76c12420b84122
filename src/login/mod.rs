//! The login use case: `wx.login` code → WeChat session → phone number → user
//! (found or created by phone) → access token. It speaks domain types only;
//! the gRPC edge translates [`LoginError`] with its one status table.

mod in_flight;
mod session_vault;

pub use session_vault::{SessionVault, VaultError};

use crate::{
    domain::{AppId, FieldError, LoginCode, OpenId, Phone, PhoneCode, SessionKey, UnionId, UserId},
    sessions::{KeyedLimiter, SessionAt, SessionService, SessionTokens},
    store::{LoginRecord, SilentLogin, SilentOutcome, Store, StoreError},
    wechat::{
        WechatClient, WechatError, WxSession,
        crypto::{DecryptError, decrypt_phone},
    },
};
use futures::FutureExt as _;
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

/// How the client proves its phone number.
pub enum PhoneProof {
    /// New flow: the phone button's `e.detail.code`.
    Code(PhoneCode),
    /// Legacy flow: `encryptedData` + `iv`, decrypted with the session_key.
    Encrypted { encrypted_data: String, iv: String },
}

impl PhoneProof {
    /// The flow's name for logs and metrics.
    pub fn flow(&self) -> &'static str {
        match self {
            Self::Code(_) => "phone_code",
            Self::Encrypted { .. } => "encrypted_data",
        }
    }
}

/// A parsed login request.
pub struct LoginRequest {
    /// The app; `None` is allowed when exactly one app is configured.
    pub app_id: Option<AppId>,
    /// The `wx.login` code.
    pub code: LoginCode,
    /// The phone proof; `None` asks for a silent login (静默登录) of a known user.
    pub phone: Option<PhoneProof>,
}

impl LoginRequest {
    /// The flow's name for logs and metrics.
    pub fn flow(&self) -> &'static str {
        self.phone.as_ref().map_or("silent", PhoneProof::flow)
    }
}

/// A successful login.
#[derive(Clone)]
pub struct LoginResponse {
    /// The access and refresh tokens of the session this login started. Secret.
    pub session: SessionTokens,
    pub user_id: UserId,
    pub app_id: AppId,
    pub openid: OpenId,
    pub unionid: Option<UnionId>,
    pub is_new_user: bool,
    /// True when a silent login linked this identity to the user of the same
    /// unionid in another mini program.
    pub linked_by_unionid: bool,
    /// Masked phone, for the request log line (empty for a silent login).
    pub phone_masked: String,
}

impl std::fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginResponse")
            .field("session", &self.session)
            .field("user_id", &self.user_id)
            .field("app_id", &self.app_id)
            .field("is_new_user", &self.is_new_user)
            .finish()
    }
}

/// Why a login failed. Each variant is one row of the gRPC error table
/// (`grpc::error`), with a stable machine-readable reason.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// A field is missing or malformed (INVALID_ARGUMENT, `INVALID_ARGUMENT`).
    #[error(transparent)]
    InvalidField(#[from] FieldError),
    /// `app_id` was omitted but several apps are configured (INVALID_ARGUMENT, `APP_ID_REQUIRED`).
    #[error("`app_id` is required: this service serves several mini programs")]
    AppIdRequired,
    /// The app is not configured here (NOT_FOUND, `UNKNOWN_APP`).
    #[error("unknown app_id")]
    UnknownApp,
    /// The `wx.login` code is invalid or expired (UNAUTHENTICATED, `LOGIN_CODE_INVALID`).
    #[error("the wx.login code is invalid or expired: call wx.login again")]
    LoginCodeInvalid,
    /// The `wx.login` code was already used (UNAUTHENTICATED, `LOGIN_CODE_USED`).
    #[error("the wx.login code was already used: call wx.login again and retry once")]
    LoginCodeUsed,
    /// The phone code is invalid, expired, used or not this user's (UNAUTHENTICATED, `PHONE_CODE_INVALID`).
    #[error(
        "the phone code is invalid, expired or already used: ask the user to tap the phone button again"
    )]
    PhoneCodeInvalid,
    /// WeChat blocked this user (40226) (PERMISSION_DENIED, `USER_BLOCKED`).
    #[error("WeChat blocked this login as high-risk")]
    UserBlocked,
    /// WeChat rate limit (45011) (RESOURCE_EXHAUSTED, `WECHAT_RATE_LIMITED`).
    #[error("WeChat rate limit reached: retry in a minute")]
    RateLimited,
    /// WeChat is busy, down, slow, or answered garbage (UNAVAILABLE, `WECHAT_UNAVAILABLE`).
    #[error("WeChat is unavailable: retry later")]
    WechatUnavailable,
    /// WeChat rejected our credentials or permissions: an operator must fix the
    /// app's configuration (INTERNAL, `WECHAT_APP_MISCONFIGURED`).
    #[error("the service's WeChat credentials for this app are rejected by WeChat")]
    WechatMisconfigured,
    /// The encrypted data does not decrypt with the session key of this code,
    /// nor with the stored previous key (FAILED_PRECONDITION, `SESSION_KEY_STALE`).
    #[error(
        "the encrypted data does not match this login's session: call wx.login before the phone button, then retry"
    )]
    SessionKeyStale,
    /// The encrypted data was produced for another app (INVALID_ARGUMENT, `WATERMARK_MISMATCH`).
    #[error("the encrypted data was produced for another mini program")]
    WatermarkMismatch,
    /// The encrypted data is too old (FAILED_PRECONDITION, `ENCRYPTED_DATA_EXPIRED`).
    #[error("the encrypted data has expired: ask the user to tap the phone button again")]
    EncryptedDataExpired,
    /// A silent login of an identity no user is bound to: the client must ask
    /// for the phone (FAILED_PRECONDITION, `PHONE_REQUIRED`). The session_key of
    /// this `wx.login` is kept, so the legacy phone flow can follow.
    #[error("this WeChat user is not registered yet: ask for the phone number (tap 一键登录)")]
    PhoneRequired,
    /// Too many silent logins of one WeChat identity (RESOURCE_EXHAUSTED, `RATE_LIMITED`).
    #[error("too many logins of this user: retry in a minute")]
    TooManyAttempts,
    /// The database is unreachable or saturated (UNAVAILABLE, `DATABASE_UNAVAILABLE`).
    #[error("the user database is unavailable: retry later")]
    DatabaseUnavailable,
    /// Anything else; details are logged, never returned (INTERNAL, `INTERNAL`).
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl LoginError {
    /// The same error for a concurrent duplicate of the login that failed
    /// (internal details stay with the original).
    fn replay(&self) -> LoginError {
        match self {
            Self::InvalidField(f) => Self::InvalidField(f.clone()),
            Self::AppIdRequired => Self::AppIdRequired,
            Self::UnknownApp => Self::UnknownApp,
            Self::LoginCodeInvalid => Self::LoginCodeInvalid,
            Self::LoginCodeUsed => Self::LoginCodeUsed,
            Self::PhoneCodeInvalid => Self::PhoneCodeInvalid,
            Self::UserBlocked => Self::UserBlocked,
            Self::RateLimited => Self::RateLimited,
            Self::WechatUnavailable => Self::WechatUnavailable,
            Self::WechatMisconfigured => Self::WechatMisconfigured,
            Self::SessionKeyStale => Self::SessionKeyStale,
            Self::WatermarkMismatch => Self::WatermarkMismatch,
            Self::EncryptedDataExpired => Self::EncryptedDataExpired,
            Self::PhoneRequired => Self::PhoneRequired,
            Self::TooManyAttempts => Self::TooManyAttempts,
            Self::DatabaseUnavailable => Self::DatabaseUnavailable,
            Self::Internal(_) => Self::Internal(anyhow::anyhow!(
                "the concurrent login with the same code failed internally"
            )),
        }
    }
}

/// Everything a login needs, shared by all requests.
pub struct LoginService {
    apps: Vec<AppId>,
    wechat: WechatClient,
    store: Store,
    sessions: Arc<SessionService>,
    vault: SessionVault,
    silent_limiter: KeyedLimiter,
    watermark_max_age: Duration,
    session_key_ttl: Duration,
    in_flight: in_flight::InFlight,
}

use crate::clock::unix_ms as now_ms;

/// The login use case's own settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginSettings {
    /// Silent logins per openid and minute (`sessions.silent_logins_per_minute`).
    pub silent_logins_per_minute: u32,
    /// The oldest legacy `encryptedData` accepted (`wechat.watermark_max_age_secs`).
    pub watermark_max_age: Duration,
    /// How long a stored session_key is used (`session_keys.ttl_secs`).
    pub session_key_ttl: Duration,
}

impl LoginService {
    /// Assembles the use case from its parts.
    pub fn new(
        settings: LoginSettings,
        apps: Vec<AppId>,
        wechat: WechatClient,
        store: Store,
        sessions: Arc<SessionService>,
        vault: SessionVault,
    ) -> Self {
        Self {
            apps,
            wechat,
            store,
            sessions,
            vault,
            silent_limiter: KeyedLimiter::per_minute(settings.silent_logins_per_minute),
            watermark_max_age: settings.watermark_max_age,
            session_key_ttl: settings.session_key_ttl,
            in_flight: in_flight::InFlight::default(),
        }
    }

    /// The configured app a request is for: the requested one if configured,
    /// or the only app when none was requested. Edges use it to label metrics
    /// with configured apps only (bounded cardinality).
    pub fn resolve_app(&self, requested: Option<&AppId>) -> Result<AppId, LoginError> {
        match requested {
            Some(app) if self.apps.contains(app) => Ok(app.clone()),
            Some(_) => Err(LoginError::UnknownApp),
            None => match self.apps.as_slice() {
                [only] => Ok(only.clone()),
                _ => Err(LoginError::AppIdRequired),
            },
        }
    }

    /// Runs one login. A concurrent duplicate (same app, same `wx.login` code:
    /// a double tap) joins the login already running instead of burning the
    /// code a second time.
    #[tracing::instrument(name = "login", skip_all, fields(app_id = tracing::field::Empty, flow = request.flow(), user_id = tracing::field::Empty))]
    pub async fn login(
        self: &Arc<Self>,
        mut request: LoginRequest,
    ) -> Result<LoginResponse, LoginError> {
        let app_id = self.resolve_app(request.app_id.take().as_ref())?;
        tracing::Span::current().record("app_id", tracing::field::display(&app_id));
        let key = in_flight::key(&app_id, &request.code);
        let proof = in_flight::proof_digest(request.phone.as_ref());
        let this = Arc::clone(self);
        self.in_flight
            .run(key, proof, move || this.login_once(app_id, request).boxed())
            .await
    }

    /// The login itself. Order matters: the phone code (a paid, single-use
    /// credential) is spent only after the `wx.login` code was accepted.
    async fn login_once(
        self: Arc<Self>,
        app_id: AppId,
        request: LoginRequest,
    ) -> Result<LoginResponse, LoginError> {
        let session = self
            .wechat
            .code2session(&app_id, &request.code)
            .await
            .map_err(map_code2session_error)?;
        let now = SystemTime::now();
        let sealed = self
            .vault
            .seal(&app_id, &session.openid, &session.session_key)
            .map_err(|e| LoginError::Internal(e.into()))?;
        let key_expires_at = now_ms(now) + self.session_key_ttl.as_millis() as i64;

        let Some(proof) = request.phone else {
            return self
                .silent(&app_id, session, &sealed, key_expires_at, now)
                .await;
        };
        let phone = match self.phone(&app_id, &session, proof, now).await {
            Ok(phone) => phone,
            Err(err) => {
                // Keep the fresh session_key so the user's next legacy attempt can fall back to it.
                if let Err(store_err) = self
                    .store
                    .save_session_key(&app_id, &session.openid, &sealed, key_expires_at)
                    .await
                {
                    tracing::warn!(error = %store_err, "could not store the session key after a failed login");
                }
                return Err(err);
            }
        };

        let new_session = self.sessions.start(now_ms(now));
        let outcome = self
            .store
            .record_login(&LoginRecord {
                app_id: &app_id,
                openid: &session.openid,
                unionid: session.unionid.as_ref(),
                phone: &phone,
                sealed_session_key: &sealed,
                session_key_expires_at_ms: key_expires_at,
                session: Some(&new_session),
                now_ms: now_ms(now),
            })
            .await
            .map_err(map_store_error)?;
        tracing::Span::current().record("user_id", tracing::field::display(outcome.user_id));
        metrics::counter!("mp_auth_sessions_created_total", "flow" => "phone").increment(1);
        let tokens = self.session_tokens(outcome.user_id, &app_id, &new_session, now)?;
        Ok(LoginResponse {
            session: tokens,
            user_id: outcome.user_id,
            app_id,
            openid: session.openid,
            unionid: session.unionid,
            is_new_user: outcome.is_new_user,
            linked_by_unionid: false,
            phone_masked: phone.masked(),
        })
    }

    fn session_tokens(
        &self,
        user_id: UserId,
        app_id: &AppId,
        session: &crate::store::NewSession,
        now: SystemTime,
    ) -> Result<SessionTokens, LoginError> {
        self.sessions
            .tokens_for(
                user_id,
                app_id,
                SessionAt {
                    sid: &session.id,
                    generation: 1,
                    idle_expires_at_ms: session.idle_expires_at_ms,
                    expires_at_ms: session.expires_at_ms,
                },
                now_ms(now),
            )
            .map_err(|e| LoginError::Internal(anyhow::Error::new(e)))
    }

    /// A login with no phone proof (静默登录): succeeds for an identity already
    /// bound to a user, or linked to one through its unionid; otherwise keeps the
    /// session_key and answers [`LoginError::PhoneRequired`].
    async fn silent(
        &self,
        app_id: &AppId,
        session: WxSession,
        sealed: &[u8],
        key_expires_at: i64,
        now: SystemTime,
    ) -> Result<LoginResponse, LoginError> {
        let limiter_key = format!("{}/{}", app_id.as_str(), session.openid.as_str());
        if !self.silent_limiter.allow(&limiter_key) {
            metrics::counter!("mp_auth_silent_logins_total", "outcome" => "rate_limited")
                .increment(1);
            return Err(LoginError::TooManyAttempts);
        }
        let new_session = self.sessions.start(now_ms(now));
        let outcome = self
            .store
            .silent_login(&SilentLogin {
                app_id,
                openid: &session.openid,
                unionid: session.unionid.as_ref(),
                sealed_session_key: sealed,
                session_key_expires_at_ms: key_expires_at,
                session: &new_session,
                now_ms: now_ms(now),
            })
            .await
            .map_err(map_store_error)?;
        let (user_id, linked) = match outcome {
            SilentOutcome::Known(id) => (id, false),
            SilentOutcome::Linked(id) => (id, true),
            SilentOutcome::Unknown => {
                metrics::counter!("mp_auth_silent_logins_total", "outcome" => "phone_required")
                    .increment(1);
                return Err(LoginError::PhoneRequired);
            }
        };
        metrics::counter!("mp_auth_silent_logins_total", "outcome" => if linked { "linked" } else { "known" })
            .increment(1);
        metrics::counter!("mp_auth_sessions_created_total", "flow" => "silent").increment(1);
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        let tokens = self.session_tokens(user_id, app_id, &new_session, now)?;
        Ok(LoginResponse {
            session: tokens,
            user_id,
            app_id: app_id.clone(),
            openid: session.openid,
            unionid: session.unionid,
            is_new_user: false,
            linked_by_unionid: linked,
            phone_masked: String::new(),
        })
    }

    async fn phone(
        &self,
        app_id: &AppId,
        session: &WxSession,
        proof: PhoneProof,
        now: SystemTime,
    ) -> Result<Phone, LoginError> {
        match proof {
            PhoneProof::Code(code) => self
                .wechat
                .phone_number(app_id, &code, &session.openid)
                .await
                .map_err(map_phone_error),
            PhoneProof::Encrypted { encrypted_data, iv } => {
                let fresh = self.decrypt(app_id, &session.session_key, &encrypted_data, &iv, now);
                match fresh {
                    Err(e) if e.is_key_failure() => {
                        self.decrypt_with_stored_key(app_id, session, &encrypted_data, &iv, now)
                            .await
                    }
                    other => other.map_err(map_decrypt_error),
                }
            }
        }
    }

    fn decrypt(
        &self,
        app_id: &AppId,
        key: &SessionKey,
        data: &str,
        iv: &str,
        now: SystemTime,
    ) -> Result<Phone, DecryptError> {
        decrypt_phone(app_id, key, data, iv, now, self.watermark_max_age).map(|r| r.phone)
    }

    /// The rescue path: the mini-program called `wx.login` after the phone
    /// button, so the data was encrypted with the previous key of this openid.
    async fn decrypt_with_stored_key(
        &self,
        app_id: &AppId,
        session: &WxSession,
        data: &str,
        iv: &str,
        now: SystemTime,
    ) -> Result<Phone, LoginError> {
        let stored = self
            .store
            .session_key(app_id, &session.openid, now_ms(now))
            .await
            .map_err(map_store_error)?;
        let Some(sealed) = stored else {
            return Err(LoginError::SessionKeyStale);
        };
        let previous = match self.vault.open(app_id, &session.openid, &sealed) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(error = %e, "stored session key does not open");
                return Err(LoginError::SessionKeyStale);
            }
        };
        if previous == session.session_key {
            return Err(LoginError::SessionKeyStale);
        }
        match self.decrypt(app_id, &previous, data, iv, now) {
            Ok(phone) => {
                metrics::counter!("mp_auth_session_key_rescues_total").increment(1);
                Ok(phone)
            }
            Err(e) if e.is_key_failure() => Err(LoginError::SessionKeyStale),
            Err(e) => Err(map_decrypt_error(e)),
        }
    }
}

fn map_decrypt_error(e: DecryptError) -> LoginError {
    match e {
        DecryptError::Base64 { field: "iv", .. } | DecryptError::IvLength(_) => {
            LoginError::InvalidField(FieldError::new(
                "iv",
                "must be the base64 of 16 bytes, as the phone button returns it",
            ))
        }
        DecryptError::Base64 { .. } | DecryptError::CiphertextLength(_) => {
            LoginError::InvalidField(FieldError::new(
                "encrypted_data",
                "must be the base64 ciphertext the phone button returns (a multiple of 16 bytes)",
            ))
        }
        // No padding oracle: padding and JSON failures are one reason.
        DecryptError::Padding | DecryptError::NotJson | DecryptError::BadPhone => {
            LoginError::SessionKeyStale
        }
        DecryptError::WatermarkAppId => LoginError::WatermarkMismatch,
        DecryptError::StaleWatermark { .. } => LoginError::EncryptedDataExpired,
    }
}

fn map_store_error(e: StoreError) -> LoginError {
    match e {
        StoreError::Unavailable(_) | StoreError::Contention => LoginError::DatabaseUnavailable,
        other => LoginError::Internal(anyhow::Error::new(other)),
    }
}

fn map_common_wechat_error(e: WechatError) -> LoginError {
    use WechatError as W;
    match e {
        W::UserBlocked => LoginError::UserBlocked,
        W::RateLimited { .. } => LoginError::RateLimited,
        W::UnknownApp(_) => LoginError::UnknownApp,
        // A wx.login code or phone code problem reaching here was classified by the caller.
        W::InvalidCode | W::CodeUsed => LoginError::LoginCodeInvalid,
        // Refused again after the one retry with a re-fetched token: a WeChat-side
        // token problem (a concurrent reset, propagation); the caller may retry.
        W::AccessTokenInvalid { .. } => {
            tracing::warn!(error = %e, "WeChat refused a freshly fetched access_token");
            LoginError::WechatUnavailable
        }
        W::InvalidAppSecret { .. }
        | W::InvalidAppId
        | W::NotAuthorized
        | W::IpNotWhitelisted { .. }
        | W::MissingParameter { .. }
        | W::Config(_) => {
            tracing::error!(error = %e, "WeChat rejected this app's credentials or request: check apps[].app_secret, the API IP whitelist and the account's permissions");
            LoginError::WechatMisconfigured
        }
        W::WatermarkMismatch | W::BadPhone => {
            tracing::warn!(error = %e, "WeChat returned an unusable phone record");
            LoginError::WechatUnavailable
        }
        W::Busy
        | W::Api { .. }
        | W::HttpStatus(_)
        | W::Malformed(_)
        | W::Timeout
        | W::Connect(_)
        | W::Transport(_) => {
            tracing::warn!(error = %e, "WeChat unavailable");
            LoginError::WechatUnavailable
        }
    }
}

fn map_code2session_error(e: WechatError) -> LoginError {
    match e {
        WechatError::InvalidCode => LoginError::LoginCodeInvalid,
        WechatError::CodeUsed => LoginError::LoginCodeUsed,
        other => map_common_wechat_error(other),
    }
}

fn map_phone_error(e: WechatError) -> LoginError {
    match e {
        // 40013 on getuserphonenumber: the access_token is ours, so the AppID that
        // does not match is the phone code's (a code minted for another mini program).
        WechatError::InvalidCode | WechatError::CodeUsed | WechatError::InvalidAppId => {
            LoginError::PhoneCodeInvalid
        }
        other => map_common_wechat_error(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::Endpoint;

    /// Every errcode a client can provoke with what it sends (a `wx.login` code
    /// or a phone code of its choosing), on the endpoint it reaches, plus
    /// undocumented ones: none may become an INTERNAL status (`Internal` or
    /// `WechatMisconfigured`), which would blame the operator for client input.
    #[test]
    fn no_errcode_reachable_from_client_input_is_internal() {
        let reachable: [(Endpoint, &[i64]); 2] = [
            (
                Endpoint::Code2Session,
                &[-1, 40029, 40163, 40226, 45011, 45009, 61003, 99999],
            ),
            (
                Endpoint::PhoneNumber,
                &[
                    -1, 40029, 40163, 40013, 40001, 42001, 40014, 41001, 45011, 45009, 40226,
                    61003, 99999,
                ],
            ),
        ];
        for (endpoint, codes) in reachable {
            for &code in codes {
                let err = WechatError::from_errcode(endpoint, code, "msg");
                let mapped = match endpoint {
                    Endpoint::PhoneNumber => map_phone_error(err),
                    _ => map_code2session_error(err),
                };
                assert!(
                    !matches!(
                        mapped,
                        LoginError::Internal(_) | LoginError::WechatMisconfigured
                    ),
                    "{endpoint:?} errcode {code} -> {mapped:?}"
                );
            }
        }
    }

    #[test]
    fn a_phone_code_of_another_mini_program_is_an_invalid_phone_code() {
        let err = WechatError::from_errcode(Endpoint::PhoneNumber, 40013, "invalid appid");
        assert!(matches!(map_phone_error(err), LoginError::PhoneCodeInvalid));
    }

    #[test]
    fn our_own_credentials_problems_stay_operator_errors() {
        for (endpoint, code) in [
            (Endpoint::StableToken, 40125),
            (Endpoint::StableToken, 40164),
            (Endpoint::Code2Session, 40013),
            (Endpoint::PhoneNumber, 48001),
        ] {
            let err = WechatError::from_errcode(endpoint, code, "msg");
            assert!(matches!(
                map_code2session_error(err),
                LoginError::WechatMisconfigured
            ));
        }
    }
}
