//! Retention of published outbox rows: rows sent longer ago than `OUTBOX_RETENTION`
//! are deleted, in small batches so no statement holds many row locks for long.
//! Unsent rows are never deleted, however old.
//!
//! This is its own job rather than a step of the relay: a large sweep must
//! not delay publishing (promptness is the relay's job), and it should keep going
//! while the broker is away and no replica holds the relay lock. Every replica runs
//! it; concurrent sweeps are harmless (a row deleted by one is skipped by the
//! other) and rare (every few minutes), so it needs no election.

use std::time::Duration;

use super::{Job, JobError};
use crate::app::App;
use crate::config::JobsConfig;
use crate::store::outbox;
use crate::store::Connect;

/// Rows per DELETE statement.
pub const BATCH: usize = 1000;

pub struct OutboxRetention {
    pub idle: Duration,
}

impl OutboxRetention {
    pub fn new(c: &JobsConfig) -> Self {
        OutboxRetention {
            idle: c.outbox_retention_interval,
        }
    }
}

/// One run with the configured settings (tests and one-off runs).
pub async fn run_once(app: &App) -> Result<usize, JobError> {
    OutboxRetention::new(&app.config.jobs).run_once(app).await
}

#[async_trait::async_trait]
impl Job for OutboxRetention {
    fn name(&self) -> &'static str {
        "outbox_retention"
    }
    fn batch(&self) -> usize {
        BATCH
    }
    fn idle(&self) -> Duration {
        self.idle
    }
    /// A breather between batches of a long sweep, for the rest of the database.
    fn between_batches(&self) -> Duration {
        Duration::from_millis(50)
    }
    async fn run_once(&self, app: &App) -> Result<usize, JobError> {
        let db = app.db.conn().await?;
        let deleted = outbox::delete_sent(&db, app.config.outbox_retention, BATCH as i64).await?;
        if deleted > 0 {
            tracing::info!(deleted, "outbox retention");
        }
        Ok(deleted as usize)
    }
}
