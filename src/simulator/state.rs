//! The simulator's in-memory world: apps, users, session keys, single-use
//! codes and access tokens. Every operation is synchronous and holds a lock
//! only for a short critical section, so the HTTP layer never blocks on it.

use super::{MintedLogin, MintedPhone, SimApp, SimStats, SimulatorConfig, faults::FaultSet};
use crate::{
    domain::{AppId, Phone, SessionKey},
    wechat::crypto::{encrypt_b64, phone_plaintext},
};
use base64::Engine as _;
use rand::{Rng as _, RngCore as _};
use secrecy::ExposeSecret as _;
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Locks a mutex, ignoring poisoning: every critical section leaves the data consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long before expiry WeChat mints the next stable token (both stay valid).
const TOKEN_RENEW_BEFORE: Duration = Duration::from_secs(300);
/// WeChat allows this many `force_refresh=true` calls per app per day.
const FORCE_REFRESH_DAILY_LIMIT: usize = 20;
const DAY: Duration = Duration::from_secs(24 * 3600);
/// Expired tokens still answer 42001 for this long, then become unknown (40001).
const EXPIRED_TOKEN_MEMORY: Duration = Duration::from_secs(3600);

/// A WeChat API error, exactly as WeChat reports it (`errcode` + `errmsg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WxError {
    /// -1 `system error`.
    #[error("system error")]
    SystemError,
    /// 40001: unknown, invalidated or superseded access_token.
    #[error("invalid credential")]
    InvalidCredential,
    /// 40002 `invalid grant_type`.
    #[error("invalid grant_type")]
    InvalidGrantType,
    /// 40013 `invalid appid` (unknown app, or token of another app).
    #[error("invalid appid")]
    InvalidAppId,
    /// 40029 `invalid code`: unknown, expired, other app's, wrong kind, used phone code.
    #[error("invalid code")]
    InvalidCode,
    /// 40125 `invalid appsecret`.
    #[error("invalid appsecret")]
    InvalidAppSecret,
    /// 40163 `code been used`.
    #[error("code been used")]
    CodeBeenUsed,
    /// 41001 `access_token missing`.
    #[error("access_token missing")]
    AccessTokenMissing,
    /// 41002 `appid missing`.
    #[error("appid missing")]
    AppIdMissing,
    /// 41004 `appsecret missing`.
    #[error("appsecret missing")]
    AppSecretMissing,
    /// 41008 `missing code`.
    #[error("missing code")]
    CodeMissing,
    /// 42001 `access_token expired`.
    #[error("access_token expired")]
    AccessTokenExpired,
    /// 43002 `require POST method`.
    #[error("require POST method")]
    RequirePost,
    /// 45009: daily quota of forced refreshes used up.
    #[error("daily quota reached")]
    DailyQuota,
    /// 45011: calls too frequent (forced refreshes closer than the minimum interval).
    #[error("minute quota reached")]
    MinuteQuota,
    /// 47001 `data format error`: the body is not the expected JSON.
    #[error("data format error")]
    DataFormat,
}

impl WxError {
    /// WeChat's numeric errcode.
    pub fn errcode(self) -> i64 {
        match self {
            Self::SystemError => -1,
            Self::InvalidCredential => 40001,
            Self::InvalidGrantType => 40002,
            Self::InvalidAppId => 40013,
            Self::InvalidCode => 40029,
            Self::InvalidAppSecret => 40125,
            Self::CodeBeenUsed => 40163,
            Self::AccessTokenMissing => 41001,
            Self::AppIdMissing => 41002,
            Self::AppSecretMissing => 41004,
            Self::CodeMissing => 41008,
            Self::AccessTokenExpired => 42001,
            Self::RequirePost => 43002,
            Self::DailyQuota => 45009,
            Self::MinuteQuota => 45011,
            Self::DataFormat => 47001,
        }
    }
}

