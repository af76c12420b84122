//! The `mpauth.v1.Auth` service: parses the wire request into domain types,
//! runs the login use case, and writes one log line and metrics per request.

use super::{
    caller_auth::authorize,
    error::{row, session_status, to_status, verify_status},
};
use crate::{
    api::{metadata, reason_of},
    app::App,
    callers::{CallerRegistry, Permission},
    domain::{AppId, FieldError, LoginCode, PhoneCode},
    login::{LoginError, LoginRequest, LoginService, PhoneProof},
    proto::{self, mini_program_login_request::Phone},
    sessions::{LogoutCredential, SessionError, SessionService, VerifyError},
    users::{Actor, DeletionReason, UsersError, UsersService, parse_user_id},
};
use secrecy::ExposeSecret as _;
use std::{sync::Arc, time::Instant};
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

/// Largest accepted `encrypted_data` (the phone payload is ~200 characters).
const MAX_ENCRYPTED_DATA_LEN: usize = 4096;

/// The gRPC service implementation.
pub struct AuthService {
    login: Arc<LoginService>,
    sessions: Arc<SessionService>,
    users: Arc<UsersService>,
    callers: Arc<CallerRegistry>,
    /// Set with `grpc.protect_login_rpcs`: the login, refresh and logout RPCs
    /// need a key with `auth:login`.
    protect_login: bool,
    /// The detached login tasks, waited for by graceful shutdown.
    tracker: TaskTracker,
}

impl AuthService {
    /// The service of `app`; detached logins are tracked by `tracker`.
    pub fn new(app: &App, tracker: TaskTracker) -> Self {
        Self {
            login: app.login.clone(),
            sessions: app.sessions.clone(),
            users: app.users.clone(),
            callers: app.callers.clone(),
            protect_login: false,
            tracker,
        }
    }

    /// Requires an API key with `auth:login` on the login, refresh and logout RPCs.
    pub fn protect_login_rpcs(mut self) -> Self {
        self.protect_login = true;
        self
    }

    fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.protect_login {
            authorize(&self.callers, request, Permission::AuthLogin).map(|_| ())
        } else {
            Ok(())
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
        Some(Phone::PhoneCode(c)) => Some(PhoneProof::Code(PhoneCode::parse(&c)?)),
        Some(Phone::Encrypted(e)) => {
            for (field, value) in [("encrypted_data", &e.encrypted_data), ("iv", &e.iv)] {
                if value.trim().is_empty() {
                    return Err(FieldError::new(field, "is required"));
                }
                if value.len() > MAX_ENCRYPTED_DATA_LEN {
                    return Err(FieldError::new(field, "is too long"));
                }
            }
            Some(PhoneProof::Encrypted {
                encrypted_data: e.encrypted_data,
                iv: e.iv,
            })
        }
        // A silent login (静默登录).
        None => None,
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

/// Who asked, for the log lines.
struct CallContext {
    request_id: String,
    client_ip: String,
    started: Instant,
}

impl CallContext {
    fn of<T>(request: &Request<T>) -> Self {
        let client_ip = match metadata_str(request, metadata::CLIENT_IP) {
            "" => request
                .remote_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
            ip => ip.to_owned(),
        };
        Self {
            request_id: metadata_str(request, metadata::REQUEST_ID).to_owned(),
            client_ip,
            started: Instant::now(),
        }
    }
}

/// One login, from the wire request to the log line and metrics. Runs on its
/// own task: it completes (and is recorded) even if the caller leaves.
async fn run_login(
    login: Arc<LoginService>,
    ctx: CallContext,
    wire: proto::MiniProgramLoginRequest,
) -> Result<Response<proto::MiniProgramLoginResponse>, Status> {
    let CallContext {
        request_id,
        client_ip,
        started,
    } = ctx;
    // Labels and log fields name only a configured app, never the wire value:
    // a client must not be able to mint new metric series.
    let mut resolved_app = String::new();
    let (flow, result) = match parse_request(wire) {
        Ok(parsed) => {
            let flow = parsed.flow();
            if let Ok(app) = login.resolve_app(parsed.app_id.as_ref()) {
                resolved_app = app.as_str().to_owned();
            }
            (flow, login.login(parsed).await)
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
                user_id = %ok.user_id, is_new_user = ok.is_new_user, session_id = %ok.session.session_id,
                phone = %ok.phone_masked, latency_ms = elapsed.as_secs_f64() * 1e3, "login"
            );
            let session = ok.session;
            Ok(Response::new(proto::MiniProgramLoginResponse {
                access_token: session.access_token.expose().to_owned(),
                token_type: "Bearer".into(),
                expires_in: session.expires_in as i64,
                user_id: ok.user_id.to_string(),
                openid: ok.openid.as_str().to_owned(),
                unionid: ok
                    .unionid
                    .map(|u| u.as_str().to_owned())
                    .unwrap_or_default(),
                is_new_user: ok.is_new_user,
                app_id: ok.app_id.as_str().to_owned(),
                refresh_token: session.refresh_token.expose_secret().to_owned(),
                refresh_expires_in: session.refresh_expires_in as i64,
                session_id: session.session_id,
                linked_by_unionid: ok.linked_by_unionid,
            }))
        }
        Err(err) => {
            let r = row(&err);
            let app_id = resolved_app.as_str();
            metrics::counter!("mp_auth_logins_total", "outcome" => "error", "reason" => r.reason.as_str(), "flow" => flow, "app_id" => resolved_app.clone()).increment(1);
            if let LoginError::Internal(source) = &err {
                tracing::error!(
                    request_id,
                    client_ip,
                    app_id,
                    flow,
                    outcome = "error",
                    reason = r.reason.as_str(),
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
                    reason = r.reason.as_str(),
                    latency_ms = elapsed.as_secs_f64() * 1e3,
                    "login"
                );
            }
            Err(to_status(&err))
        }
    }
}

fn optional_app(app_id: &str) -> Result<Option<AppId>, FieldError> {
    if app_id.is_empty() {
        Ok(None)
    } else {
        AppId::parse(app_id).map(Some)
    }
}

/// One log line and the status of a failed session call.
fn session_failure(ctx: &CallContext, action: &'static str, err: &SessionError) -> Status {
    let status = session_status(err);
    let reason = reason_of(&status).unwrap_or_default();
    let latency_ms = ctx.started.elapsed().as_secs_f64() * 1e3;
    if let SessionError::Internal(source) = err {
        tracing::error!(
            request_id = ctx.request_id,
            client_ip = ctx.client_ip,
            action,
            outcome = "error",
            reason,
            error = format!("{source:#}"),
            latency_ms,
            "session"
        );
    } else {
        tracing::info!(
            request_id = ctx.request_id,
            client_ip = ctx.client_ip,
            action,
            outcome = "error",
            reason,
            latency_ms,
            "session"
        );
    }
    status
}

#[tonic::async_trait]
impl proto::auth_server::Auth for AuthService {
    async fn mini_program_login(
        &self,
        request: Request<proto::MiniProgramLoginRequest>,
    ) -> Result<Response<proto::MiniProgramLoginResponse>, Status> {
        self.admit(&request)?;
        let ctx = CallContext::of(&request);
        let wire = request.into_inner();
        let login = self.login.clone();
        let (answer, answered) = tokio::sync::oneshot::channel();
        // WeChat codes are single-use: once accepted, a login runs to the end
        // and records its outcome whoever is still listening (the tracker lets
        // graceful shutdown wait for it).
        self.tracker.spawn(async move {
            let result = run_login(login, ctx, wire).await;
            if answer.send(result).is_err() {
                metrics::counter!("mp_auth_logins_completed_after_caller_left_total").increment(1);
                tracing::info!("login completed after the caller left");
            }
        });
        answered
            .await
            .unwrap_or_else(|_| Err(Status::internal("internal error")))
    }

    async fn refresh_session(
        &self,
        request: Request<proto::RefreshSessionRequest>,
    ) -> Result<Response<proto::RefreshSessionResponse>, Status> {
        self.admit(&request)?;
        let ctx = CallContext::of(&request);
        let req = request.into_inner();
        let sessions = &self.sessions;
        let result = match optional_app(&req.app_id) {
            Ok(app) => sessions.refresh(app.as_ref(), &req.refresh_token).await,
            Err(field) => Err(SessionError::InvalidField(field)),
        };
        let tokens = result.map_err(|e| session_failure(&ctx, "refresh", &e))?;
        tracing::info!(request_id = ctx.request_id, client_ip = ctx.client_ip, action = "refresh",
            outcome = "success", app_id = %tokens.app_id, user_id = %tokens.user_id,
            session_id = %tokens.session_id,
            latency_ms = ctx.started.elapsed().as_secs_f64() * 1e3, "session");
        Ok(Response::new(proto::RefreshSessionResponse {
            access_token: tokens.access_token.expose().to_owned(),
            token_type: "Bearer".into(),
            expires_in: tokens.expires_in as i64,
            refresh_token: tokens.refresh_token.expose_secret().to_owned(),
            refresh_expires_in: tokens.refresh_expires_in as i64,
            session_id: tokens.session_id,
            user_id: tokens.user_id.to_string(),
            app_id: tokens.app_id.as_str().to_owned(),
        }))
    }

    async fn logout(
        &self,
        request: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        self.admit(&request)?;
        self.do_logout(request, false).await
    }

    async fn logout_all(
        &self,
        request: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        self.admit(&request)?;
        self.do_logout(request, true).await
    }

