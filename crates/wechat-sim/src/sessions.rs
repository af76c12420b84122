//! Session keys: one per user and app, created by the first `wx.login` and
//! replaced by a later `wx.login` once at least `session_refresh` old, as on
//! WeChat. The phone button encrypts with the current key without rotating it.

use crate::{crypto::SessionKey, sync::lock};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

struct Session {
    key: SessionKey,
    issued: Instant,
}

/// Current session per app, then per user.
pub(crate) struct Sessions {
    refresh: Duration,
    by_app: Mutex<HashMap<Arc<str>, HashMap<String, Session>>>,
}

impl Sessions {
    pub fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            by_app: Mutex::default(),
        }
    }

    /// The user's current session key (created if missing). On `login` the key
    /// is replaced first when it is at least `session_refresh` old.
    pub fn key(&self, app_id: &Arc<str>, user: &str, now: Instant, login: bool) -> SessionKey {
        let mut by_app = lock(&self.by_app);
        let per_app = by_app.entry(app_id.clone()).or_default();
        match per_app.get_mut(user) {
            Some(s) => {
                if login && now.saturating_duration_since(s.issued) >= self.refresh {
                    s.key = SessionKey::random();
                    s.issued = now;
                }
                s.key.clone()
            }
            None => {
                let key = SessionKey::random();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_rotates_only_old_keys_and_the_phone_button_never_does() {
        let app: Arc<str> = Arc::from("wxa");
        let now = Instant::now();
        let long = Sessions::new(Duration::from_secs(3600));
        let k = long.key(&app, "alice", now, true);
        assert_eq!(long.key(&app, "alice", now, true), k);
        let always = Sessions::new(Duration::ZERO);
        let k = always.key(&app, "alice", now, true);
        assert_eq!(always.key(&app, "alice", now, false), k);
        assert_ne!(always.key(&app, "alice", now, true), k);
    }
}
