//! Request ids: a sane incoming `X-Request-Id` is kept, anything else is
//! replaced by a fresh UUID. The id is echoed in the response header and in
//! error bodies, and forwarded to the backend as gRPC metadata `x-request-id`.

use axum::http::{HeaderMap, HeaderName};

/// The request id header, on HTTP and (lower-case) as gRPC metadata.
pub static HEADER: HeaderName = HeaderName::from_static(crate::api::metadata::REQUEST_ID);

/// Longest incoming id that is kept.
pub const MAX_LEN: usize = 64;

/// A validated request id: 1 to 64 characters of `[A-Za-z0-9-_.]`, safe to
/// log and to put in headers and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// Accepts a client-supplied id only if it is sane; `None` otherwise.
    pub fn parse(value: &str) -> Option<Self> {
        let ok = !value.is_empty()
            && value.len() <= MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        ok.then(|| Self(value.to_owned()))
    }

    /// A fresh random id (UUID v4).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The incoming `X-Request-Id` if sane, otherwise a fresh one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(&HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(Self::parse)
            .unwrap_or_else(Self::generate)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn sane_ids_are_kept() {
        for id in ["abc", "req-123_4.5", "A", &"x".repeat(64)] {
            assert_eq!(RequestId::parse(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn empty_long_or_odd_ids_are_refused() {
        for id in [
            "",
            &"x".repeat(65),
            "has space",
            "semi;colon",
            "new\nline",
            "ünï",
            "a/b",
            "{\"json\":1}",
        ] {
            assert!(RequestId::parse(id).is_none(), "{id:?}");
        }
    }

    #[test]
    fn a_refused_or_missing_header_gets_a_fresh_uuid() {
        let mut headers = HeaderMap::new();
        let generated = RequestId::from_headers(&headers);
        assert!(uuid::Uuid::parse_str(generated.as_str()).is_ok());
        headers.insert(&HEADER, HeaderValue::from_static("bad id!"));
        let replaced = RequestId::from_headers(&headers);
        assert!(uuid::Uuid::parse_str(replaced.as_str()).is_ok());
        assert_ne!(generated, replaced);
        headers.insert(&HEADER, HeaderValue::from_static("trace-42"));
        assert_eq!(RequestId::from_headers(&headers).as_str(), "trace-42");
    }

    #[test]
    fn generated_ids_are_themselves_sane() {
        let id = RequestId::generate();
        assert!(RequestId::parse(id.as_str()).is_some());
    }
}