/// WeChat's errmsg for an errcode, without the `, rid: …` suffix.
pub fn errmsg(errcode: i64) -> &'static str {
    match errcode {
        -1 => "system error",
        0 => "ok",
        40001 => {
            "invalid credential, access_token is invalid or not latest, could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r"
        }
        40002 => "invalid grant_type",
        40013 => "invalid appid",
        40014 => "invalid access_token",
        40029 => "invalid code",
        40125 => "invalid appsecret",
        40163 => "code been used",
        40164 => "invalid ip, not in whitelist",
        40226 => "code blocked",
        41001 => "access_token missing",
        41002 => "appid missing",
        41004 => "appsecret missing",
        41008 => "missing code",
        42001 => "access_token expired",
        43002 => "require POST method",
        45009 => "reach max api daily quota limit",
        45011 => "api minute-quota reach limit mustslower retry next minute",
        47001 => "data format error",
        48001 => "api unauthorized",
        89503 => "this IP is calling this API needs admin confirmation",
        _ => "system error",
    }
}

/// A control-API request that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The app is not registered: 404.
    #[error("unknown app_id {0}: register it with POST /_sim/apps or --app")]
    UnknownApp(String),
    /// The request is malformed: 400.
    #[error("{0}")]
    BadRequest(String),
    /// An internal inconsistency: 500.
    #[error("internal error: {0}")]
    Unexpected(String),
}

/// What jscode2session returns on success.
#[derive(Debug, Clone)]
pub struct SessionGrant {
    pub openid: Arc<str>,
    pub session_key: SessionKey,
    pub unionid: Option<Arc<str>>,
}

/// What getuserphonenumber returns on success.
#[derive(Debug, Clone)]
pub struct PhoneGrant {
    pub phone: Phone,
    pub app_id: Arc<str>,
    pub timestamp: i64,
}

/// A registered mini program and its stable-token state.
struct AppEntry {
    app_id: Arc<str>,
    secret: String,
    open_platform: Option<String>,
    tokens: Mutex<AppTokens>,
}

#[derive(Default)]
struct AppTokens {
    current: Option<(Arc<str>, Instant)>,
    /// Tokens of this app that may still be valid (current and rolling-over ones).
    live: Vec<(Arc<str>, Instant)>,
    minted: u64,
    forced: VecDeque<Instant>,
}

struct TokenInfo {
    app_id: Arc<str>,
    expires_at: Instant,
    revoked: bool,
}

struct Session {
    key: SessionKey,
    issued: Instant,
}

struct LoginCodeEntry {
    app_id: Arc<str>,
    grant: SessionGrant,
    expires_at: Instant,
    used: bool,
}

struct PhoneCodeEntry {
    app_id: Arc<str>,
    openid: Arc<str>,
    phone: Phone,
    expires_at: Instant,
    used: bool,
}

/// Single-use codes with a fixed lifetime; expired ones are dropped as new ones
/// arrive (insertion order is expiry order, so pruning is amortised O(1)).
struct CodeStore<E> {
    map: HashMap<String, E>,
    order: VecDeque<(Instant, String)>,
}

