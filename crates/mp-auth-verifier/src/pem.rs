//! PEM and just enough DER to tell what a key is: which algorithm and curve a
//! PKCS#8 private key or an SPKI public key is for, so that a wrong key gets a
//! precise message ("curve P-384, not P-256") instead of "invalid key".

use crate::key::KeyError;
use base64::Engine as _;

/// One PEM block: its label (`PRIVATE KEY`, `PUBLIC KEY`, ...) and DER body.
#[derive(Clone, PartialEq, Eq)]
pub struct PemBlock {
    /// The word(s) between `BEGIN` and the dashes, e.g. `PRIVATE KEY`.
    pub label: String,
    /// The decoded body.
    pub der: Vec<u8>,
}

impl std::fmt::Debug for PemBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body may be a private key.
        f.debug_struct("PemBlock")
            .field("label", &self.label)
            .field("der", &format_args!("[{} bytes]", self.der.len()))
            .finish()
    }
}

/// Parses every PEM block of `text` (text outside blocks is ignored, as
/// OpenSSL does). No block at all is [`KeyError::NotPem`].
pub fn parse_pem(text: &str) -> Result<Vec<PemBlock>, KeyError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            if line == end {
                closed = true;
                break;
            }
            if line.contains(':') {
                // RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`): an encrypted legacy key.
                return Err(KeyError::Encrypted);
            }
            body.push_str(line);
        }
        if !closed {
            return Err(KeyError::Malformed(format!(
                "the PEM block {label:?} has no END line"
            )));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|_| KeyError::Malformed(format!("the PEM block {label:?} is not base64")))?;
        blocks.push(PemBlock {
            label: label.to_owned(),
            der,
        });
    }
    if blocks.is_empty() {
        return Err(KeyError::NotPem);
    }
    Ok(blocks)
}

/// Exactly one PEM block of `text`, with the label's meaning checked: a
/// certificate, an encrypted key, a SEC1 or PKCS#1 key is refused with its own error.
pub fn parse_single_key(text: &str) -> Result<PemBlock, KeyError> {
    let mut blocks = parse_pem(text)?;
    if blocks.len() != 1 {
        return Err(KeyError::SeveralBlocks(blocks.len()));
    }
    let block = blocks.remove(0);
    match block.label.as_str() {
        "PRIVATE KEY" | "PUBLIC KEY" => Ok(block),
        "ENCRYPTED PRIVATE KEY" => Err(KeyError::Encrypted),
        "EC PRIVATE KEY" => Err(KeyError::Sec1),
        "RSA PRIVATE KEY" | "RSA PUBLIC KEY" => Err(KeyError::Rsa),
        other => Err(KeyError::NotAKey(other.to_owned())),
    }
}

/// `der` as a PEM block with `label`, 64 characters a line.
pub fn encode_pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The SPKI DER of a P-256 public point (65 bytes, uncompressed).
pub(crate) fn p256_spki(point: &[u8]) -> Vec<u8> {
    let mut der = vec![0x30, 0x59, 0x30, 0x13, 0x06, 0x07];
    der.extend_from_slice(OID_EC_PUBLIC_KEY);
    der.extend_from_slice(&[0x06, 0x08]);
    der.extend_from_slice(OID_P256);
    der.extend_from_slice(&[0x03, 0x42, 0x00]);
    der.extend_from_slice(point);
    der
}

/// The SPKI DER of an Ed25519 public key (32 bytes).
pub(crate) fn ed25519_spki(public: &[u8]) -> Vec<u8> {
    let mut der = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03];
    der.extend_from_slice(OID_ED25519);
    der.extend_from_slice(&[0x03, 0x21, 0x00]);
    der.extend_from_slice(public);
    der
}

/// What a key is for, from its DER algorithm identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256 (ES256).
    EcP256,
    /// Ed25519 (EdDSA).
    Ed25519,
    /// ECDSA on another curve (named for the message).
    OtherCurve(String),
    /// RSA (not supported).
    Rsa,
    /// Anything else, by its algorithm OID (dotted).
    Other(String),
}

