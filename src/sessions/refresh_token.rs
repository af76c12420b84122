//! Refresh tokens: `<sid>.<generation>.<user>.<expiry>.<mac>`, where the MAC is
//! HMAC-SHA256 under a server key over every other part and the app. Nothing
//! secret is stored: the server recomputes the MAC to check a token, and to
//! hand out the same successor again on a retry. The key is derived from the
//! session-key encryption key (one secret to manage; rotating it ends every
//! session's refresh tokens, which is what rotating a leaked key should do).

use crate::domain::{AppId, UserId};
use base64::Engine as _;
use ring::hmac;
use secrecy::SecretString;

const LABEL: &[u8] = b"mp-auth refresh tokens v1";
/// Longest token accepted (the real ones are about 90 characters).
const MAX_TOKEN_LEN: usize = 256;

/// Why a presented refresh token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefreshTokenError {
    #[error("the refresh token is malformed")]
    Malformed,
    #[error("the refresh token's signature does not verify")]
    BadMac,
    #[error("the refresh token belongs to another mini program")]
    WrongApp,
}

/// The parts of a verified refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRefreshToken {
    pub sid: String,
    pub generation: i64,
    pub user_id: UserId,
    /// The session's absolute end, unix seconds.
    pub expires_at_secs: u64,
    pub app_id: AppId,
}

/// Issues and checks refresh tokens.
pub struct RefreshCodec {
    key: hmac::Key,
}

