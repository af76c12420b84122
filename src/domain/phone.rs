//! Phone numbers: the account key. Normalised to E.164-like `+<country><number>`
//! and masked (`138****6666`) whenever displayed or debugged.

use std::fmt;

/// A normalised phone number: country calling code plus national number, digits only.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone {
    country_code: String,
    number: String,
}

/// Why a phone number was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("country code must be 1-4 digits")]
    CountryCode,
    #[error("phone number must be 4-17 digits")]
    Number,
}

impl Phone {
    /// Builds a phone from WeChat's `countryCode` and `purePhoneNumber`.
    /// Accepts a leading `+` or `00` on the country code and separators
    /// (spaces, dashes) in the number.
    pub fn new(country_code: &str, pure_number: &str) -> Result<Self, PhoneError> {
        let cc = country_code.trim();
        let cc = cc
            .strip_prefix('+')
            .or_else(|| cc.strip_prefix("00"))
            .unwrap_or(cc);
        let cc = cc.trim_start_matches('0');
        if cc.is_empty() || cc.len() > 4 || !cc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PhoneError::CountryCode);
        }
        let mut number = String::with_capacity(pure_number.len());
        for c in pure_number.trim().chars() {
            match c {
                '0'..='9' => number.push(c),
                ' ' | '-' | '(' | ')' => {}
                _ => return Err(PhoneError::Number),
            }
        }
        if !(4..=17).contains(&number.len()) {
            return Err(PhoneError::Number);
        }
        Ok(Self {
            country_code: cc.to_owned(),
            number,
        })
    }

    /// Rebuilds a phone from its stored E.164 form (`+8613580006666` needs the
    /// country code length, so the store keeps both parts); see [`Phone::e164`].
    pub fn from_parts(country_code: &str, number: &str) -> Result<Self, PhoneError> {
        Self::new(country_code, number)
    }

    /// The country calling code, digits only (e.g. `86`).
    pub fn country_code(&self) -> &str {
        &self.country_code
    }
    /// The national number, digits only (e.g. `13580006666`). Personal data: never log it.
    pub fn number(&self) -> &str {
        &self.number
    }
    /// The canonical account key: `+<country code><number>`. Personal data: never log it.
    pub fn e164(&self) -> String {
        format!("+{}{}", self.country_code, self.number)
    }
    /// The masked form for logs and messages: `138****6666`.
    pub fn masked(&self) -> String {
        let n = &self.number;
        let len = n.len();
        let (keep_head, keep_tail) = if len >= 11 {
            (3, 4)
        } else if len >= 7 {
            (2, 2)
        } else {
            (1, 1)
        };
        let mut out = String::with_capacity(len + 4);
        if self.country_code != "86" {
            out.push('+');
            out.push_str(&self.country_code);
            out.push(' ');
        }
        out.push_str(&n[..keep_head]);
        out.extend(std::iter::repeat_n('*', len - keep_head - keep_tail));
        out.push_str(&n[len - keep_tail..]);
        out
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}
impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_chinese_mobile_numbers_like_wechat_users_expect() {
        let p = Phone::new("86", "13580006666").unwrap();
        assert_eq!(p.masked(), "135****6666");
        assert_eq!(p.to_string(), "135****6666");
        assert_eq!(format!("{p:?}"), "Phone(135****6666)");
        assert_eq!(p.e164(), "+8613580006666");
    }

    #[test]
    fn normalises_country_code_and_separators() {
        let a = Phone::new("+86", "135 8000-6666").unwrap();
        let b = Phone::new("0086", "13580006666").unwrap();
        assert_eq!(a, b);
        let us = Phone::new("1", "2025550123").unwrap();
        assert_eq!(us.e164(), "+12025550123");
        assert_eq!(us.masked(), "+1 20******23");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Phone::new("", "13580006666"), Err(PhoneError::CountryCode));
        assert_eq!(
            Phone::new("86a", "13580006666"),
            Err(PhoneError::CountryCode)
        );
        assert_eq!(Phone::new("86", "12"), Err(PhoneError::Number));
        assert_eq!(Phone::new("86", "1358000666x"), Err(PhoneError::Number));
    }
}
