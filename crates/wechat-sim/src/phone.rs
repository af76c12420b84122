//! Phone numbers as the simulated WeChat hands them out: a country calling
//! code and a national number, parsed from what a control-API caller types.

/// A phone number: country calling code and national number, digits only.
#[derive(Clone, PartialEq, Eq)]
pub struct Phone {
    country_code: String,
    number: String,
}

impl Phone {
    /// `country_code` of 1-4 digits (a leading `+` is accepted) and a national
    /// number of 4-17 digits (spaces and dashes are dropped).
    pub fn new(country_code: &str, number: &str) -> Option<Self> {
        let cc = country_code.trim().trim_start_matches('+');
        let digits: String = number.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        ((1..=4).contains(&cc.len())
            && all_digits(cc)
            && (4..=17).contains(&digits.len())
            && all_digits(&digits))
        .then(|| Self {
            country_code: cc.to_owned(),
            number: digits,
        })
    }

    /// A phone from digits the caller has already checked.
    pub(crate) fn from_digits(country_code: &str, number: String) -> Self {
        Self {
            country_code: country_code.to_owned(),
            number,
        }
    }

    /// The country calling code (`86`).
    pub fn country_code(&self) -> &str {
        &self.country_code
    }

    /// The national number (`purePhoneNumber`).
    pub fn number(&self) -> &str {
        &self.number
    }

    /// WeChat's `phoneNumber`: national for China, `+<cc><number>` elsewhere.
    pub fn full(&self) -> String {
        if self.country_code == "86" {
            self.number.clone()
        } else {
            format!("+{}{}", self.country_code, self.number)
        }
    }

    /// `+<cc><number>`.
    pub fn e164(&self) -> String {
        format!("+{}{}", self.country_code, self.number)
    }
}

impl std::fmt::Debug for Phone {
    /// Personal data, even when simulated: only the country code is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Phone(+{} ****)", self.country_code)
    }
}

/// Country calling codes of two digits; `1` and `7` are the one-digit ones,
/// the rest have three (E.164 codes are prefix-free).
const TWO_DIGIT_CC: &[&str] = &[
    "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47",
    "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65",
    "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
];

/// Parses a user's phone: national CN digits, or `+<cc><number>` (a space or
/// dash may separate the country code). The error is for the control API's caller.
pub fn parse_phone(s: &str) -> Result<Phone, String> {
    let bad = || {
        "`phone` must be CN mobile digits (13800138000) or +<country code><number> (+12025550123)"
            .to_owned()
    };
    let s = s.trim();
    let Some(intl) = s.strip_prefix('+') else {
        if s.len() != 11 || !s.starts_with('1') {
            return Err(bad());
        }
        return Phone::new("86", s).ok_or_else(bad);
    };
    if let Some((cc, rest)) = intl.split_once([' ', '-']) {
        return Phone::new(cc, rest).ok_or_else(bad);
    }
    if !intl.bytes().all(|b| b.is_ascii_digit()) || intl.len() < 5 {
        return Err(bad());
    }
    let cc_len = if intl.starts_with('1') || intl.starts_with('7') {
        1
    } else if TWO_DIGIT_CC.contains(&&intl[..2]) {
        2
    } else {
        3
    };
    Phone::new(&intl[..cc_len], &intl[cc_len..]).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_parse_national_and_international_forms() {
        assert_eq!(parse_phone("13800138000").unwrap().e164(), "+8613800138000");
        assert_eq!(parse_phone("+12025550123").unwrap().e164(), "+12025550123");
        let hk = parse_phone("+85291234567").unwrap();
        assert_eq!(hk.country_code(), "852");
        let uk = parse_phone("+447911123456").unwrap();
        assert_eq!(uk.country_code(), "44");
        assert_eq!(parse_phone("+852 9123-4567").unwrap().country_code(), "852");
        assert!(parse_phone("12345").is_err());
        assert!(parse_phone("+abc").is_err());
    }

    #[test]
    fn phones_do_not_show_their_number_in_debug() {
        let p = parse_phone("13800138000").unwrap();
        assert!(!format!("{p:?}").contains("13800138000"));
    }
}
