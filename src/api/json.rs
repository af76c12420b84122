//! The gateway's JSON bodies for `POST /auth/mp_login`, shared with its
//! clients (the `login` command, the load generator).

use crate::proto::{self, mini_program_login_request::Phone};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The login request. Unknown extra fields are ignored; `null` and `""` count as absent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"code": "0c3Xyz0w3Ojbq03V7a0w3ZbAmE2Xyz0D", "phoneCode": "e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144"}))]
pub struct LoginRequest {
    /// The code from `wx.login()`: single-use, valid for 5 minutes.
    #[schema(pattern = "^[A-Za-z0-9_-]{16,64}$")]
    pub code: String,
    /// New flow: `e.detail.code` of `<button open-type="getPhoneNumber">`. Preferred when both flows are sent.
    /// Absent, `null` or `""` (and no `encryptedData`): a silent login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable, pattern = "^$|^[A-Za-z0-9_-]{16,128}$")]
    pub phone_code: Option<String>,
    /// Legacy flow: `e.detail.encryptedData`, exactly as received. Requires `iv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable, max_length = 4096, pattern = "\\S")]
    pub encrypted_data: Option<String>,
    /// Legacy flow: `e.detail.iv`, exactly as received. Required with `encryptedData`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable, max_length = 4096, pattern = "\\S")]
    pub iv: Option<String>,
    /// The mini-program's AppID; required only when the service serves several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable, pattern = "^$|^[A-Za-z0-9_-]{1,64}$")]
    pub app_id: Option<String>,
}

// Codes are secrets: never print them.
impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("flow", &self.flow())
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl LoginRequest {
    /// `phone_code`, `encrypted_data` or `silent`, for logs.
    pub fn flow(&self) -> &'static str {
        match (&self.phone_code, &self.encrypted_data) {
            (Some(_), _) => "phone_code",
            (None, Some(_)) => "encrypted_data",
            (None, None) => "silent",
        }
    }

    /// The gRPC request: phoneCode wins over encryptedData; values pass through untouched.
    pub fn into_proto(self) -> proto::MiniProgramLoginRequest {
        let phone = match (self.phone_code, self.encrypted_data) {
            (Some(code), _) => Some(Phone::PhoneCode(code)),
            (None, Some(encrypted_data)) => Some(Phone::Encrypted(proto::EncryptedPhone {
                encrypted_data,
                iv: self.iv.unwrap_or_default(),
            })),
            (None, None) => None,
        };
        proto::MiniProgramLoginRequest {
            app_id: self.app_id.unwrap_or_default(),
            code: self.code,
            phone,
        }
    }
}

/// A successful login. `Debug` leaves the tokens out.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl",
    "token_type": "bearer", "expires_in": 7200, "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    "user_id": "42", "is_new_user": false,
    "refresh_token": "Xy3kQ9vF0bN2pLw7tR5sAg.1.42.1790000000.mAc9u1lW3bq5p7Qy0rN8sV2xT4zK6hJ1dF9gB3cE5aA",
    "refresh_expires_in": 2592000
}))]
pub struct LoginResponse {
    /// The access token (a JWT); send it as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Lifetime of the token in seconds.
    pub expires_in: i64,
    /// The user's openid within this mini-program.
    pub openid: String,
    /// The user's stable id (a decimal string).
    pub user_id: String,
    /// True when this login created the user.
    pub is_new_user: bool,
    /// The user's unionid; present only when the mini-program is bound to an Open Platform account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    /// The session's refresh token: keep it (wx.setStorageSync) and send it to
    /// `POST /auth/refresh` when the access token expires. Rotates on every use.
    pub refresh_token: String,
    /// Seconds until the session ends at the latest (each refresh extends the idle part).
    pub refresh_expires_in: i64,
    /// True when a silent login linked this WeChat identity to the user of the
    /// same unionid in another mini-program of this service.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub linked_by_unionid: bool,
}

impl std::fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginResponse")
            .field("access_token", &"[REDACTED]")
            .field("refresh_token", &"[REDACTED]")
            .field("user_id", &self.user_id)
            .field("is_new_user", &self.is_new_user)
            .finish_non_exhaustive()
    }
}

impl From<proto::MiniProgramLoginResponse> for LoginResponse {
    fn from(r: proto::MiniProgramLoginResponse) -> Self {
        Self {
            access_token: r.access_token,
            token_type: "bearer".to_owned(),
            expires_in: r.expires_in,
            openid: r.openid,
            user_id: r.user_id,
            is_new_user: r.is_new_user,
            unionid: (!r.unionid.is_empty()).then_some(r.unionid),
            refresh_token: r.refresh_token,
            refresh_expires_in: r.refresh_expires_in,
            linked_by_unionid: r.linked_by_unionid,
        }
    }
}