impl KeyKind {
    /// `Ok` for the kinds mp-auth signs with; the precise refusal otherwise.
    pub fn supported(self) -> Result<Self, KeyError> {
        match self {
            Self::EcP256 | Self::Ed25519 => Ok(self),
            Self::OtherCurve(curve) => Err(KeyError::WrongCurve(curve)),
            Self::Rsa => Err(KeyError::Rsa),
            Self::Other(oid) => Err(KeyError::Unsupported(oid)),
        }
    }
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

/// The kind of a PKCS#8 `PrivateKeyInfo` (RFC 5208/5958).
pub fn pkcs8_kind(der: &[u8]) -> Result<KeyKind, KeyError> {
    let mut outer = expect(&mut &der[..], TAG_SEQUENCE)?;
    expect(&mut outer, TAG_INTEGER)?;
    let algorithm = expect(&mut outer, TAG_SEQUENCE)?;
    expect(&mut outer, TAG_OCTET_STRING)?;
    kind_of(algorithm)
}

/// The kind of an SPKI `SubjectPublicKeyInfo` (RFC 5280) and its key bits.
pub fn spki_kind(der: &[u8]) -> Result<(KeyKind, &[u8]), KeyError> {
    let mut outer = expect(&mut &der[..], TAG_SEQUENCE)?;
    let algorithm = expect(&mut outer, TAG_SEQUENCE)?;
    let bits = expect(&mut outer, TAG_BIT_STRING)?;
    match bits.split_first() {
        Some((0, key)) => Ok((kind_of(algorithm)?, key)),
        _ => Err(malformed()),
    }
}

fn kind_of(mut algorithm: &[u8]) -> Result<KeyKind, KeyError> {
    let oid = expect(&mut algorithm, TAG_OID)?;
    if oid == OID_ED25519 {
        return Ok(KeyKind::Ed25519);
    }
    if oid == OID_RSA || oid == OID_RSA_PSS {
        return Ok(KeyKind::Rsa);
    }
    if oid != OID_EC_PUBLIC_KEY {
        return Ok(KeyKind::Other(dotted(oid)));
    }
    let (tag, params) = read_tlv(&mut algorithm)?;
    if tag != TAG_OID {
        return Ok(KeyKind::OtherCurve(
            "explicit curve parameters (use the named curve P-256)".into(),
        ));
    }
    if params == OID_P256 {
        return Ok(KeyKind::EcP256);
    }
    let name = match dotted(params).as_str() {
        "1.3.132.0.34" => "P-384".to_owned(),
        "1.3.132.0.35" => "P-521".to_owned(),
        "1.3.132.0.10" => "secp256k1".to_owned(),
        other => other.to_owned(),
    };
    Ok(KeyKind::OtherCurve(name))
}

fn malformed() -> KeyError {
    KeyError::Malformed("the DER structure is not a PKCS#8 or SPKI key".into())
}

/// Reads one TLV of `tag` and advances `input` past it.
fn expect<'a>(input: &mut &'a [u8], tag: u8) -> Result<&'a [u8], KeyError> {
    match read_tlv(input)? {
        (t, contents) if t == tag => Ok(contents),
        _ => Err(malformed()),
    }
}

/// Reads one DER TLV (definite lengths up to 4 bytes) and advances `input`.
fn read_tlv<'a>(input: &mut &'a [u8]) -> Result<(u8, &'a [u8]), KeyError> {
    let (&tag, rest) = input.split_first().ok_or_else(malformed)?;
    let (&first, mut rest) = rest.split_first().ok_or_else(malformed)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(malformed());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(malformed());
    }
    let (contents, after) = rest.split_at(len);
    *input = after;
    Ok((tag, contents))
}

/// An OID's dotted form, for messages.
fn dotted(oid: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut value: u64 = 0;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let first = (value / 40).min(2);
                parts.push(first.to_string());
                parts.push((value - first * 40).to_string());
            } else {
                parts.push(value.to_string());
            }
            value = 0;
        }
    }
    parts.join(".")
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Keys made once with OpenSSL 3 for these tests (never used anywhere else).

    /// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`
    pub const P256_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgm4tqUipQHtP2tcD/
WAv/TrYcs3qj99UHJ6tRH5WvTnehRANCAAQhJ6/ceCi8qh0d/rxhJ8Urs2uLDR0l
YSVV49Gu/MJSGDT2GCzCFbzT5A7m4PwPBcftUiFuVyuFJ69S+L4skcUC
-----END PRIVATE KEY-----
";
    /// The public key of [`P256_PRIVATE`] (`openssl pkey -pubout`).
    pub const P256_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEISev3HgovKodHf68YSfFK7Nriw0d
JWElVePRrvzCUhg09hgswhW80+QO5uD8DwXH7VIhblcrhSevUvi+LJHFAg==
-----END PUBLIC KEY-----
";
    /// [`P256_PRIVATE`] in SEC1 form (`openssl ec`): `EC PRIVATE KEY`, not PKCS#8.
    pub const P256_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIJuLalIqUB7T9rXA/1gL/062HLN6o/fVByerUR+Vr053oAoGCCqGSM49
