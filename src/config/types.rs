//! Setting types that validate while they parse, so that what holds a value
//! of them never checks it again: an http(s) base URL, a positive number of
//! milliseconds, an HS256 secret of at least 32 bytes.

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use std::{fmt, num::NonZeroU64, time::Duration};

/// An `http://` or `https://` base URL, kept without its trailing `/`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpUrl(String);

impl HttpUrl {
    /// Parses a base URL; the error says what is wrong.
    pub fn parse(url: impl Into<String>) -> Result<Self, String> {
        let url = url.into();
        let trimmed = url.trim_end_matches('/');
        let rest = trimmed
            .strip_prefix("http://")
            .or_else(|| trimmed.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
                Ok(Self(trimmed.to_owned()))
            }
            _ => Err(format!(
                "{url:?} must be an http(s) URL, e.g. https://api.weixin.qq.com"
            )),
        }
    }

    /// A literal known to be valid (defaults); not checked.
    pub(crate) fn from_static(url: &'static str) -> Self {
        Self(url.to_owned())
    }

    /// The URL, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HttpUrl {
    type Error = String;
    fn try_from(url: String) -> Result<Self, String> {
        Self::parse(url)
    }
}

impl From<HttpUrl> for String {
    fn from(url: HttpUrl) -> Self {
        url.0
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A positive duration in milliseconds (written as a plain number, e.g. `5000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Millis(NonZeroU64);

impl Millis {
    /// `ms` milliseconds; `None` for 0.
    pub const fn new(ms: u64) -> Option<Self> {
        match NonZeroU64::new(ms) {
            Some(ms) => Some(Self(ms)),
            None => None,
        }
    }

    /// `ms` milliseconds, 0 raised to 1 (for defaults and literals).
    pub const fn clamped(ms: u64) -> Self {
        Self(NonZeroU64::MIN.saturating_add(ms.saturating_sub(1)))
    }

    /// The number of milliseconds (at least 1).
    pub const fn get(self) -> u64 {
        self.0.get()
    }

    /// As a duration (never zero).
    pub const fn duration(self) -> Duration {
        Duration::from_millis(self.0.get())
    }
}

impl TryFrom<u64> for Millis {
    type Error = &'static str;
    fn try_from(ms: u64) -> Result<Self, Self::Error> {
        Self::new(ms).ok_or("must be a positive number of milliseconds, e.g. 5000")
    }
}

impl From<Millis> for u64 {
    fn from(ms: Millis) -> Self {
        ms.get()
    }
}

/// The shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash size).
pub const HS256_MIN_BYTES: usize = 32;

/// An HS256 shared secret of at least [`HS256_MIN_BYTES`] bytes. Never printed.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Hs256Secret(SecretString);

impl Hs256Secret {
    /// Checks the length; the error says how to make a good secret.
    pub fn parse(secret: SecretString) -> Result<Self, String> {
        let len = secret.expose_secret().len();
        if len < HS256_MIN_BYTES {
            return Err(format!(
                "an HS256 secret must be at least {HS256_MIN_BYTES} bytes, got {len}: use \
                 `openssl rand -base64 48`, or better an ES256 key (`mp-auth keys generate`)"
            ));
        }
        Ok(Self(secret))
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

impl TryFrom<String> for Hs256Secret {
    type Error = String;
    fn try_from(secret: String) -> Result<Self, String> {
        Self::parse(SecretString::from(secret))
    }
}

impl fmt::Debug for Hs256Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hs256Secret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_must_be_http_or_https_and_lose_their_trailing_slash() {
        assert_eq!(
            HttpUrl::parse("https://api.weixin.qq.com/")
                .unwrap()
                .as_str(),
            "https://api.weixin.qq.com"
        );
        assert!(HttpUrl::parse("http://127.0.0.1:9400").is_ok());
        for bad in ["ftp://x", "api.weixin.qq.com", "https://", "http:// x"] {
            let err = HttpUrl::parse(bad).unwrap_err();
            assert!(err.contains("must be an http(s) URL"), "{err}");
        }
    }

    #[test]
    fn zero_milliseconds_are_refused() {
        assert!(Millis::try_from(0).is_err());
        assert_eq!(
            Millis::try_from(5).unwrap().duration(),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn a_short_hs256_secret_is_refused_and_a_good_one_never_printed() {
        let err = Hs256Secret::parse(SecretString::from("short")).unwrap_err();
        assert!(err.contains("at least 32 bytes"), "{err}");
        assert!(err.contains("openssl rand"), "{err}");
        let secret =
            Hs256Secret::parse(SecretString::from("0123456789abcdef0123456789abcdef")).unwrap();
        assert!(!format!("{secret:?}").contains("0123"));
    }
}
