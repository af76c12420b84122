//! The Users use case for internal services: read a user with its
//! identities, look one up by identity, unionid or phone, and delete one
//! (账号注销). Every deletion and full-phone read is written to the audit log
//! (`mp_auth::audit` target: who, what, which user id; never the phone).

use crate::clock::now_ms;
use crate::{
    domain::{FieldError, UserId},
    store::{
        Deletion, RevokeReason, SessionRow, Store, StoreError, Tombstone, UserKey, UserRecord,
    },
};

/// Why a Users call failed. Each variant is one row of the gRPC table.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// A field is missing or malformed (INVALID_ARGUMENT, `INVALID_ARGUMENT`).
    #[error(transparent)]
    InvalidField(#[from] FieldError),
    /// No live user matches (NOT_FOUND, `USER_NOT_FOUND`).
    #[error("no such user")]
    NotFound,
    /// The user was deleted (NOT_FOUND, `USER_DELETED`).
    #[error("the user was deleted")]
    Deleted(Tombstone),
    /// No such session (NOT_FOUND, `SESSION_NOT_FOUND`).
    #[error("no such session")]
    SessionNotFound,
    /// The database is unreachable or saturated (UNAVAILABLE, `DATABASE_UNAVAILABLE`).
    #[error("the user database is unavailable: retry later")]
    DatabaseUnavailable,
    /// Anything else; details are logged, never returned (INTERNAL, `INTERNAL`).
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<StoreError> for UsersError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Contention => Self::DatabaseUnavailable,
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}

/// Who asks: an internal service (by its configured name) or the user itself.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// An internal caller authenticated by its API key.
    Service(&'a str),
    /// The user, authenticated by its own access token.
    User,
}

impl Actor<'_> {
    fn name(&self) -> &str {
        match self {
            Self::Service(name) => name,
            Self::User => "self",
        }
    }
}

/// A parsed deletion reason: 1-64 of letters, digits, `_ - : .`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionReason(String);

