//! Retention of published outbox rows: rows sent longer ago than `OUTBOX_RETENTION`
//! are deleted, in small batches so no statement holds many row locks for long.
//! Unsent rows are never deleted, however old.
//!
//! This is its own small loop rather than a step of the relay: a large sweep must
//! not delay publishing (promptness is the relay's job), and it should keep going
//! while the broker is away and no replica holds the relay lock. Every replica runs
//! it; concurrent sweeps are harmless (a row deleted by one is skipped by the
//! other) and rare (every few minutes), so it needs no election.

use std::time::Duration;

use crate::app::App;
use crate::events::relay::sleep_or_shutdown;
use crate::store::{GenericClient, StoreError};

/// Rows per DELETE statement.
pub const BATCH: i64 = 1000;
const EVERY: Duration = Duration::from_secs(600);
/// A breather between batches of a long sweep, for the rest of the database.
const BETWEEN_BATCHES: Duration = Duration::from_millis(50);

/// Deletes one batch of sent rows older than `retention`; returns how many.
pub async fn run_once(db: &impl GenericClient, retention: Duration) -> Result<u64, StoreError> {
    let deleted = db
        .execute(
            "DELETE FROM outbox WHERE id IN ( \
                SELECT id FROM outbox \
                WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => $1) \
                LIMIT $2)",
            &[&retention.as_secs_f64(), &BATCH],
        )
        .await?;
    Ok(deleted)
}

/// Sweeps at start-up and then every few minutes, until `app.shutdown`.
pub async fn run(app: App) {
    loop {
        let mut total = 0;
        loop {
            let result = match app.db.get().await {
                Ok(client) => run_once(&client, app.config.outbox_retention).await,
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(n) => {
                    total += n;
                    if (n as i64) < BATCH || sleep_or_shutdown(&app, BETWEEN_BATCHES).await {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox retention sweep failed; next try later");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(deleted = total, "outbox retention sweep");
        }
        if sleep_or_shutdown(&app, EVERY).await {
            return;
        }
    }
}
