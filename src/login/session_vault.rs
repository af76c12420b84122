//! Seals session_keys for storage: AES-256-GCM (ring) with a random nonce and
//! the `(app_id, openid)` pair as associated data, so a sealed key copied to
//! another row does not open. Format: `v1 (1 byte) || nonce (12) || ciphertext+tag`.

use crate::domain::{AppId, OpenId, SessionKey};
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};

const VERSION: u8 = 1;

/// Why a stored key could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The sealed bytes are corrupt, from another row, or from another key.
    #[error("sealed session key does not open (corrupt, moved, or encrypted with another key)")]
    Open,
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
}

/// Encrypts session_keys at rest with a configured 32-byte key.
pub struct SessionVault {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SessionVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionVault([REDACTED])")
    }
}

fn aad(app_id: &AppId, openid: &OpenId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(app_id.as_str().len() + openid.as_str().len() + 1);
    aad.extend_from_slice(app_id.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(openid.as_str().as_bytes());
    aad
}

impl SessionVault {
    /// Builds a vault from the 32-byte key (`session_keys.encryption_key`).
    pub fn new(key: &[u8; 32]) -> Self {
        // A 32-byte key is always valid for AES-256-GCM.
        #[allow(clippy::expect_used)]
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("32-byte AES-256 key");
        Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// Seals a session key for the row `(app_id, openid)`.
    pub fn seal(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        session_key: &SessionKey,
    ) -> Result<Vec<u8>, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| VaultError::Random)?;
        let mut buf = Vec::with_capacity(1 + NONCE_LEN + 16 + AES_256_GCM.tag_len());
        buf.push(VERSION);
        buf.extend_from_slice(&nonce);
        let mut body = session_key.bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(app_id, openid)),
                &mut body,
            )
            .map_err(|_| VaultError::Random)?;
        buf.extend_from_slice(&body);
        Ok(buf)
    }

    /// Opens a sealed key stored for `(app_id, openid)`.
    pub fn open(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        sealed: &[u8],
    ) -> Result<SessionKey, VaultError> {
        if sealed.len() != 1 + NONCE_LEN + 16 + AES_256_GCM.tag_len() || sealed[0] != VERSION {
            return Err(VaultError::Open);
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN]
            .try_into()
            .map_err(|_| VaultError::Open)?;
        let mut body = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(app_id, openid)),
                &mut body,
            )
            .map_err(|_| VaultError::Open)?;
        let bytes: [u8; 16] = (&*plain).try_into().map_err(|_| VaultError::Open)?;
        Ok(SessionKey::from_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (AppId, OpenId) {
        (AppId::parse("wxa").unwrap(), OpenId::parse("o123").unwrap())
    }

    #[test]
    fn seal_then_open_round_trips_and_hides_the_key() {
        let vault = SessionVault::new(&[9u8; 32]);
        let (app, openid) = ids();
        let key = SessionKey::from_bytes([5u8; 16]);
        let sealed = vault.seal(&app, &openid, &key).unwrap();
        assert!(!sealed.windows(16).any(|w| w == [5u8; 16]));
        assert_eq!(vault.open(&app, &openid, &sealed).unwrap(), key);
        assert_ne!(
            sealed,
            vault.seal(&app, &openid, &key).unwrap(),
            "nonces are random"
        );
    }

    #[test]
    fn sealed_keys_do_not_open_for_another_row_or_key_or_after_tampering() {
        let vault = SessionVault::new(&[9u8; 32]);
        let (app, openid) = ids();
        let sealed = vault
            .seal(&app, &openid, &SessionKey::from_bytes([5u8; 16]))
            .unwrap();
        assert!(
            vault
                .open(&app, &OpenId::parse("o124").unwrap(), &sealed)
                .is_err()
        );
        assert!(
            SessionVault::new(&[8u8; 32])
                .open(&app, &openid, &sealed)
                .is_err()
        );
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(vault.open(&app, &openid, &tampered).is_err());
        assert!(vault.open(&app, &openid, &sealed[..10]).is_err());
    }
}
