//! The gRPC edge: the `mpauth.v1.Auth` service, its one error table, health,
//! reflection and the server lifecycle. Generated types stay here and in the gateway.

pub mod auth;
pub mod caller_auth;
pub mod error;
pub mod server;
pub mod users;

pub use server::GrpcServer;
