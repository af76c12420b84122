//! Tokens whose signature already checked out, by the SHA-256 of the whole
//! token: an internal service verifies the same user's token on every request
//! for up to two hours, and a signature check (~50 µs of ECDSA) is the most
//! expensive part of `VerifyToken`. Only what does not depend on the clock is
//! remembered (the outcome of `Verifier::authenticate`); expiry and revocation
//! are checked on every use. Keys change only with a restart, which empties
//! the cache. Bounded: two generations per shard, the older dropped when the
//! newer fills, so memory stays under `CAPACITY` entries.

use mp_auth_verifier::Claims;
use ring::digest;
use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

/// Tokens remembered at most (each ~0.75 KiB with its map entry: ~12 MiB at most).
pub const CAPACITY: usize = 16 * 1024;
const SHARDS: usize = 16;

/// The cache key of a token.
pub type TokenKey = [u8; 32];

#[derive(Default)]
struct Shard {
    current: HashMap<TokenKey, Claims>,
    previous: HashMap<TokenKey, Claims>,
}

/// Authenticated claims by token hash.
pub struct VerifiedCache {
    shards: Vec<Mutex<Shard>>,
    per_generation: usize,
}

impl Default for VerifiedCache {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl VerifiedCache {
    /// A cache of about `capacity` tokens.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_generation: (capacity / SHARDS / 2).max(1),
        }
    }

    /// The key of `token` (collision-resistant: a hit is the same token).
    pub fn key(token: &str) -> TokenKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
        key
    }

    fn shard(&self, key: &TokenKey) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[usize::from(key[0]) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The claims remembered for `key`.
    pub fn get(&self, key: &TokenKey) -> Option<Claims> {
        let mut shard = self.shard(key);
        if let Some(claims) = shard.current.get(key) {
            return Some(claims.clone());
        }
        // Still in use: move it to the current generation so it survives the next turn.
        let claims = shard.previous.remove(key)?;
        Self::put(&mut shard, self.per_generation, *key, claims.clone());
        Some(claims)
    }

    /// Remembers `claims` for `key`.
    pub fn insert(&self, key: TokenKey, claims: Claims) {
        let mut shard = self.shard(&key);
        Self::put(&mut shard, self.per_generation, key, claims);
    }

    fn put(shard: &mut Shard, per_generation: usize, key: TokenKey, claims: Claims) {
        if shard.current.len() >= per_generation {
            shard.previous = std::mem::take(&mut shard.current);
        }
        shard.current.insert(key, claims);
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(PoisonError::into_inner);
                s.current.len() + s.previous.len()
            })
            .sum()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str) -> Claims {
        serde_json::from_value(serde_json::json!({
            "iss": "i", "sub": sub, "aud": "a", "iat": 1, "exp": 2
        }))
        .unwrap()
    }

    #[test]
    fn a_remembered_token_is_found_and_another_is_not() {
        let cache = VerifiedCache::default();
        cache.insert(VerifiedCache::key("token-a"), claims("1"));
        assert_eq!(cache.get(&VerifiedCache::key("token-a")).unwrap().sub, "1");
        assert!(cache.get(&VerifiedCache::key("token-b")).is_none());
        assert!(cache.get(&VerifiedCache::key("token-a ")).is_none());
    }

    #[test]
    fn the_cache_stays_bounded_and_keeps_tokens_in_use() {
        let cache = VerifiedCache::with_capacity(64);
        cache.insert(VerifiedCache::key("hot"), claims("hot"));
        for i in 0..10_000 {
            cache.insert(VerifiedCache::key(&format!("cold-{i}")), claims("cold"));
            // The hot token is used all the time: it is never dropped.
            assert!(cache.get(&VerifiedCache::key("hot")).is_some(), "{i}");
        }
        assert!(cache.len() <= 64 + SHARDS, "{}", cache.len());
    }
}