    async fn verify_token(
        &self,
        request: Request<proto::VerifyTokenRequest>,
    ) -> Result<Response<proto::VerifyTokenResponse>, Status> {
        self.verify(request).await
    }

    async fn delete_account(
        &self,
        request: Request<proto::DeleteAccountRequest>,
    ) -> Result<Response<proto::DeleteAccountResponse>, Status> {
        self.admit(&request)?;
        let req = request.into_inner();
        let verified = self
            .sessions
            .verify_online(req.access_token.trim())
            .map_err(|e| verify_status(&e))?;
        let users_status = |e: UsersError| super::error::users_status(&e);
        let user_id = parse_user_id(&verified.claims.sub)
            .map_err(|e| users_status(UsersError::InvalidField(e)))?;
        let reason = if req.reason.trim().is_empty() {
            DeletionReason::parse("user_request")
        } else {
            DeletionReason::parse(&req.reason)
        }
        .map_err(|e| users_status(UsersError::InvalidField(e)))?;
        let outcome = self
            .users
            .delete(Actor::User, user_id, &reason)
            .await
            .map_err(users_status)?;
        Ok(Response::new(proto::DeleteAccountResponse {
            user_id: outcome.user_id.to_string(),
            deleted_at_ms: outcome.deleted_at_ms,
            sessions_revoked: outcome.sessions_revoked,
        }))
    }

    async fn get_jwks(
        &self,
        _request: Request<proto::GetJwksRequest>,
    ) -> Result<Response<proto::GetJwksResponse>, Status> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let keys = self
            .sessions
            .tokens()
            .jwks()
            .keys
            .iter()
            .map(|k| proto::Jwk {
                kty: k.kty.clone(),
                crv: text(&k.crv),
                x: text(&k.x),
                y: text(&k.y),
                kid: text(&k.kid),
                alg: text(&k.alg),
                r#use: text(&k.key_use),
            })
            .collect();
        Ok(Response::new(proto::GetJwksResponse { keys }))
    }
}

impl AuthService {
    async fn verify(
        &self,
        request: Request<proto::VerifyTokenRequest>,
    ) -> Result<Response<proto::VerifyTokenResponse>, Status> {
        let caller = authorize(&self.callers, &request, Permission::TokensVerify)?;
        let token = request.get_ref().access_token.trim();
        let token = token.strip_prefix("Bearer ").unwrap_or(token);
        match self.sessions.verify_online(token) {
            Ok(verified) => {
                let c = verified.claims;
                metrics::counter!("mp_auth_token_verifications_total", "outcome" => "valid")
                    .increment(1);
                Ok(Response::new(proto::VerifyTokenResponse {
                    user_id: c.sub,
                    app_id: c.client_id.unwrap_or_default(),
                    session_id: c.sid.unwrap_or_default(),
                    expires_at: c.exp,
                    issued_at: c.iat,
                    jti: c.jti.unwrap_or_default(),
                    key_id: c.key_id,
                }))
            }
            Err(err) => {
                let status = verify_status(&err);
                let reason = reason_of(&status).unwrap_or_default();
                metrics::counter!("mp_auth_token_verifications_total", "outcome" => reason.to_ascii_lowercase()).increment(1);
                if let VerifyError::Invalid(detail) = &err {
                    tracing::debug!(caller = caller.name, detail, "token refused");
                }
                Err(status)
            }
        }
    }

    async fn do_logout(
        &self,
        request: Request<proto::LogoutRequest>,
        all: bool,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        use proto::logout_request::Credential;
        let ctx = CallContext::of(&request);
        let action = if all { "logout_all" } else { "logout" };
        let credential = match &request.get_ref().credential {
            Some(Credential::RefreshToken(t)) if !t.is_empty() => LogoutCredential::RefreshToken(t),
            Some(Credential::AccessToken(t)) if !t.is_empty() => LogoutCredential::AccessToken(t),
            _ => {
                let err = SessionError::InvalidField(FieldError::new(
                    "credential",
                    "is required: refresh_token or access_token",
                ));
                return Err(session_failure(&ctx, action, &err));
            }
        };
        let outcome = self
            .sessions
            .logout(credential, all)
            .await
            .map_err(|e| session_failure(&ctx, action, &e))?;
        tracing::info!(request_id = ctx.request_id, client_ip = ctx.client_ip, action,
            outcome = "success", user_id = %outcome.user_id, sessions_revoked = outcome.sessions_revoked,
            latency_ms = ctx.started.elapsed().as_secs_f64() * 1e3, "session");
        Ok(Response::new(proto::LogoutResponse {
            user_id: outcome.user_id.to_string(),
            sessions_revoked: outcome.sessions_revoked,
        }))
    }
}
