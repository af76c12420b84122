//! WeChat's error codes as the simulator answers them: the typed [`WxError`]
//! of the server API, WeChat's real `errmsg` texts and the `, rid: …` suffix.

use rand::RngCore as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// A WeChat API error, exactly as WeChat reports it (`errcode` + `errmsg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WxError {
    /// -1 `system error`.
    #[error("system error")]
    SystemError,
    /// 40001: unknown, invalidated or superseded access_token.
    #[error("invalid credential")]
    InvalidCredential,
    /// 40002 `invalid grant_type`.
    #[error("invalid grant_type")]
    InvalidGrantType,
    /// 40013 `invalid appid` (unknown app, or token of another app).
    #[error("invalid appid")]
    InvalidAppId,
    /// 40029 `invalid code`: unknown, expired, other app's, wrong kind, used phone code.
    #[error("invalid code")]
    InvalidCode,
    /// 40125 `invalid appsecret`.
    #[error("invalid appsecret")]
    InvalidAppSecret,
    /// 40163 `code been used`.
    #[error("code been used")]
    CodeBeenUsed,
    /// 41001 `access_token missing`.
    #[error("access_token missing")]
    AccessTokenMissing,
    /// 41002 `appid missing`.
    #[error("appid missing")]
    AppIdMissing,
    /// 41004 `appsecret missing`.
    #[error("appsecret missing")]
    AppSecretMissing,
    /// 41008 `missing code`.
    #[error("missing code")]
    CodeMissing,
    /// 42001 `access_token expired`.
    #[error("access_token expired")]
    AccessTokenExpired,
    /// 43002 `require POST method`.
    #[error("require POST method")]
    RequirePost,
    /// 45009: daily quota of forced refreshes used up.
    #[error("daily quota reached")]
    DailyQuota,
    /// 45011: calls too frequent (forced refreshes closer than the minimum interval).
    #[error("minute quota reached")]
    MinuteQuota,
    /// 47001 `data format error`: the body is not the expected JSON.
    #[error("data format error")]
    DataFormat,
}

impl WxError {
    /// WeChat's numeric errcode.
    pub fn errcode(self) -> i64 {
        match self {
            Self::SystemError => -1,
            Self::InvalidCredential => 40001,
            Self::InvalidGrantType => 40002,
            Self::InvalidAppId => 40013,
            Self::InvalidCode => 40029,
            Self::InvalidAppSecret => 40125,
            Self::CodeBeenUsed => 40163,
            Self::AccessTokenMissing => 41001,
            Self::AppIdMissing => 41002,
            Self::AppSecretMissing => 41004,
            Self::CodeMissing => 41008,
            Self::AccessTokenExpired => 42001,
            Self::RequirePost => 43002,
            Self::DailyQuota => 45009,
            Self::MinuteQuota => 45011,
            Self::DataFormat => 47001,
        }
    }
}

/// WeChat's errmsg for an errcode, without the `, rid: …` suffix.
pub fn errmsg(errcode: i64) -> &'static str {
    match errcode {
        -1 => "system error",
        0 => "ok",
        40001 => {
            "invalid credential, access_token is invalid or not latest, could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r"
        }
        40002 => "invalid grant_type",
        40013 => "invalid appid",
        40014 => "invalid access_token",
        40029 => "invalid code",
        40125 => "invalid appsecret",
        40163 => "code been used",
        40164 => "invalid ip, not in whitelist",
        40226 => "code blocked",
        41001 => "access_token missing",
        41002 => "appid missing",
        41004 => "appsecret missing",
        41008 => "missing code",
        42001 => "access_token expired",
        43002 => "require POST method",
        45009 => "reach max api daily quota limit",
        45011 => "api minute-quota reach limit mustslower retry next minute",
        47001 => "data format error",
        48001 => "api unauthorized",
        89503 => "this IP is calling this API needs admin confirmation",
        _ => "system error",
    }
}

/// The `, rid: xxxxxxxx-xxxxxxxx-xxxxxxxx` suffix WeChat appends to errmsgs.
pub(crate) fn rid() -> String {
    let mut rng = rand::rng();
    format!(
        "{:08x}-{:08x}-{:08x}",
        unix_now() as u32,
        rng.next_u32(),
        rng.next_u32()
    )
}

/// Seconds since the Unix epoch (watermarks, rids).
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_real_errmsg() {
        for e in [
            WxError::SystemError,
            WxError::InvalidCredential,
            WxError::InvalidCode,
            WxError::CodeBeenUsed,
            WxError::RequirePost,
            WxError::DataFormat,
        ] {
            assert_ne!(errmsg(e.errcode()), "", "{e:?}");
        }
        assert_eq!(errmsg(40163), "code been used");
        assert!(errmsg(40001).starts_with("invalid credential, access_token is invalid"));
    }

    #[test]
    fn rids_look_like_wechat_rids() {
        let r = rid();
        let parts: Vec<&str> = r.split('-').collect();
        assert_eq!(parts.len(), 3);
        assert!(
            parts
                .iter()
                .all(|p| p.len() == 8 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }
}
