//! Domain types: wire strings are parsed once at the edge into these newtypes,
//! and the core never sees raw strings. Secret-bearing types redact themselves
//! in `Debug`; `Phone` masks its middle digits in both `Debug` and `Display`.

mod phone;

pub use phone::{Phone, PhoneError};

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// Why a wire value was rejected; `field` names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {problem}")]
pub struct FieldError {
    /// The wire name of the field (e.g. `code`, `app_id`).
    pub field: &'static str,
    /// What is wrong with it, safe to show to a client (never echoes the value).
    pub problem: &'static str,
}

impl FieldError {
    pub fn new(field: &'static str, problem: &'static str) -> Self {
        Self { field, problem }
    }
}

fn check_token_like(field: &'static str, value: &str, max_len: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    if value.len() > max_len {
        return Err(FieldError::new(field, "is too long"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldError::new(
            field,
            "contains characters that are not printable ASCII",
        ));
    }
    Ok(())
}

/// A public identifier: a string parsed once by `$check`, printed as itself
/// (`Display`, `Debug` as `Name(value)`), and (de)serialized as a string that is
/// parsed again on the way in.
macro_rules! public_id {
    ($(#[$meta:meta])* $name:ident, $check:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses the wire value; the error names the field and never echoes the value.
            pub fn parse(value: &str) -> Result<Self, FieldError> {
                let check: fn(&str) -> Result<(), FieldError> = $check;
                check(value)?;
                Ok(Self(value.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = FieldError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
    };
}

public_id!(
    /// A mini program's AppID, e.g. `wx4f4bc4dec97d474b`. Not a secret.
    AppId,
    |value| {
        // No trimming: an id that changes under trimming is not the configured
        // id, and accepting it would let every padding become a new metric series.
        check_token_like("app_id", value, 64)?;
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(FieldError::new(
                "app_id",
                "must contain only letters, digits, '_' or '-'",
            ));
        }
        Ok(())
    }
);

/// WeChat's codes are URL-safe tokens: `wx.login` codes are 32 letters and
/// digits, phone codes 64 hex digits. Anything of another shape is refused
/// before it costs a WeChat call (the app's quota is shared by all its users);
/// the bounds leave room for WeChat lengthening its codes.
fn check_code_shape(
    field: &'static str,
    value: &str,
    min_len: usize,
    max_len: usize,
) -> Result<(), FieldError> {
    check_token_like(field, value, max_len)?;
    if value.len() < min_len {
        return Err(FieldError::new(field, "is too short to be a WeChat code"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(FieldError::new(
            field,
            "is not a WeChat code (letters, digits, '_' and '-' only)",
        ));
    }
    Ok(())
}

macro_rules! secret_code {
    ($(#[$meta:meta])* $name:ident, $field:literal, $min:literal..=$max:literal) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            /// Parses the wire value; the error names the field and never echoes the value.
            pub fn parse(value: &str) -> Result<Self, FieldError> {
                let value = value.trim();
                check_code_shape($field, value, $min, $max)?;
                Ok(Self(SecretString::from(value)))
            }
            /// The raw value, for the one place that must send it upstream.
            pub fn expose(&self) -> &str {
                self.0.expose_secret()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([REDACTED])"))
            }
        }
    };
}

secret_code!(
    /// The single-use code from `wx.login()` (valid 5 minutes). Secret: never logged.
    LoginCode,
    "code",
    16..=64
);
secret_code!(
    /// The single-use code from the phone button (`e.detail.code`). Secret: never logged.
    PhoneCode,
    "phone_code",
    16..=128
);

public_id!(
    /// A user's openid within one app. Not secret, but personal: log sparingly.
    OpenId,
    |value| check_token_like("openid", value, 128)
);

public_id!(
    /// A user's unionid across the apps of one WeChat Open Platform account.
    UnionId,
    |value| check_token_like("unionid", value, 128)
);

/// A compact JWT access token. Secret: `Debug` is redacted and there is no `Display`.
#[derive(Clone)]
pub struct AccessToken(SecretString);

impl AccessToken {
    /// Wraps a token this service just signed.
    pub fn new(token: String) -> Self {
        Self(SecretString::from(token))
    }
    /// The compact JWT, for the one place that sends it to the client.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([REDACTED])")
    }
}

/// A user's id: a positive 64-bit integer, always a decimal string on the wire
/// (the JWT `sub`, the API's `user_id`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A WeChat session_key: the 16 raw bytes behind the base64 string WeChat sends.
/// Secret: `Debug` is redacted and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; 16]);

impl SessionKey {
    /// Parses WeChat's base64 form (24 characters, 16 bytes).
    pub fn from_base64(value: &str) -> Result<Self, FieldError> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim().replace(' ', "+"))
            .map_err(|_| FieldError::new("session_key", "is not valid base64"))?;
        let bytes: [u8; 16] = bytes
            .try_into()
            .map_err(|_| FieldError::new("session_key", "must decode to exactly 16 bytes"))?;
        Ok(Self(bytes))
    }
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
    pub fn bytes(&self) -> &[u8; 16] {
        &self.0
    }
    /// WeChat's base64 form, for the one place that must send it (the simulator).
    pub fn to_base64(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_codes_are_redacted_in_debug() {
        let code = LoginCode::parse("061abcDEF061abcDEF").unwrap();
        assert!(!format!("{code:?}").contains("061abcDEF"));
        let key = SessionKey::from_base64("tiihtNczf5v6AKRyjwEUhQ==").unwrap();
        assert!(!format!("{key:?}").contains("tiih"));
        let token = AccessToken::new("eyJhbGciOiJFUzI1NiJ9.e30.c2ln".into());
        assert_eq!(format!("{token:?}"), "AccessToken([REDACTED])");
    }

    #[test]
    fn codes_of_shapes_wechat_never_issues_are_refused() {
        assert!(LoginCode::parse("0c3Xyz0w3Ojbq03V7a0w3ZbAmE2Xyz0D").is_ok());
        let hex64 = "e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144";
        assert!(PhoneCode::parse(hex64).is_ok());
        for bad in [
            "x",
            "short-code",
            "has space inside 0000",
            "quote\"0000000000000",
            &"a".repeat(65),
        ] {
            let err = LoginCode::parse(bad).unwrap_err();
            assert_eq!(err.field, "code", "{bad}");
        }
        assert!(PhoneCode::parse("0000").is_err());
        assert!(PhoneCode::parse(&"a".repeat(129)).is_err());
        assert!(PhoneCode::parse("{\"json\":1}0000000000").is_err());
    }

    #[test]
    fn public_ids_print_and_serialize_as_themselves_and_parse_on_the_way_in() {
        let app = AppId::parse("wx4f4bc4dec97d474b").unwrap();
        assert_eq!(app.to_string(), "wx4f4bc4dec97d474b");
        assert_eq!(format!("{app:?}"), "AppId(wx4f4bc4dec97d474b)");
        assert_eq!(serde_json::to_value(&app).unwrap(), "wx4f4bc4dec97d474b");
        assert!(serde_json::from_str::<AppId>("\"wx bad\"").is_err());
        let openid = OpenId::parse("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").unwrap();
        assert_eq!(
            format!("{openid:?}"),
            "OpenId(oUpF8uMuAJO_M2pxb1Q9zNjWeS6o)"
        );
        assert_eq!(UnionId::parse("").unwrap_err().field, "unionid");
    }

    #[test]
    fn field_errors_name_the_field_and_not_the_value() {
        let err = LoginCode::parse("").unwrap_err();
        assert_eq!(err.field, "code");
        let err = AppId::parse("wx bad").unwrap_err();
        assert_eq!(err.field, "app_id");
        assert!(!err.to_string().contains("wx bad"));
    }

    #[test]
    fn session_key_requires_16_bytes_and_tolerates_spaces_for_plus() {
        assert!(SessionKey::from_base64("AAAA").is_err());
        let k = SessionKey::from_base64("tiihtNczf5v6AKRyjwEUhQ==").unwrap();
        assert_eq!(k.to_base64(), "tiihtNczf5v6AKRyjwEUhQ==");
        assert!(SessionKey::from_base64("a b/cccccccccccccccccQ==").is_ok());
    }
}