impl DeletionReason {
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(FieldError::new("reason", "is required"));
        }
        if value.len() > 64 {
            return Err(FieldError::new(
                "reason",
                "is too long (at most 64 characters)",
            ));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'))
        {
            return Err(FieldError::new(
                "reason",
                "must contain only letters, digits, '_', '-', ':' or '.'",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parses a wire user id: a positive decimal number.
pub fn parse_user_id(value: &str) -> Result<UserId, FieldError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(FieldError::new("user_id", "is required"));
    }
    match value.parse::<i64>() {
        Ok(id) if id > 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(UserId(id)),
        _ => Err(FieldError::new("user_id", "must be a decimal user id")),
    }
}

/// What a deletion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionOutcome {
    pub user_id: UserId,
    pub deleted_at_ms: i64,
    /// False when the user had already been deleted.
    pub deleted_now: bool,
    pub identities_erased: u64,
    pub sessions_revoked: u64,
}

/// The Users use case.
pub struct UsersService {
    store: Store,
}

impl UsersService {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The live user `id`. `with_phone` is the caller's intent to read the full
    /// number (already authorised by the edge): it is audited here.
    pub async fn get(
        &self,
        actor: Actor<'_>,
        id: UserId,
        with_phone: bool,
    ) -> Result<UserRecord, UsersError> {
        match self.store.user(id).await? {
            Some(user) => {
                if with_phone {
                    audit(actor, "users.read_phone", user.id, "ok");
                }
                Ok(user)
            }
            None => Err(match self.store.tombstone(id).await? {
                Some(t) => UsersError::Deleted(t),
                None => UsersError::NotFound,
            }),
        }
    }

    /// The live user `key` names.
    pub async fn lookup(
        &self,
        actor: Actor<'_>,
        key: UserKey<'_>,
        with_phone: bool,
    ) -> Result<UserRecord, UsersError> {
        let id = self
            .store
            .find_user(key)
            .await?
            .ok_or(UsersError::NotFound)?;
        // A deletion between the two reads reads as not found, never half a user.
        match self.store.user(id).await? {
            Some(user) => {
                if with_phone {
                    audit(actor, "users.read_phone", user.id, "ok");
                }
                Ok(user)
            }
            None => Err(UsersError::NotFound),
        }
    }

    /// Deletes the user (idempotent: an already deleted user answers its tombstone).
    pub async fn delete(
        &self,
        actor: Actor<'_>,
        id: UserId,
        reason: &DeletionReason,
    ) -> Result<DeletionOutcome, UsersError> {
        let now = now_ms();
        let result = self.store.delete_user(id, reason.as_str(), now).await;
        let outcome = match result {
            Ok(Deletion::Deleted {
                identities_erased,
                sessions_revoked,
            }) => {
                metrics::counter!("mp_auth_users_deleted_total", "actor" => match actor {
                    Actor::Service(_) => "service",
                    Actor::User => "self",
                })
                .increment(1);
                Ok(DeletionOutcome {
                    user_id: id,
                    deleted_at_ms: now,
                    deleted_now: true,
                    identities_erased,
                    sessions_revoked,
                })
            }
            Ok(Deletion::AlreadyDeleted(t)) => Ok(DeletionOutcome {
                user_id: id,
                deleted_at_ms: t.deleted_at_ms,
                deleted_now: false,
                identities_erased: 0,
                sessions_revoked: 0,
            }),
            Ok(Deletion::NotFound) => Err(UsersError::NotFound),
            Err(e) => Err(e.into()),
        };
        let label = match &outcome {
            Ok(o) if o.deleted_now => "deleted",
            Ok(_) => "already_deleted",
            Err(UsersError::NotFound) => "not_found",
            Err(_) => "error",
        };
        tracing::info!(
            target: "mp_auth::audit",
            actor = actor.name(),
            action = "users.delete",
            user_id = %id,
            reason = reason.as_str(),
            outcome = label,
            "audit"
        );
        outcome
    }
}

impl UsersService {
    /// The live sessions of a live user.
    pub async fn sessions(&self, id: UserId) -> Result<Vec<SessionRow>, UsersError> {
        if self.store.user(id).await?.is_none() {
            return Err(match self.store.tombstone(id).await? {
                Some(t) => UsersError::Deleted(t),
                None => UsersError::NotFound,
            });
        }
        Ok(self.store.user_sessions(id, now_ms()).await?)
    }

    /// Revokes one session (reason `admin`); returns its user and whether it was live.
    pub async fn revoke_session(
        &self,
        actor: Actor<'_>,
        sid: &str,
    ) -> Result<(UserId, bool), UsersError> {
        let row = self
            .store
            .session(sid)
            .await?
            .ok_or(UsersError::SessionNotFound)?;
        let revoked = self
            .store
            .revoke_session(sid, RevokeReason::Admin, now_ms())
            .await?;
        audit(
            actor,
            "sessions.revoke",
            row.user_id,
            if revoked {
                "revoked"
            } else {
                "already_revoked"
            },
        );
        Ok((row.user_id, revoked))
    }
}

/// One audit line: who did what to which user. Never the phone number.
pub fn audit(actor: Actor<'_>, action: &'static str, user_id: UserId, outcome: &'static str) {
    tracing::info!(
        target: "mp_auth::audit",
        actor = actor.name(),
        action,
        user_id = %user_id,
        outcome,
        "audit"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_positive_decimals() {
        assert_eq!(parse_user_id("42"), Ok(UserId(42)));
        for bad in ["", "0", "-1", "+1", "1e3", "abc", "99999999999999999999"] {
            assert_eq!(parse_user_id(bad).unwrap_err().field, "user_id", "{bad}");
        }
    }

    #[test]
    fn deletion_reasons_are_short_plain_tokens() {
        assert!(DeletionReason::parse("support_ticket:1234").is_ok());
        assert!(DeletionReason::parse("").is_err());
        assert!(DeletionReason::parse("has space").is_err());
        assert!(DeletionReason::parse(&"x".repeat(65)).is_err());
    }
}
