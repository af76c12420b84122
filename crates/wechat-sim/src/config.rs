//! The simulator's own configuration: the apps it knows and the timings of the
//! simulated WeChat (session rotation, token and code lifetimes).

use secrecy::SecretString;
use serde::Deserialize;
use std::time::Duration;

/// A mini program the simulator knows.
#[derive(Debug, Clone, Deserialize)]
pub struct SimApp {
    /// Its AppID (letters, digits, `_` or `-`; see [`check_app_id`]).
    pub app_id: String,
    /// Its AppSecret.
    pub app_secret: SecretString,
    /// The WeChat Open Platform account it is bound to: apps sharing one give
    /// a user the same unionid. `None`: jscode2session returns no unionid.
    #[serde(default)]
    pub open_platform: Option<String>,
}

/// How the simulated WeChat behaves.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Apps known from the start (more can be registered with `POST /_sim/apps`).
    pub apps: Vec<SimApp>,
    /// `wx.login` replaces a user's session_key once it is at least this old
    /// (zero: every `wx.login` replaces it).
    pub session_refresh: Duration,
    /// Lifetime of a stable access_token (WeChat: 7200 s).
    pub token_ttl: Duration,
    /// Lifetime of login and phone codes (WeChat: 300 s).
    pub code_ttl: Duration,
    /// Minimum time between `force_refresh=true` calls (WeChat: 30 s; tests use 0).
    pub force_refresh_min_interval: Duration,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            apps: Vec::new(),
            session_refresh: Duration::from_secs(300),
            token_ttl: Duration::from_secs(7200),
            code_ttl: Duration::from_secs(300),
            force_refresh_min_interval: Duration::from_secs(30),
        }
    }
}

/// Checks an AppID the way WeChat's consoles accept them: 1-64 characters,
/// letters, digits, `_` or `-`. The error is for the caller.
pub fn check_app_id(app_id: &str) -> Result<(), String> {
    if app_id.is_empty() {
        return Err("app_id is required".into());
    }
    if app_id.len() > 64 {
        return Err("app_id is too long".into());
    }
    if !app_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("app_id must contain only letters, digits, '_' or '-'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_secrets_do_not_show_in_debug() {
        let app = SimApp {
            app_id: "wx1".into(),
            app_secret: SecretString::from("topsecret"),
            open_platform: None,
        };
        assert!(!format!("{app:?}").contains("topsecret"));
    }

    #[test]
    fn app_ids_are_checked() {
        assert!(check_app_id("wx_demo-app1").is_ok());
        assert!(check_app_id("").is_err());
        assert!(check_app_id("bad id").is_err());
        assert!(check_app_id(&"w".repeat(65)).is_err());
    }
}
