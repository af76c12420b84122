//! WeChat "encrypted data" (the legacy phone flow): AES-128-CBC with PKCS#7
//! (16-byte block), key = session_key, then a JSON record whose watermark must
//! name our app and be fresh. Everything the SDKs skip is checked here.
//!
//! Callers get a precise [`DecryptError`] for diagnostics (the `decrypt`
//! command prints it), but the gRPC edge folds padding, JSON and key failures
//! into one "decryption failed" reason so it never acts as a padding oracle.

use crate::domain::{AppId, Phone, SessionKey};
use aes::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
use base64::Engine as _;
use serde::Deserialize;
use std::time::{Duration, SystemTime};

type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;

/// Why encrypted data could not be turned into a phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// A field is not strict standard base64. `had_spaces` tells whether `+`
    /// was probably turned into spaces by URL encoding (we already undo that).
    #[error("`{field}` is not valid base64{}", if *had_spaces { " (it contained spaces: '+' was probably URL-decoded into ' ' on the way)" } else { "" })]
    Base64 {
        field: &'static str,
        had_spaces: bool,
    },
    /// The IV does not decode to 16 bytes.
    #[error("`iv` must decode to 16 bytes, got {0}")]
    IvLength(usize),
    /// The ciphertext is empty or not a whole number of 16-byte blocks.
    #[error("`encryptedData` must be a non-empty multiple of 16 bytes, got {0}")]
    CiphertextLength(usize),
    /// PKCS#7 padding is invalid: almost always a stale or wrong session_key.
    #[error(
        "bad padding after decryption: the session_key is probably stale (wx.login was called after the phone button) or belongs to another user"
    )]
    Padding,
    /// The plaintext is not the expected JSON: wrong key (by chance valid padding) or a different payload.
    #[error("decrypted data is not a phone-number JSON record: the session_key is probably wrong")]
    NotJson,
    /// The record parsed, but its phone number is unusable.
    #[error("decrypted phone number is malformed")]
    BadPhone,
    /// The watermark names a different app.
    #[error(
        "watermark appid does not match this app: the data was produced for another mini program"
    )]
    WatermarkAppId,
    /// The watermark timestamp is too old (or too far in the future).
    #[error(
        "watermark timestamp is {age_secs}s away from now, outside the allowed {max_secs}s window: the data is stale, ask the user to tap the phone button again"
    )]
    StaleWatermark { age_secs: i64, max_secs: u64 },
}

impl DecryptError {
    /// True for the failures a stale or wrong session_key produces, where trying
    /// another key of the same user is worthwhile.
    pub fn is_key_failure(&self) -> bool {
        matches!(self, Self::Padding | Self::NotJson)
    }
}

/// The legacy phone payload, once decrypted and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneRecord {
    pub phone: Phone,
    pub watermark_timestamp: i64,
}

/// The decrypted JSON, as WeChat writes it (countryCode as string or number).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPhoneRecord {
    #[serde(default)]
    phone_number: Option<String>,
    pure_phone_number: String,
    #[serde(deserialize_with = "string_or_number")]
    country_code: String,
    watermark: RawWatermark,
}

#[derive(Deserialize)]
struct RawWatermark {
    appid: String,
    timestamp: i64,
}

/// Accepts a JSON string or number, as WeChat's `countryCode` is documented as
/// the one and sometimes sent as the other.
pub fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        N(u64),
    }
    Ok(match Either::deserialize(d)? {
        Either::S(s) => s,
        Either::N(n) => n.to_string(),
    })
}

/// Strict standard base64, after turning spaces back into `+`.
fn decode_b64(field: &'static str, value: &str) -> Result<Vec<u8>, DecryptError> {
    let had_spaces = value.contains(' ');
    let cleaned: String = value
        .trim_matches(|c| c == '\n' || c == '\r')
        .replace(' ', "+");
    base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|_| DecryptError::Base64 { field, had_spaces })
}

