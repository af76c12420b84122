//! The simulated WeChat as one value: the apps, identities, sessions, codes and
//! tokens composed into the operations the two APIs serve: the client side
//! (`wx.login`, the phone button) and the server side (jscode2session,
//! stable_token, getuserphonenumber). Every operation is synchronous and holds
//! a lock only for a short critical section, so the HTTP layer never blocks on it.

use crate::{
    apps::{AppEntry, Apps},
    codes::{Codes, SessionGrant},
    config::{SimApp, SimulatorConfig},
    crypto::encrypt_phone,
    errcode::{WxError, unix_now},
    faults::{FaultEndpoint, FaultSet},
    identities::{Phones, openid_for, unionid_for},
    phone::{Phone, parse_phone},
    sessions::Sessions,
    tokens::Tokens,
    wire::{MintedLogin, MintedPhone, SimStats},
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

/// A control-API request that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The app is not registered: 404.
    #[error("unknown app_id {0}: register it with POST /_sim/apps or --app")]
    UnknownApp(String),
    /// The request is malformed: 400.
    #[error("{0}")]
    BadRequest(String),
}

/// What getuserphonenumber returns on success.
#[derive(Debug, Clone)]
pub(crate) struct PhoneGrant {
    pub phone: Phone,
    pub app_id: Arc<str>,
    pub timestamp: i64,
}

/// The endpoints counted in [`SimStats::calls`], in [`SimState::count_call`]'s order.
const COUNTED: [FaultEndpoint; 3] = [
    FaultEndpoint::Jscode2Session,
    FaultEndpoint::StableToken,
    FaultEndpoint::GetUserPhoneNumber,
];

/// The whole simulated WeChat.
pub(crate) struct SimState {
    apps: Apps,
    phones: Phones,
    sessions: Sessions,
    codes: Codes,
    tokens: Tokens,
    calls: [AtomicU64; 3],
    pub faults: FaultSet,
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty())
}

impl SimState {
    pub fn new(config: &SimulatorConfig) -> Self {
        let state = Self {
            apps: Apps::default(),
            phones: Phones::default(),
            sessions: Sessions::new(config.session_refresh),
            codes: Codes::new(config.code_ttl),
            tokens: Tokens::new(config.token_ttl, config.force_refresh_min_interval),
            calls: Default::default(),
            faults: FaultSet::default(),
        };
        for app in &config.apps {
            state.register_app(app);
        }
        state
    }

    /// Registers (or re-registers, replacing secret and open platform) an app.
    pub fn register_app(&self, app: &SimApp) {
        self.apps.register(app);
    }

    /// Counts one call to a WeChat endpoint.
    pub fn count_call(&self, endpoint: FaultEndpoint) {
        if let Some(i) = COUNTED.iter().position(|e| *e == endpoint)
            && let Some(c) = self.calls.get(i)
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> SimStats {
        SimStats {
            calls: COUNTED
                .iter()
                .zip(&self.calls)
                .map(|(e, n)| (e.as_str().to_owned(), n.load(Ordering::Relaxed)))
                .collect(),
            tokens_minted: self
                .apps
                .all()
                .iter()
                .map(|a| (a.app_id.to_string(), a.tokens.minted()))
                .collect(),
            force_refreshes: self.tokens.force_refreshes(),
        }
    }

    // ---- the WeChat client side (control API) ----

    fn checked_app(&self, app_id: &str, user: &str) -> Result<Arc<AppEntry>, ControlError> {
        if user.is_empty() || user.len() > 256 {
            return Err(ControlError::BadRequest(
                "`user` must be 1-256 characters".into(),
            ));
        }
        self.apps
            .get(app_id)
            .ok_or_else(|| ControlError::UnknownApp(app_id.to_owned()))
    }

    /// Gives `user` the phone `phone` (as typed by the caller), if any.
    fn set_phone(&self, user: &str, phone: Option<&str>) -> Result<(), ControlError> {
        if let Some(p) = phone {
            let parsed = parse_phone(p).map_err(ControlError::BadRequest)?;
            self.phones.set(user, parsed);
        }
        Ok(())
    }

    /// Plays `wx.login()`: maybe rotates the session key, mints a login code bound to it.
    pub fn mint_login(
        &self,
        app_id: &str,
        user: &str,
        phone: Option<&str>,
    ) -> Result<MintedLogin, ControlError> {
        let app = self.checked_app(app_id, user)?;
        self.set_phone(user, phone)?;
        let now = Instant::now();
        let grant = SessionGrant {
            openid: Arc::from(openid_for(&app.app_id, user)),
            session_key: self.sessions.key(&app.app_id, user, now, true),
            unionid: app
                .open_platform
                .as_deref()
                .map(|p| Arc::from(unionid_for(p, user))),
        };
        let openid = grant.openid.to_string();
        let unionid = grant.unionid.as_deref().map(str::to_owned);
        let code = self.codes.mint_login(&app.app_id, grant, now);
        Ok(MintedLogin {
            code,
            openid,
            unionid,
        })
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
        self.set_phone(user, phone)?;
        let phone = self.phones.get(user);
        let now = Instant::now();
        let session_key = self.sessions.key(&app.app_id, user, now, false);
        let (encrypted_data, iv) = encrypt_phone(&session_key, &app.app_id, &phone, unix_now());
        let openid = Arc::from(openid_for(&app.app_id, user));
        let code = self.codes.mint_phone(&app.app_id, openid, phone, now);
        Ok(MintedPhone {
            code,
            encrypted_data,
            iv,
        })
    }

    // ---- the WeChat server API ----

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
        let app = self.apps.authenticate(appid, secret)?;
        let grant = self
            .codes
            .redeem_login(&app.app_id, js_code, Instant::now())?;
        Ok((app.app_id.clone(), grant))
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
        let app = self.apps.authenticate(appid, secret)?;
        self.tokens
            .stable(&app.app_id, &app.tokens, force_refresh, Instant::now())
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
        let token_app = self.tokens.app_of(access_token, now)?;
        let code = non_empty(code).ok_or(WxError::DataFormat)?;
        let (phone, app_id) = self
            .codes
            .redeem_phone(&token_app, code, non_empty(openid), now)?;
        Ok(PhoneGrant {
            phone,
            app_id,
            timestamp: unix_now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::FORCE_REFRESH_DAILY_LIMIT;
    use secrecy::SecretString;
    use std::time::Duration;

    fn app(id: &str, platform: Option<&str>) -> SimApp {
        SimApp {
            app_id: id.to_owned(),
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
        assert!(s.codes.login_codes_held() <= 2);
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
    fn calls_are_counted_per_endpoint() {
        let s = state(SimulatorConfig::default());
        s.count_call(FaultEndpoint::StableToken);
        s.count_call(FaultEndpoint::StableToken);
        s.count_call(FaultEndpoint::Any);
        let stats = s.stats();
        assert_eq!(stats.calls_to("stable_token"), 2);
        assert_eq!(stats.calls_to("jscode2session"), 0);
        assert_eq!(stats.calls.len(), 3);
    }
}
