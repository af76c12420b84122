//! The `decrypt` command: decrypt a legacy payload by hand and say exactly what
//! is wrong with it. Developers hit these failures daily.

use crate::{
    config::Settings,
    domain::{AppId, SessionKey},
    wechat::crypto::{DecryptError, decrypt_phone, decrypt_raw},
};
use std::{
    process::ExitCode,
    time::{Duration, SystemTime},
};

/// Arguments of `mp-auth decrypt`. `Debug` leaves the key and the payload out.
#[derive(clap::Args)]
pub struct DecryptArgs {
    /// The mini program's AppID (the watermark must name it).
    #[arg(long)]
    pub app_id: String,
    /// The user's session_key (base64, from jscode2session).
    #[arg(long)]
    pub session_key: String,
    /// `e.detail.encryptedData` from the phone button.
    #[arg(long)]
    pub encrypted_data: String,
    /// `e.detail.iv` from the phone button.
    #[arg(long)]
    pub iv: String,
    /// Accept watermarks up to this many seconds old (default: the configured window).
    #[arg(long)]
    pub max_age_secs: Option<u64>,
}

impl std::fmt::Debug for DecryptArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptArgs")
            .field("app_id", &self.app_id)
            .field("session_key", &"[REDACTED]")
            .field("encrypted_data", &"[REDACTED]")
            .field("iv", &"[REDACTED]")
            .field("max_age_secs", &self.max_age_secs)
            .finish()
    }
}

/// Prints the decrypted record (phone masked) or a precise diagnosis.
pub fn run(settings: &Settings, args: DecryptArgs) -> anyhow::Result<ExitCode> {
    let app_id = AppId::parse(&args.app_id).map_err(|e| anyhow::anyhow!("--app-id: {e}"))?;
    let key = match SessionKey::from_base64(&args.session_key) {
        Ok(k) => k,
        Err(e) => {
            println!(
                "session_key is unusable: {}. A session_key is the 24-character base64 of 16 bytes from jscode2session.",
                e.problem
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let max_age = Duration::from_secs(
        args.max_age_secs
            .unwrap_or(settings.wechat.watermark_max_age_secs),
    );
    match decrypt_phone(
        &app_id,
        &key,
        &args.encrypted_data,
        &args.iv,
        SystemTime::now(),
        max_age,
    ) {
        Ok(record) => {
            println!(
                "ok: phone {} (country code {}), watermark timestamp {}",
                record.phone,
                record.phone.country_code(),
                record.watermark_timestamp
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(DecryptError::NotJson) => {
            // Padding happened to be valid: show whether it is JSON of another kind.
            let hint = match decrypt_raw(&key, &args.encrypted_data, &args.iv) {
                Ok(plain) if serde_json::from_slice::<serde_json::Value>(&plain).is_ok() => {
                    " (it is JSON, but not a phone-number record: was this getUserInfo or share data?)"
                }
                _ => "",
            };
            println!("error: {}{hint}", DecryptError::NotJson);
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            println!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_session_key_and_the_payload() {
        let args = DecryptArgs {
            app_id: "wx1".into(),
            session_key: "SECRET-KEY".into(),
            encrypted_data: "SECRET-DATA".into(),
            iv: "SECRET-IV".into(),
            max_age_secs: None,
        };
        let text = format!("{args:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("wx1"));
    }
}
