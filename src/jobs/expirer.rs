//! Ends subscriptions whose paid period is over and that have nothing left to wait
//! for: auto-renewal off, no further charge scheduled (dunning exhausted or a hard
//! decline), no usable method, a renewal still pending a day after the period end,
//! or renewals refused for a reason of ours for `REFUSAL_GRACE` after the period end.
//! Under the row lock (SKIP LOCKED), with `subscription.expired` in the same
//! transaction. A renewal that succeeds later starts a new period (`settle::apply`).
//!
//! Then an invariant, whatever state a bug left behind: no subscription stays live
//! past its period end plus the whole dunning schedule (or `REFUSAL_GRACE`, the
//! longer) plus 24 h for an in-flight renewal without a paid renewal for the new
//! period. What it ends is alerted (`expired_by_invariant`): a rule above missed it.

use std::time::Duration;

use super::{Job, JobError};
use crate::app::App;
use crate::config::Config;
use crate::config::JobsConfig;
use crate::events::{self, EventSubject, EventType};
use crate::store::{self, Connect};
use crate::store::{subscriptions, Subscription};

pub const BATCH: usize = 100;
/// How long a renewal may stay in flight after the period end.
const IN_FLIGHT: Duration = Duration::from_secs(24 * 3600);

/// The longest a live subscription may outlast its period end without a payment.
pub fn invariant_bound(config: &Config) -> Duration {
    let dunning: Duration = config.dunning_schedule.iter().sum();
    dunning.max(config.refusal_grace) + IN_FLIGHT
}

pub struct Expirer {
    pub idle: Duration,
}

impl Expirer {
    pub fn new(c: &JobsConfig) -> Self {
        Expirer {
            idle: c.expirer_interval,
        }
    }
}

/// One run with the configured settings (tests and one-off runs).
pub async fn run_once(app: &App) -> Result<usize, JobError> {
    Expirer::new(&app.config.jobs).run_once(app).await
}

#[async_trait::async_trait]
impl Job for Expirer {
    fn name(&self) -> &'static str {
        "expirer"
    }
    fn batch(&self) -> usize {
        BATCH
    }
    fn idle(&self) -> Duration {
        self.idle
    }
    async fn run_once(&self, app: &App) -> Result<usize, JobError> {
        let batch = BATCH as i64;
        let mut db = app.db.conn().await?;
        let tx = store::begin(&mut db).await?;
        let expired =
            subscriptions::expire_unrenewable(&tx, batch, app.config.refusal_grace).await?;
        let forced =
            subscriptions::expire_unpaid_past(&tx, batch, invariant_bound(&app.config)).await?;
        for sub in expired.iter().chain(&forced) {
            events::record(
                &tx,
                EventType::SubscriptionExpired,
                EventSubject::subscription(sub),
            )
            .await?;
            tracing::info!(subscription_id = %sub.id, "subscription expired");
        }
        for sub in &forced {
            crate::service::alerts::raise(
                app,
                "expired_by_invariant",
                &format!(
                    "a live subscription outlived its period (end {}), dunning and grace unpaid; expired",
                    sub.current_period_end
                ),
                crate::service::alerts::Subject::Subscription(sub.id),
            );
        }
        // A renewal still in flight at the period end: access continues as past_due
        // (at most 24 h, then the first statement expires it).
        let overdue: Vec<Subscription> = subscriptions::past_due_in_flight(&tx, batch).await?;
        for sub in &overdue {
            events::record(
                &tx,
                EventType::SubscriptionPastDue,
                EventSubject::subscription(sub),
            )
            .await?;
        }
        store::commit(tx).await?;
        let ended = expired.len() + forced.len();
        metrics::counter!("subscriptions_expired_total").increment(ended as u64);
        Ok(ended + overdue.len())
    }
}
