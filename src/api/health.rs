//! Names of the `grpc.health.v1.Health` services the gRPC server reports and
//! the gateway's readiness probe checks.

/// Stays SERVING while the process is alive (Kubernetes liveness probe).
pub const HEALTH_LIVENESS: &str = "liveness";
/// The Auth service: SERVING only while the database answers and migrations
/// are current (Kubernetes readiness probe). The empty name `""` follows it.
pub const HEALTH_AUTH: &str = "mpauth.v1.Auth";
