//! Typed WeChat failures: every documented `errcode` of jscode2session,
//! getuserphonenumber and stable_token becomes a variant a caller can act on;
//! transport problems (status, timeout, garbage) get their own variants.
//! Messages never carry secrets, codes, tokens or phone numbers.

use crate::domain::AppId;

/// The WeChat endpoint a call went to; part of the errcode mapping (40001
/// means "bad secret" on stable_token but "stale token" elsewhere) and the
/// `endpoint` label of the call metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /sns/jscode2session`.
    Code2Session,
    /// `POST /cgi-bin/stable_token`.
    StableToken,
    /// `POST /wxa/business/getuserphonenumber`.
    PhoneNumber,
}

impl Endpoint {
    /// The metric/log label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Code2Session => "jscode2session",
            Self::StableToken => "stable_token",
            Self::PhoneNumber => "getuserphonenumber",
        }
    }
}

/// The errcodes that mean "this access_token is stale" and allow exactly one
/// retry with a re-fetched token (WeChat rejected the token before it looked
/// at the single-use code).
pub const STALE_TOKEN_ERRCODES: [i64; 3] = [40001, 42001, 40014];

/// Longest `errmsg` we keep from WeChat.
const MAX_ERRMSG_CHARS: usize = 160;

/// Why a WeChat call failed. Each variant's doc names the login reason the
/// login use case maps it to (`login::map_*_error`); the gRPC status follows
/// from that reason's row in the error table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WechatError {
    /// The app id is not configured here; no HTTP call was made (`UNKNOWN_APP`).
    #[error("app {0} is not configured")]
    UnknownApp(AppId),
    /// 40029: the code is invalid, expired (5 minutes), from another app, or the
    /// wrong kind of code; the user must log in again (`LOGIN_CODE_INVALID` on
    /// jscode2session, `PHONE_CODE_INVALID` on getuserphonenumber).
    #[error("WeChat rejected the code as invalid or expired (40029)")]
    InvalidCode,
    /// 40163: the code was already exchanged (each code is single-use); the
    /// user must log in again (`LOGIN_CODE_USED` / `PHONE_CODE_INVALID`).
    #[error("WeChat says the code was already used (40163)")]
    CodeUsed,
    /// 40226: WeChat's risk control blocked this user (`USER_BLOCKED`).
    #[error("WeChat blocked this user as high-risk (40226)")]
    UserBlocked,
    /// 45011 (minute quota) / 45009 (daily quota): slow down (`WECHAT_RATE_LIMITED`).
    #[error("WeChat rate limit reached ({errcode})")]
    RateLimited { errcode: i64 },
    /// -1: WeChat is busy; a later attempt may succeed (`WECHAT_UNAVAILABLE`).
    #[error("WeChat is busy (-1)")]
    Busy,
    /// 40125 / 40243, or 40001 from stable_token: the AppSecret is wrong, reset
    /// or frozen; fix the configuration (`WECHAT_APP_MISCONFIGURED`).
    #[error("WeChat rejected the AppSecret ({errcode}): check the app's configuration")]
    InvalidAppSecret { errcode: i64 },
    /// 40013: on jscode2session and stable_token our AppID is invalid
    /// (`WECHAT_APP_MISCONFIGURED`); on getuserphonenumber the access_token is
    /// ours, so the phone code belongs to another mini program (`PHONE_CODE_INVALID`).
    #[error("WeChat rejected the AppID (40013): check the app's configuration")]
    InvalidAppId,
    /// 40001 / 42001 / 40014 / 41001: the access_token was refused, also after
    /// the one retry with a re-fetched token (`WECHAT_UNAVAILABLE`).
    #[error("WeChat refused the access_token ({errcode})")]
    AccessTokenInvalid { errcode: i64 },
    /// 48001: the mini program may not call this API (not verified, or no phone
    /// permission) (`WECHAT_APP_MISCONFIGURED`).
    #[error("the mini program is not authorized for this WeChat API (48001)")]
    NotAuthorized,
    /// 40164 / 89503: our egress IP is not in the app's API IP whitelist, or the
    /// IP call waits for an admin's confirmation (`WECHAT_APP_MISCONFIGURED`).
    #[error(
        "WeChat refused our IP address ({errcode}): add the egress IP to the app's API IP whitelist"
    )]
    IpNotWhitelisted { errcode: i64 },
    /// 41002 / 41004 / 41008 / 40002 / 43002: our request was incomplete or
    /// malformed; a bug on our side (`WECHAT_APP_MISCONFIGURED`, logged as an error).
    #[error("WeChat says our request is incomplete or malformed ({errcode})")]
    MissingParameter { errcode: i64 },
    /// The phone record's `watermark.appid` names another app (`WECHAT_UNAVAILABLE`).
    #[error("the phone number's watermark names another app")]
    WatermarkMismatch,
    /// WeChat returned a phone number we cannot use (`WECHAT_UNAVAILABLE`).
    #[error("WeChat returned an unusable phone number")]
    BadPhone,
    /// Any other errcode; `errmsg` is WeChat's text, trimmed (`WECHAT_UNAVAILABLE`).
    #[error("WeChat error {errcode}: {errmsg}")]
    Api { errcode: i64, errmsg: String },
    /// WeChat (or a proxy) answered with a non-2xx HTTP status (`WECHAT_UNAVAILABLE`).
    #[error("WeChat answered HTTP {0}")]
    HttpStatus(u16),
    /// The body was not the JSON we expect: not JSON, truncated, too large or
    /// missing fields; says what was wrong, never the body (`WECHAT_UNAVAILABLE`).
    #[error("malformed WeChat response: {0}")]
    Malformed(&'static str),
    /// The call took longer than the configured timeout (`WECHAT_UNAVAILABLE`).
    #[error("WeChat did not answer in time")]
    Timeout,
    /// No connection could be made (`WECHAT_UNAVAILABLE`).
    #[error("could not connect to WeChat: {0}")]
    Connect(String),
    /// Any other transport failure (connection reset, TLS, ...) (`WECHAT_UNAVAILABLE`).
    #[error("WeChat transport error: {0}")]
    Transport(String),
    /// The client could not be built from its settings (start-up only).
    #[error("invalid WeChat client configuration: {0}")]
    Config(String),
}

