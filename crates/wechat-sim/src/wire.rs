//! The control API's JSON bodies, shared by the server (the `/_sim/` routes)
//! and its client ([`crate::SimClient`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A code minted by `POST /_sim/login` (what `wx.login()` gives the front end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintedLogin {
    /// The single-use login code for jscode2session.
    pub code: String,
    /// The user's openid in this app (what jscode2session will return).
    pub openid: String,
    /// The user's unionid, if the app is bound to an open platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
}

/// What the phone button gives the front end (`POST /_sim/phone`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintedPhone {
    /// The single-use phone code for getuserphonenumber (bound to the openid).
    pub code: String,
    /// The legacy payload, encrypted with the user's current session_key.
    #[serde(rename = "encryptedData")]
    pub encrypted_data: String,
    /// Its IV (base64).
    pub iv: String,
}

/// One tap of "一键登录" as the WeChat client plays it: `wx.login()`, then the
/// phone button ([`crate::SimClient::press`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pressed {
    /// What `wx.login()` gave.
    pub login: MintedLogin,
    /// What the phone button gave (the new-flow code and the legacy payload).
    pub phone: MintedPhone,
}

/// Call statistics (`GET /_sim/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Calls per WeChat endpoint (`jscode2session`, `stable_token`, `getuserphonenumber`).
    pub calls: BTreeMap<String, u64>,
    /// Access tokens minted per app (normal renewals and forced refreshes).
    pub tokens_minted: BTreeMap<String, u64>,
    /// Accepted `force_refresh=true` calls, all apps.
    pub force_refreshes: u64,
}

impl SimStats {
    /// Calls so far to `endpoint` (`jscode2session`, ...).
    pub fn calls_to(&self, endpoint: &str) -> u64 {
        self.calls.get(endpoint).copied().unwrap_or(0)
    }
}
