//! Re-processes inbox rows that could not be processed when they arrived
//! (provider slow or down, database blip). Rows are claimed with SKIP LOCKED and a
//! short lease, so replicas share the work without processing a row twice at once.

use std::time::Duration;

use super::{Job, JobError};
use crate::app::App;
use crate::config::JobsConfig;
use crate::service::webhooks;
use crate::store::webhook_inbox;
use crate::store::Connect;

pub const BATCH: usize = 50;

pub struct InboxRetry {
    pub idle: Duration,
}

impl InboxRetry {
    pub fn new(c: &JobsConfig) -> Self {
        InboxRetry {
            idle: c.inbox_retry_interval,
        }
    }
}

/// One run with the configured settings (tests and one-off runs).
pub async fn run_once(app: &App) -> Result<usize, JobError> {
    InboxRetry::new(&app.config.jobs).run_once(app).await
}

#[async_trait::async_trait]
impl Job for InboxRetry {
    fn name(&self) -> &'static str {
        "inbox_retry"
    }
    fn batch(&self) -> usize {
        BATCH
    }
    fn idle(&self) -> Duration {
        self.idle
    }
    async fn run_once(&self, app: &App) -> Result<usize, JobError> {
        let ids = {
            let db = app.db.conn().await?;
            webhook_inbox::claim_due(&db, BATCH as i64).await?
        };
        for id in &ids {
            if let Err(e) = webhooks::process_and_record(app, *id).await {
                tracing::warn!(inbox_id = %id, error = %e, "inbox retry could not record its outcome");
            }
        }
        Ok(ids.len())
    }
}