AwEHoUQDQgAEISev3HgovKodHf68YSfFK7Nriw0dJWElVePRrvzCUhg09hgswhW8
0+QO5uD8DwXH7VIhblcrhSevUvi+LJHFAg==
-----END EC PRIVATE KEY-----
";
    /// `openssl genpkey -algorithm ED25519`
    pub const ED25519_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIA4WQSJPwS4es8y78oVnFR40MJOt3DvyaDMQM8o7ScHN
-----END PRIVATE KEY-----
";
    /// The public key of [`ED25519_PRIVATE`].
    pub const ED25519_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA0pSz5CoaFS/e2Q96Dx+k+9gFPQSMcEuvXfZQBsJ3hkM=
-----END PUBLIC KEY-----
";
    /// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384`
    pub const P384_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDDLXxRu1nMYsD66jec1
8hmNe7DWrbdhNUydhidSjpqQWedTS6gXgEc/O5uGy3czTiGhZANiAAQBxHyQ5gg8
1WkFqGXej8kgzSlhE7IhKpvKSAYUyYhcyprP1rx/3Ee0++fwTjjL2gv7jh7BYsy1
GP3d656x1/sTzS11CQA2Sb1nBAGAEhBlqQ3PdLQAFuMKgzQtDTd7g8k=
-----END PRIVATE KEY-----
";
    /// The public key of [`P384_PRIVATE`].
    pub const P384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEAcR8kOYIPNVpBahl3o/JIM0pYROyISqb
ykgGFMmIXMqaz9a8f9xHtPvn8E44y9oL+44ewWLMtRj93euesdf7E80tdQkANkm9
ZwQBgBIQZakNz3S0ABbjCoM0LQ03e4PJ
-----END PUBLIC KEY-----
";
    /// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:secp256k1`
    pub const SECP256K1_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGEAgEAMBAGByqGSM49AgEGBSuBBAAKBG0wawIBAQQgq2CbzdMfeDoG1lNRGkSD
5yzMJNabow8yhLtQfSwaM66hRANCAASfyfWB6AlDH0rio2iBP1Z+YpyW6s6j+bmL
iLnb+5NWWYirXifOEy24rwJV9uAKO+mfIYa4qPpUnsl+ipudg0W+
-----END PRIVATE KEY-----
";
    /// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024`
    pub const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBAKsj+WSGuiRGVZAG
HioYVZbD+/Q3trcIc5NAHndrpFKqbS+LUnroqBRyPlfwWdCmjRkQWqWfwiaVLW/t
vq2AukGu/5jbUObxAj8OYmeypYNw+TdAQM1eX/PhHUz28Eez70Y3+EhQZi9i5AXa
sKwC9y3kP/AQsRcWvqLPQLBqWg+dAgMBAAECgYEAlznvq2Pd4iYAf4bYaswb/WBr
KE9+9lfSgQC8qzwD9URBvSx4ksE5nO+ipWRuiRBTSB2KbCYykpNplilYP8qrSeJL
D67YLDCaf3sk050pJDoriGriMI/Nb+zzkcHLo0+S6VmEM73/jW6qmcVfKGEtDdZn
yzcw/ZViVir3GGuRBAECQQDiGL+5cr2YbEYD4KBxR3YWyM5G3bFGPB4rjzcRTqeU
WVSSlzo3F3qkcPitrUfoMxjIcy8Hr0FFPLwECsjLWqEBAkEAwcaAv2nTNkv7GAGK
/DnqqaQkf2KpSr4I2D7aN7TZoBPfi9kM7A6fmpFEwqHkU4mZIanDLwOt+n7QQ+Qh
mTNSnQJAbAmPc7oURsVWH3wyrm6LSw/hIZPFpd4MPJxOoAKJqSWWeAWzV6fsfq9M
5RCsD5R6/y2rB20DL2Z6ISRWFnXUAQJAV278+uGCJvbDtoJDtyle4+qneT8ISixT
C1fY2Nfmdl9hN9XZCc5TX8f6caPgxXzJtrHF2znaz7NWv7t5GYpZ1QJAKrXvCTLc
czK8iwsK709Ymw1Fvq6clLVncZ6aRDTZlub903AQ8cFr7t4+P4a5AwKkEkXUKwo5
uGzTXm2U8lnOLA==
-----END PRIVATE KEY-----
";
    /// The public key of [`RSA_PRIVATE`].
    pub const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCrI/lkhrokRlWQBh4qGFWWw/v0
