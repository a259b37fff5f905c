//! Data that must not be kept forever: raw notification bodies (personal data)
//! after WEBHOOK_BODY_RETENTION (failed ones after 180 days; hash and outcome stay),
//! Idempotency-Key rows after their 24 hours, notifications' processing history
//! after 180 days, and stored alerts after 90 days (the
//! console's overview counts the last 24 h; the log lines stay wherever logs go).
//! The audit log is never purged here. Batched so a backlog never holds long locks.

use std::time::Duration;

use super::{Job, JobError};
use crate::app::App;
use crate::config::JobsConfig;
use crate::store::Connect;
use crate::store::{alerts, idempotency_keys, webhook_inbox};

/// How long stored alerts are kept.
const ALERT_RETENTION_DAYS: i64 = 90;
/// How long a notification's processing history is kept (as a failed body).
const ATTEMPT_RETENTION_DAYS: i64 = 180;

pub const BATCH: usize = 1000;

pub struct Housekeeping {
    pub idle: Duration,
}

impl Housekeeping {
    pub fn new(c: &JobsConfig) -> Self {
        Housekeeping {
            idle: c.housekeeping_interval,
        }
    }
}

/// One run with the configured settings (tests and one-off runs).
pub async fn run_once(app: &App) -> Result<usize, JobError> {
    Housekeeping::new(&app.config.jobs).run_once(app).await
}

#[async_trait::async_trait]
impl Job for Housekeeping {
    fn name(&self) -> &'static str {
        "housekeeping"
    }
    fn batch(&self) -> usize {
        BATCH
    }
    fn idle(&self) -> Duration {
        self.idle
    }
    async fn run_once(&self, app: &App) -> Result<usize, JobError> {
        let db = app.db.conn().await?;
        let purged =
            webhook_inbox::purge_bodies(&db, app.config.webhook_body_retention, BATCH as i64)
                .await?;
        let keys = idempotency_keys::delete_expired(&db, BATCH as i64).await?;
        let now = crate::store::now(&db).await?;
        let old_alerts = alerts::purge(
            &db,
            now - chrono::Duration::days(ALERT_RETENTION_DAYS),
            BATCH as i64,
        )
        .await?;
        let old_attempts = webhook_inbox::purge_attempts(
            &db,
            now - chrono::Duration::days(ATTEMPT_RETENTION_DAYS),
            BATCH as i64,
        )
        .await?;
        Ok((purged + keys + old_alerts + old_attempts) as usize)
    }
}
