//! Single-use codes with a fixed lifetime: `wx.login` codes (bound to a
//! session grant) and phone codes (bound to an openid and a phone). Expired
//! codes are dropped as new ones arrive (insertion order is expiry order, so
//! pruning is amortised O(1)).

use crate::{crypto::SessionKey, errcode::WxError, phone::Phone, random::random_from, sync::lock};
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// What a login code stands for: what jscode2session returns.
#[derive(Debug, Clone)]
pub(crate) struct SessionGrant {
    pub openid: Arc<str>,
    pub session_key: SessionKey,
    pub unionid: Option<Arc<str>>,
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

/// Both kinds of code.
pub(crate) struct Codes {
    ttl: Duration,
    login: Mutex<CodeStore<LoginCodeEntry>>,
    phone: Mutex<CodeStore<PhoneCodeEntry>>,
}

impl Codes {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            login: Mutex::default(),
            phone: Mutex::default(),
        }
    }

    /// A fresh login code of `app_id` for `grant`.
    pub fn mint_login(&self, app_id: &Arc<str>, grant: SessionGrant, now: Instant) -> String {
        let code = random_login_code();
        let entry = LoginCodeEntry {
            app_id: app_id.clone(),
            grant,
            expires_at: now + self.ttl,
            used: false,
        };
        lock(&self.login).insert(now, code.clone(), now + self.ttl, entry);
        code
    }

    /// Spends a login code of `app_id`: 40029 if unknown, another app's or
    /// expired; 40163 if already used.
    pub fn redeem_login(
        &self,
        app_id: &Arc<str>,
        code: &str,
        now: Instant,
    ) -> Result<SessionGrant, WxError> {
        let mut codes = lock(&self.login);
        let entry = codes.map.get_mut(code).ok_or(WxError::InvalidCode)?;
        if entry.app_id != *app_id || entry.expires_at <= now {
            return Err(WxError::InvalidCode);
        }
        if entry.used {
            return Err(WxError::CodeBeenUsed);
        }
        entry.used = true;
        Ok(entry.grant.clone())
    }

    /// A fresh phone code of `app_id` for `openid`'s `phone`.
    pub fn mint_phone(
        &self,
        app_id: &Arc<str>,
        openid: Arc<str>,
        phone: Phone,
        now: Instant,
    ) -> String {
        let code = random_phone_code();
        let entry = PhoneCodeEntry {
            app_id: app_id.clone(),
            openid,
            phone,
            expires_at: now + self.ttl,
            used: false,
        };
        lock(&self.phone).insert(now, code.clone(), now + self.ttl, entry);
        code
    }

    /// Spends a phone code with a token of `token_app`: 40013 if the code is
    /// another app's; 40029 if unknown, used, expired or bound to another openid.
    pub fn redeem_phone(
        &self,
        token_app: &Arc<str>,
        code: &str,
        openid: Option<&str>,
        now: Instant,
    ) -> Result<(Phone, Arc<str>), WxError> {
        let mut codes = lock(&self.phone);
        let entry = codes.map.get_mut(code).ok_or(WxError::InvalidCode)?;
        if entry.app_id != *token_app {
            return Err(WxError::InvalidAppId);
        }
        if entry.used || entry.expires_at <= now {
            return Err(WxError::InvalidCode);
        }
        if let Some(o) = openid
            && o != &*entry.openid
        {
            return Err(WxError::InvalidCode);
        }
        entry.used = true;
        Ok((entry.phone.clone(), entry.app_id.clone()))
    }

    /// Login codes held (used and unused, not yet pruned).
    #[cfg(test)]
    pub fn login_codes_held(&self) -> usize {
        lock(&self.login).map.len()
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// 32 characters like `0c3Xyz0w3Ojbq03V7a0w3ZbAmE2Xyz0D`.
fn random_login_code() -> String {
    random_from("0", ALNUM, 31)
}

/// 64 lowercase hex characters, like real phone codes.
fn random_phone_code() -> String {
    random_from("", b"0123456789abcdef", 64)
}
