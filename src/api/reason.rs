//! The error reasons: [`ErrorReason`], generated from `proto/mpauth/v1/errors.proto`,
//! with the gRPC code each one is sent with. On the wire a reason is its proto
//! name (`as_str_name()`, e.g. `PHONE_REQUIRED`) in a `google.rpc.ErrorInfo`
//! of domain [`ERROR_DOMAIN`].

pub use crate::proto::ErrorReason;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "mpauth.v1";

impl ErrorReason {
    /// Every reason but `ERROR_REASON_UNSPECIFIED`, in the proto's order.
    pub fn all() -> impl Iterator<Item = ErrorReason> {
        // The proto numbers them 1.. without gaps (a unit test checks it).
        (1..).map_while(|n| ErrorReason::try_from(n).ok())
    }

    /// The wire string, e.g. `LOGIN_CODE_USED`.
    pub fn as_str(self) -> &'static str {
        self.as_str_name()
    }

    /// The gRPC code the service sends this reason with; `None` for the
    /// reasons only the HTTP gateway sends (and `ERROR_REASON_UNSPECIFIED`).
    pub const fn grpc_code(self) -> Option<Code> {
        use ErrorReason as R;
        Some(match self {
            R::InvalidArgument | R::AppIdRequired | R::WatermarkMismatch => Code::InvalidArgument,
            R::UnknownApp | R::UserNotFound | R::UserDeleted | R::SessionNotFound => Code::NotFound,
            R::LoginCodeInvalid
            | R::LoginCodeUsed
            | R::PhoneCodeInvalid
            | R::RefreshTokenInvalid
            | R::RefreshTokenWrongApp
            | R::RefreshTokenReused
            | R::SessionRevoked
            | R::SessionExpired
            | R::TokenInvalid
            | R::TokenExpired
            | R::TokenNotYetValid
            | R::KeyUnknown
            | R::TokenRevoked
            | R::CallerUnauthenticated => Code::Unauthenticated,
            R::UserBlocked | R::PermissionDenied => Code::PermissionDenied,
            R::WechatRateLimited | R::RateLimited | R::CallerRateLimited => Code::ResourceExhausted,
            R::WechatUnavailable | R::DatabaseUnavailable | R::RevocationUnavailable => {
                Code::Unavailable
            }
            R::WechatAppMisconfigured | R::Internal => Code::Internal,
            R::SessionKeyStale | R::EncryptedDataExpired | R::PhoneRequired => {
                Code::FailedPrecondition
            }
            R::Unspecified
            | R::MalformedJson
            | R::NotFound
            | R::MethodNotAllowed
            | R::RequestTimeout
            | R::PayloadTooLarge
            | R::UnsupportedMediaType
            | R::BackendUnavailable
            | R::NotReady
            | R::Timeout => return None,
        })
    }

    /// Serializes a reason as its wire string (serde `serialize_with`).
    pub fn serialize<S: serde::Serializer>(reason: &Self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(reason.as_str())
    }
}

/// Reads the reason string back from a status' `ErrorInfo` (any domain).
pub fn reason_of(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// The reason of a status, if it carries an `ErrorInfo` of [`ERROR_DOMAIN`]
/// naming a reason of this contract.
pub fn our_reason(status: &Status) -> Option<ErrorReason> {
    status
        .get_details_error_info()
        .filter(|info| info.domain == ERROR_DOMAIN)
        .and_then(|info| ErrorReason::from_str_name(&info.reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// The values the descriptor set declares, by name.
    fn declared() -> Vec<(String, i32)> {
        let fds =
            prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let e = fds
            .file
            .iter()
            .flat_map(|f| &f.enum_type)
            .find(|e| e.name() == "ErrorReason")
            .unwrap();
        e.value
            .iter()
            .map(|v| (v.name().to_owned(), v.number()))
            .collect()
    }

    #[test]
    fn all_yields_every_declared_reason_but_unspecified() {
        let mut declared: Vec<String> = declared()
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|(name, _)| name)
            .collect();
        let mut all: Vec<String> = ErrorReason::all().map(|r| r.as_str().to_owned()).collect();
        declared.sort();
        all.sort();
        assert_eq!(all, declared);
    }

    #[test]
    fn wire_strings_are_the_proto_names() {
        assert_eq!(ErrorReason::PhoneRequired.as_str(), "PHONE_REQUIRED");
        assert_eq!(ErrorReason::Internal.as_str(), "INTERNAL");
        for reason in ErrorReason::all() {
            assert_eq!(ErrorReason::from_str_name(reason.as_str()), Some(reason));
            assert_eq!(
                serde_json::to_value(SerializeReason(reason)).unwrap(),
                serde_json::Value::String(reason.as_str().to_owned())
            );
        }
    }

    #[derive(serde::Serialize)]
    struct SerializeReason(#[serde(serialize_with = "ErrorReason::serialize")] ErrorReason);
}
