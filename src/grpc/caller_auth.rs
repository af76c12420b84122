//! Authentication of internal callers on the gRPC port: the `authorization`
//! metadata is checked against the configured API keys (see [`crate::callers`])
//! and the handler then requires the permission its RPC needs.

use super::error::caller_status;
use crate::callers::{Caller, CallerRegistry, Permission};
use std::time::Instant;
use tonic::{Request, Status};

/// The caller of `request`, holding `permission`, or the status to answer.
pub fn authorize<T>(
    registry: &CallerRegistry,
    request: &Request<T>,
    permission: Permission,
) -> Result<Caller, Status> {
    let authorization = request
        .metadata()
        .get(crate::api::metadata::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let source = request.remote_addr().map(|a| a.ip());
    let caller = registry
        .authenticate(authorization, source, Instant::now())
        .map_err(|e| caller_status(&e))?;
    caller.require(permission).map_err(|e| caller_status(&e))?;
    Ok(caller)
}
