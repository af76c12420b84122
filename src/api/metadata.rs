//! gRPC metadata (HTTP header) names of the contract. Lower case, as HTTP/2 sends them.

/// The request id: set by the gateway (from `X-Request-Id`) and logged by the service.
pub const REQUEST_ID: &str = "x-request-id";
/// The mini-program client's IP as the gateway saw it (for per-client limits and logs).
pub const CLIENT_IP: &str = "x-client-ip";
/// An internal caller's API key: `authorization: Bearer mpk_...`.
pub const AUTHORIZATION: &str = "authorization";
