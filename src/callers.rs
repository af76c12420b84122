//! Internal callers of the gRPC port and what each may do. A calling service
//! presents an API key (`authorization: Bearer mpk_...`); the service keeps
//! only the key's SHA-256 (keys are 256 random bits, so a fast hash is the
//! right tool: there is nothing to brute-force) and the permissions granted
//! to it. Failed attempts are counted per source address and, past a limit,
//! refused without looking at the key.

use crate::config::CallerSettings;
use base64::Engine as _;
use parking_lot::Mutex;
use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

/// The prefix of every API key (recognisable in secret scanners).
pub const API_KEY_PREFIX: &str = "mpk_";
/// Failed attempts one source address may make per window before being refused.
const MAX_FAILURES_PER_WINDOW: u32 = 20;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at most (beyond, the oldest windows are dropped).
const MAX_TRACKED_SOURCES: usize = 10_000;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Read users (masked phone), look them up, list their sessions.
    UsersRead,
    /// Read full phone numbers (audited).
    UsersReadPhone,
    /// Delete users (audited).
    UsersDelete,
    /// Revoke sessions (audited).
    SessionsRevoke,
    /// Verify access tokens online (`VerifyToken`).
    TokensVerify,
    /// Call the login, refresh and logout RPCs (the gateway), when
    /// `grpc.protect_login_rpcs` is on.
    AuthLogin,
}

impl Permission {
    /// Every permission, in the order the docs list them.
    pub const ALL: [Permission; 6] = [
        Self::UsersRead,
        Self::UsersReadPhone,
        Self::UsersDelete,
        Self::SessionsRevoke,
        Self::TokensVerify,
        Self::AuthLogin,
    ];

    /// The name used in configuration and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UsersRead => "users:read",
            Self::UsersReadPhone => "users:read_phone",
            Self::UsersDelete => "users:delete",
            Self::SessionsRevoke => "sessions:revoke",
            Self::TokensVerify => "tokens:verify",
            Self::AuthLogin => "auth:login",
        }
    }

    /// Parses a configured name.
    pub fn parse(name: &str) -> Option<Permission> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// An authenticated internal caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The service's configured name (for audit lines and metrics).
    pub name: String,
    permissions: Vec<Permission>,
}

impl Caller {
    /// Whether this caller holds `permission`.
    pub fn may(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// `Ok` when this caller holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), CallerError> {
        if self.may(permission) {
            Ok(())
        } else {
            metrics::counter!("mp_auth_caller_auth_failures_total", "reason" => "permission_denied")
                .increment(1);
            Err(CallerError::PermissionDenied { permission })
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    /// No `authorization: Bearer ...` metadata (UNAUTHENTICATED, `CALLER_UNAUTHENTICATED`).
    #[error("this RPC needs an API key: send `authorization: Bearer mpk_...`")]
    Missing,
    /// The key is not one of the configured ones (UNAUTHENTICATED, `CALLER_UNAUTHENTICATED`).
    #[error("the API key is not valid")]
    Invalid,
    /// Too many failed attempts from this address (RESOURCE_EXHAUSTED, `CALLER_RATE_LIMITED`).
    #[error("too many failed authentication attempts: retry in a minute")]
    RateLimited,
    /// The caller lacks a permission (PERMISSION_DENIED, `PERMISSION_DENIED`).
    #[error("the caller lacks the `{}` permission", permission.as_str())]
    PermissionDenied {
        /// The missing permission.
        permission: Permission,
    },
}

/// A configured caller entry that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("callers[{index}] ({name}): {problem}")]
pub struct CallerConfigError {
    pub index: usize,
    pub name: String,
    pub problem: String,
}

struct FailureWindow {
    started: Instant,
    failures: u32,
}

/// The configured callers, by key hash.
pub struct CallerRegistry {
    by_hash: HashMap<[u8; 32], Caller>,
    failures: Mutex<HashMap<IpAddr, FailureWindow>>,
}

impl std::fmt::Debug for CallerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.by_hash.values().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        f.debug_struct("CallerRegistry")
            .field("callers", &names)
            .finish()
    }
}

