//! Micro-benchmarks of the CPU work inside one login: legacy phone decryption,
//! JWT sign and verify (ES256, EdDSA, HS256; the signature check alone, which
//! is what `mp-auth-verifier` does offline, and `TokenIssuer::verify` as
//! `VerifyToken` runs it, with its cache), the revocation lookup, phone
//! normalisation and masking, session-key vault seal/open.
//! `cargo bench --bench micro` (about 20 s).

#![allow(clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use mp_auth::{
    config::TokenSettings,
    domain::{AppId, OpenId, Phone, SessionKey, UserId},
    login::SessionVault,
    tokens::{Algorithm, KeyRing, SigningKey, TokenIssuer},
    wechat::crypto::decrypt_phone,
};
use std::{
    hint::black_box,
    time::{Duration, UNIX_EPOCH},
};

// The official phone vector (see the tests of src/wechat/crypto.rs).
const APP: &str = "wx4f4bc4dec97d474b";
const KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
const IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
const PHONE: &str = "xT8p8W6jIVdEWQ+ccHuD2bmG5RSiwg14VWRFw/UGVh6Aj+jDIadafJ4xdCIBQ/uxDiyw/MZWvpFyRn3pP3xxVfNQxFtzghvK+Pj5JQI7x412Zc+UKBdZyt5yiQboroSxabTum1k4MMOlnoCxhJ46cxPDT2EuLbNUf2McwNtGO0/9E+Xj/ZwENw48ucueL3UqNoKpXxFYvqH6eawrR2MXnA==";
const WATERMARK_TS: u64 = 1_477_314_187;

fn legacy_decryption(c: &mut Criterion) {
    let app = AppId::parse(APP).unwrap();
    let key = SessionKey::from_base64(KEY).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(WATERMARK_TS);
    let window = Duration::from_secs(600);
    assert!(decrypt_phone(&app, &key, PHONE, IV, now, window).is_ok());
    c.bench_function("decrypt_phone (official vector)", |b| {
        b.iter(|| decrypt_phone(&app, &key, black_box(PHONE), black_box(IV), now, window))
    });
}

/// A token issuer signing with a fresh key of `alg`.
pub fn issuer(alg: Algorithm) -> TokenIssuer {
    let settings = TokenSettings::default();
    let signing = match alg {
        Algorithm::Hs256 => {
            SigningKey::hs256(b"bench-signing-secret-0123456789-abcdefghijklmnop").unwrap()
        }
        _ => SigningKey::from_pem(&SigningKey::generate(alg).unwrap().private_pem).unwrap(),
    };
    let ring = KeyRing::new(
        signing,
        Vec::new(),
        &settings.issuer,
        &settings.audience,
        30,
    )
    .unwrap();
    TokenIssuer::new(&settings, std::sync::Arc::new(ring)).unwrap()
}

fn jwt(c: &mut Criterion) {
    let app = AppId::parse(APP).unwrap();
    for alg in [Algorithm::Es256, Algorithm::EdDsa, Algorithm::Hs256] {
        let issuer = issuer(alg);
        c.bench_function(&format!("jwt sign ({alg})"), |b| {
            b.iter(|| issuer.issue_for_session(black_box(UserId(42)), &app, "sid", u64::MAX))
        });
        let token = issuer
            .issue_for_session(UserId(42), &app, "sid", u64::MAX)
            .unwrap()
            .token;
        let verifier = issuer.keys().verifier().clone();
        c.bench_function(&format!("jwt verify ({alg}, signature checked)"), |b| {
            b.iter(|| verifier.verify(black_box(&token)))
        });
        c.bench_function(
            &format!("jwt verify ({alg}, VerifyToken path, cached)"),
            |b| b.iter(|| issuer.verify(black_box(&token))),
        );
    }
}

/// A revocation feed of `n` revoked sessions.
struct Revoked(Vec<mp_auth::store::RevokedSession>);

impl mp_auth::sessions::RevocationFeed for Revoked {
    fn revoked_since(
        &self,
        _since_ms: i64,
    ) -> impl std::future::Future<
        Output = Result<Vec<mp_auth::store::RevokedSession>, mp_auth::store::StoreError>,
    > + Send {
        std::future::ready(Ok(self.0.clone()))
    }
}

fn revocation(c: &mut Criterion) {
    use mp_auth::sessions::{RevocationCache, now_ms};
    let now = now_ms();
    let feed = Revoked(
        (0..100_000)
            .map(|i| mp_auth::store::RevokedSession {
                sid: format!("revoked-session-{i:06}"),
                user_id: UserId(i),
                revoked_at_ms: now - i,
            })
            .collect(),
    );
    let cache = RevocationCache::new(Duration::from_secs(60));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(cache.poll(&feed, 0, 0, now)).unwrap();
    c.bench_function("revocation check (100k revoked sessions)", |b| {
        b.iter(|| cache.check(black_box("live-session-abcdefghijkl"), now))
    });
}

fn phone(c: &mut Criterion) {
    c.bench_function("phone normalise", |b| {
        b.iter(|| Phone::new(black_box("+86"), black_box("135-8000 6666")))
    });
    let phone = Phone::new("86", "13580006666").unwrap();
    c.bench_function("phone mask", |b| b.iter(|| black_box(&phone).masked()));
    c.bench_function("phone e164", |b| b.iter(|| black_box(&phone).e164()));
}

fn vault(c: &mut Criterion) {
    let vault = SessionVault::new(&[7u8; 32]);
    let app = AppId::parse(APP).unwrap();
    let openid = OpenId::parse("oGZUI0egBJY1zhBYw2KhdUfwVJJE").unwrap();
    let key = SessionKey::from_base64(KEY).unwrap();
    c.bench_function("session vault seal", |b| {
        b.iter(|| vault.seal(&app, &openid, black_box(&key)))
    });
    let sealed = vault.seal(&app, &openid, &key).unwrap();
    c.bench_function("session vault open", |b| {
        b.iter(|| vault.open(&app, &openid, black_box(&sealed)))
    });
}

fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
}

criterion_group! {
    name = micro;
    config = quick();
    targets = legacy_decryption, jwt, revocation, phone, vault
}
criterion_main!(micro);
