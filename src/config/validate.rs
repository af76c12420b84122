//! The checks that span several settings or bound a value from above; what a
//! single value must be is in its type ([`super::types`]).

use super::{ConfigError, Settings, invalid};

impl Settings {
    /// Checks the numeric settings every process shares.
    pub fn validate_common(&self) -> Result<(), ConfigError> {
        if self.database.pool_size == 0 {
            return Err(invalid(
                "database.pool_size",
                "must be at least 1",
                "use about 4x the database's cores",
            ));
        }
        if self.database.max_tx_attempts == 0 {
            return Err(invalid(
                "database.max_tx_attempts",
                "must be at least 1",
                "use e.g. 5",
            ));
        }
        if self.token.ttl_secs < 60 {
            return Err(invalid(
                "token.ttl_secs",
                "tokens shorter than a minute are unusable",
                "use e.g. 7200",
            ));
        }
        // Upper bounds: every duration below is converted to milliseconds and added
        // to "now" in i64/u64 arithmetic; absurd values must be refused here, not wrap.
        const DAY: u64 = 24 * 3600;
        for (setting, value, max, fix) in [
            (
                "token.ttl_secs",
                self.token.ttl_secs,
                30 * DAY,
                "use e.g. 7200",
            ),
            (
                "session_keys.ttl_secs",
                self.session_keys.ttl_secs,
                365 * DAY,
                "use e.g. 259200",
            ),
            (
                "sessions.idle_timeout_secs",
                self.sessions.idle_timeout_secs,
                3650 * DAY,
                "use e.g. 2592000",
            ),
            (
                "sessions.absolute_lifetime_secs",
                self.sessions.absolute_lifetime_secs,
                3650 * DAY,
                "use e.g. 7776000",
            ),
            (
                "sessions.cleanup_interval_secs",
                self.sessions.cleanup_interval_secs,
                DAY,
                "use e.g. 300",
            ),
            (
                "sessions.refresh_retry_window_secs",
                self.sessions.refresh_retry_window_secs,
                3600,
                "use e.g. 60 (a lost answer is retried within seconds)",
            ),
            (
                "wechat.watermark_max_age_secs",
                self.wechat.watermark_max_age_secs,
                DAY,
                "use e.g. 600",
            ),
            (
                "wechat.token_refresh_margin_secs",
                self.wechat.token_refresh_margin_secs,
                3600,
                "use e.g. 60",
            ),
            (
                "wechat.rate_limit_cooldown_secs",
                self.wechat.rate_limit_cooldown_secs,
                3600,
                "use e.g. 10",
            ),
            (
                "wechat.timeout_ms",
                self.wechat.timeout_ms.get(),
                10 * 60_000,
                "use e.g. 5000",
            ),
            (
                "wechat.connect_timeout_ms",
                self.wechat.connect_timeout_ms.get(),
                10 * 60_000,
                "use e.g. 1000",
            ),
            (
                "database.acquire_timeout_ms",
                self.database.acquire_timeout_ms,
                10 * 60_000,
                "use e.g. 2000",
            ),
            (
                "grpc.drain_timeout_ms",
                self.grpc.drain_timeout_ms,
                10 * 60_000,
                "use e.g. 10000",
            ),
            (
                "gateway.backend_timeout_ms",
                self.gateway.backend_timeout_ms.get(),
                10 * 60_000,
                "use e.g. 10000",
            ),
            (
                "gateway.backend_connections",
                u64::from(self.gateway.backend_connections),
                64,
                "use e.g. 2",
            ),
            (
                "gateway.drain_timeout_ms",
                self.gateway.drain_timeout_ms,
                10 * 60_000,
                "use e.g. 10000",
            ),
            (
                "token.leeway_secs",
                self.token.leeway_secs,
                300,
                "use e.g. 30",
            ),
        ] {
            if value > max {
                return Err(invalid(
                    setting,
                    format!("{value} is above the maximum of {max}"),
                    fix,
                ));
            }
        }
        if self.sessions.idle_timeout_secs < 60
            || self.sessions.absolute_lifetime_secs < 60
            || self.sessions.cleanup_interval_secs == 0
        {
            return Err(invalid(
                "sessions",
                "idle_timeout_secs and absolute_lifetime_secs must be at least 60, cleanup_interval_secs positive",
                "use e.g. idle 2592000 (30 days), absolute 7776000 (90 days)",
            ));
        }
        if self.gateway.backend_connections == 0 {
            return Err(invalid(
                "gateway.backend_connections",
                "must be at least 1",
                "use e.g. 2",
            ));
        }
        if self.token.issuer.is_empty() || self.token.audience.is_empty() {
            return Err(invalid(
                "token.issuer",
                "issuer and audience must be set",
                "use e.g. mp-auth",
            ));
        }
        Ok(())
    }
}
