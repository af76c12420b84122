//! What the phone button encrypts for the legacy flow, done the way WeChat
//! documents it (and independently of mp-auth's decryption): the JSON phone
//! record with its watermark, AES-128-CBC with PKCS#7 padding, keyed by the
//! user's session_key, a random 16-byte IV, both sent as standard base64.

use crate::phone::Phone;
use aes::cipher::{BlockModeEncrypt as _, KeyIvInit as _, block_padding::Pkcs7};
use base64::Engine as _;
use rand::RngCore as _;
use std::fmt;

type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;

/// A user's session_key: 16 random bytes. Secret: `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; 16]);

impl SessionKey {
    /// A fresh random key, as `wx.login` issues when the session rotates.
    pub fn random() -> Self {
        let mut key = [0u8; 16];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// A key from its raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The standard-base64 form jscode2session sends.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey([REDACTED])")
    }
}

/// AES-128-CBC/PKCS#7 of `plaintext` under `key` and `iv`, as standard base64.
pub fn encrypt_b64(key: &SessionKey, iv: &[u8; 16], plaintext: &[u8]) -> String {
    let ciphertext =
        Aes128CbcEnc::new(&key.0.into(), &(*iv).into()).encrypt_padded_vec::<Pkcs7>(plaintext);
    base64::engine::general_purpose::STANDARD.encode(ciphertext)
}

/// The JSON record WeChat encrypts for `getPhoneNumber` (legacy flow).
pub fn phone_record(app_id: &str, phone: &Phone, timestamp: i64) -> Vec<u8> {
    serde_json::json!({
        "phoneNumber": phone.full(),
        "purePhoneNumber": phone.number(),
        "countryCode": phone.country_code(),
        "watermark": { "timestamp": timestamp, "appid": app_id },
    })
    .to_string()
    .into_bytes()
}

/// The legacy `encryptedData` and `iv` (both base64) of `phone` for `app_id`.
pub fn encrypt_phone(
    key: &SessionKey,
    app_id: &str,
    phone: &Phone,
    timestamp: i64,
) -> (String, String) {
    let mut iv = [0u8; 16];
    rand::rng().fill_bytes(&mut iv);
    let encrypted_data = encrypt_b64(key, &iv, &phone_record(app_id, phone, timestamp));
    (
        encrypted_data,
        base64::engine::general_purpose::STANDARD.encode(iv),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WeChat's documented example (the user-info payload): key, IV, plaintext, ciphertext.
    const KEY: [u8; 16] = [
        0xb6, 0x28, 0xa1, 0xb4, 0xd7, 0x33, 0x7f, 0x9b, 0xfa, 0x00, 0xa4, 0x72, 0x8f, 0x01, 0x14,
        0x85,
    ];
    const IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
    const OFFICIAL_PLAIN: &str = r#"{"openId":"oGZUI0egBJY1zhBYw2KhdUfwVJJE","nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MHM4WgMEm7GFhsf8OYrySdbvAMvTsw3mo8ibKicsnfN5pRjl1p8HQ/0","unionId":"ocMvos6NjeKLIBqg5Mr9QjxrP1FA","watermark":{"timestamp":1477314187,"appid":"wx4f4bc4dec97d474b"}}"#;
    const OFFICIAL: &str = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";

    #[test]
    fn encryption_reproduces_wechats_documented_example() {
        let iv: [u8; 16] = base64::engine::general_purpose::STANDARD
            .decode(IV)
            .unwrap()
            .try_into()
            .unwrap();
        let key = SessionKey::from_bytes(KEY);
        assert_eq!(encrypt_b64(&key, &iv, OFFICIAL_PLAIN.as_bytes()), OFFICIAL);
    }

    #[test]
    fn phone_records_carry_the_watermark_and_wechat_number_forms() {
        let cn = Phone::new("86", "13800138000").unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&phone_record("wx_a", &cn, 1_700_000_000)).unwrap();
        assert_eq!(v["phoneNumber"], "13800138000");
        assert_eq!(v["purePhoneNumber"], "13800138000");
        assert_eq!(v["countryCode"], "86");
        assert_eq!(v["watermark"]["appid"], "wx_a");
        assert_eq!(v["watermark"]["timestamp"], 1_700_000_000);
        let us = Phone::new("1", "2025550123").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&phone_record("wx_a", &us, 1)).unwrap();
        assert_eq!(v["phoneNumber"], "+12025550123");
    }

    #[test]
    fn session_keys_do_not_show_in_debug() {
        let key = SessionKey::from_bytes(KEY);
        assert_eq!(format!("{key:?}"), "SessionKey([REDACTED])");
        assert_eq!(key.to_base64(), "tiihtNczf5v6AKRyjwEUhQ==");
    }
}
