//! The JWKS over HTTP(S), cached: fetched on first use, kept for the
//! response's `Cache-Control: max-age` (clamped), refreshed by the first
//! request that finds it stale (others keep using the cached keys meanwhile),
//! and refetched at once when a token names an unknown `kid` (a key mp-auth
//! just started signing with), at most once per `min_refetch_interval`, so a
//! flood of tokens with made-up kids cannot turn into a flood of fetches.

use crate::{Claims, JwkSet, Rules, TokenVerifier, Verifier, VerifyError};
use std::{
    future::Future,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

/// Largest JWKS body accepted.
const MAX_JWKS_BYTES: usize = 64 * 1024;

/// How a [`JwksVerifier`] fetches and caches.
#[derive(Debug, Clone)]
pub struct JwksOptions {
    /// The JWKS URL, e.g. `http://mp-auth-gateway:8080/.well-known/jwks.json`.
    pub jwks_url: String,
    /// What tokens must satisfy.
    pub rules: Rules,
    /// Fetches at most once per this interval, whatever the tokens say (10 s).
    pub min_refetch_interval: Duration,
    /// Cache lifetime when the response has no `max-age` (300 s).
    pub default_max_age: Duration,
    /// Cache lifetime at most, whatever `max-age` says (1 h).
    pub max_cache: Duration,
    /// Timeout of one fetch (5 s).
    pub timeout: Duration,
}

impl JwksOptions {
    /// The defaults for `jwks_url` and `rules`.
    pub fn new(jwks_url: impl Into<String>, rules: Rules) -> Self {
        Self {
            jwks_url: jwks_url.into(),
            rules,
            min_refetch_interval: Duration::from_secs(10),
            default_max_age: Duration::from_secs(300),
            max_cache: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Verifies tokens against mp-auth's JWKS, fetched and cached. Cheap to clone.
#[derive(Clone)]
pub struct JwksVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    options: JwksOptions,
    http: reqwest::Client,
    state: RwLock<State>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    verifier: Option<Arc<Verifier>>,
    fresh_until: Option<Instant>,
    last_attempt: Option<Instant>,
    last_success: Option<Instant>,
}

impl std::fmt::Debug for JwksVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksVerifier")
            .field("jwks_url", &self.inner.options.jwks_url)
            .field("kids", &self.kids())
            .finish()
    }
}

impl JwksVerifier {
    /// A verifier of tokens under `rules` with the keys at `jwks_url`
    /// (fetched on first use). Fails only if the HTTP client cannot be built.
    pub fn new(jwks_url: impl Into<String>, rules: Rules) -> Result<Self, VerifyError> {
        Self::with_options(JwksOptions::new(jwks_url, rules))
    }

    /// A verifier with every option given.
    pub fn with_options(options: JwksOptions) -> Result<Self, VerifyError> {
        // reqwest is built without a TLS provider of its own: use ring's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .build()
            .map_err(|e| VerifyError::KeysUnavailable(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                http,
                state: RwLock::new(State::default()),
                fetching: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The `kid`s of the cached keys (empty before the first fetch).
    pub fn kids(&self) -> Vec<String> {
        let state = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        let mut kids: Vec<String> = state
            .verifier
            .iter()
            .flat_map(|v| v.keys().map(|k| k.kid().to_owned()))
            .collect();
        kids.sort();
        kids
    }

    /// Fetches the JWKS now (e.g. at start-up, to fail early); returns the
    /// number of usable keys.
    pub async fn refresh(&self) -> Result<usize, VerifyError> {
        let _one = self.inner.fetching.lock().await;
        self.fetch().await.map(|v| v.keys().count())
    }

    /// Verifies `token` with the cached keys, fetching them first if needed.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let verifier = self.current().await?;
        match verifier.verify(token) {
            Err(VerifyError::KeyUnknown(kid)) => match self.refetch_after_miss().await {
                Some(newer) => newer.verify(token),
                None => Err(VerifyError::KeyUnknown(kid)),
            },
            other => other,
        }
    }

    fn snapshot(&self) -> (Option<Arc<Verifier>>, bool) {
        let state = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        let stale = state.fresh_until.is_none_or(|t| Instant::now() >= t);
        (state.verifier.clone(), stale)
    }

    /// The keys to verify with: the cached ones (refreshed first if stale and
    /// no other refresh is running), or a first fetch.
    async fn current(&self) -> Result<Arc<Verifier>, VerifyError> {
        let (cached, stale) = self.snapshot();
        match cached {
            Some(verifier) if !stale => Ok(verifier),
            Some(verifier) => {
                // Stale: one caller refreshes, the others go on with the cached keys.
                // A failed refresh keeps them too (mp-auth being down must not stop
                // verification of tokens signed by keys we already know).
                if let Ok(_one) = self.inner.fetching.try_lock()
                    && self.snapshot().1
                    && self.may_attempt()
                {
                    return Ok(self.fetch().await.unwrap_or(verifier));
                }
                Ok(verifier)
            }
            None => {
                let started = Instant::now();
                let _one = self.inner.fetching.lock().await;
                if let (Some(verifier), _) = self.snapshot() {
                    return Ok(verifier);
                }
                if !self.may_attempt() && !self.succeeded_since(started) {
                    return Err(VerifyError::KeysUnavailable(
                        "the last JWKS fetch failed moments ago".into(),
                    ));
                }
                self.fetch().await
            }
        }
    }

    /// After a token named an unknown `kid`: a fresh fetch, unless one
    /// happened within `min_refetch_interval` (then `None`, or the keys a
    /// concurrent fetch just brought).
    async fn refetch_after_miss(&self) -> Option<Arc<Verifier>> {
        let started = Instant::now();
        let _one = self.inner.fetching.lock().await;
        if self.succeeded_since(started) {
            return self.snapshot().0;
        }
        if !self.may_attempt() {
            return None;
        }
        self.fetch().await.ok()
    }

    fn may_attempt(&self) -> bool {
        let state = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .last_attempt
            .is_none_or(|t| t.elapsed() >= self.inner.options.min_refetch_interval)
    }

    fn succeeded_since(&self, since: Instant) -> bool {
        let state = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        state.last_success.is_some_and(|t| t >= since)
    }

    /// One fetch (the caller holds `fetching`); the new keys replace the old
    /// ones only on success.
    async fn fetch(&self) -> Result<Arc<Verifier>, VerifyError> {
        let options = &self.inner.options;
        self.inner
            .state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .last_attempt = Some(Instant::now());
        let result = self.download().await;
        match result {
            Ok((verifier, max_age)) => {
                let verifier = Arc::new(verifier);
                let now = Instant::now();
                let lifetime = max_age
                    .unwrap_or(options.default_max_age)
                    .clamp(options.min_refetch_interval, options.max_cache);
                let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
                state.verifier = Some(verifier.clone());
                state.fresh_until = Some(now + lifetime);
                state.last_success = Some(now);
                drop(state);
                tracing::debug!(
                    url = %options.jwks_url,
                    kids = ?self.kids(),
                    cache_secs = lifetime.as_secs(),
                    "JWKS fetched"
                );
                Ok(verifier)
            }
            Err(e) => {
                tracing::warn!(url = %options.jwks_url, error = %e, "JWKS fetch failed");
                Err(e)
            }
        }
    }

    async fn download(&self) -> Result<(Verifier, Option<Duration>), VerifyError> {
        let options = &self.inner.options;
        let unavailable = |what: String| VerifyError::KeysUnavailable(what);
        let mut response = self
            .inner
            .http
            .get(&options.jwks_url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| unavailable(format!("GET {}: {e}", options.jwks_url)))?;
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "GET {} answered {}",
                options.jwks_url,
                response.status()
            )));
        }
        let max_age = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(max_age_of);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(format!("reading the JWKS: {e}")))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(unavailable("the JWKS is larger than 64 KiB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("the JWKS is not a JWK Set: {e}")))?;
        let (keys, refused) = set.verifying_keys();
        for problem in &refused {
            tracing::debug!(url = %options.jwks_url, %problem, "JWKS key skipped");
        }
        if keys.is_empty() {
            return Err(unavailable(format!(
                "the JWKS at {} has no usable key (ES256 or EdDSA)",
                options.jwks_url
            )));
        }
        let verifier = Verifier::new(keys, options.rules.clone())
            .map_err(|e| unavailable(format!("the JWKS is unusable: {e}")))?;
        Ok((verifier, max_age))
    }
}

