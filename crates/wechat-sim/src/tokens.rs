//! Stable access tokens (`cgi-bin/stable_token`, normal mode): one current
//! token per app, renewed shortly before expiry (the old one stays valid),
//! forced refreshes rate-limited and revoking the app's live tokens, and the
//! registry getuserphonenumber checks tokens against.

use crate::{errcode::WxError, sync::lock};
use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// How long before expiry WeChat mints the next stable token (both stay valid).
const TOKEN_RENEW_BEFORE: Duration = Duration::from_secs(300);
/// WeChat allows this many `force_refresh=true` calls per app per day.
pub(crate) const FORCE_REFRESH_DAILY_LIMIT: usize = 20;
const DAY: Duration = Duration::from_secs(24 * 3600);
/// Expired tokens still answer 42001 for this long, then become unknown (40001).
const EXPIRED_TOKEN_MEMORY: Duration = Duration::from_secs(3600);

/// One app's token state.
#[derive(Default)]
pub(crate) struct AppTokens(Mutex<AppTokenState>);

#[derive(Default)]
struct AppTokenState {
    current: Option<(Arc<str>, Instant)>,
    /// Tokens of this app that may still be valid (current and rolling-over ones).
    live: Vec<(Arc<str>, Instant)>,
    minted: u64,
    forced: VecDeque<Instant>,
}

impl AppTokens {
    /// Tokens minted so far (renewals and forced refreshes).
    pub fn minted(&self) -> u64 {
        lock(&self.0).minted
    }
}

struct TokenInfo {
    app_id: Arc<str>,
    expires_at: Instant,
    revoked: bool,
}

/// Every token handed out, and the token rules.
pub(crate) struct Tokens {
    ttl: Duration,
    force_refresh_min_interval: Duration,
    issued: Mutex<HashMap<Arc<str>, TokenInfo>>,
    force_refreshes: AtomicU64,
}

impl Tokens {
    pub fn new(ttl: Duration, force_refresh_min_interval: Duration) -> Self {
        Self {
            ttl,
            force_refresh_min_interval,
            issued: Mutex::default(),
            force_refreshes: AtomicU64::new(0),
        }
    }

    /// Accepted `force_refresh=true` calls, all apps.
    pub fn force_refreshes(&self) -> u64 {
        self.force_refreshes.load(Ordering::Relaxed)
    }

    /// The app's stable token and its `expires_in`, minting one when there is
    /// none, it is about to expire, or a refresh is forced.
    pub fn stable(
        &self,
        app_id: &Arc<str>,
        app: &AppTokens,
        force_refresh: bool,
        now: Instant,
    ) -> Result<(Arc<str>, u64), WxError> {
        let mut state = lock(&app.0);
        // Tokens shorter-lived than WeChat's renewal window (tests) renew at half-life.
        let renew_before = if self.ttl > TOKEN_RENEW_BEFORE {
            TOKEN_RENEW_BEFORE
        } else {
            self.ttl / 2
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
            let mut issued = lock(&self.issued);
            for (t, _) in state.live.drain(..) {
                if let Some(info) = issued.get_mut(&t) {
                    info.revoked = true;
                }
            }
        } else if let Some((token, expires_at)) = &state.current {
            let remaining = expires_at.saturating_duration_since(now);
            if remaining >= renew_before && !remaining.is_zero() {
                return Ok((token.clone(), ceil_secs(remaining)));
            }
        }
        let token: Arc<str> = Arc::from(random_access_token());
        let expires_at = now + self.ttl;
        state.live.retain(|(_, exp)| *exp > now);
        state.live.push((token.clone(), expires_at));
        state.current = Some((token.clone(), expires_at));
        state.minted += 1;
        let mut issued = lock(&self.issued);
        issued.retain(|_, info| {
            now.saturating_duration_since(info.expires_at) < EXPIRED_TOKEN_MEMORY
        });
        issued.insert(
            token.clone(),
            TokenInfo {
                app_id: app_id.clone(),
                expires_at,
                revoked: false,
            },
        );
        Ok((token, ceil_secs(self.ttl)))
    }

    /// The app a token belongs to, if it is still valid: 40001 when unknown or
    /// revoked, 42001 when expired.
    pub fn app_of(&self, token: &str, now: Instant) -> Result<Arc<str>, WxError> {
        let issued = lock(&self.issued);
        let info = issued.get(token).ok_or(WxError::InvalidCredential)?;
        if info.revoked {
            return Err(WxError::InvalidCredential);
        }
        if info.expires_at <= now {
            return Err(WxError::AccessTokenExpired);
        }
        Ok(info.app_id.clone())
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// `91_` followed by 133 URL-safe characters: opaque and long, like real tokens.
fn random_access_token() -> String {
    crate::random::random_from("91_", URL_SAFE, 133)
}