impl<E> Default for CodeStore<E> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<E> CodeStore<E> {
    fn insert(&mut self, now: Instant, code: String, expires_at: Instant, entry: E) {
        while let Some((exp, _)) = self.order.front()
            && *exp < now
        {
            if let Some((_, old)) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.order.push_back((expires_at, code.clone()));
        self.map.insert(code, entry);
    }
}

/// The whole simulated WeChat.
pub(crate) struct SimState {
    session_refresh: Duration,
    token_ttl: Duration,
    code_ttl: Duration,
    force_refresh_min_interval: Duration,
    apps: RwLock<HashMap<String, Arc<AppEntry>>>,
    /// Phones set explicitly per user handle (others use the derived default).
    phones: Mutex<HashMap<String, Phone>>,
    /// Current session per app, then per user.
    sessions: Mutex<HashMap<Arc<str>, HashMap<String, Session>>>,
    login_codes: Mutex<CodeStore<LoginCodeEntry>>,
    phone_codes: Mutex<CodeStore<PhoneCodeEntry>>,
    tokens: Mutex<HashMap<Arc<str>, TokenInfo>>,
    calls: [AtomicU64; 3],
    force_refreshes: AtomicU64,
    pub faults: FaultSet,
}

/// Index of an endpoint in [`SimState::calls`].
pub(crate) const JSCODE2SESSION: usize = 0;
pub(crate) const STABLE_TOKEN: usize = 1;
pub(crate) const GETUSERPHONENUMBER: usize = 2;
const CALL_NAMES: [&str; 3] = ["jscode2session", "stable_token", "getuserphonenumber"];

impl SimState {
    pub fn new(config: &SimulatorConfig) -> Self {
        let state = Self {
            session_refresh: config.session_refresh,
            token_ttl: config.token_ttl,
            code_ttl: config.code_ttl,
            force_refresh_min_interval: config.force_refresh_min_interval,
            apps: RwLock::default(),
            phones: Mutex::default(),
            sessions: Mutex::default(),
            login_codes: Mutex::default(),
            phone_codes: Mutex::default(),
            tokens: Mutex::default(),
            calls: Default::default(),
            force_refreshes: AtomicU64::new(0),
            faults: FaultSet::default(),
        };
        for app in &config.apps {
            state.register_app(app);
        }
        state
    }

    /// Registers (or re-registers, replacing secret and open platform) an app.
    pub fn register_app(&self, app: &SimApp) {
        let entry = Arc::new(AppEntry {
            app_id: Arc::from(app.app_id.as_str()),
            secret: app.app_secret.expose_secret().to_owned(),
            open_platform: app.open_platform.clone().filter(|p| !p.is_empty()),
            tokens: Mutex::default(),
        });
        self.apps
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(app.app_id.as_str().to_owned(), entry);
    }

    fn app(&self, app_id: &str) -> Option<Arc<AppEntry>> {
        self.apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(app_id)
            .cloned()
    }