impl WechatError {
    /// Maps a non-zero errcode returned by `endpoint` to its variant.
    pub fn from_errcode(endpoint: Endpoint, errcode: i64, errmsg: &str) -> Self {
        match errcode {
            -1 => Self::Busy,
            40029 => Self::InvalidCode,
            40163 => Self::CodeUsed,
            40226 => Self::UserBlocked,
            45009 | 45011 => Self::RateLimited { errcode },
            40125 | 40243 => Self::InvalidAppSecret { errcode },
            // On the token endpoint 40001 means "wrong secret"; elsewhere the token is stale.
            40001 if endpoint == Endpoint::StableToken => Self::InvalidAppSecret { errcode },
            40001 | 42001 | 40014 | 41001 => Self::AccessTokenInvalid { errcode },
            40013 => Self::InvalidAppId,
            48001 => Self::NotAuthorized,
            40164 | 89503 => Self::IpNotWhitelisted { errcode },
            41002 | 41004 | 41008 | 40002 | 43002 => Self::MissingParameter { errcode },
            _ => Self::Api {
                errcode,
                errmsg: sanitize_errmsg(errmsg),
            },
        }
    }

    /// The WeChat errcode behind this error, if it came from one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            Self::InvalidCode => Some(40029),
            Self::CodeUsed => Some(40163),
            Self::UserBlocked => Some(40226),
            Self::Busy => Some(-1),
            Self::InvalidAppId => Some(40013),
            Self::NotAuthorized => Some(48001),
            Self::RateLimited { errcode }
            | Self::InvalidAppSecret { errcode }
            | Self::AccessTokenInvalid { errcode }
            | Self::IpNotWhitelisted { errcode }
            | Self::MissingParameter { errcode }
            | Self::Api { errcode, .. } => Some(*errcode),
            Self::UnknownApp(_)
            | Self::WatermarkMismatch
            | Self::BadPhone
            | Self::HttpStatus(_)
            | Self::Malformed(_)
            | Self::Timeout
            | Self::Connect(_)
            | Self::Transport(_)
            | Self::Config(_) => None,
        }
    }

    /// True when a later, identical attempt may succeed: WeChat busy (-1), HTTP
    /// 5xx, timeout, or no connection. Guidance for callers only: this client
    /// never retries a call that carries a single-use code on these.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Busy | Self::Timeout | Self::Connect(_) => true,
            Self::HttpStatus(status) => (500..600).contains(status),
            _ => false,
        }
    }

    /// True for the errcodes that allow the one stale-token retry.
    pub fn is_stale_token(&self) -> bool {
        matches!(self, Self::AccessTokenInvalid { errcode } if STALE_TOKEN_ERRCODES.contains(errcode))
    }

    /// The `errcode` label of `mp_auth_wechat_calls_total`. Bounded: only the
    /// errcodes this client knows by name become labels; any other errcode
    /// WeChat (or a hostile upstream) answers is `other`.
    pub fn metric_label(&self) -> String {
        if let Self::Api { .. } = self {
            return "other".into();
        }
        if let Some(code) = self.errcode() {
            return code.to_string();
        }
        match self {
            Self::HttpStatus(s) if *s >= 500 => "http_5xx".into(),
            Self::HttpStatus(_) => "http_4xx".into(),
            Self::Timeout => "timeout".into(),
            Self::Malformed(_) | Self::WatermarkMismatch | Self::BadPhone => "malformed".into(),
            _ => "transport".into(),
        }
    }

    /// Builds the transport variant for a reqwest error, without the URL
    /// (it carries the AppSecret, the code or the access_token in its query).
    pub(crate) fn from_reqwest(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            return Self::Timeout;
        }
        let connect = err.is_connect();
        let err = err.without_url();
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        let text: String = text.chars().take(MAX_ERRMSG_CHARS * 2).collect();
        if connect {
            Self::Connect(text)
        } else {
            Self::Transport(text)
        }
    }
}

