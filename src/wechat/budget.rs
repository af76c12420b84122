//! Per-app protection of the app's WeChat quota: a token bucket bounding the
//! calls one app makes per second (so floods of plausible-looking garbage
//! codes from many addresses cannot burn the quota every real user shares),
//! and a breaker that stops calling an endpoint for a cool-down once WeChat
//! answers 45011/45009 (calling on only digs the hole deeper). Refusals answer
//! [`WechatError::RateLimited`] without a request and are counted in
//! `mp_auth_wechat_upstream_refusals_total{app_id,endpoint,cause}`.

use super::error::{Endpoint, WechatError};
use crate::domain::AppId;
use parking_lot::Mutex;
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// The errcode reported by a local refusal: WeChat's own minute-quota code,
/// so callers treat both alike.
const LOCAL_REFUSAL_ERRCODE: i64 = 45011;

/// Limits for one app.
#[derive(Debug, Clone, Copy)]
pub struct BudgetLimits {
    /// Sustained calls per second to WeChat for one app; 0 disables the bucket.
    pub calls_per_sec: u32,
    /// Bucket size (bursts above the rate).
    pub burst: u32,
    /// How long an endpoint stays closed after WeChat said 45011/45009.
    pub cooldown: Duration,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

struct AppState {
    bucket: Bucket,
    /// Closed-until per endpoint (index: [`endpoint_index`]).
    closed_until: [Option<Instant>; 3],
}

/// The budget of every configured app.
pub struct UpstreamBudget {
    limits: BudgetLimits,
    apps: HashMap<AppId, Mutex<AppState>>,
}

fn endpoint_index(endpoint: Endpoint) -> usize {
    match endpoint {
        Endpoint::Code2Session => 0,
        Endpoint::StableToken => 1,
        Endpoint::PhoneNumber => 2,
    }
}

impl UpstreamBudget {
    /// A budget for each of `apps`, full at start.
    pub fn new(limits: BudgetLimits, apps: impl IntoIterator<Item = AppId>) -> Self {
        let now = Instant::now();
        let apps = apps
            .into_iter()
            .map(|app| {
                let state = AppState {
                    bucket: Bucket {
                        tokens: f64::from(limits.burst.max(1)),
                        refilled: now,
                    },
                    closed_until: [None; 3],
                };
                (app, Mutex::new(state))
            })
            .collect();
        Self { limits, apps }
    }

    /// Takes one call from `app`'s budget for `endpoint`, or refuses it.
    pub fn admit(&self, app: &AppId, endpoint: Endpoint, now: Instant) -> Result<(), WechatError> {
        let Some(state) = self.apps.get(app) else {
            return Ok(());
        };
        let mut state = state.lock();
        let slot = &mut state.closed_until[endpoint_index(endpoint)];
        if let Some(until) = *slot {
            if now < until {
                drop(state);
                refused(app, endpoint, "breaker");
                return Err(WechatError::RateLimited {
                    errcode: LOCAL_REFUSAL_ERRCODE,
                });
            }
            *slot = None;
        }
        if self.limits.calls_per_sec == 0 {
            return Ok(());
        }
        let bucket = &mut state.bucket;
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * f64::from(self.limits.calls_per_sec))
            .min(f64::from(self.limits.burst.max(1)));
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            drop(state);
            refused(app, endpoint, "budget");
            Err(WechatError::RateLimited {
                errcode: LOCAL_REFUSAL_ERRCODE,
            })
        }
    }

    /// Notes WeChat's answer: a quota errcode closes the endpoint for the cool-down.
    pub fn observe(&self, app: &AppId, endpoint: Endpoint, result: &WechatError, now: Instant) {
        if !matches!(result, WechatError::RateLimited { .. }) || self.limits.cooldown.is_zero() {
            return;
        }
        if let Some(state) = self.apps.get(app) {
            let mut state = state.lock();
            state.closed_until[endpoint_index(endpoint)] = Some(now + self.limits.cooldown);
            drop(state);
            tracing::warn!(
                app_id = %app,
                endpoint = endpoint.label(),
                cooldown_secs = self.limits.cooldown.as_secs(),
                "WeChat rate-limited this app; pausing calls to the endpoint"
            );
        }
    }
}

fn refused(app: &AppId, endpoint: Endpoint, cause: &'static str) {
    metrics::counter!(
        "mp_auth_wechat_upstream_refusals_total",
        "app_id" => app.to_string(),
        "endpoint" => endpoint.label(),
        "cause" => cause
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppId {
        AppId::parse("wxbudget00000001").unwrap()
    }

    fn budget(calls_per_sec: u32, burst: u32) -> UpstreamBudget {
        UpstreamBudget::new(
            BudgetLimits {
                calls_per_sec,
                burst,
                cooldown: Duration::from_secs(10),
            },
            [app()],
        )
    }

    #[test]
    fn the_bucket_allows_the_burst_then_the_rate() {
        let b = budget(10, 5);
        let t0 = Instant::now();
        let admitted = (0..20)
            .filter(|_| b.admit(&app(), Endpoint::Code2Session, t0).is_ok())
            .count();
        assert_eq!(admitted, 5);
        // 0.5 s later: 5 more tokens at 10/s.
        let t1 = t0 + Duration::from_millis(500);
        let admitted = (0..20)
            .filter(|_| b.admit(&app(), Endpoint::Code2Session, t1).is_ok())
            .count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn a_zero_rate_disables_the_bucket() {
        let b = budget(0, 0);
        let t0 = Instant::now();
        assert!((0..1000).all(|_| b.admit(&app(), Endpoint::PhoneNumber, t0).is_ok()));
    }

    #[test]
    fn a_quota_answer_closes_only_that_endpoint_for_the_cooldown() {
        let b = budget(0, 0);
        let t0 = Instant::now();
        b.observe(
            &app(),
            Endpoint::Code2Session,
            &WechatError::RateLimited { errcode: 45011 },
            t0,
        );
        let refused = b.admit(&app(), Endpoint::Code2Session, t0 + Duration::from_secs(1));
        assert!(matches!(refused, Err(WechatError::RateLimited { .. })));
        assert!(
            b.admit(&app(), Endpoint::PhoneNumber, t0 + Duration::from_secs(1))
                .is_ok()
        );
        assert!(
            b.admit(&app(), Endpoint::Code2Session, t0 + Duration::from_secs(11))
                .is_ok()
        );
    }

    #[test]
    fn other_errors_do_not_trip_the_breaker() {
        let b = budget(0, 0);
        let t0 = Instant::now();
        b.observe(
            &app(),
            Endpoint::Code2Session,
            &WechatError::InvalidCode,
            t0,
        );
        assert!(b.admit(&app(), Endpoint::Code2Session, t0).is_ok());
    }
}
