//! Charges due subscriptions with their saved payment method, with no viewer present.
//!
//! One statement per batch (`payments::claim_renewals`) claims the due subscriptions
//! (SKIP LOCKED, `next_charge_at` pushed out by a lease that outlasts a provider call
//! with its retries) and, under their row locks, commits each period's renewal
//! payment with a provider key derived from (subscription, period start, attempt).
//! Only then is the provider called, holding no lock, a claimed batch
//! `JOB_CONCURRENCY` at a time. A crash anywhere re-sends the same key; the partial
//! unique index `payments_one_renewal_per_period` keeps one pending-or-succeeded
//! renewal per period.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{Job, JobError};
use crate::app::App;
use crate::config::JobsConfig;
use crate::domain::SubscriptionId;
use crate::service::create::{self, Sent};
use crate::store::payments::{self, ClaimedRenewal};
use crate::store::Connect;

pub const BATCH: usize = 200;

/// `lease` (JOB_RENEWER_LEASE, 10 min): how long a claimed subscription is left
/// alone; a provider call with its retries takes well under a minute.
pub struct Renewer {
    pub idle: Duration,
    pub lease: Duration,
}

impl Renewer {
    pub fn new(c: &JobsConfig) -> Self {
        Renewer {
            idle: c.renewer_interval,
            lease: c.renewer_lease,
        }
    }
}

/// One run with the configured settings (tests and one-off runs).
pub async fn run_once(app: &App) -> Result<usize, JobError> {
    Renewer::new(&app.config.jobs).run_once(app).await
}

#[async_trait::async_trait]
impl Job for Renewer {
    fn name(&self) -> &'static str {
        "renewer"
    }
    fn batch(&self) -> usize {
        BATCH
    }
    fn idle(&self) -> Duration {
        self.idle
    }
    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }
    async fn run_once(&self, app: &App) -> Result<usize, JobError> {
        let claimed = claim(app, BATCH, self.lease).await?;
        use futures::StreamExt;
        futures::stream::iter(claimed.iter())
            .for_each_concurrent(app.config.jobs.concurrency, |c| async move {
                if let Err(e) = send(app, c).await {
                    // The lease runs out and the next run (or replica) resumes with the same key.
                    tracing::warn!(payment_id = %c.payment.id, error = %e, "renewal not completed; will be resumed");
                }
            })
            .await;
        Ok(claimed.len())
    }
}

/// Claims up to `batch` due renewals for `lease` and commits the payment of each
/// (the open one of the period, or a new attempt): after this, a crash re-sends.
pub async fn claim(
    app: &App,
    batch: usize,
    lease: Duration,
) -> Result<Vec<ClaimedRenewal>, JobError> {
    let db = app.db.conn().await?;
    Ok(payments::claim_renewals(
        &db,
        batch as i64,
        lease,
        app.config.reconcile_after,
        create::RESEND_WINDOW_HOURS as i32,
        &app.config.receipts,
    )
    .await?)
}

/// Sends one claimed renewal and records the answer; a refusal has moved the
/// subscription on (past_due, dunning) by the time this returns.
pub async fn send(app: &App, c: &ClaimedRenewal) -> Result<Sent, JobError> {
    let sent = create::send_started(app, &c.payment, c.start, Some(c.saved_method.clone())).await?;
    if let Sent::Refused(why) = &sent {
        tracing::warn!(payment_id = %c.payment.id, why = %why, "renewal create refused");
    }
    Ok(sent)
}

/// The provider idempotence key of one renewal attempt, as payments/claim_renewals.sql
/// computes it: the same inputs always give the same key, so a crashed attempt is
/// re-sent, never duplicated. 64 hex chars (YooKassa's limit).
pub fn renewal_key(
    subscription_id: SubscriptionId,
    period_start: DateTime<Utc>,
    attempt: i32,
) -> String {
    let digest = Sha256::digest(
        format!(
            "renewal:{subscription_id}:{}:{attempt}",
            period_start.timestamp_micros()
        )
        .as_bytes(),
    );
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_keys_are_stable_and_differ_per_attempt() {
        let sub = SubscriptionId::from_uuid(uuid::Uuid::nil());
        let at = DateTime::from_timestamp(1_700_000_000, 123_000).unwrap();
        assert_eq!(renewal_key(sub, at, 0), renewal_key(sub, at, 0));
        assert_ne!(renewal_key(sub, at, 0), renewal_key(sub, at, 1));
        assert_eq!(renewal_key(sub, at, 0).len(), 64);
    }
}