N7a3CHOTQB53a6RSqm0vi1J66KgUcj5X8FnQpo0ZEFqln8ImlS1v7b6tgLpBrv+Y
21Dm8QI/DmJnsqWDcPk3QEDNXl/z4R1M9vBHs+9GN/hIUGYvYuQF2rCsAvct5D/w
ELEXFr6iz0CwaloPnQIDAQAB
-----END PUBLIC KEY-----
";
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn pkcs8_and_spki_keys_are_recognised() {
        let p256 = parse_single_key(P256_PRIVATE).unwrap();
        assert_eq!(p256.label, "PRIVATE KEY");
        assert_eq!(pkcs8_kind(&p256.der).unwrap(), KeyKind::EcP256);
        let ed = parse_single_key(ED25519_PRIVATE).unwrap();
        assert_eq!(pkcs8_kind(&ed.der).unwrap(), KeyKind::Ed25519);
        let public = parse_single_key(P256_PUBLIC).unwrap();
        let (kind, bits) = spki_kind(&public.der).unwrap();
        assert_eq!(kind, KeyKind::EcP256);
        assert_eq!(bits.len(), 65);
        assert_eq!(bits[0], 4);
        let ed_public = parse_single_key(ED25519_PUBLIC).unwrap();
        let (kind, bits) = spki_kind(&ed_public.der).unwrap();
        assert_eq!(kind, KeyKind::Ed25519);
        assert_eq!(bits.len(), 32);
    }

    #[test]
    fn wrong_curves_and_formats_are_named() {
        let p384 = parse_single_key(P384_PRIVATE).unwrap();
        assert_eq!(
            pkcs8_kind(&p384.der).unwrap(),
            KeyKind::OtherCurve("P-384".into())
        );
        assert_eq!(parse_single_key(P256_SEC1).unwrap_err(), KeyError::Sec1);
        let rsa = parse_single_key(RSA_PRIVATE).unwrap();
        assert_eq!(pkcs8_kind(&rsa.der).unwrap(), KeyKind::Rsa);
        let (kind, _) = spki_kind(&parse_single_key(RSA_PUBLIC).unwrap().der).unwrap();
        assert_eq!(kind, KeyKind::Rsa);
        let (kind, _) = spki_kind(&parse_single_key(P384_PUBLIC).unwrap().der).unwrap();
        assert_eq!(kind, KeyKind::OtherCurve("P-384".into()));
        let k1 = parse_single_key(SECP256K1_PRIVATE).unwrap();
        assert_eq!(
            pkcs8_kind(&k1.der).unwrap().supported().unwrap_err(),
            KeyError::WrongCurve("secp256k1".into())
        );
        assert_eq!(
            parse_single_key("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .unwrap_err(),
            KeyError::NotAKey("CERTIFICATE".into())
        );
        assert_eq!(
            parse_single_key(
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
            )
            .unwrap_err(),
            KeyError::Encrypted
        );
        assert_eq!(
            parse_single_key("0123456789abcdef0123456789abcdef").unwrap_err(),
            KeyError::NotPem
        );
        let two = format!("{P256_PRIVATE}{ED25519_PRIVATE}");
        assert_eq!(
            parse_single_key(&two).unwrap_err(),
            KeyError::SeveralBlocks(2)
        );
    }

    #[test]
    fn truncated_der_is_malformed_not_a_panic() {
        let p256 = parse_single_key(P256_PRIVATE).unwrap();
        for cut in 0..p256.der.len() {
            let _ = pkcs8_kind(&p256.der[..cut]);
            let _ = spki_kind(&p256.der[..cut]);
        }
        assert!(matches!(pkcs8_kind(&[]), Err(KeyError::Malformed(_))));
        assert!(matches!(
            parse_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n"),
            Err(KeyError::Malformed(_))
        ));
    }

    #[test]
    fn public_keys_encode_back_to_what_openssl_wrote() {
        for pem in [P256_PUBLIC, ED25519_PUBLIC] {
            let key = crate::VerifyingKey::from_pem(pem).unwrap();
            assert_eq!(key.to_public_pem().unwrap(), pem);
        }
    }

    #[test]
    fn oids_print_dotted() {
        assert_eq!(dotted(OID_P256), "1.2.840.10045.3.1.7");
        assert_eq!(dotted(OID_ED25519), "1.3.101.112");
    }
}
