//! A tower layer that admits only requests bearing a valid mp-auth access
//! token (`Authorization: Bearer <token>`), for axum and tonic servers alike.
//! The verified [`Claims`] go into the request's extensions; handlers read
//! them with `Extension<Claims>` (axum) or `request.extensions().get::<Claims>()`
//! (tonic). Refusals never reach the service:
//!
//! - HTTP: `401` with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750)
//!   and `x-mp-auth-reason` (`TOKEN_MISSING`, `TOKEN_EXPIRED`, `TOKEN_INVALID`,
//!   `KEY_UNKNOWN`, ...); `503` when the keys cannot be fetched.
//! - gRPC (`content-type: application/grpc*`): `UNAUTHENTICATED` (or
//!   `UNAVAILABLE`) with the reason as `grpc-message`.

use crate::{Claims, TokenVerifier, VerifyError};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tower_layer::Layer;
use tower_service::Service;

/// Requires a valid token on every request of the wrapped service.
pub struct RequireToken<V> {
    verifier: Arc<V>,
}

impl<V> RequireToken<V> {
    /// Verifies with `verifier` (a [`crate::JwksVerifier`] or a [`crate::Verifier`]).
    pub fn new(verifier: V) -> Self {
        Self {
            verifier: Arc::new(verifier),
        }
    }

    /// Shares an existing verifier.
    pub fn from_arc(verifier: Arc<V>) -> Self {
        Self { verifier }
    }
}

impl<V> Clone for RequireToken<V> {
    fn clone(&self) -> Self {
        Self {
            verifier: self.verifier.clone(),
        }
    }
}

impl<S, V> Layer<S> for RequireToken<V> {
    type Service = RequireTokenService<S, V>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireTokenService {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service [`RequireToken`] produces.
pub struct RequireTokenService<S, V> {
    inner: S,
    verifier: Arc<V>,
}

impl<S: Clone, V> Clone for RequireTokenService<S, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            verifier: self.verifier.clone(),
        }
    }
}

/// A boxed response future.
pub type ResponseFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, V, ReqBody, ResBody> Service<Request<ReqBody>> for RequireTokenService<S, V>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
    V: TokenVerifier,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let grpc = is_grpc(request.headers());
            let Some(token) = bearer(request.headers()) else {
                return Ok(refusal(grpc, None));
            };
            match verifier.verify_token(&token).await {
                Ok(claims) => {
                    request.extensions_mut().insert::<Claims>(claims);
                    inner.call(request).await
                }
                Err(e) => {
                    tracing::debug!(reason = e.reason(), error = %e, "bearer token refused");
                    Ok(refusal(grpc, Some(&e)))
                }
            }
        })
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// The answer to a refused request; `error` is `None` when no token was sent.
fn refusal<B: Default>(grpc: bool, error: Option<&VerifyError>) -> Response<B> {
    let reason = error.map_or("TOKEN_MISSING", VerifyError::reason);
    let unavailable = matches!(error, Some(VerifyError::KeysUnavailable(_)));
    let mut response = Response::new(B::default());
    let status = if grpc {
        StatusCode::OK
    } else if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::UNAUTHORIZED
    };
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("x-mp-auth-reason", HeaderValue::from_static(reason));
    if grpc {
        // Trailers-only gRPC answer: HTTP 200 with the status in the headers.
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let code = if unavailable { "14" } else { "16" };
        headers.insert("grpc-status", HeaderValue::from_static(code));
        headers.insert("grpc-message", HeaderValue::from_static(reason));
        return response;
    }
    if unavailable {
        return response;
    }
    // RFC 6750 §3: no error attribute when no credentials were sent.
    let challenge = match error {
        None => "Bearer realm=\"mp-auth\"".to_owned(),
        Some(_) => {
            format!(
                "Bearer realm=\"mp-auth\", error=\"invalid_token\", error_description=\"{reason}\""
            )
        }
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Rules, Verifier, VerifyingKey, pem::fixtures::*};
    use axum::{Extension, Router, body::Body, routing::get};
    use base64::Engine as _;
    use ring::signature::EcdsaKeyPair;
    use tower::ServiceExt as _;

    fn token(exp_offset: i64) -> String {
        let der = crate::pem::parse_single_key(P256_PRIVATE).unwrap().der;
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der,
            &rng,
        )
        .unwrap();
        let kid = VerifyingKey::from_pem(P256_PUBLIC)
            .unwrap()
            .kid()
            .to_owned();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let now = crate::now_secs();
        let signed = format!(
            "{}.{}",
            b64(serde_json::json!({"alg":"ES256","typ":"at+jwt","kid": kid}).to_string().as_bytes()),
            b64(serde_json::json!({"iss":"iss","sub":"42","aud":"aud","iat": now - 100,"exp": now + exp_offset,"client_id":"wxa"}).to_string().as_bytes())
        );
        let sig = pair.sign(&rng, signed.as_bytes()).unwrap();
        format!("{signed}.{}", b64(sig.as_ref()))
    }

    fn app() -> Router {
        let verifier = Verifier::new(
            vec![VerifyingKey::from_pem(P256_PUBLIC).unwrap()],
            Rules::new("iss", "aud"),
        )
        .unwrap();
        Router::new()
            .route(
                "/me",
                get(|Extension(claims): Extension<Claims>| async move { claims.sub }),
            )
            .layer(RequireToken::new(verifier))
    }

    async fn call(request: Request<Body>) -> Response<Body> {
        app().oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn a_valid_token_reaches_the_handler_with_its_claims() {
        let response = call(
            Request::get("/me")
                .header("authorization", format!("Bearer {}", token(60)))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"42");
    }

    #[tokio::test]
    async fn http_refusals_are_401_with_a_bearer_challenge_and_a_reason() {
        let missing = call(Request::get("/me").body(Body::empty()).unwrap()).await;
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            missing.headers()["www-authenticate"],
            "Bearer realm=\"mp-auth\""
        );
        assert_eq!(missing.headers()["x-mp-auth-reason"], "TOKEN_MISSING");
        let expired = call(
            Request::get("/me")
                .header("authorization", format!("bearer {}", token(-3600)))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(expired.headers()["x-mp-auth-reason"], "TOKEN_EXPIRED");
        assert!(
            expired.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("error=\"invalid_token\"")
        );
        let basic = call(
            Request::get("/me")
                .header("authorization", "Basic dXNlcjpwYXNz")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(basic.headers()["x-mp-auth-reason"], "TOKEN_MISSING");
    }

    #[tokio::test]
    async fn grpc_refusals_are_unauthenticated_trailers_only() {
        let response = call(
            Request::post("/me")
                .header("content-type", "application/grpc")
                .header("authorization", "Bearer not.a.token")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "16");
        assert_eq!(response.headers()["grpc-message"], "TOKEN_INVALID");
    }
}
