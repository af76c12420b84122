//! An internal service that accepts only mp-auth access tokens, verified
//! offline with `mp-auth-verifier` against mp-auth's JWKS: an HTTP API (axum)
//! and a gRPC server (tonic; the standard health service stands in for yours),
//! both behind the same `RequireToken` layer.
//!
//! ```sh
//! # with `cargo run -- dev` running:
//! MP_AUTH_JWKS_URL=http://127.0.0.1:8080/.well-known/jwks.json \
//!   cargo run --example internal_service
//! TOKEN=...   # an access token from a login
//! curl -H "authorization: Bearer $TOKEN" http://127.0.0.1:3000/me
//! grpcurl -plaintext -H "authorization: Bearer $TOKEN" 127.0.0.1:3001 grpc.health.v1.Health/Check
//! ```
//!
//! Offline verification cannot see logouts: a token stays valid until its
//! `exp` (at most 2 h). Where that matters, call `Auth.VerifyToken` instead.

use axum::{Extension, Json, Router, routing::get};
use mp_auth_verifier::{Claims, JwksVerifier, Rules, layer::RequireToken};
use std::net::SocketAddr;

/// The verifier of this service: mp-auth's JWKS at `jwks_url`, tokens for
/// `audience` from `issuer` (mp-auth's `token.issuer` / `token.audience`).
pub fn verifier(
    jwks_url: &str,
    issuer: &str,
    audience: &str,
) -> Result<JwksVerifier, mp_auth_verifier::VerifyError> {
    JwksVerifier::new(jwks_url, Rules::new(issuer, audience))
}

/// The HTTP API: every route needs a valid token.
pub fn http_api(verifier: JwksVerifier) -> Router {
    Router::new()
        .route("/me", get(me))
        .layer(RequireToken::new(verifier))
}

/// Who is calling, straight from the verified token.
async fn me(Extension(claims): Extension<Claims>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "user_id": claims.user_id(),
        "app_id": claims.app_id(),
        "session_id": claims.session_id(),
        "key_id": claims.key_id,
    }))
}

/// The gRPC server: every service added to it needs a valid token.
pub fn grpc_server(
    verifier: JwksVerifier,
) -> tonic::transport::server::Router<
    tower::layer::util::Stack<RequireToken<JwksVerifier>, tower::layer::util::Identity>,
> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    tonic::transport::Server::builder()
        .layer(RequireToken::new(verifier))
        .add_service(health)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let jwks_url = env(
        "MP_AUTH_JWKS_URL",
        "http://127.0.0.1:8080/.well-known/jwks.json",
    );
    let verifier = verifier(
        &jwks_url,
        &env("MP_AUTH_ISSUER", "mp-auth"),
        &env("MP_AUTH_AUDIENCE", "mp-auth-clients"),
    )?;
    // Fail at start-up if the keys cannot be fetched, rather than on the first request.
    let keys = verifier.refresh().await?;
    let http_addr: SocketAddr = env("LISTEN", "127.0.0.1:3000").parse()?;
    let grpc_addr: SocketAddr = env("GRPC_LISTEN", "127.0.0.1:3001").parse()?;
    println!("{keys} key(s) from {jwks_url}; HTTP on {http_addr}, gRPC on {grpc_addr}");
    let listener = tokio::net::TcpListener::bind(http_addr).await?;
    let http = axum::serve(listener, http_api(verifier.clone()));
    let grpc = grpc_server(verifier).serve(grpc_addr);
    tokio::try_join!(
        async { http.await.map_err(Box::<dyn std::error::Error>::from) },
        async { grpc.await.map_err(Box::<dyn std::error::Error>::from) },
    )?;
    Ok(())
}
