//! Learns the refunds whose notification never came. A refund made in the
//! provider's dashboard is known to us only by its notification; one lost for good
//! (an outage longer than the provider's re-sends, a notification it never sent)
//! would leave the money given back and the access kept. Every run lists the
//! refunds each provider made in the last `REFUND_SWEEP_WINDOW` (YooKassa `GET
//! /refunds` by creation time, CloudPayments `payments/list` day by day) and records
//! every one not final here through `sync::apply_refund`, the path of a re-read
//! refund notification: our pending refund it answers, or a new row made at the
//! provider.
//!
//! A refund of a payment not paid here yet waits for the reconciler and is found
//! again by a later run; one of a payment that is not ours is skipped. Replicas
//! may sweep at the same time: recording is idempotent on the provider's refund id.

use std::time::Duration;

use chrono::Utc;

use super::{Job, JobError};
use crate::app::App;
use crate::config::JobsConfig;
use crate::domain::PaySystem;
use crate::providers::ProviderRefund;
use crate::service::sync::{self, ProcessError, Processed};
use crate::store::Connect;
use crate::store::{payments, refunds};

/// The longest one provider's listing may take (several pages or days).
pub const LIST_BUDGET: Duration = Duration::from_secs(60);

/// `idle` (JOB_REFUND_SWEEP_INTERVAL, 1 h) between runs; `window`
/// (REFUND_SWEEP_WINDOW, 3 days) of refund creation times each run lists.
pub struct RefundSweep {
    pub idle: Duration,
    pub window: Duration,
}

impl RefundSweep {
    pub fn new(c: &JobsConfig) -> Self {
        RefundSweep {
            idle: c.refund_sweep_interval,
            window: c.refund_sweep_window,
        }
    }
}

/// One run with the configured settings (tests and one-off runs).
pub async fn run_once(app: &App) -> Result<usize, JobError> {
    RefundSweep::new(&app.config.jobs).run_once(app).await
}

#[async_trait::async_trait]
impl Job for RefundSweep {
    fn name(&self) -> &'static str {
        "refund_sweep"
    }
    /// One run lists whole windows: never a "full batch" to run again at once.
    fn batch(&self) -> usize {
        usize::MAX
    }
    fn idle(&self) -> Duration {
        self.idle
    }
    async fn run_once(&self, app: &App) -> Result<usize, JobError> {
        let to = Utc::now();
        let from = chrono::Duration::from_std(self.window)
            .ok()
            .and_then(|w| to.checked_sub_signed(w))
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        let mut recorded = 0;
        let mut unanswered = Vec::new();
        for &system in PaySystem::ALL {
            let Some(provider) = app.providers.get(system).cloned() else {
                continue;
            };
            let listed =
                match tokio::time::timeout(LIST_BUDGET, provider.refunds_between(from, to)).await {
                    Ok(Ok(Some(listed))) => listed,
                    Ok(Ok(None)) => continue,
                    Ok(Err(e)) => {
                        unanswered.push(format!("{system}: {e}"));
                        continue;
                    }
                    Err(_) => {
                        unanswered.push(format!("{system}: no list within {LIST_BUDGET:?}"));
                        continue;
                    }
                };
            recorded += record(app, system, listed).await?;
        }
        if unanswered.is_empty() {
            Ok(recorded)
        } else {
            Err(JobError::Unanswered(unanswered.join("; ")))
        }
    }
}

/// Records the listed refunds not final here; answers how many it recorded.
async fn record(
    app: &App,
    system: PaySystem,
    listed: Vec<ProviderRefund>,
) -> Result<usize, JobError> {
    let ids: Vec<String> = listed.iter().map(|r| r.id.clone()).collect();
    let settled = {
        let db = app.db.conn().await?;
        refunds::settled_of(&db, system, &ids).await?
    };
    let mut recorded = 0;
    let mut unanswered = None;
    for refund in listed.iter().filter(|r| !settled.contains(&r.id)) {
        let paid_here = {
            let db = app.db.conn().await?;
            match payments::id_by_provider_id(&db, system, &refund.payment_id).await? {
                Some(id) => payments::get(&db, id).await?.map(|p| p.status.is_paid()),
                None => None,
            }
        };
        match paid_here {
            // Not one of ours (another shop on the same account, or before our time).
            None => continue,
            // The reconciler settles the payment first; a later run finds it again.
            Some(false) => {
                tracing::info!(provider = %system, refund = %refund.id, payment = %refund.payment_id,
                    "refund at the provider of a payment not paid here yet, left for a later sweep");
                continue;
            }
            Some(true) => {}
        }
        match sync::apply_refund(app, system, refund).await {
            Ok(Processed::Done(what)) => {
                recorded += 1;
                metrics::counter!("refunds_found_by_sweep_total", "provider" => system.as_str())
                    .increment(1);
                tracing::warn!(provider = %system, refund = %refund.id, %what,
                    "refund made at the provider found by the sweep: its notification never came");
            }
            Ok(Processed::Ignored(why)) => {
                tracing::info!(provider = %system, refund = %refund.id, %why, "listed refund left as it is");
            }
            // Tried again by the next run; the others are recorded meanwhile.
            Err(ProcessError::Transient(e)) => unanswered = Some(e),
            Err(ProcessError::Permanent(e)) => {
                tracing::error!(provider = %system, refund = %refund.id, error = %e,
                    "a listed refund could not be recorded");
            }
        }
    }
    match unanswered {
        None => Ok(recorded),
        Some(e) => Err(JobError::Unanswered(e)),
    }
}
