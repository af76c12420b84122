//! The `mpauth.v1.Auth` service: parses the wire request into domain types,
//! runs the login use case, and writes one log line and metrics per request.

use super::{
    caller_auth::authorize,
    error::{row, to_status},
};
use crate::callers::{CallerRegistry, Permission};
use crate::{
    domain::{AppId, FieldError, LoginCode, PhoneCode},
    login::{LoginError, LoginRequest, LoginService, PhoneProof},
    proto::{self, mini_program_login_request::Phone},
};
use std::{sync::Arc, time::Instant};
use tonic::{Request, Response, Status};

/// Largest accepted `encrypted_data` (the phone payload is ~200 characters).
const MAX_ENCRYPTED_DATA_LEN: usize = 4096;
/// Metadata the gateway sets: the request id and the mini-program client's IP.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const CLIENT_IP_HEADER: &str = "x-client-ip";

/// The gRPC service implementation.
pub struct AuthService {
    login: Arc<LoginService>,
    /// Set with `grpc.protect_login_rpcs`: callers need a key with `auth:login`.
    guard: Option<Arc<CallerRegistry>>,
}

impl AuthService {
    pub fn new(login: Arc<LoginService>) -> Self {
        Self { login, guard: None }
    }

    /// Requires an API key with `auth:login` on every RPC of this service.
    pub fn protected_by(mut self, callers: Arc<CallerRegistry>) -> Self {
        self.guard = Some(callers);
        self
    }

    fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match &self.guard {
            Some(callers) => authorize(callers, request, Permission::AuthLogin).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// Parses the wire request; every error names the offending field.
pub fn parse_request(req: proto::MiniProgramLoginRequest) -> Result<LoginRequest, FieldError> {
    let app_id = if req.app_id.is_empty() {
        None
    } else {
        Some(AppId::parse(&req.app_id)?)
    };
    let code = LoginCode::parse(&req.code)?;
    let phone = match req.phone {
        Some(Phone::PhoneCode(c)) => PhoneProof::Code(PhoneCode::parse(&c)?),
        Some(Phone::Encrypted(e)) => {
            for (field, value) in [("encrypted_data", &e.encrypted_data), ("iv", &e.iv)] {
                if value.trim().is_empty() {
                    return Err(FieldError::new(field, "is required"));
                }
                if value.len() > MAX_ENCRYPTED_DATA_LEN {
                    return Err(FieldError::new(field, "is too long"));
                }
            }
            PhoneProof::Encrypted {
                encrypted_data: e.encrypted_data,
                iv: e.iv,
            }
        }
        None => {
            return Err(FieldError::new(
                "phone",
                "is required: send phone_code (preferred) or encrypted.encrypted_data + encrypted.iv",
            ));
        }
    };
    Ok(LoginRequest {
        app_id,
        code,
        phone,
    })
}

fn metadata_str<'a, T>(req: &'a Request<T>, key: &str) -> &'a str {
    req.metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .unwrap_or("")
}

#[tonic::async_trait]
impl proto::auth_server::Auth for AuthService {
    async fn mini_program_login(
        &self,
        request: Request<proto::MiniProgramLoginRequest>,
    ) -> Result<Response<proto::MiniProgramLoginResponse>, Status> {
        self.admit(&request)?;
        let started = Instant::now();
        let request_id = metadata_str(&request, REQUEST_ID_HEADER).to_owned();
        let client_ip = match metadata_str(&request, CLIENT_IP_HEADER) {
            "" => request
                .remote_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
            ip => ip.to_owned(),
        };
        let wire = request.into_inner();
        // Labels and log fields name only a configured app, never the wire value:
        // a client must not be able to mint new metric series.
        let mut resolved_app = String::new();
        let (flow, result) = match parse_request(wire) {
            Ok(parsed) => {
                let flow = parsed.phone.flow();
                if let Ok(app) = self.login.resolve_app(parsed.app_id.as_ref()) {
                    resolved_app = app.as_str().to_owned();
                }
                (flow, self.login.login(parsed).await)
            }
            Err(field) => ("unknown", Err(LoginError::InvalidField(field))),
        };
        let elapsed = started.elapsed();
        metrics::histogram!("mp_auth_login_duration_seconds", "flow" => flow)
            .record(elapsed.as_secs_f64());
        match result {
            Ok(ok) => {
                metrics::counter!("mp_auth_logins_total", "outcome" => "success", "reason" => "OK", "flow" => flow, "app_id" => ok.app_id.to_string()).increment(1);
                tracing::info!(
                    request_id, client_ip, app_id = %ok.app_id, flow, outcome = "success", reason = "OK",
                    user_id = %ok.user_id, is_new_user = ok.is_new_user, phone = %ok.phone_masked,
                    latency_ms = elapsed.as_secs_f64() * 1e3, "login"
                );
                Ok(Response::new(proto::MiniProgramLoginResponse {
                    access_token: ok.access_token,
                    token_type: "Bearer".into(),
                    expires_in: ok.expires_in as i64,
                    user_id: ok.user_id.to_string(),
                    openid: ok.openid.as_str().to_owned(),
                    unionid: ok
                        .unionid
                        .map(|u| u.as_str().to_owned())
                        .unwrap_or_default(),
                    is_new_user: ok.is_new_user,
                    app_id: ok.app_id.as_str().to_owned(),
                }))
            }
            Err(err) => {
                let r = row(&err);
                let app_id = resolved_app.as_str();
                metrics::counter!("mp_auth_logins_total", "outcome" => "error", "reason" => r.reason, "flow" => flow, "app_id" => resolved_app.clone()).increment(1);
                if let LoginError::Internal(source) = &err {
                    tracing::error!(
                        request_id,
                        client_ip,
                        app_id,
                        flow,
                        outcome = "error",
                        reason = r.reason,
                        error = format!("{source:#}"),
                        latency_ms = elapsed.as_secs_f64() * 1e3,
                        "login"
                    );
                } else {
                    tracing::info!(
                        request_id,
                        client_ip,
                        app_id,
                        flow,
                        outcome = "error",
                        reason = r.reason,
                        latency_ms = elapsed.as_secs_f64() * 1e3,
                        "login"
                    );
                }
                Err(to_status(&err))
            }
        }
    }
}
