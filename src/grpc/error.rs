//! The one table from [`LoginError`] to gRPC status: a code, a stable
//! machine-readable reason in `google.rpc.ErrorInfo` (domain `mpauth.v1`),
//! and a message safe for clients. Internal details are logged, never returned.

use crate::{
    api::ErrorReason,
    callers::CallerError,
    domain::FieldError,
    login::LoginError,
    sessions::{SessionError, VerifyError},
    users::UsersError,
};
use std::{collections::HashMap, time::Duration};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::api::ERROR_DOMAIN;

/// One row of the table.
pub struct ErrorRow {
    /// The gRPC status code (the contract's code of `reason`).
    pub code: Code,
    /// The stable reason clients switch on.
    pub reason: ErrorReason,
}

impl ErrorRow {
    fn of(reason: ErrorReason) -> Self {
        Self {
            code: code_of(reason),
            reason,
        }
    }
}

/// The contract's code of a reason the service sends (every reason used in
/// this file has one; the HTTP-only reasons never reach it).
fn code_of(reason: ErrorReason) -> Code {
    reason.grpc_code().unwrap_or(Code::Internal)
}

/// The error table. Exhaustive: a new variant does not compile until it has a row.
pub fn row(err: &LoginError) -> ErrorRow {
    use LoginError as E;
    let reason = match err {
        E::InvalidField(_) => ErrorReason::InvalidArgument,
        E::AppIdRequired => ErrorReason::AppIdRequired,
        E::UnknownApp => ErrorReason::UnknownApp,
        E::LoginCodeInvalid => ErrorReason::LoginCodeInvalid,
        E::LoginCodeUsed => ErrorReason::LoginCodeUsed,
        E::PhoneCodeInvalid => ErrorReason::PhoneCodeInvalid,
        E::UserBlocked => ErrorReason::UserBlocked,
        E::RateLimited => ErrorReason::WechatRateLimited,
        E::WechatUnavailable => ErrorReason::WechatUnavailable,
        E::WechatMisconfigured => ErrorReason::WechatAppMisconfigured,
        E::SessionKeyStale => ErrorReason::SessionKeyStale,
        E::WatermarkMismatch => ErrorReason::WatermarkMismatch,
        E::EncryptedDataExpired => ErrorReason::EncryptedDataExpired,
        E::PhoneRequired => ErrorReason::PhoneRequired,
        E::TooManyAttempts => ErrorReason::RateLimited,
        E::DatabaseUnavailable => ErrorReason::DatabaseUnavailable,
        E::Internal(_) => ErrorReason::Internal,
    };
    ErrorRow::of(reason)
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

    fn into_status(mut self, reason: ErrorReason, message: String) -> Status {
        self.details
            .set_error_info(reason.as_str(), ERROR_DOMAIN, self.metadata);
        Status::with_error_details(code_of(reason), message, self.details)
    }
}

/// Builds the status for a login error: the table's code and reason, the
/// error's client-safe message, the offending field for INVALID_ARGUMENT,
/// and a retry delay for rate limits.
pub fn to_status(err: &LoginError) -> Status {
    let ErrorRow { reason, .. } = row(err);
    let mut d = Details::default();
    match err {
        LoginError::InvalidField(field) => d.field(field),
        LoginError::AppIdRequired => d.meta("field", "app_id"),
        LoginError::RateLimited | LoginError::TooManyAttempts => {
            d.retry_after(Duration::from_secs(60))
        }
        _ => {}
    }
    d.into_status(reason, err.to_string())
}

/// The status for a failed refresh or logout.
pub fn session_status(err: &SessionError) -> Status {
    use SessionError as E;
    let reason = match err {
        E::InvalidField(_) => ErrorReason::InvalidArgument,
        E::AppIdRequired => ErrorReason::AppIdRequired,
        E::UnknownApp => ErrorReason::UnknownApp,
        E::RefreshTokenInvalid => ErrorReason::RefreshTokenInvalid,
        E::WrongApp => ErrorReason::RefreshTokenWrongApp,
        E::Reused => ErrorReason::RefreshTokenReused,
        E::Revoked => ErrorReason::SessionRevoked,
        E::Expired => ErrorReason::SessionExpired,
        E::AccessTokenInvalid => ErrorReason::TokenInvalid,
        E::RateLimited => ErrorReason::RateLimited,
        E::DatabaseUnavailable => ErrorReason::DatabaseUnavailable,
        E::Internal(_) => ErrorReason::Internal,
    };
    let mut d = Details::default();
    match err {
        E::InvalidField(field) => d.field(field),
        E::AppIdRequired => d.meta("field", "app_id"),
        E::RateLimited => d.retry_after(Duration::from_secs(60)),
        _ => {}
    }
    d.into_status(reason, err.to_string())
}

/// The status for a token refused by online verification.
pub fn verify_status(err: &VerifyError) -> Status {
    use VerifyError as E;
    let reason = match err {
        E::Expired => ErrorReason::TokenExpired,
        E::NotYetValid => ErrorReason::TokenNotYetValid,
        E::KeyUnknown => ErrorReason::KeyUnknown,
        E::Invalid(_) => ErrorReason::TokenInvalid,
        E::Revoked => ErrorReason::TokenRevoked,
        E::RevocationUnavailable => ErrorReason::RevocationUnavailable,
    };
    // The Invalid detail is for logs only: the message is the variant's fixed text.
    Details::default().into_status(reason, err.to_string())
}

/// The status for a refused internal caller (see [`crate::callers`]).
pub fn caller_status(err: &CallerError) -> Status {
    let reason = match err {
        CallerError::Missing | CallerError::Invalid => ErrorReason::CallerUnauthenticated,
        CallerError::RateLimited => ErrorReason::CallerRateLimited,
        CallerError::PermissionDenied { .. } => ErrorReason::PermissionDenied,
    };
    let mut d = Details::default();
    match err {
        CallerError::PermissionDenied { permission } => d.meta("permission", permission.as_str()),
        CallerError::RateLimited => d.retry_after(Duration::from_secs(60)),
        CallerError::Missing | CallerError::Invalid => {}
    }
    d.into_status(reason, err.to_string())
}

/// The status for a failed Users call.
pub fn users_status(err: &UsersError) -> Status {
    let reason = match err {
        UsersError::InvalidField(_) => ErrorReason::InvalidArgument,
        UsersError::NotFound => ErrorReason::UserNotFound,
        UsersError::Deleted(_) => ErrorReason::UserDeleted,
        UsersError::SessionNotFound => ErrorReason::SessionNotFound,
        UsersError::DatabaseUnavailable => ErrorReason::DatabaseUnavailable,
        UsersError::Internal(_) => ErrorReason::Internal,
    };
    let mut d = Details::default();
    match err {
        UsersError::InvalidField(field) => d.field(field),
        UsersError::Deleted(t) => d.meta("deleted_at_ms", t.deleted_at_ms.to_string()),
        _ => {}
    }
    d.into_status(reason, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::reason_of;
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
