//! The one table from [`LoginError`] to gRPC status: a code, a stable
//! machine-readable reason in `google.rpc.ErrorInfo` (domain `mpauth.v1`),
//! and a message safe for clients. Internal details are logged, never returned.

use crate::{
    callers::CallerError,
    domain::FieldError,
    login::LoginError,
    sessions::{SessionError, VerifyError},
    users::UsersError,
};
use std::{collections::HashMap, time::Duration};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "mpauth.v1";

/// One row of the table.
pub struct ErrorRow {
    /// The gRPC status code.
    pub code: Code,
    /// The stable reason clients switch on.
    pub reason: &'static str,
}

/// The error table. Exhaustive: a new variant does not compile until it has a row.
pub fn row(err: &LoginError) -> ErrorRow {
    use LoginError as E;
    let (code, reason) = match err {
        E::InvalidField(_) => (Code::InvalidArgument, "INVALID_ARGUMENT"),
        E::AppIdRequired => (Code::InvalidArgument, "APP_ID_REQUIRED"),
        E::UnknownApp => (Code::NotFound, "UNKNOWN_APP"),
        E::LoginCodeInvalid => (Code::Unauthenticated, "LOGIN_CODE_INVALID"),
        E::LoginCodeUsed => (Code::Unauthenticated, "LOGIN_CODE_USED"),
        E::PhoneCodeInvalid => (Code::Unauthenticated, "PHONE_CODE_INVALID"),
        E::UserBlocked => (Code::PermissionDenied, "USER_BLOCKED"),
        E::RateLimited => (Code::ResourceExhausted, "WECHAT_RATE_LIMITED"),
        E::WechatUnavailable => (Code::Unavailable, "WECHAT_UNAVAILABLE"),
        E::WechatMisconfigured => (Code::Internal, "WECHAT_APP_MISCONFIGURED"),
        E::SessionKeyStale => (Code::FailedPrecondition, "SESSION_KEY_STALE"),
        E::WatermarkMismatch => (Code::InvalidArgument, "WATERMARK_MISMATCH"),
        E::EncryptedDataExpired => (Code::FailedPrecondition, "ENCRYPTED_DATA_EXPIRED"),
        E::PhoneRequired => (Code::FailedPrecondition, "PHONE_REQUIRED"),
        E::TooManyAttempts => (Code::ResourceExhausted, "RATE_LIMITED"),
        E::DatabaseUnavailable => (Code::Unavailable, "DATABASE_UNAVAILABLE"),
        E::Internal(_) => (Code::Internal, "INTERNAL"),
    };
    ErrorRow { code, reason }
}

/// The details a status carries besides its code: `ErrorInfo` metadata, a
/// `BadRequest` violation for a field, a `RetryInfo` delay.
#[derive(Default)]
struct Details {
    metadata: HashMap<String, String>,
    details: ErrorDetails,
}

impl Details {
    fn field(&mut self, field: &FieldError) {
        self.meta("field", field.field);
        self.details
            .add_bad_request_violation(field.field, field.problem);
    }

    fn meta(&mut self, key: &str, value: impl Into<String>) {
        self.metadata.insert(key.to_owned(), value.into());
    }

    fn retry_after(&mut self, delay: Duration) {
        self.details.set_retry_info(Some(delay));
    }

    fn into_status(mut self, code: Code, reason: &str, message: String) -> Status {
        self.details
            .set_error_info(reason, ERROR_DOMAIN, self.metadata);
        Status::with_error_details(code, message, self.details)
    }
}

/// Builds the status for a login error: the table's code and reason, the
/// error's client-safe message, the offending field for INVALID_ARGUMENT,
/// and a retry delay for rate limits.
pub fn to_status(err: &LoginError) -> Status {
    let ErrorRow { code, reason } = row(err);
    let mut d = Details::default();
    match err {
        LoginError::InvalidField(field) => d.field(field),
        LoginError::AppIdRequired => d.meta("field", "app_id"),
        LoginError::RateLimited | LoginError::TooManyAttempts => {
            d.retry_after(Duration::from_secs(60))
        }
        _ => {}
    }
    d.into_status(code, reason, err.to_string())
}

