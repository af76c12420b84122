//! Reads for diagnostics and tests: counts and single rows that no request path needs
//! (the integration tests check what a login wrote with them; an operator can too).

use super::{Store, StoreError, schema};
use crate::domain::{AppId, OpenId, Phone, UserId};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, Selectable, SelectableHelper};
use diesel_async::RunQueryDsl;

/// A `wechat_identities` row, for tests and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, diesel::Queryable, Selectable)]
#[diesel(table_name = schema::wechat_identities)]
pub struct IdentityRow {
    pub app_id: String,
    pub openid: String,
    pub user_id: Option<i64>,
    pub unionid: Option<String>,
    pub session_key: Option<Vec<u8>>,
    pub session_key_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Store {
    /// The number of users (for tests and the benchmark's duplicate check).
    pub async fn user_count(&self) -> Result<i64, StoreError> {
        use schema::users::dsl::users;
        with_conn!(self, "counting users", |conn| users
            .count()
            .get_result(conn)
            .await)
    }

    /// The id of the user with this phone, if any (for tests and diagnostics).
    pub async fn user_id_by_phone(&self, phone: &Phone) -> Result<Option<UserId>, StoreError> {
        use schema::users::dsl as u;
        let e164 = phone.e164();
        let id: Option<i64> = with_conn!(self, "reading a user", |conn| {
            u::users
                .filter(u::phone.eq(e164.as_str()))
                .select(u::id)
                .first(conn)
                .await
                .optional()
        })?;
        Ok(id.map(UserId))
    }

    /// The identity row of `(app_id, openid)`, if any (for tests and diagnostics).
    pub async fn identity(
        &self,
        app_id: &AppId,
        openid: &OpenId,
    ) -> Result<Option<IdentityRow>, StoreError> {
        use schema::wechat_identities::dsl as wi;
        with_conn!(self, "reading an identity", |conn| {
            wi::wechat_identities
                .filter(wi::app_id.eq(app_id.as_str()))
                .filter(wi::openid.eq(openid.as_str()))
                .select(IdentityRow::as_select())
                .first(conn)
                .await
                .optional()
        })
    }

    /// The number of identities linked to `user_id` (for tests and diagnostics).
    pub async fn identity_count(&self, user_id: UserId) -> Result<i64, StoreError> {
        use schema::wechat_identities::dsl as wi;
        with_conn!(self, "counting identities", |conn| {
            wi::wechat_identities
                .filter(wi::user_id.eq(user_id.0))
                .count()
                .get_result(conn)
                .await
        })
    }
}