/// The SHA-256 of an API key, as the lower-case hex the configuration holds.
pub fn key_hash_hex(key: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random API key (`mpk_` + 256 bits, base64url).
pub fn generate_key() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{API_KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl CallerRegistry {
    /// Builds the registry; every entry needs a name, a 64-hex-digit key hash
    /// and known permissions.
    pub fn new(entries: &[CallerSettings]) -> Result<Self, CallerConfigError> {
        let mut by_hash = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            let bad = |problem: String| CallerConfigError {
                index,
                name: entry.name.clone(),
                problem,
            };
            if entry.name.trim().is_empty() || entry.name.len() > 64 {
                return Err(bad("name must be 1-64 characters".into()));
            }
            let hash = parse_hash(&entry.key_sha256).ok_or_else(|| {
                bad("key_sha256 must be the 64 hex digits of the key's SHA-256 \
                     (`mp-auth callers new-key` prints it)"
                    .into())
            })?;
            let mut permissions = Vec::new();
            for name in &entry.permissions {
                let p = Permission::parse(name).ok_or_else(|| {
                    let known: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
                    bad(format!(
                        "unknown permission {name:?}; known: {}",
                        known.join(", ")
                    ))
                })?;
                permissions.push(p);
            }
            let caller = Caller {
                name: entry.name.clone(),
                permissions,
            };
            if by_hash.insert(hash, caller).is_some() {
                return Err(bad("the same key is configured twice".into()));
            }
        }
        Ok(Self {
            by_hash,
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// True when no caller is configured.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Authenticates the `authorization` metadata value of a call from `source`.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        source: Option<IpAddr>,
        now: Instant,
    ) -> Result<Caller, CallerError> {
        if let Some(ip) = source
            && self.is_blocked(ip, now)
        {
            metrics::counter!("mp_auth_caller_auth_failures_total", "reason" => "rate_limited")
                .increment(1);
            return Err(CallerError::RateLimited);
        }
        let key = authorization.and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        });
        let result = match key {
            None | Some("") => Err(CallerError::Missing),
            Some(key) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
                let mut hash = [0u8; 32];
                hash.copy_from_slice(digest.as_ref());
                self.by_hash.get(&hash).cloned().ok_or(CallerError::Invalid)
            }
        };
        if let Err(err) = &result {
            let reason = match err {
                CallerError::Missing => "missing",
                _ => "invalid",
            };
            metrics::counter!("mp_auth_caller_auth_failures_total", "reason" => reason)
                .increment(1);
            if let Some(ip) = source {
                self.record_failure(ip, now);
            }
        }
        result
    }

    fn failures(&self) -> parking_lot::MutexGuard<'_, HashMap<IpAddr, FailureWindow>> {
        self.failures.lock()
    }

    fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.failures().get(&ip).is_some_and(|w| {
            now.saturating_duration_since(w.started) < FAILURE_WINDOW
                && w.failures >= MAX_FAILURES_PER_WINDOW
        })
    }

    fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut map = self.failures();
        if map.len() >= MAX_TRACKED_SOURCES {
            map.retain(|_, w| now.saturating_duration_since(w.started) < FAILURE_WINDOW);
        }
        if map.len() >= MAX_TRACKED_SOURCES {
            return;
        }
        let window = map.entry(ip).or_insert(FailureWindow {
            started: now,
            failures: 0,
        });
        if now.saturating_duration_since(window.started) >= FAILURE_WINDOW {
            *window = FailureWindow {
                started: now,
                failures: 0,
            };
        }
        window.failures += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(key: &str, permissions: &[&str]) -> CallerRegistry {
        CallerRegistry::new(&[CallerSettings {
            name: "orders".into(),
            key_sha256: key_hash_hex(key),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
        }])
        .unwrap()
    }

    #[test]
    fn a_configured_key_authenticates_with_its_permissions_only() {
        let key = generate_key();
        let r = registry(&key, &["users:read"]);
        let caller = r
            .authenticate(Some(&format!("Bearer {key}")), None, Instant::now())
            .unwrap();
        assert_eq!(caller.name, "orders");
        assert!(caller.require(Permission::UsersRead).is_ok());
        assert_eq!(
            caller.require(Permission::UsersDelete),
            Err(CallerError::PermissionDenied {
                permission: Permission::UsersDelete
            })
        );
    }

    #[test]
    fn missing_malformed_and_unknown_keys_are_refused() {
        let r = registry(&generate_key(), &[]);
        let now = Instant::now();
        assert_eq!(r.authenticate(None, None, now), Err(CallerError::Missing));
        assert_eq!(
            r.authenticate(Some("Bearer "), None, now),
            Err(CallerError::Missing)
        );
        assert_eq!(
            r.authenticate(Some("Basic abc"), None, now),
            Err(CallerError::Missing)
        );
        assert_eq!(
            r.authenticate(Some(&format!("Bearer {}", generate_key())), None, now),
            Err(CallerError::Invalid)
        );
    }

    #[test]
    fn repeated_failures_from_one_address_are_rate_limited_then_forgiven() {
        let key = generate_key();
        let r = registry(&key, &[]);
        let ip: IpAddr = "10.1.1.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES_PER_WINDOW {
            assert_eq!(
                r.authenticate(Some("Bearer wrong"), Some(ip), t0),
                Err(CallerError::Invalid)
            );
        }
        // Even the right key is refused while the address is blocked.
        let good = format!("Bearer {key}");
        assert_eq!(
            r.authenticate(Some(&good), Some(ip), t0),
            Err(CallerError::RateLimited)
        );
        let other: IpAddr = "10.1.1.2".parse().unwrap();
        assert!(r.authenticate(Some(&good), Some(other), t0).is_ok());
        let later = t0 + FAILURE_WINDOW + Duration::from_secs(1);
        assert!(r.authenticate(Some(&good), Some(ip), later).is_ok());
    }

    #[test]
    fn bad_entries_are_refused_with_a_fix() {
        let bad_hash = CallerRegistry::new(&[CallerSettings {
            name: "x".into(),
            key_sha256: "abc".into(),
            permissions: vec![],
        }])
        .unwrap_err();
        assert!(bad_hash.to_string().contains("key_sha256"), "{bad_hash}");
        let bad_perm = CallerRegistry::new(&[CallerSettings {
            name: "x".into(),
            key_sha256: key_hash_hex("k"),
            permissions: vec!["users:write".into()],
        }])
        .unwrap_err();
        assert!(bad_perm.to_string().contains("users:read"), "{bad_perm}");
    }

    #[test]
    fn debug_lists_names_not_hashes() {
        let key = generate_key();
        let r = registry(&key, &["users:read"]);
        let text = format!("{r:?}");
        assert!(text.contains("orders"));
        assert!(!text.contains(&key_hash_hex(&key)));
    }
}
