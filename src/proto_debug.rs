//! Redacting `Debug` for the generated messages that carry codes or tokens
//! (their derived `Debug` is switched off in `build.rs`): a stray `{:?}` in a
//! log line or an error must never print a `wx.login` code, a phone code, the
//! legacy ciphertext or an access token.

use crate::proto::{
    EncryptedPhone, LogoutRequest, MiniProgramLoginRequest, MiniProgramLoginResponse,
    RefreshSessionRequest, RefreshSessionResponse, User,
};
use std::fmt;

const REDACTED: &str = "[REDACTED]";

impl fmt::Debug for MiniProgramLoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::proto::mini_program_login_request::Phone;
        let flow = match &self.phone {
            Some(Phone::PhoneCode(_)) => "phone_code",
            Some(Phone::Encrypted(_)) => "encrypted",
            None => "none",
        };
        f.debug_struct("MiniProgramLoginRequest")
            .field("app_id", &self.app_id)
            .field("code", &REDACTED)
            .field("phone", &flow)
            .finish()
    }
}

impl fmt::Debug for crate::proto::mini_program_login_request::Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PhoneCode(_) => f.write_str("PhoneCode([REDACTED])"),
            Self::Encrypted(e) => f.debug_tuple("Encrypted").field(e).finish(),
        }
    }
}

impl fmt::Debug for EncryptedPhone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedPhone")
            .field("encrypted_data", &REDACTED)
            .field("iv", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for MiniProgramLoginResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiniProgramLoginResponse")
            .field("access_token", &REDACTED)
            .field("user_id", &self.user_id)
            .field("app_id", &self.app_id)
            .field("is_new_user", &self.is_new_user)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("user_id", &self.user_id)
            .field("phone_masked", &self.phone_masked)
            .field("phone", &if self.phone.is_empty() { "" } else { REDACTED })
            .field("identities", &self.identities.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RefreshSessionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshSessionRequest")
            .field("refresh_token", &REDACTED)
            .field("app_id", &self.app_id)
            .finish()
    }
}

impl fmt::Debug for RefreshSessionResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshSessionResponse")
            .field("access_token", &REDACTED)
            .field("refresh_token", &REDACTED)
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for crate::proto::DeleteAccountRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeleteAccountRequest")
            .field("access_token", &REDACTED)
            .field("reason", &self.reason)
            .finish()
    }
}

impl fmt::Debug for crate::proto::VerifyTokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerifyTokenRequest([REDACTED])")
    }
}

impl fmt::Debug for LogoutRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogoutRequest([REDACTED])")
    }
}

impl fmt::Debug for crate::proto::logout_request::Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mini_program_login_request::Phone;

    #[test]
    fn generated_messages_never_print_codes_or_tokens() {
        let req = MiniProgramLoginRequest {
            app_id: "wx1".into(),
            code: "SECRET-LOGIN-CODE".into(),
            phone: Some(Phone::Encrypted(EncryptedPhone {
                encrypted_data: "SECRET-DATA".into(),
                iv: "SECRET-IV".into(),
            })),
        };
        let resp = MiniProgramLoginResponse {
            access_token: "SECRET-TOKEN".into(),
            user_id: "42".into(),
            ..Default::default()
        };
        for text in [format!("{req:?}"), format!("{resp:?}"), format!("{req:#?}")] {
            assert!(!text.contains("SECRET"), "{text}");
        }
        assert!(format!("{resp:?}").contains("42"));
    }
}
