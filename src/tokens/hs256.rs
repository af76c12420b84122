//! HS256 signing with a shared secret of at least 32 bytes (jsonwebtoken,
//! rust_crypto backend).

use super::{ACCESS_TOKEN_TYP, AccessClaims, TokenError, TokenSigner, map_jwt_error};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};

/// The `kid` of HS256 tokens (one shared secret; rotating it logs everyone out,
/// which is one reason ES256 is recommended).
pub const HS256_KID: &str = "hs256";

/// HMAC-SHA256 signer.
pub struct Hs256Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    header: Header,
}

impl Hs256Signer {
    /// Refuses secrets shorter than 32 bytes.
    pub fn new(secret: &SecretString) -> Result<Self, TokenError> {
        let bytes = secret.expose_secret().as_bytes();
        if bytes.len() < 32 {
            return Err(TokenError::BadKey(format!(
                "HS256 needs a secret of at least 32 bytes, got {}; generate one with `openssl rand -base64 48`",
                bytes.len()
            )));
        }
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(HS256_KID.to_owned());
        Ok(Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            header,
        })
    }
}

impl TokenSigner for Hs256Signer {
    fn algorithm(&self) -> &'static str {
        "HS256"
    }

    fn sign(&self, claims: &AccessClaims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&self.header, claims, &self.encoding)
            .map_err(|e| TokenError::Unexpected(e.to_string()))
    }

    fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        leeway_secs: u64,
    ) -> Result<AccessClaims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYP) {
            return Err(TokenError::Invalid("typ is not at+jwt".into()));
        }
        if header.kid.as_deref().is_some_and(|kid| kid != HS256_KID) {
            return Err(TokenError::KeyUnknown);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = leeway_secs;
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(map_jwt_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::TokenSettings,
        domain::{AppId, UserId},
        tokens::TokenIssuer,
    };
    use base64::Engine as _;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

    fn issuer(secret: &str) -> TokenIssuer {
        let signer = Hs256Signer::new(&SecretString::from(secret)).unwrap();
        TokenIssuer::new(&TokenSettings::default(), Box::new(signer)).unwrap()
    }

    fn b64(part: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(part)
    }

    #[test]
    fn issued_token_has_rfc9068_header_and_string_sub() {
        let iss = issuer(SECRET);
        let app = AppId::parse("wx4f4bc4dec97d474b").unwrap();
        let t = iss.issue(UserId(42), &app).unwrap();
        let header = jsonwebtoken::decode_header(&t.token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.alg, Algorithm::HS256);
        let payload = t.token.split('.').nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(json["sub"], serde_json::json!("42"));
        assert_eq!(json["client_id"], serde_json::json!("wx4f4bc4dec97d474b"));
        assert!(json["jti"].as_str().unwrap().len() >= 32);
        assert_eq!(
            json["exp"].as_u64().unwrap() - json["iat"].as_u64().unwrap(),
            7200
        );
        let claims = iss.verify(&t.token).unwrap();
        assert_eq!(claims.sub, "42");
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert!(matches!(
            Hs256Signer::new(&SecretString::from("short")),
            Err(TokenError::BadKey(_))
        ));
    }

    #[test]
    fn tokens_from_another_key_do_not_verify() {
        let app = AppId::parse("wxa").unwrap();
        let t = issuer("another-secret-another-secret-another-secret")
            .issue(UserId(1), &app)
            .unwrap();
        assert!(issuer(SECRET).verify(&t.token).is_err());
    }

    #[test]
    fn alg_none_and_other_algorithms_are_rejected() {
        let iss = issuer(SECRET);
        let app = AppId::parse("wxa").unwrap();
        let t = iss.issue(UserId(7), &app).unwrap();
        let payload = t.token.split('.').nth(1).unwrap();
        let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"at+jwt"}"#), payload);
        assert!(iss.verify(&none).is_err());
        let hs512 = jsonwebtoken::encode(
            &Header {
                typ: Some("at+jwt".into()),
                ..Header::new(Algorithm::HS512)
            },
            &iss.verify(&t.token).unwrap(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(iss.verify(&hs512).is_err());
    }

    #[test]
    fn tokens_without_at_jwt_typ_are_rejected() {
        let iss = issuer(SECRET);
        let claims = iss
            .verify(
                &iss.issue(UserId(7), &AppId::parse("wxa").unwrap())
                    .unwrap()
                    .token,
            )
            .unwrap();
        let plain = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(iss.verify(&plain).is_err());
    }

    #[test]
    fn debug_of_issued_token_is_redacted() {
        let t = issuer(SECRET)
            .issue(UserId(1), &AppId::parse("wxa").unwrap())
            .unwrap();
        assert!(!format!("{t:?}").contains(&t.token));
    }
}
