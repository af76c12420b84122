//! Random opaque strings shaped like WeChat's codes and tokens.

use rand::Rng as _;

/// `prefix` followed by `len` characters drawn from `alphabet`.
pub(crate) fn random_from(prefix: &str, alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    for _ in 0..len {
        if let Some(c) = alphabet.get(rng.random_range(0..alphabet.len())) {
            s.push(char::from(*c));
        }
    }
    s
}