/// Decrypts `encryptedData` with `session_key` and `iv` into raw plaintext,
/// validating PKCS#7 padding with a 16-byte block.
pub fn decrypt_raw(
    session_key: &SessionKey,
    encrypted_data: &str,
    iv: &str,
) -> Result<Vec<u8>, DecryptError> {
    let iv = decode_b64("iv", iv)?;
    let iv: [u8; 16] = iv
        .as_slice()
        .try_into()
        .map_err(|_| DecryptError::IvLength(iv.len()))?;
    let data = decode_b64("encryptedData", encrypted_data)?;
    if data.is_empty() || data.len() % 16 != 0 {
        return Err(DecryptError::CiphertextLength(data.len()));
    }
    Aes128CbcDec::new(session_key.bytes().into(), &iv.into())
        .decrypt_padded_vec::<Pkcs7>(&data)
        .map_err(|_| DecryptError::Padding)
}

/// Decrypts and checks a legacy phone payload: JSON shape, watermark appid,
/// and watermark freshness (`max_age`, both directions, against `now`).
pub fn decrypt_phone(
    app_id: &AppId,
    session_key: &SessionKey,
    encrypted_data: &str,
    iv: &str,
    now: SystemTime,
    max_age: Duration,
) -> Result<PhoneRecord, DecryptError> {
    let plain = decrypt_raw(session_key, encrypted_data, iv)?;
    let raw: RawPhoneRecord = serde_json::from_slice(&plain).map_err(|_| DecryptError::NotJson)?;
    if raw.watermark.appid != app_id.as_str() {
        return Err(DecryptError::WatermarkAppId);
    }
    let now_secs = i64::try_from(crate::clock::unix_secs(now)).unwrap_or(i64::MAX);
    let age = now_secs - raw.watermark.timestamp;
    if age.unsigned_abs() > max_age.as_secs() {
        return Err(DecryptError::StaleWatermark {
            age_secs: age,
            max_secs: max_age.as_secs(),
        });
    }
    let _ = raw.phone_number;
    let phone = Phone::new(&raw.country_code, &raw.pure_phone_number)
        .map_err(|_| DecryptError::BadPhone)?;
    Ok(PhoneRecord {
        phone,
        watermark_timestamp: raw.watermark.timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockModeEncrypt;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;

    /// Encrypts `plaintext` the way WeChat does (AES-128-CBC, PKCS#7) and returns
    /// base64 text: the test side of the decryption (the simulator has its own).
    fn encrypt_b64(session_key: &SessionKey, iv: &[u8; 16], plaintext: &[u8]) -> String {
        let ct = Aes128CbcEnc::new(session_key.bytes().into(), iv.into())
            .encrypt_padded_vec::<Pkcs7>(plaintext);
        base64::engine::general_purpose::STANDARD.encode(ct)
    }

    /// The JSON plaintext WeChat encrypts for the legacy phone button.
    fn phone_plaintext(app_id: &AppId, phone: &Phone, timestamp: i64) -> Vec<u8> {
        let full = if phone.country_code() == "86" {
            phone.number().to_owned()
        } else {
            format!("+{}{}", phone.country_code(), phone.number())
        };
        serde_json::json!({
            "phoneNumber": full,
            "purePhoneNumber": phone.number(),
            "countryCode": phone.country_code(),
            "watermark": { "timestamp": timestamp, "appid": app_id.as_str() },
        })
        .to_string()
        .into_bytes()
    }

    const APP: &str = "wx4f4bc4dec97d474b";
    const KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
    const IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
    const OFFICIAL: &str = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";
    const OFFICIAL_PLAIN: &str = r#"{"openId":"oGZUI0egBJY1zhBYw2KhdUfwVJJE","nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MHM4WgMEm7GFhsf8OYrySdbvAMvTsw3mo8ibKicsnfN5pRjl1p8HQ/0","unionId":"ocMvos6NjeKLIBqg5Mr9QjxrP1FA","watermark":{"timestamp":1477314187,"appid":"wx4f4bc4dec97d474b"}}"#;
    const PHONE: &str = "xT8p8W6jIVdEWQ+ccHuD2bmG5RSiwg14VWRFw/UGVh6Aj+jDIadafJ4xdCIBQ/uxDiyw/MZWvpFyRn3pP3xxVfNQxFtzghvK+Pj5JQI7x412Zc+UKBdZyt5yiQboroSxabTum1k4MMOlnoCxhJ46cxPDT2EuLbNUf2McwNtGO0/9E+Xj/ZwENw48ucueL3UqNoKpXxFYvqH6eawrR2MXnA==";
    const WATERMARK_TS: u64 = 1_477_314_187;

    fn app() -> AppId {
        AppId::parse(APP).unwrap()
    }
    fn key() -> SessionKey {
        SessionKey::from_base64(KEY).unwrap()
    }
    fn at_watermark() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(WATERMARK_TS + 30)
    }
    const WINDOW: Duration = Duration::from_secs(600);

    #[test]
    fn official_vector_decrypts_to_the_documented_bytes() {
        let plain = decrypt_raw(&key(), OFFICIAL, IV).unwrap();
        assert_eq!(plain.len(), 393);
        assert_eq!(std::str::from_utf8(&plain).unwrap(), OFFICIAL_PLAIN);
    }

    #[test]
    fn phone_vector_decrypts_and_checks_the_watermark() {
        let rec = decrypt_phone(&app(), &key(), PHONE, IV, at_watermark(), WINDOW).unwrap();
        assert_eq!(rec.phone.e164(), "+8613580006666");
        assert_eq!(rec.watermark_timestamp, WATERMARK_TS as i64);
    }

    #[test]
    fn official_vector_is_not_a_phone_record() {
        assert_eq!(
            decrypt_phone(&app(), &key(), OFFICIAL, IV, at_watermark(), WINDOW),
            Err(DecryptError::NotJson)
        );
    }

    #[test]
    fn wrong_appid_is_rejected() {
        let other = AppId::parse("wx0000000000000000").unwrap();
        assert_eq!(
            decrypt_phone(&other, &key(), PHONE, IV, at_watermark(), WINDOW),
            Err(DecryptError::WatermarkAppId)
        );
    }

    #[test]
    fn stale_and_future_watermarks_are_rejected() {
        let late = UNIX_EPOCH + Duration::from_secs(WATERMARK_TS + 601);
        assert!(matches!(
            decrypt_phone(&app(), &key(), PHONE, IV, late, WINDOW),
            Err(DecryptError::StaleWatermark { age_secs: 601, .. })
        ));
        let early = UNIX_EPOCH + Duration::from_secs(WATERMARK_TS - 601);
        assert!(matches!(
            decrypt_phone(&app(), &key(), PHONE, IV, early, WINDOW),
            Err(DecryptError::StaleWatermark { .. })
        ));
    }

    #[test]
    fn plus_turned_into_spaces_still_decrypts() {
        let mangled = OFFICIAL.replace('+', " ");
        assert_eq!(mangled.matches(' ').count(), 5);
        assert_eq!(decrypt_raw(&key(), &mangled, IV).unwrap().len(), 393);
    }

    #[test]
    fn bad_base64_says_whether_spaces_were_seen() {
        assert_eq!(
            decrypt_raw(&key(), "abc$", IV),
            Err(DecryptError::Base64 {
                field: "encryptedData",
                had_spaces: false
            })
        );
        assert_eq!(
            decrypt_raw(&key(), PHONE, "r7BX XKkLb8qrSNn05n0qi$="),
            Err(DecryptError::Base64 {
                field: "iv",
                had_spaces: true
            })
        );
        // Non-canonical padding is refused: strict decoding.
        assert!(decrypt_raw(&key(), "xT8p8W6jIVdEWQ", IV).is_err());
    }

    #[test]
    fn wrong_key_fails_as_a_key_failure() {
        let wrong = SessionKey::from_base64("HyVFkGl5F5OQWJZZaNzBBg==").unwrap();
        let err = decrypt_phone(&app(), &wrong, PHONE, IV, at_watermark(), WINDOW).unwrap_err();
        assert!(err.is_key_failure(), "{err:?}");
    }

    #[test]
    fn tampered_ciphertext_is_rejected() {
        use base64::Engine as _;
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(PHONE)
            .unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0x55;
        let tampered = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert!(
            decrypt_phone(&app(), &key(), &tampered, IV, at_watermark(), WINDOW)
                .unwrap_err()
                .is_key_failure()
        );
        // EasyWeChat's negative test: a prefix breaks the block structure.
        assert!(decrypt_raw(&key(), &format!("aaaa{PHONE}"), IV).is_err());
    }

    #[test]
    fn bad_padding_is_detected() {
        // A 16-byte block whose last byte decrypts to 0 is never valid PKCS#7.
        let iv = [0u8; 16];
        let k = key();
        let ct = Aes128CbcEnc::new(k.bytes().into(), &iv.into())
            .encrypt_padded_vec::<aes::cipher::block_padding::NoPadding>(&[0u8; 16]);
        let ct = base64::engine::general_purpose::STANDARD.encode(ct);
        let iv = base64::engine::general_purpose::STANDARD.encode(iv);
        assert_eq!(decrypt_raw(&k, &ct, &iv), Err(DecryptError::Padding));
    }

    #[test]
    fn truncated_and_empty_inputs_are_rejected() {
        assert_eq!(
            decrypt_raw(&key(), "", IV),
            Err(DecryptError::CiphertextLength(0))
        );
        assert_eq!(
            decrypt_raw(&key(), &PHONE[..20], IV),
            Err(DecryptError::CiphertextLength(15))
        );
        assert_eq!(
            decrypt_raw(&key(), PHONE, ""),
            Err(DecryptError::IvLength(0))
        );
        assert_eq!(
            decrypt_raw(&key(), PHONE, "AAAA"),
            Err(DecryptError::IvLength(3))
        );
    }

    #[test]
    fn country_code_may_be_a_number() {
        let plain = br#"{"phoneNumber":"+12025550123","purePhoneNumber":"2025550123","countryCode":1,"watermark":{"timestamp":1477314187,"appid":"wx4f4bc4dec97d474b"}}"#;
        let iv = [7u8; 16];
        let ct = encrypt_b64(&key(), &iv, plain);
        let iv = base64::engine::general_purpose::STANDARD.encode(iv);
        let rec = decrypt_phone(&app(), &key(), &ct, &iv, at_watermark(), WINDOW).unwrap();
        assert_eq!(rec.phone.e164(), "+12025550123");
    }

    proptest! {
        #[test]
        fn encrypt_then_decrypt_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..600), k in any::<[u8; 16]>(), iv in any::<[u8; 16]>()) {
            let k = SessionKey::from_bytes(k);
            let ct = encrypt_b64(&k, &iv, &payload);
            let iv = base64::engine::general_purpose::STANDARD.encode(iv);
            prop_assert_eq!(decrypt_raw(&k, &ct, &iv).unwrap(), payload);
        }

        #[test]
        fn phone_records_round_trip(number in "1[3-9][0-9]{9}", ts in 1_600_000_000i64..1_900_000_000) {
            let phone = Phone::new("86", &number).unwrap();
            let iv = [3u8; 16];
            let ct = encrypt_b64(&key(), &iv, &phone_plaintext(&app(), &phone, ts));
            let iv = base64::engine::general_purpose::STANDARD.encode(iv);
            let now = UNIX_EPOCH + Duration::from_secs(ts as u64);
            prop_assert_eq!(decrypt_phone(&app(), &key(), &ct, &iv, now, WINDOW).unwrap().phone, phone);
        }

        #[test]
        fn no_input_panics(data in ".{0,300}", iv in ".{0,40}", k in any::<[u8; 16]>()) {
            let _ = decrypt_phone(&app(), &SessionKey::from_bytes(k), &data, &iv, at_watermark(), WINDOW);
        }
    }
}