    /// Counts one call to a WeChat endpoint.
    pub fn count_call(&self, endpoint: usize) {
        if let Some(c) = self.calls.get(endpoint) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> SimStats {
        let calls = CALL_NAMES
            .iter()
            .zip(&self.calls)
            .map(|(name, n)| ((*name).to_owned(), n.load(Ordering::Relaxed)))
            .collect();
        let apps: Vec<Arc<AppEntry>> = self
            .apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let tokens_minted: BTreeMap<String, u64> = apps
            .iter()
            .map(|a| (a.app_id.to_string(), lock(&a.tokens).minted))
            .collect();
        SimStats {
            calls,
            tokens_minted,
            force_refreshes: self.force_refreshes.load(Ordering::Relaxed),
        }
    }

    // ---- the WeChat client side (control API) ----

    fn user_phone(&self, user: &str, set: Option<Phone>) -> Result<Phone, ControlError> {
        let mut phones = lock(&self.phones);
        match set {
            Some(p) => {
                phones.insert(user.to_owned(), p.clone());
                Ok(p)
            }
            None => match phones.get(user) {
                Some(p) => Ok(p.clone()),
                None => default_phone(user).map_err(|e| ControlError::Unexpected(e.to_string())),
            },
        }
    }

    /// The user's current session key (created if missing). On `login` the key
    /// is replaced first when it is at least `session_refresh` old.
    fn session_key(&self, app: &AppEntry, user: &str, now: Instant, login: bool) -> SessionKey {
        let mut sessions = lock(&self.sessions);
        let per_app = sessions.entry(app.app_id.clone()).or_default();
        match per_app.get_mut(user) {
            Some(s) => {
                if login && now.saturating_duration_since(s.issued) >= self.session_refresh {
                    s.key = random_session_key();
                    s.issued = now;
                }
                s.key.clone()
            }
            None => {
                let key = random_session_key();
                per_app.insert(
                    user.to_owned(),
                    Session {
                        key: key.clone(),
                        issued: now,
                    },
                );
                key
            }
        }
    }

    fn checked_app(&self, app_id: &str, user: &str) -> Result<Arc<AppEntry>, ControlError> {
        if user.is_empty() || user.len() > 256 {
            return Err(ControlError::BadRequest(
                "`user` must be 1-256 characters".into(),
            ));
        }
        self.app(app_id)
            .ok_or_else(|| ControlError::UnknownApp(app_id.to_owned()))
    }

    /// Plays `wx.login()`: maybe rotates the session key, mints a login code bound to it.
    pub fn mint_login(
        &self,
        app_id: &str,
        user: &str,
        phone: Option<&str>,
    ) -> Result<MintedLogin, ControlError> {
        let app = self.checked_app(app_id, user)?;
        if let Some(p) = phone {
            self.user_phone(user, Some(parse_phone(p)?))?;
        }
        let now = Instant::now();
        let session_key = self.session_key(&app, user, now, true);
        let openid: Arc<str> = Arc::from(openid_for(&app.app_id, user));
        let unionid: Option<Arc<str>> = app
            .open_platform
            .as_deref()
            .map(|p| Arc::from(unionid_for(p, user)));
        let code = random_login_code();
        let minted = MintedLogin {
            code: code.clone(),
            openid: openid.to_string(),
            unionid: unionid.as_deref().map(str::to_owned),
        };
        let entry = LoginCodeEntry {
            app_id: app.app_id.clone(),
            grant: SessionGrant {
                openid,
                session_key,
                unionid,
            },
            expires_at: now + self.code_ttl,
            used: false,
        };
        lock(&self.login_codes).insert(now, code, now + self.code_ttl, entry);
        Ok(minted)
    }

    /// Plays the phone button: a phone code bound to the openid, and the legacy
    /// payload encrypted with the user's current session key.
    pub fn mint_phone(
        &self,
        app_id: &str,
        user: &str,
        phone: Option<&str>,
    ) -> Result<MintedPhone, ControlError> {
        let app = self.checked_app(app_id, user)?;
        let set = phone.map(parse_phone).transpose()?;
        let phone = self.user_phone(user, set)?;
        let now = Instant::now();
        let session_key = self.session_key(&app, user, now, false);
        let app_id_typed =
            AppId::parse(&app.app_id).map_err(|e| ControlError::Unexpected(e.to_string()))?;
        let mut iv = [0u8; 16];
        rand::rng().fill_bytes(&mut iv);
        let plain = phone_plaintext(&app_id_typed, &phone, unix_now());
        let encrypted_data = encrypt_b64(&session_key, &iv, &plain);
        let code = random_phone_code();
        let entry = PhoneCodeEntry {
            app_id: app.app_id.clone(),
            openid: Arc::from(openid_for(&app.app_id, user)),
            phone,
            expires_at: now + self.code_ttl,
            used: false,
        };
        lock(&self.phone_codes).insert(now, code.clone(), now + self.code_ttl, entry);
        Ok(MintedPhone {
            code,
            encrypted_data,
            iv: base64::engine::general_purpose::STANDARD.encode(iv),
        })
    }

    // ---- the WeChat server API ----

    fn authenticate(&self, appid: &str, secret: &str) -> Result<Arc<AppEntry>, WxError> {
        let app = self.app(appid).ok_or(WxError::InvalidAppId)?;
        if app.secret != secret {
            return Err(WxError::InvalidAppSecret);
        }
        Ok(app)
    }

    /// `GET /sns/jscode2session`. Parameters are as received (`None` = absent).
    pub fn code2session(
        &self,
        appid: Option<&str>,
        secret: Option<&str>,
        js_code: Option<&str>,
        grant_type: Option<&str>,
    ) -> Result<(Arc<str>, SessionGrant), WxError> {
        let appid = non_empty(appid).ok_or(WxError::AppIdMissing)?;
        let secret = non_empty(secret).ok_or(WxError::AppSecretMissing)?;
        let js_code = non_empty(js_code).ok_or(WxError::CodeMissing)?;
        if grant_type != Some("authorization_code") {
            return Err(WxError::InvalidGrantType);
        }
        let app = self.authenticate(appid, secret)?;
        let now = Instant::now();
        let mut codes = lock(&self.login_codes);
        let entry = codes.map.get_mut(js_code).ok_or(WxError::InvalidCode)?;
        if entry.app_id != app.app_id || entry.expires_at <= now {
            return Err(WxError::InvalidCode);
        }
        if entry.used {
            return Err(WxError::CodeBeenUsed);
        }
        entry.used = true;
        Ok((app.app_id.clone(), entry.grant.clone()))
    }

    /// `POST /cgi-bin/stable_token`: returns the token and its `expires_in`.
    pub fn stable_token(
        &self,
        appid: Option<&str>,
        secret: Option<&str>,
        grant_type: Option<&str>,
        force_refresh: bool,
    ) -> Result<(Arc<str>, u64), WxError> {
        let appid = non_empty(appid).ok_or(WxError::AppIdMissing)?;
        let secret = non_empty(secret).ok_or(WxError::AppSecretMissing)?;
        if grant_type != Some("client_credential") {
            return Err(WxError::InvalidGrantType);
        }
        let app = self.authenticate(appid, secret)?;
        let now = Instant::now();
        let mut state = lock(&app.tokens);
        // Tokens shorter-lived than WeChat's renewal window (tests) renew at half-life.
        let renew_before = if self.token_ttl > TOKEN_RENEW_BEFORE {
            TOKEN_RENEW_BEFORE
        } else {
            self.token_ttl / 2
        };
        if force_refresh {
            while let Some(t) = state.forced.front()
                && now.saturating_duration_since(*t) >= DAY
            {
                state.forced.pop_front();
            }
            if let Some(last) = state.forced.back()
                && now.saturating_duration_since(*last) < self.force_refresh_min_interval
            {
                return Err(WxError::MinuteQuota);
            }
            if state.forced.len() >= FORCE_REFRESH_DAILY_LIMIT {
                return Err(WxError::DailyQuota);
            }
            state.forced.push_back(now);
            self.force_refreshes.fetch_add(1, Ordering::Relaxed);
            let mut tokens = lock(&self.tokens);
            for (t, _) in state.live.drain(..) {
                if let Some(info) = tokens.get_mut(&t) {
                    info.revoked = true;
                }
            }
            drop(tokens);
        } else if let Some((token, expires_at)) = &state.current {
            let remaining = expires_at.saturating_duration_since(now);
            if remaining >= renew_before && !remaining.is_zero() {
                return Ok((token.clone(), ceil_secs(remaining)));
            }
        }
        let token: Arc<str> = Arc::from(random_access_token());
        let expires_at = now + self.token_ttl;
        state.live.retain(|(_, exp)| *exp > now);
        state.live.push((token.clone(), expires_at));
        state.current = Some((token.clone(), expires_at));
        state.minted += 1;
        let mut tokens = lock(&self.tokens);
        tokens.retain(|_, info| {
            now.saturating_duration_since(info.expires_at) < EXPIRED_TOKEN_MEMORY
        });
        tokens.insert(
            token.clone(),
            TokenInfo {
                app_id: app.app_id.clone(),
                expires_at,
                revoked: false,
            },
        );
        Ok((token, ceil_secs(self.token_ttl)))
    }

    /// `POST /wxa/business/getuserphonenumber`.
    pub fn phone_number(
        &self,
        access_token: Option<&str>,
        code: Option<&str>,
        openid: Option<&str>,
    ) -> Result<PhoneGrant, WxError> {
        let access_token = non_empty(access_token).ok_or(WxError::AccessTokenMissing)?;
        let now = Instant::now();
        let token_app = {
            let tokens = lock(&self.tokens);
            let info = tokens.get(access_token).ok_or(WxError::InvalidCredential)?;
            if info.revoked {
                return Err(WxError::InvalidCredential);
            }
            if info.expires_at <= now {
                return Err(WxError::AccessTokenExpired);
            }
            info.app_id.clone()
        };
        let code = non_empty(code).ok_or(WxError::DataFormat)?;
        let mut codes = lock(&self.phone_codes);
        let entry = codes.map.get_mut(code).ok_or(WxError::InvalidCode)?;
        if entry.app_id != token_app {
            return Err(WxError::InvalidAppId);
        }
        if entry.used || entry.expires_at <= now {
            return Err(WxError::InvalidCode);
        }
        if let Some(o) = non_empty(openid)
            && o != &*entry.openid
        {
            return Err(WxError::InvalidCode);
        }
        entry.used = true;
        Ok(PhoneGrant {
            phone: entry.phone.clone(),
            app_id: entry.app_id.clone(),
            timestamp: unix_now(),
        })
    }
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty())
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn sha256(parts: &[&str]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
        ctx.update(&[0]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `o` + 27 base64url characters: 28 characters, like real openids.
fn wechat_id(kind: &str, scope: &str, user: &str) -> String {
    let hash = sha256(&[kind, scope, user]);
    let mut id = String::with_capacity(44);
    id.push('o');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(hash, &mut id);
    id.truncate(28);
    id
}

/// The user's openid in an app: stable and deterministic.
pub fn openid_for(app_id: &str, user: &str) -> String {
    wechat_id("openid", app_id, user)
}

/// The user's unionid under an open platform account: stable and deterministic.
pub fn unionid_for(open_platform: &str, user: &str) -> String {
    wechat_id("unionid", open_platform, user)
}

/// The phone a user has unless one was set: a valid CN mobile `1[3-9]xxxxxxxxx`.
pub fn default_phone(user: &str) -> Result<Phone, crate::domain::PhoneError> {
    let hash = sha256(&["phone", user]);
    let mut number = String::with_capacity(11);
    number.push('1');
    number.push(char::from(b'3' + hash[0] % 7));
    for b in &hash[1..10] {
        number.push(char::from(b'0' + b % 10));
    }
    Phone::new("86", &number)
}

/// Country calling codes of two digits; `1` and `7` are the one-digit ones,
/// the rest have three (E.164 codes are prefix-free).
const TWO_DIGIT_CC: &[&str] = &[
    "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47",
    "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65",
    "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
];

/// Parses a user's phone: national CN digits, or `+<cc><number>` (a space or
/// dash may separate the country code).
pub fn parse_phone(s: &str) -> Result<Phone, ControlError> {
    let bad = || {
        ControlError::BadRequest(
            "`phone` must be CN mobile digits (13800138000) or +<country code><number> (+12025550123)"
                .into(),
        )
    };
    let s = s.trim();
    let Some(intl) = s.strip_prefix('+') else {
        if s.len() != 11 || !s.starts_with('1') {
            return Err(bad());
        }
        return Phone::new("86", s).map_err(|_| bad());
    };
    if let Some((cc, rest)) = intl.split_once([' ', '-']) {
        return Phone::new(cc, rest).map_err(|_| bad());
    }
    if !intl.bytes().all(|b| b.is_ascii_digit()) || intl.len() < 5 {
        return Err(bad());
    }
    let cc_len = if intl.starts_with('1') || intl.starts_with('7') {
        1
    } else if TWO_DIGIT_CC.contains(&&intl[..2]) {
        2
    } else {
        3
    };
    Phone::new(&intl[..cc_len], &intl[cc_len..]).map_err(|_| bad())
}

fn random_session_key() -> SessionKey {
    let mut key = [0u8; 16];
    rand::rng().fill_bytes(&mut key);
    SessionKey::from_bytes(key)
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

fn random_from(prefix: &str, alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    for _ in 0..len {
        s.push(char::from(alphabet[rng.random_range(0..alphabet.len())]));
    }
    s
}

/// 32 characters like `0c3Xyz0w3Ojbq03V7a0w3ZbAmE2Xyz0D`.
fn random_login_code() -> String {
    random_from("0", ALNUM, 31)
}

/// 64 lowercase hex characters, like real phone codes.
fn random_phone_code() -> String {
    random_from("", b"0123456789abcdef", 64)
}

/// `91_` followed by 133 URL-safe characters: opaque and long, like real tokens.
fn random_access_token() -> String {
    random_from("91_", URL_SAFE, 133)
}

/// The `, rid: xxxxxxxx-xxxxxxxx-xxxxxxxx` suffix WeChat appends to errmsgs.
pub(crate) fn rid() -> String {
    let mut rng = rand::rng();
    format!(
        "{:08x}-{:08x}-{:08x}",
        unix_now() as u32,
        rng.next_u32(),
        rng.next_u32()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn app(id: &str, platform: Option<&str>) -> SimApp {
        SimApp {
            app_id: AppId::parse(id).unwrap(),
            app_secret: SecretString::from(format!("{id}-secret")),
            open_platform: platform.map(str::to_owned),
        }
    }

    fn state(config: SimulatorConfig) -> SimState {
        SimState::new(&SimulatorConfig {
            apps: vec![
                app("wxa", Some("op")),
                app("wxb", Some("op")),
                app("wxc", None),
            ],
            ..config
        })
    }

    #[test]
    fn openids_look_real_and_are_stable_per_app_and_user() {
        let a = openid_for("wxa", "alice");
        assert_eq!(a.len(), 28);
        assert!(a.starts_with('o'));
        assert_eq!(a, openid_for("wxa", "alice"));
        assert_ne!(a, openid_for("wxb", "alice"));
        assert_ne!(a, openid_for("wxa", "bob"));
    }

    #[test]
    fn apps_sharing_an_open_platform_share_unionids() {
        let s = state(SimulatorConfig::default());
        let a = s.mint_login("wxa", "alice", None).unwrap();
        let b = s.mint_login("wxb", "alice", None).unwrap();
        let c = s.mint_login("wxc", "alice", None).unwrap();
        assert_eq!(a.unionid, b.unionid);
        assert!(a.unionid.is_some());
        assert_ne!(a.openid, b.openid);
        assert_eq!(c.unionid, None);
    }

    #[test]
    fn default_phones_are_valid_cn_mobiles() {
        for user in ["a", "b", "alice", "用户"] {
            let p = default_phone(user).unwrap();
            assert_eq!(p.country_code(), "86");
            let n = p.number().as_bytes();
            assert_eq!(n.len(), 11);
            assert_eq!(n[0], b'1');
            assert!((b'3'..=b'9').contains(&n[1]));
        }
        assert_eq!(default_phone("x").unwrap(), default_phone("x").unwrap());
    }

    #[test]
    fn phones_parse_national_and_international_forms() {
        assert_eq!(parse_phone("13800138000").unwrap().e164(), "+8613800138000");
        assert_eq!(parse_phone("+12025550123").unwrap().e164(), "+12025550123");
        let hk = parse_phone("+85291234567").unwrap();
        assert_eq!(hk.country_code(), "852");
        let uk = parse_phone("+447911123456").unwrap();
        assert_eq!(uk.country_code(), "44");
        assert_eq!(parse_phone("+852 9123-4567").unwrap().country_code(), "852");
        assert!(parse_phone("12345").is_err());
        assert!(parse_phone("+abc").is_err());
    }

    #[test]
    fn login_codes_are_single_use() {
        let s = state(SimulatorConfig::default());
        let m = s.mint_login("wxa", "alice", None).unwrap();
        let ok = s.code2session(
            Some("wxa"),
            Some("wxa-secret"),
            Some(&m.code),
            Some("authorization_code"),
        );
        assert_eq!(&*ok.unwrap().1.openid, m.openid);
        let again = s.code2session(
            Some("wxa"),
            Some("wxa-secret"),
            Some(&m.code),
            Some("authorization_code"),
        );
        assert_eq!(again.unwrap_err(), WxError::CodeBeenUsed);
    }

    #[test]
    fn code2session_checks_parameters_in_wechat_order() {
        let s = state(SimulatorConfig::default());
        let gt = Some("authorization_code");
        let e = |r: Result<(Arc<str>, SessionGrant), WxError>| r.unwrap_err().errcode();
        assert_eq!(e(s.code2session(None, Some("x"), Some("c"), gt)), 41002);
        assert_eq!(e(s.code2session(Some("wxa"), None, Some("c"), gt)), 41004);
        assert_eq!(
            e(s.code2session(Some("wxa"), Some("x"), Some(""), gt)),
            41008
        );
        assert_eq!(
            e(s.code2session(Some("wxa"), Some("x"), Some("c"), Some("password"))),
            40002
        );
        assert_eq!(
            e(s.code2session(Some("wxz"), Some("x"), Some("c"), gt)),
            40013
        );
        assert_eq!(
            e(s.code2session(Some("wxa"), Some("x"), Some("c"), gt)),
            40125
        );
        assert_eq!(
            e(s.code2session(Some("wxa"), Some("wxa-secret"), Some("c"), gt)),
            40029
        );
    }

    #[test]
    fn pruning_drops_expired_codes_as_new_ones_arrive() {
        let s = state(SimulatorConfig {
            code_ttl: Duration::ZERO,
            ..SimulatorConfig::default()
        });
        for i in 0..50 {
            s.mint_login("wxa", &format!("u{i}"), None).unwrap();
        }
        assert!(lock(&s.login_codes).map.len() <= 2);
    }

    #[test]
    fn forced_refreshes_are_rate_limited() {
        let s = state(SimulatorConfig {
            force_refresh_min_interval: Duration::from_secs(30),
            ..SimulatorConfig::default()
        });
        let call = |force| {
            s.stable_token(
                Some("wxa"),
                Some("wxa-secret"),
                Some("client_credential"),
                force,
            )
        };
        assert!(call(true).is_ok());
        assert_eq!(call(true).unwrap_err(), WxError::MinuteQuota);
        assert!(call(false).is_ok());
    }

    #[test]
    fn forced_refreshes_stop_at_twenty_a_day() {
        let s = state(SimulatorConfig {
            force_refresh_min_interval: Duration::ZERO,
            ..SimulatorConfig::default()
        });
        for _ in 0..FORCE_REFRESH_DAILY_LIMIT {
            s.stable_token(
                Some("wxa"),
                Some("wxa-secret"),
                Some("client_credential"),
                true,
            )
            .unwrap();
        }
        let err = s
            .stable_token(
                Some("wxa"),
                Some("wxa-secret"),
                Some("client_credential"),
                true,
            )
            .unwrap_err();
        assert_eq!(err.errcode(), 45009);
        assert_eq!(s.stats().force_refreshes, 20);
    }

    #[test]
    fn every_error_has_a_real_errmsg() {
        for e in [
            WxError::SystemError,
            WxError::InvalidCredential,
            WxError::InvalidCode,
            WxError::CodeBeenUsed,
            WxError::RequirePost,
            WxError::DataFormat,
        ] {
            assert_ne!(errmsg(e.errcode()), "", "{e:?}");
        }
        assert_eq!(errmsg(40163), "code been used");
        assert!(errmsg(40001).starts_with("invalid credential, access_token is invalid"));
    }

    #[test]
    fn rids_look_like_wechat_rids() {
        let r = rid();
        let parts: Vec<&str> = r.split('-').collect();
        assert_eq!(parts.len(), 3);
        assert!(
            parts
                .iter()
                .all(|p| p.len() == 8 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }
}
