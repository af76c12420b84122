//! Double-submit protection: concurrent logins that carry the same `wx.login`
//! code for the same app AND the same phone proof share one execution, so a
//! double tap gets the first login's answer instead of WeChat's 40163 "code
//! been used". A concurrent request with the same code but another proof is
//! not a double tap: it must not receive the first login's tokens, so it is
//! answered `LOGIN_CODE_USED` (what WeChat would say) without joining. Only
//! in-flight logins are shared: once one finishes, the code is spent and a
//! replay fails as it should. Codes and proofs are kept as SHA-256 digests only.

use super::{LoginError, LoginResponse, PhoneProof};
use crate::domain::{AppId, LoginCode};
use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use std::{collections::HashMap, sync::Arc};

type Outcome = Arc<Result<LoginResponse, LoginError>>;
pub(super) type Key = [u8; 32];

type Running = Shared<BoxFuture<'static, Outcome>>;

/// Logins in progress, by (app, code) digest, with the digest of their phone proof.
#[derive(Default)]
pub(super) struct InFlight {
    map: Mutex<HashMap<Key, (Key, Running)>>,
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
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<Key, (Key, Running)>> {
        self.map.lock()
    }

    /// Runs `login` under `key` (see [`key`]), or joins the identical login
    /// already running (same `proof`, see [`proof_digest`]). A running login
    /// with the same code but another proof answers [`LoginError::LoginCodeUsed`].
    pub(super) async fn run(
        &self,
        key: Key,
        proof: Key,
        login: impl FnOnce() -> BoxFuture<'static, Result<LoginResponse, LoginError>>,
    ) -> Result<LoginResponse, LoginError> {
        let (future, leader) = {
            let mut map = self.lock();
            match map.get(&key) {
                Some((running_proof, running)) => {
                    if !constant_time_eq(running_proof, &proof) {
                        metrics::counter!("mp_auth_login_code_conflicts_total").increment(1);
                        return Err(LoginError::LoginCodeUsed);
                    }
                    (running.clone(), None)
                }
                None => {
                    let future = login().map(Arc::new).boxed().shared();
                    map.insert(key, (proof, future.clone()));
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
    digest(&[app_id.as_str().as_bytes(), code.expose().as_bytes()])
}

/// The SHA-256 of a login's phone proof (flow tag and every field); a silent
/// login (no proof) has a digest of its own.
pub(super) fn proof_digest(proof: Option<&PhoneProof>) -> Key {
    match proof {
        None => digest(&[b"silent"]),
        Some(PhoneProof::Code(code)) => digest(&[b"phone_code", code.expose().as_bytes()]),
        Some(PhoneProof::Encrypted { encrypted_data, iv }) => {
            digest(&[b"encrypted_data", encrypted_data.as_bytes(), iv.as_bytes()])
        }
    }
}

/// SHA-256 over `parts`, each followed by a NUL separator (no part holds a NUL:
/// they are printable ASCII by parsing).
fn digest(parts: &[&[u8]]) -> Key {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(part);
        ctx.update(&[0]);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

fn constant_time_eq(a: &Key, b: &Key) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneCode;

    #[test]
    fn proofs_of_different_flows_or_values_have_different_digests() {
        let code = |c: &str| proof_digest(Some(&PhoneProof::Code(PhoneCode::parse(c).unwrap())));
        let enc = |d: &str, iv: &str| {
            proof_digest(Some(&PhoneProof::Encrypted {
                encrypted_data: d.into(),
                iv: iv.into(),
            }))
        };
        assert_eq!(code("abc0000000000000"), code("abc0000000000000"));
        assert_ne!(code("abc0000000000000"), code("abd0000000000000"));
        assert_ne!(enc("ab", "c"), enc("a", "bc"));
        assert_ne!(code("abc0000000000000"), enc("abc0000000000000", ""));
        assert_ne!(proof_digest(None), code("abc0000000000000"));
        assert!(constant_time_eq(&[7; 32], &[7; 32]));
        assert!(!constant_time_eq(&[7; 32], &[8; 32]));
    }
}