impl std::fmt::Debug for RefreshCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshCodec([REDACTED])")
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl RefreshCodec {
    /// Derives the token key from the 32-byte session-key encryption key.
    pub fn new(master: &[u8; 32]) -> Self {
        let derive = hmac::Key::new(hmac::HMAC_SHA256, master);
        let tag = hmac::sign(&derive, LABEL);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref()),
        }
    }

    fn message(sid: &str, generation: i64, user: UserId, expires: u64, app: &AppId) -> String {
        format!(
            "{sid}\0{generation}\0{}\0{expires}\0{}",
            user.0,
            app.as_str()
        )
    }

    /// The token of `generation` of session `sid`.
    pub fn encode(
        &self,
        sid: &str,
        generation: i64,
        user: UserId,
        expires_at_secs: u64,
        app: &AppId,
    ) -> SecretString {
        let mac = hmac::sign(
            &self.key,
            Self::message(sid, generation, user, expires_at_secs, app).as_bytes(),
        );
        SecretString::from(format!(
            "{sid}.{generation}.{}.{expires_at_secs}.{}",
            user.0,
            b64(mac.as_ref())
        ))
    }

    fn split(token: &str) -> Result<(String, i64, UserId, u64, Vec<u8>), RefreshTokenError> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(RefreshTokenError::Malformed);
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [sid, generation, user, expires, mac] = parts.as_slice() else {
            return Err(RefreshTokenError::Malformed);
        };
        let sid_ok = (16..=32).contains(&sid.len())
            && sid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let number = |s: &str| -> Result<u64, RefreshTokenError> {
            if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(RefreshTokenError::Malformed);
            }
            s.parse().map_err(|_| RefreshTokenError::Malformed)
        };
        let generation = number(generation)?;
        let user = number(user)?;
        let expires = number(expires)?;
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| RefreshTokenError::Malformed)?;
        if !sid_ok || mac.len() != 32 || generation == 0 || generation > i64::MAX as u64 {
            return Err(RefreshTokenError::Malformed);
        }
        let user = i64::try_from(user).map_err(|_| RefreshTokenError::Malformed)?;
        Ok((
            (*sid).to_owned(),
            generation as i64,
            UserId(user),
            expires,
            mac,
        ))
    }

    fn verifies(&self, parts: &(String, i64, UserId, u64, Vec<u8>), app: &AppId) -> bool {
        let (sid, generation, user, expires, mac) = parts;
        hmac::verify(
            &self.key,
            Self::message(sid, *generation, *user, *expires, app).as_bytes(),
            mac,
        )
        .is_ok()
    }

    fn parsed(parts: (String, i64, UserId, u64, Vec<u8>), app: &AppId) -> ParsedRefreshToken {
        ParsedRefreshToken {
            sid: parts.0,
            generation: parts.1,
            user_id: parts.2,
            expires_at_secs: parts.3,
            app_id: app.clone(),
        }
    }

    /// Checks a token presented to `app`; a token of another configured app
    /// (in `apps`) is `WrongApp`, anything else that does not verify `BadMac`.
    pub fn decode(
        &self,
        token: &str,
        app: &AppId,
        apps: &[AppId],
    ) -> Result<ParsedRefreshToken, RefreshTokenError> {
        let parts = Self::split(token)?;
        if self.verifies(&parts, app) {
            return Ok(Self::parsed(parts, app));
        }
        if apps
            .iter()
            .any(|other| other != app && self.verifies(&parts, other))
        {
            return Err(RefreshTokenError::WrongApp);
        }
        Err(RefreshTokenError::BadMac)
    }

    /// Checks a token of any configured app (logout does not name the app).
    pub fn decode_any_app(
        &self,
        token: &str,
        apps: &[AppId],
    ) -> Result<ParsedRefreshToken, RefreshTokenError> {
        let parts = Self::split(token)?;
        match apps.iter().find(|app| self.verifies(&parts, app)) {
            Some(app) => Ok(Self::parsed(parts, app)),
            None => Err(RefreshTokenError::BadMac),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn app(id: &str) -> AppId {
        AppId::parse(id).unwrap()
    }

    const SID: &str = "AAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn a_token_round_trips_and_is_deterministic() {
        let c = RefreshCodec::new(&[7; 32]);
        let t = c.encode(SID, 3, UserId(42), 1_900_000_000, &app("wxa"));
        let again = c.encode(SID, 3, UserId(42), 1_900_000_000, &app("wxa"));
        assert_eq!(
            t.expose_secret(),
            again.expose_secret(),
            "a retry gets the same successor"
        );
        let p = c
            .decode(t.expose_secret(), &app("wxa"), &[app("wxa")])
            .unwrap();
        assert_eq!(
            (p.sid.as_str(), p.generation, p.user_id),
            (SID, 3, UserId(42))
        );
        assert!(t.expose_secret().len() < 120);
    }

    #[test]
    fn tampered_tokens_other_apps_and_other_keys_are_refused() {
        let c = RefreshCodec::new(&[7; 32]);
        let apps = [app("wxa"), app("wxb")];
        let t = c.encode(SID, 1, UserId(42), 1_900_000_000, &app("wxa"));
        let t = t.expose_secret();
        // Every part is covered by the MAC.
        for tampered in [
            t.replacen(".1.", ".2.", 1),
            t.replacen(".42.", ".43.", 1),
            t.replacen("1900000000", "1900000001", 1),
            t.replacen(SID, "BAAAAAAAAAAAAAAAAAAAAA", 1),
        ] {
            assert_eq!(
                c.decode(&tampered, &app("wxa"), &apps),
                Err(RefreshTokenError::BadMac),
                "{tampered}"
            );
        }
        assert_eq!(
            c.decode(t, &app("wxb"), &apps),
            Err(RefreshTokenError::WrongApp)
        );
        let other = RefreshCodec::new(&[8; 32]);
        assert_eq!(
            other.decode(t, &app("wxa"), &apps),
            Err(RefreshTokenError::BadMac)
        );
        for junk in ["", "a.b.c", "x.1.1.1.AAAA", &"a".repeat(300), "A.1.1.1.!!!"] {
            assert_eq!(
                c.decode(junk, &app("wxa"), &apps),
                Err(RefreshTokenError::Malformed),
                "{junk}"
            );
        }
        assert_eq!(c.decode_any_app(t, &apps).unwrap().app_id, app("wxa"));
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(
            format!("{:?}", RefreshCodec::new(&[7; 32])),
            "RefreshCodec([REDACTED])"
        );
    }
}
