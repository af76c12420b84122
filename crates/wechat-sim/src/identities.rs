//! Who a simulated user is: deterministic openids and unionids derived from
//! the user handle, and the user's phone number (a derived default unless one
//! was set through the control API).

use crate::{phone::Phone, sync::lock};
use base64::Engine as _;
use std::{collections::HashMap, sync::Mutex};

fn sha256(parts: &[&str]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
        ctx.update(&[0]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `o` + 27 base64url characters: 28 characters, like real openids.
fn wechat_id(kind: &str, scope: &str, user: &str) -> String {
    let hash = sha256(&[kind, scope, user]);
    let mut id = String::with_capacity(44);
    id.push('o');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(hash, &mut id);
    id.truncate(28);
    id
}

/// The user's openid in an app: stable and deterministic.
pub fn openid_for(app_id: &str, user: &str) -> String {
    wechat_id("openid", app_id, user)
}

/// The user's unionid under an open platform account: stable and deterministic.
pub fn unionid_for(open_platform: &str, user: &str) -> String {
    wechat_id("unionid", open_platform, user)
}

/// The phone a user has unless one was set: a valid CN mobile `1[3-9]xxxxxxxxx`.
pub fn default_phone(user: &str) -> Phone {
    let hash = sha256(&["phone", user]);
    let mut number = String::with_capacity(11);
    number.push('1');
    number.push(char::from(b'3' + hash[0] % 7));
    for b in &hash[1..10] {
        number.push(char::from(b'0' + b % 10));
    }
    Phone::from_digits("86", number)
}

/// Phones set explicitly per user handle (the others have [`default_phone`]).
#[derive(Default)]
pub(crate) struct Phones(Mutex<HashMap<String, Phone>>);

impl Phones {
    /// Gives `user` the phone `phone` from now on.
    pub fn set(&self, user: &str, phone: Phone) {
        lock(&self.0).insert(user.to_owned(), phone);
    }

    /// The user's phone.
    pub fn get(&self, user: &str) -> Phone {
        lock(&self.0)
            .get(user)
            .cloned()
            .unwrap_or_else(|| default_phone(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openids_look_real_and_are_stable_per_app_and_user() {
        let a = openid_for("wxa", "alice");
        assert_eq!(a.len(), 28);
        assert!(a.starts_with('o'));
        assert_eq!(a, openid_for("wxa", "alice"));
        assert_ne!(a, openid_for("wxb", "alice"));
        assert_ne!(a, openid_for("wxa", "bob"));
    }

    #[test]
    fn default_phones_are_valid_cn_mobiles() {
        for user in ["a", "b", "alice", "用户"] {
            let p = default_phone(user);
            assert_eq!(p.country_code(), "86");
            let n = p.number().as_bytes();
            assert_eq!(n.len(), 11);
            assert_eq!(n[0], b'1');
            assert!((b'3'..=b'9').contains(&n[1]));
            assert!(Phone::new("86", p.number()).is_some());
        }
        assert_eq!(default_phone("x"), default_phone("x"));
    }

    #[test]
    fn a_set_phone_replaces_the_default() {
        let phones = Phones::default();
        assert_eq!(phones.get("alice"), default_phone("alice"));
        let p = Phone::new("1", "2025550123").unwrap();
        phones.set("alice", p.clone());
        assert_eq!(phones.get("alice"), p);
    }
}