/// `max-age` of a `Cache-Control` value; `no-store`/`no-cache` count as 0.
fn max_age_of(value: &str) -> Option<Duration> {
    value.split(',').map(str::trim).find_map(|directive| {
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache")
        {
            return Some(Duration::ZERO);
        }
        let (name, secs) = directive.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        secs.trim()
            .trim_matches('"')
            .parse()
            .ok()
            .map(Duration::from_secs)
    })
}

impl TokenVerifier for JwksVerifier {
    fn verify_token(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Claims, VerifyError>> + Send {
        self.verify(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{VerifyingKey, pem::fixtures::*};
    use axum::{Router, http::header, response::IntoResponse, routing::get};
    use base64::Engine as _;
    use ring::signature::{EcdsaKeyPair, KeyPair as _};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A JWKS server whose key set can be swapped, counting fetches.
    struct Jwks {
        url: String,
        set: Arc<RwLock<String>>,
        fetches: Arc<AtomicUsize>,
    }

    async fn serve_jwks(initial: &[&VerifyingKey], cache_control: &'static str) -> Jwks {
        let set = Arc::new(RwLock::new(json_of(initial)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (s, f) = (set.clone(), fetches.clone());
        let app = Router::new().route(
            "/jwks.json",
            get(move || {
                let (s, f) = (s.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    let body = s.read().unwrap().clone();
                    ([(header::CACHE_CONTROL, cache_control)], body).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Jwks { url, set, fetches }
    }

    fn json_of(keys: &[&VerifyingKey]) -> String {
        serde_json::to_string(&keys.iter().filter_map(|k| k.to_jwk()).collect::<JwkSet>()).unwrap()
    }

    struct Signer(EcdsaKeyPair);

    impl Signer {
        fn new() -> Self {
            let rng = ring::rand::SystemRandom::new();
            let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            Self(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
        }
        fn from_fixture() -> Self {
            let der = crate::pem::parse_single_key(P256_PRIVATE).unwrap().der;
            let rng = ring::rand::SystemRandom::new();
            Self(
                EcdsaKeyPair::from_pkcs8(
                    &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &der,
                    &rng,
                )
                .unwrap(),
            )
        }
        fn key(&self) -> VerifyingKey {
            VerifyingKey::es256(self.0.public_key().as_ref()).unwrap()
        }
        fn token(&self) -> String {
            let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            let now = crate::now_secs();
            let header = serde_json::json!({"alg":"ES256","typ":"at+jwt","kid": self.key().kid()});
            let claims =
                serde_json::json!({"iss":"iss","sub":"7","aud":"aud","iat": now,"exp": now + 60});
            let signed = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let sig = self
                .0
                .sign(&ring::rand::SystemRandom::new(), signed.as_bytes())
                .unwrap();
            format!("{signed}.{}", b64(sig.as_ref()))
        }
    }

    fn options(url: &str) -> JwksOptions {
        let mut o = JwksOptions::new(url, Rules::new("iss", "aud"));
        o.min_refetch_interval = Duration::from_millis(300);
        o
    }

    #[tokio::test]
    async fn keys_are_fetched_once_and_cached() {
        let old = Signer::from_fixture();
        let jwks = serve_jwks(&[&old.key()], "public, max-age=300").await;
        let v = JwksVerifier::with_options(options(&jwks.url)).unwrap();
        for _ in 0..20 {
            assert_eq!(v.verify(&old.token()).await.unwrap().sub, "7");
        }
        assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);
        assert_eq!(v.kids(), [old.key().kid().to_owned()]);
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_once_then_is_rate_limited() {
        let old = Signer::from_fixture();
        let new = Signer::new();
        let jwks = serve_jwks(&[&old.key()], "max-age=300").await;
        let v = JwksVerifier::with_options(options(&jwks.url)).unwrap();
        v.refresh().await.unwrap();
        // mp-auth rotates: the new key appears in the JWKS.
        *jwks.set.write().unwrap() = json_of(&[&new.key(), &old.key()]);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(v.verify(&new.token()).await.unwrap().sub, "7");
        assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2);
        // A flood of made-up kids costs at most one fetch per interval.
        let stranger = Signer::new();
        let flood: Vec<_> = (0..50)
            .map(|_| {
                let (v, t) = (v.clone(), stranger.token());
                tokio::spawn(async move { v.verify(&t).await })
            })
            .collect();
        for r in flood {
            assert_eq!(r.await.unwrap().unwrap_err().reason(), "KEY_UNKNOWN");
        }
        assert!(
            jwks.fetches.load(Ordering::SeqCst) <= 3,
            "{:?}",
            jwks.fetches
        );
    }

    #[tokio::test]
    async fn stale_keys_are_refreshed_and_kept_when_the_jwks_is_down() {
        let old = Signer::from_fixture();
        let jwks = serve_jwks(&[&old.key()], "max-age=0").await;
        let v = JwksVerifier::with_options(options(&jwks.url)).unwrap();
        v.refresh().await.unwrap();
        *jwks.set.write().unwrap() = "not json".into();
        tokio::time::sleep(Duration::from_millis(350)).await;
        // The refresh fails; the cached key still verifies.
        assert!(v.verify(&old.token()).await.is_ok());
        assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unreachable_jwks_is_keys_unavailable() {
        let v = JwksVerifier::with_options(options("http://127.0.0.1:9/jwks.json")).unwrap();
        let err = v.verify(&Signer::new().token()).await.unwrap_err();
        assert_eq!(err.reason(), "KEYS_UNAVAILABLE");
        // The next call within the interval does not hammer the JWKS.
        let started = Instant::now();
        assert_eq!(
            v.verify(&Signer::new().token()).await.unwrap_err().reason(),
            "KEYS_UNAVAILABLE"
        );
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn cache_control_max_age_is_read() {
        assert_eq!(
            max_age_of("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age_of("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age_of("public"), None);
        assert_eq!(max_age_of("max-age=abc"), None);
    }
}
