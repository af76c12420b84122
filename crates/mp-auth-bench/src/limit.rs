//! The limit run: the login's database transaction alone, issued by a bare loop
//! through the project's own [`Store::record_login`] (no gRPC, HTTP or WeChat), with
//! the same mix of new and returning phones, to learn what the database allows.

use crate::{
    driver::{Pace, Tally, drive},
    target::Outcome,
    workload::{User, returning_user},
};
use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use mp_auth::{
    api::ErrorReason,
    domain::{AppId, OpenId, Phone},
    store::{LoginRecord, Store, StoreError},
};
use rand::RngCore as _;
use std::{sync::Arc, time::Duration};

/// Length of a sealed session key (version, nonce, 16-byte key, GCM tag).
const SEALED_LEN: usize = 1 + 12 + 16 + 16;

/// One ready-to-write login.
struct Row {
    openid: OpenId,
    phone: Phone,
    sealed: Vec<u8>,
}

fn row(user: &User) -> anyhow::Result<Row> {
    let mut sealed = vec![0u8; SEALED_LEN];
    rand::rng().fill_bytes(&mut sealed);
    Ok(Row {
        openid: OpenId::parse(&format!("o-limit-{}", user.handle))?,
        phone: Phone::new("86", &user.phone)?,
        sealed,
    })
}

async fn write(store: &Store, app_id: &AppId, row: &Row) -> Result<bool, StoreError> {
    let now = mp_auth::store::now_ms();
    // The session row a login writes is part of the transaction measured here.
    let session = mp_auth::store::NewSession {
        id: uuid::Uuid::new_v4().simple().to_string(),
        created_at_ms: now,
        idle_expires_at_ms: now + 3_600_000,
        expires_at_ms: now + 3_600_000,
    };
    store
        .record_login(&LoginRecord {
            app_id,
            openid: &row.openid,
            unionid: None,
            phone: &row.phone,
            sealed_session_key: &row.sealed,
            session_key_expires_at_ms: now + 3_600_000,
            session: Some(&session),
            now_ms: now,
        })
        .await
        .map(|outcome| outcome.is_new_user)
}

fn reason(err: &StoreError) -> &'static str {
    match err {
        StoreError::Unavailable(_) => ErrorReason::DatabaseUnavailable.as_str_name(),
        StoreError::Contention => "DATABASE_CONTENTION",
        StoreError::Unexpected(_) => ErrorReason::Internal.as_str_name(),
    }
}

/// Writes the returning population's identities once (not measured).
pub async fn seed(
    store: &Store,
    app_id: &AppId,
    population: usize,
    parallel: usize,
) -> anyhow::Result<()> {
    futures::stream::iter(0..population)
        .map(|i| async move {
            let row = row(&returning_user(i))?;
            write(store, app_id, &row)
                .await
                .context("seeding the limit run's returning users")?;
            anyhow::Ok(())
        })
        .buffer_unordered(parallel.max(1))
        .try_collect::<()>()
        .await
}

/// Runs one login transaction per user at `pace`.
pub async fn run(
    store: Store,
    app_id: AppId,
    users: &[User],
    pace: Pace,
    deadline: Option<Duration>,
) -> anyhow::Result<Tally> {
    let rows: Arc<Vec<Row>> = Arc::new(users.iter().map(row).collect::<anyhow::Result<_>>()?);
    let (store, app_id) = (Arc::new(store), Arc::new(app_id));
    let count = rows.len();
    Ok(drive(count, pace, deadline, move |_, i| {
        let (store, app_id, rows) = (store.clone(), app_id.clone(), rows.clone());
        async move {
            match write(&store, &app_id, &rows[i]).await {
                Ok(new_user) => Outcome::Ok { new_user },
                Err(e) => Outcome::Err(reason(&e).to_owned()),
            }
        }
    })
    .await)
}