/// The status for a failed refresh or logout.
pub fn session_status(err: &SessionError) -> Status {
    use SessionError as E;
    let (code, reason) = match err {
        E::InvalidField(_) => (Code::InvalidArgument, "INVALID_ARGUMENT"),
        E::AppIdRequired => (Code::InvalidArgument, "APP_ID_REQUIRED"),
        E::UnknownApp => (Code::NotFound, "UNKNOWN_APP"),
        E::RefreshTokenInvalid => (Code::Unauthenticated, "REFRESH_TOKEN_INVALID"),
        E::WrongApp => (Code::Unauthenticated, "REFRESH_TOKEN_WRONG_APP"),
        E::Reused => (Code::Unauthenticated, "REFRESH_TOKEN_REUSED"),
        E::Revoked => (Code::Unauthenticated, "SESSION_REVOKED"),
        E::Expired => (Code::Unauthenticated, "SESSION_EXPIRED"),
        E::AccessTokenInvalid => (Code::Unauthenticated, "TOKEN_INVALID"),
        E::RateLimited => (Code::ResourceExhausted, "RATE_LIMITED"),
        E::DatabaseUnavailable => (Code::Unavailable, "DATABASE_UNAVAILABLE"),
        E::Internal(_) => (Code::Internal, "INTERNAL"),
    };
    let mut d = Details::default();
    match err {
        E::InvalidField(field) => d.field(field),
        E::AppIdRequired => d.meta("field", "app_id"),
        E::RateLimited => d.retry_after(Duration::from_secs(60)),
        _ => {}
    }
    d.into_status(code, reason, err.to_string())
}

/// The status for a token refused by online verification.
pub fn verify_status(err: &VerifyError) -> Status {
    use VerifyError as E;
    let (code, reason) = match err {
        E::Expired => (Code::Unauthenticated, "TOKEN_EXPIRED"),
        E::NotYetValid => (Code::Unauthenticated, "TOKEN_NOT_YET_VALID"),
        E::KeyUnknown => (Code::Unauthenticated, "KEY_UNKNOWN"),
        E::Invalid(_) => (Code::Unauthenticated, "TOKEN_INVALID"),
        E::Revoked => (Code::Unauthenticated, "TOKEN_REVOKED"),
        E::RevocationUnavailable => (Code::Unavailable, "REVOCATION_UNAVAILABLE"),
    };
    // The Invalid detail is for logs only: the message is the variant's fixed text.
    Details::default().into_status(code, reason, err.to_string())
}

/// The status for a refused internal caller (see [`crate::callers`]).
pub fn caller_status(err: &CallerError) -> Status {
    let (code, reason) = match err {
        CallerError::Missing | CallerError::Invalid => {
            (Code::Unauthenticated, "CALLER_UNAUTHENTICATED")
        }
        CallerError::RateLimited => (Code::ResourceExhausted, "CALLER_RATE_LIMITED"),
        CallerError::PermissionDenied { .. } => (Code::PermissionDenied, "PERMISSION_DENIED"),
    };
    let mut d = Details::default();
    match err {
        CallerError::PermissionDenied { permission } => d.meta("permission", permission.as_str()),
        CallerError::RateLimited => d.retry_after(Duration::from_secs(60)),
        CallerError::Missing | CallerError::Invalid => {}
    }
    d.into_status(code, reason, err.to_string())
}

/// The status for a failed Users call.
pub fn users_status(err: &UsersError) -> Status {
    let (code, reason) = match err {
        UsersError::InvalidField(_) => (Code::InvalidArgument, "INVALID_ARGUMENT"),
        UsersError::NotFound => (Code::NotFound, "USER_NOT_FOUND"),
        UsersError::Deleted(_) => (Code::NotFound, "USER_DELETED"),
        UsersError::SessionNotFound => (Code::NotFound, "SESSION_NOT_FOUND"),
        UsersError::DatabaseUnavailable => (Code::Unavailable, "DATABASE_UNAVAILABLE"),
        UsersError::Internal(_) => (Code::Internal, "INTERNAL"),
    };
    let mut d = Details::default();
    match err {
        UsersError::InvalidField(field) => d.field(field),
        UsersError::Deleted(t) => d.meta("deleted_at_ms", t.deleted_at_ms.to_string()),
        _ => {}
    }
    d.into_status(code, reason, err.to_string())
}

/// Reads the reason back from a status (used by the gateway and tests).
pub fn reason_of(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldError;

    #[test]
    fn invalid_field_names_the_field() {
        let st = to_status(&LoginError::InvalidField(FieldError::new(
            "code",
            "is required",
        )));
        assert_eq!(st.code(), Code::InvalidArgument);
        let info = st.get_details_error_info().unwrap();
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata.get("field").map(String::as_str), Some("code"));
        assert!(st.message().contains("code"));
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let st = to_status(&LoginError::Internal(anyhow::anyhow!(
            "mysql://root:hunter2@db password leaked"
        )));
        assert_eq!(st.code(), Code::Internal);
        assert!(!st.message().contains("hunter2"));
        assert_eq!(reason_of(&st).as_deref(), Some("INTERNAL"));
    }

    #[test]
    fn rate_limits_carry_retry_info() {
        let st = to_status(&LoginError::RateLimited);
        assert_eq!(st.code(), Code::ResourceExhausted);
        assert!(st.get_details_retry_info().is_some());
    }
}
