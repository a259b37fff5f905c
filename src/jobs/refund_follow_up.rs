//! Follows up refunds the provider has not settled. Claimed with SKIP LOCKED and a
//! lease (committed before any provider call), then, per refund:
//!
//! - answered `pending` (we hold the provider's refund id): re-read until it is
//!   `succeeded` or `canceled`;
//! - never answered (the outcome is unknown): re-sent with its stored key while the
//!   provider still keeps keys (YooKassa: 24 h, so under 23 h). Past that window the
//!   same key could refund a second time: it is never re-sent but looked up among
//!   the payment's refunds at the provider. A refund of the same amount that none
//!   of our rows holds is adopted; none at all means it was never made: canceled
//!   and alerted (`refund_lost`), the amount refundable again. A provider that
//!   cannot list a payment's refunds (CloudPayments) leaves it pending, still
//!   counted against what is left to refund, alerted (`refund_unresolved`) for an
//!   operator; the refund sweep adopts it if the provider made it;
//! - refused for good (a parsed 4xx, or canceled at the provider): `canceled` and
//!   alerted (`refund_refused`) by `service::refunds`, never sent again.
//!
//! A refund still open waits 1 minute, doubling to 1 hour, between tries.

use std::time::Duration;

use super::{Job, JobError};
use crate::app::App;
use crate::config::JobsConfig;
use crate::domain::RefundStatus;
use crate::service::alerts;
use crate::service::refunds;
use crate::service::BillingError;
use crate::store::refunds::{self as stored, ClaimedRefund};
use crate::store::{payments, Connect};

pub const BATCH: usize = 20;
pub const FIRST_RETRY: Duration = Duration::from_secs(60);
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// YooKassa keeps idempotence keys 24 h: an unanswered refund older than this is not re-sent.
pub const RESEND_WINDOW_HOURS: i32 = 23;

enum Next {
    /// Succeeded or canceled: nothing more to do.
    Final,
    /// Still open: try again later.
    Open(String),
    /// Unanswered past the key window and the provider cannot list refunds: stop
    /// and alert.
    Unresolved,
    /// Past the key window and not among the payment's refunds: never made.
    Lost,
}

/// `lease` (JOB_REFUND_FOLLOW_UP_LEASE, 5 min): how long a claimed refund is left
/// alone; a provider call with retries is far shorter.
pub struct RefundFollowUp {
    pub idle: Duration,
    pub lease: Duration,
}

impl RefundFollowUp {
    pub fn new(c: &JobsConfig) -> Self {
        RefundFollowUp {
            idle: c.refund_follow_up_interval,
            lease: c.refund_follow_up_lease,
        }
    }
}

/// One run with the configured settings (tests and one-off runs).
pub async fn run_once(app: &App) -> Result<usize, JobError> {
    RefundFollowUp::new(&app.config.jobs).run_once(app).await
}

#[async_trait::async_trait]
impl Job for RefundFollowUp {
    fn name(&self) -> &'static str {
        "refund_follow_up"
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
        let claimed = {
            let db = app.db.conn().await?;
            stored::claim_due(&db, BATCH as i64, self.lease, RESEND_WINDOW_HOURS).await?
        };
        for c in &claimed {
            let next = follow(app, c).await;
            if let Err(e) = schedule(app, c, next).await {
                tracing::warn!(refund_id = %c.id, error = %e, "could not schedule the refund's next try");
            }
        }
        Ok(claimed.len())
    }
}

async fn follow(app: &App, c: &ClaimedRefund) -> Next {
    match &c.provider_refund_id {
        Some(provider_id) => {
            let Some(provider) = app.providers.get(c.pay_system).cloned() else {
                return Next::Open(format!("{} is not configured", c.pay_system));
            };
            match provider.get_refund(provider_id).await {
                Ok(r) if r.status == RefundStatus::Pending => {
                    Next::Open("still pending at the provider".into())
                }
                Ok(r) => match refunds::record_result(app, c.id, &r.id, r.status).await {
                    Ok(()) => Next::Final,
                    Err(e) => Next::Open(e.to_string()),
                },
                Err(e) => Next::Open(e.to_string()),
            }
        }
        None if c.in_key_window => match refunds::submit(app, c.id).await {
            Ok(RefundStatus::Pending) => Next::Open("answered pending".into()),
            Ok(_) => Next::Final,
            // Canceled and alerted by `submit`.
            Err(BillingError::RefundRefused(_) | BillingError::RefundNotFound(_)) => Next::Final,
            Err(e) => Next::Open(e.to_string()),
        },
        None => look_up(app, c).await,
    }
}

/// Past the key window: our refund among the payment's refunds at the provider.
async fn look_up(app: &App, c: &ClaimedRefund) -> Next {
    match find_at_provider(app, c).await {
        Ok(Found::Adopted(RefundStatus::Pending)) => {
            Next::Open("found pending at the provider".into())
        }
        Ok(Found::Adopted(_)) => Next::Final,
        Ok(Found::NeverMade) => Next::Lost,
        Ok(Found::CannotList) => Next::Unresolved,
        Err(e) => Next::Open(e.to_string()),
    }
}

enum Found {
    Adopted(RefundStatus),
    NeverMade,
    CannotList,
}

async fn find_at_provider(app: &App, c: &ClaimedRefund) -> Result<Found, BillingError> {
    let Some(provider) = app.providers.get(c.pay_system).cloned() else {
        return Ok(Found::CannotList);
    };
    let (ours, provider_payment_id, held) = {
        let db = app.db.conn().await?;
        let ours = stored::get(&db, c.id)
            .await?
            .ok_or(BillingError::RefundNotFound(c.id))?;
        let payment = payments::get(&db, c.payment_id)
            .await?
            .ok_or(BillingError::RefundNotFound(c.id))?;
        let held = stored::provider_ids_of_payment(&db, c.payment_id).await?;
        (ours, payment.provider_payment_id, held)
    };
    let Some(provider_payment_id) = provider_payment_id else {
        return Ok(Found::CannotList);
    };
    let Some(theirs) = provider.list_refunds(&provider_payment_id).await? else {
        return Ok(Found::CannotList);
    };
    // Any refund of the same amount that none of our rows holds: if it was another
    // one (a dashboard refund not notified yet), what was refunded still adds up.
    let Some(found) = theirs
        .into_iter()
        .find(|r| r.amount == ours.amount && !held.contains(&r.id))
    else {
        return Ok(Found::NeverMade);
    };
    refunds::record_result(app, c.id, &found.id, found.status).await?;
    Ok(Found::Adopted(found.status))
}

async fn schedule(app: &App, c: &ClaimedRefund, next: Next) -> Result<(), JobError> {
    let db = app.db.conn().await?;
    match next {
        Next::Final => {}
        Next::Open(why) => {
            stored::schedule_retry(&db, c.id, &why, FIRST_RETRY, MAX_BACKOFF).await?;
        }
        Next::Lost => {
            if stored::cancel_pending(
                &db,
                c.id,
                "never made: not among the payment's refunds at the provider past the key window",
            )
            .await?
            {
                alerts::raise(
                    app,
                    "refund_lost",
                    &format!(
                        "refund {} was never made at the provider; the amount is refundable again",
                        c.id
                    ),
                    c.payment_id,
                );
            }
        }
        Next::Unresolved => {
            if stored::stop_unresolved(&db, c.id).await? {
                alerts::raise(
 app,
                    "refund_unresolved",
                    &format!(
                        "refund {} never answered and past the key window: check it in the provider's dashboard",
                        c.id
                    ),
                    c.payment_id,
                );
            }
        }
    }
    Ok(())
}