/// Keeps WeChat's `errmsg` short and printable.
fn sanitize_errmsg(errmsg: &str) -> String {
    errmsg
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERRMSG_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_errcode_maps_to_an_actionable_variant() {
        use Endpoint::*;
        use WechatError as E;
        let cases = [
            (Code2Session, -1, E::Busy),
            (Code2Session, 40029, E::InvalidCode),
            (PhoneNumber, 40029, E::InvalidCode),
            (Code2Session, 40163, E::CodeUsed),
            (Code2Session, 40226, E::UserBlocked),
            (Code2Session, 45011, E::RateLimited { errcode: 45011 }),
            (StableToken, 45009, E::RateLimited { errcode: 45009 }),
            (Code2Session, 40125, E::InvalidAppSecret { errcode: 40125 }),
            (StableToken, 40125, E::InvalidAppSecret { errcode: 40125 }),
            (StableToken, 40001, E::InvalidAppSecret { errcode: 40001 }),
            (StableToken, 40243, E::InvalidAppSecret { errcode: 40243 }),
            (Code2Session, 40013, E::InvalidAppId),
            (PhoneNumber, 40013, E::InvalidAppId),
            (PhoneNumber, 40001, E::AccessTokenInvalid { errcode: 40001 }),
            (PhoneNumber, 42001, E::AccessTokenInvalid { errcode: 42001 }),
            (PhoneNumber, 40014, E::AccessTokenInvalid { errcode: 40014 }),
            (PhoneNumber, 41001, E::AccessTokenInvalid { errcode: 41001 }),
            (PhoneNumber, 48001, E::NotAuthorized),
            (StableToken, 40164, E::IpNotWhitelisted { errcode: 40164 }),
            (StableToken, 89503, E::IpNotWhitelisted { errcode: 89503 }),
            (Code2Session, 41002, E::MissingParameter { errcode: 41002 }),
            (Code2Session, 41004, E::MissingParameter { errcode: 41004 }),
            (Code2Session, 41008, E::MissingParameter { errcode: 41008 }),
            (StableToken, 40002, E::MissingParameter { errcode: 40002 }),
            (StableToken, 43002, E::MissingParameter { errcode: 43002 }),
        ];
        for (endpoint, code, expected) in cases {
            let err = WechatError::from_errcode(endpoint, code, "msg");
            assert_eq!(err, expected, "{endpoint:?} {code}");
            assert_eq!(err.errcode(), Some(code), "{endpoint:?} {code}");
            assert_eq!(err.metric_label(), code.to_string());
        }
    }

    #[test]
    fn other_errcodes_keep_a_trimmed_errmsg() {
        let long = format!("weird\n{}", "x".repeat(500));
        let err = WechatError::from_errcode(Endpoint::PhoneNumber, 61003, &long);
        let WechatError::Api { errcode, errmsg } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*errcode, 61003);
        assert!(!errmsg.contains('\n'));
        assert_eq!(errmsg.chars().count(), MAX_ERRMSG_CHARS);
        assert_eq!(err.errcode(), Some(61003));
    }

    #[test]
    fn unknown_errcodes_share_one_bounded_metric_label() {
        let labels: std::collections::HashSet<String> = (0..1000)
            .map(|i| {
                WechatError::from_errcode(Endpoint::PhoneNumber, 70000 + i, "x").metric_label()
            })
            .collect();
        assert_eq!(labels.len(), 1);
        assert!(labels.contains("other"));
    }

    #[test]
    fn only_stale_token_codes_allow_the_retry() {
        for code in STALE_TOKEN_ERRCODES {
            assert!(WechatError::from_errcode(Endpoint::PhoneNumber, code, "").is_stale_token());
        }
        assert!(!WechatError::AccessTokenInvalid { errcode: 41001 }.is_stale_token());
        assert!(!WechatError::from_errcode(Endpoint::StableToken, 40001, "").is_stale_token());
        assert!(!WechatError::InvalidCode.is_stale_token());
    }

    #[test]
    fn retryable_means_busy_5xx_timeout_or_no_connection() {
        assert!(WechatError::Busy.is_retryable());
        assert!(WechatError::HttpStatus(503).is_retryable());
        assert!(WechatError::Timeout.is_retryable());
        assert!(WechatError::Connect("refused".into()).is_retryable());
        assert!(!WechatError::HttpStatus(400).is_retryable());
        assert!(!WechatError::CodeUsed.is_retryable());
        assert!(!WechatError::RateLimited { errcode: 45011 }.is_retryable());
        assert!(!WechatError::Malformed("x").is_retryable());
    }

    #[test]
    fn transport_failures_have_metric_labels() {
        assert_eq!(WechatError::Timeout.metric_label(), "timeout");
        assert_eq!(WechatError::Malformed("x").metric_label(), "malformed");
        assert_eq!(WechatError::HttpStatus(500).metric_label(), "http_5xx");
        assert_eq!(
            WechatError::Transport("x".into()).metric_label(),
            "transport"
        );
        assert_eq!(WechatError::Connect("x".into()).metric_label(), "transport");
    }
}
