//! Double-submit protection: concurrent logins that carry the same `wx.login`
//! code for the same app share one execution, so a double tap gets the first
//! login's answer instead of WeChat's 40163 "code been used". Only in-flight
//! logins are shared: once one finishes, the code is spent and a replay fails
//! as it should. Codes are keyed by their SHA-256, never stored.

use super::{LoginError, LoginResponse};
use crate::domain::{AppId, LoginCode};
use futures::future::{BoxFuture, FutureExt, Shared};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

type Outcome = Arc<Result<LoginResponse, LoginError>>;
pub(super) type Key = [u8; 32];

/// Logins in progress, by (app, code) digest.
#[derive(Default)]
pub(super) struct InFlight {
    map: Mutex<HashMap<Key, Shared<BoxFuture<'static, Outcome>>>>,
}

/// Removes the leader's entry when its login ends or is cancelled.
struct Leader<'a> {
    in_flight: &'a InFlight,
    key: Key,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.in_flight.lock().remove(&self.key);
    }
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Shared<BoxFuture<'static, Outcome>>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `login` under `key` (see [`key`]), or joins the identical login already running.
    pub(super) async fn run(
        &self,
        key: Key,
        login: impl FnOnce() -> BoxFuture<'static, Result<LoginResponse, LoginError>>,
    ) -> Result<LoginResponse, LoginError> {
        let (future, leader) = {
            let mut map = self.lock();
            match map.get(&key) {
                Some(running) => (running.clone(), None),
                None => {
                    let future = login().map(Arc::new).boxed().shared();
                    map.insert(key, future.clone());
                    (
                        future,
                        Some(Leader {
                            in_flight: self,
                            key,
                        }),
                    )
                }
            }
        };
        if leader.is_none() {
            metrics::counter!("mp_auth_login_duplicates_total").increment(1);
        }
        let outcome = future.await;
        drop(leader);
        match &*outcome {
            Ok(response) => Ok(response.clone()),
            Err(err) => Err(err.replay()),
        }
    }
}

/// The key of a login: the SHA-256 of its app and `wx.login` code.
pub(super) fn key(app_id: &AppId, code: &LoginCode) -> Key {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(app_id.as_str().as_bytes());
    ctx.update(&[0]);
    ctx.update(code.expose().as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}
