//! `mp-auth migrate`: apply pending database migrations and exit.

use crate::config::Settings;
use std::process::ExitCode;

/// Runs `mp-auth migrate`.
pub async fn run(settings: Settings) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(&settings.log);
    let store = crate::store::Store::connect(&settings.database_url()?, &settings.database).await?;
    let applied = store.migrate().await?;
    tracing::info!(applied, "migrations applied");
    println!("{applied} migration(s) applied");
    Ok(ExitCode::SUCCESS)
}
