//! The `mpauth.v1.Users` service: authenticates the internal caller (API key
//! and permission per RPC), parses the wire request into domain types, runs
//! the Users use case and shapes the answer.

use super::{caller_auth::authorize, error::users_status};
use crate::{
    callers::{Caller, CallerRegistry, Permission},
    domain::{AppId, FieldError, OpenId, Phone, UnionId},
    proto::{self, lookup_user_request::Key},
    store::{UserKey, UserRecord},
    users::{Actor, DeletionReason, UsersError, UsersService, parse_user_id},
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The gRPC service implementation.
pub struct UsersGrpc {
    users: Arc<UsersService>,
    callers: Arc<CallerRegistry>,
}

impl UsersGrpc {
    pub fn new(users: Arc<UsersService>, callers: Arc<CallerRegistry>) -> Self {
        Self { users, callers }
    }

    /// A caller allowed to read users, and full phone numbers if `with_phone`.
    fn reader<T>(&self, request: &Request<T>, with_phone: bool) -> Result<Caller, Status> {
        let caller = authorize(&self.callers, request, Permission::UsersRead)?;
        if with_phone {
            caller
                .require(Permission::UsersReadPhone)
                .map_err(|e| super::error::caller_status(&e))?;
        }
        Ok(caller)
    }
}

fn to_wire(user: UserRecord, with_phone: bool) -> proto::User {
    proto::User {
        user_id: user.id.to_string(),
        phone_masked: user.phone.masked(),
        phone: if with_phone {
            user.phone.e164()
        } else {
            String::new()
        },
        country_code: user.phone.country_code().to_owned(),
        created_at_ms: user.created_at_ms,
        last_login_at_ms: user.last_login_at_ms,
        identities: user
            .identities
            .into_iter()
            .map(|i| proto::Identity {
                app_id: i.app_id,
                openid: i.openid,
                unionid: i.unionid.unwrap_or_default(),
            })
            .collect(),
    }
}

fn parse_phone(p: &proto::PhoneNumber) -> Result<Phone, FieldError> {
    let cc = if p.country_code.trim().is_empty() {
        "86"
    } else {
        &p.country_code
    };
    Phone::new(cc, &p.number)
        .map_err(|_| FieldError::new("phone", "must be a country code and a national number"))
}

fn status(err: UsersError) -> Status {
    if let UsersError::Internal(source) = &err {
        tracing::error!(error = format!("{source:#}"), "users RPC failed");
    }
    users_status(&err)
}

#[tonic::async_trait]
impl proto::users_server::Users for UsersGrpc {
    async fn get_user(
        &self,
        request: Request<proto::GetUserRequest>,
    ) -> Result<Response<proto::User>, Status> {
        let caller = self.reader(&request, request.get_ref().include_phone)?;
        let req = request.get_ref();
        let id = parse_user_id(&req.user_id).map_err(|e| status(e.into()))?;
        let user = self
            .users
            .get(Actor::Service(&caller.name), id, req.include_phone)
            .await
            .map_err(status)?;
        Ok(Response::new(to_wire(user, req.include_phone)))
    }

    async fn lookup_user(
        &self,
        request: Request<proto::LookupUserRequest>,
    ) -> Result<Response<proto::User>, Status> {
        let caller = self.reader(&request, request.get_ref().include_phone)?;
        let req = request.get_ref();
        let actor = Actor::Service(&caller.name);
        let user = match &req.key {
            Some(Key::Identity(identity)) => {
                let app = AppId::parse(&identity.app_id).map_err(|e| status(e.into()))?;
                let openid = OpenId::parse(&identity.openid).map_err(|e| status(e.into()))?;
                self.users
                    .lookup(actor, UserKey::Identity(&app, &openid), req.include_phone)
                    .await
            }
            Some(Key::Unionid(unionid)) => {
                let unionid = UnionId::parse(unionid).map_err(|e| status(e.into()))?;
                self.users
                    .lookup(actor, UserKey::UnionId(&unionid), req.include_phone)
                    .await
            }
            Some(Key::Phone(phone)) => {
                let phone = parse_phone(phone).map_err(|e| status(e.into()))?;
                self.users
                    .lookup(actor, UserKey::Phone(&phone), req.include_phone)
                    .await
            }
            None => Err(UsersError::InvalidField(FieldError::new(
                "key",
                "is required: identity (app_id + openid), unionid or phone",
            ))),
        }
        .map_err(status)?;
        Ok(Response::new(to_wire(user, req.include_phone)))
    }

    async fn list_sessions(
        &self,
        request: Request<proto::ListSessionsRequest>,
    ) -> Result<Response<proto::ListSessionsResponse>, Status> {
        self.reader(&request, false)?;
        let id = parse_user_id(&request.get_ref().user_id).map_err(|e| status(e.into()))?;
        let sessions = self.users.sessions(id).await.map_err(status)?;
        Ok(Response::new(proto::ListSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|s| proto::Session {
                    session_id: s.id,
                    app_id: s.app_id,
                    openid: s.openid,
                    created_at_ms: s.created_at_ms,
                    last_used_at_ms: s.last_used_at_ms,
                    expires_at_ms: s.idle_expires_at_ms.min(s.expires_at_ms),
                })
                .collect(),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<proto::RevokeSessionRequest>,
    ) -> Result<Response<proto::RevokeSessionResponse>, Status> {
        let caller = authorize(&self.callers, &request, Permission::SessionsRevoke)?;
        let sid = request.get_ref().session_id.trim();
        if sid.is_empty() || sid.len() > 64 {
            return Err(status(UsersError::InvalidField(FieldError::new(
                "session_id",
                "is required (at most 64 characters)",
            ))));
        }
        let (user_id, revoked_now) = self
            .users
            .revoke_session(Actor::Service(&caller.name), sid)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::RevokeSessionResponse {
            revoked_now,
            user_id: user_id.to_string(),
        }))
    }

    async fn delete_user(
        &self,
        request: Request<proto::DeleteUserRequest>,
    ) -> Result<Response<proto::DeleteUserResponse>, Status> {
        let caller = authorize(&self.callers, &request, Permission::UsersDelete)?;
        let req = request.get_ref();
        let id = parse_user_id(&req.user_id).map_err(|e| status(e.into()))?;
        let reason = DeletionReason::parse(&req.reason).map_err(|e| status(e.into()))?;
        let outcome = self
            .users
            .delete(Actor::Service(&caller.name), id, &reason)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::DeleteUserResponse {
            user_id: outcome.user_id.to_string(),
            deleted_at_ms: outcome.deleted_at_ms,
            deleted_now: outcome.deleted_now,
            identities_erased: outcome.identities_erased,
            sessions_revoked: outcome.sessions_revoked,
        }))
    }
}
