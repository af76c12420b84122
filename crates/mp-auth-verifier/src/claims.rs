//! The claims of an mp-auth access token (RFC 9068 profile): who (`sub`, the
//! user id), for which mini program (`client_id`), in which session (`sid`),
//! issued by whom for whom (`iss`, `aud`) and when (`iat`, `nbf`, `exp`).

use serde::{Deserialize, Deserializer, Serialize};

/// The verified claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer: mp-auth's `token.issuer`.
    pub iss: String,
    /// The user id, a decimal string (stable for the user's lifetime).
    pub sub: String,
    /// The audiences (mp-auth issues one: `token.audience`).
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    #[serde(deserialize_with = "numeric_date")]
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    #[serde(deserialize_with = "numeric_date")]
    pub iat: i64,
    /// Not before, seconds since the epoch (mp-auth does not set it).
    #[serde(
        default,
        deserialize_with = "optional_numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<i64>,
    /// The token's unique id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The mini program (AppID) the user logged in to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The session: logging it out revokes the token (seen by online
    /// verification only; offline verification cannot know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The `kid` of the key that verified the signature (not a claim).
    #[serde(skip)]
    pub key_id: String,
}

impl Claims {
    /// The user id (`sub`).
    pub fn user_id(&self) -> &str {
        &self.sub
    }

    /// The mini program the user logged in to (`client_id`).
    pub fn app_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// The session id (`sid`).
    pub fn session_id(&self) -> Option<&str> {
        self.sid.as_deref()
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(one) => vec![one],
        Aud::Many(many) => many,
    })
}

/// RFC 7519 NumericDate: a JSON number of seconds (fractions are truncated).
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let value = serde_json::Number::deserialize(d)?;
    if let Some(n) = value.as_i64() {
        return Ok(n);
    }
    match value.as_f64() {
        Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(f.trunc() as i64),
        _ => Err(serde::de::Error::custom("a NumericDate out of range")),
    }
}

fn optional_numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    numeric_date(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_may_be_a_string_or_a_list_and_dates_numbers() {
        let c: Claims = serde_json::from_str(
            r#"{"iss":"i","sub":"42","aud":"a","exp":1700000000,"iat":1699990000.5}"#,
        )
        .unwrap();
        assert_eq!(c.aud, ["a"]);
        assert_eq!(c.iat, 1_699_990_000);
        let c: Claims = serde_json::from_str(
            r#"{"iss":"i","sub":"42","aud":["a","b"],"exp":1700000000,"iat":1,"nbf":2,"sid":"s"}"#,
        )
        .unwrap();
        assert_eq!(c.aud, ["a", "b"]);
        assert_eq!(c.nbf, Some(2));
        assert_eq!(c.session_id(), Some("s"));
    }

    #[test]
    fn wrong_claim_types_are_refused() {
        for json in [
            r#"{"iss":"i","sub":42,"aud":"a","exp":1,"iat":1}"#,
            r#"{"iss":"i","sub":"42","aud":"a","exp":"1","iat":1}"#,
            r#"{"iss":"i","sub":"42","aud":"a","exp":1e300,"iat":1}"#,
            r#"{"iss":"i","sub":"42","aud":"a","iat":1}"#,
            r#"{"sub":"42","aud":"a","exp":1,"iat":1}"#,
        ] {
            assert!(serde_json::from_str::<Claims>(json).is_err(), "{json}");
        }
    }
}
