//! Finds open payments whose webhook never came and asks the provider.
//!
//! Rows are claimed with SKIP LOCKED and a lease (committed before any provider
//! call), then re-read through `service::sync::payment`, which applies the
//! provider's state with `settle::apply`. A payment still open afterwards is checked
//! again later: RECONCILE_AFTER doubling per check, capped at an hour.
//!
//! A payment without a provider id (we died between our insert and the provider's
//! answer) is re-sent with its stored key while the provider still keeps keys
//! (under 23 h); an older one is looked up by our id within a bounded window and
//! adopted, or failed once the whole window was searched (`service::create`).
//!
//! Only the provider makes a payment final. One the provider keeps pending for a
//! day is marked `failed` locally and alerted; `settle::apply` still accepts a later
//! provider `succeeded` for it.

use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};

use super::{Job, JobError};
use crate::app::App;
use crate::config::JobsConfig;
use crate::domain::PaymentStatus;
use crate::service::alerts;
use crate::service::create::{self, Sent};
use crate::service::settle;
use crate::service::sync::{self, ProcessError};
use crate::store::Connect;
use crate::store::{payments, Payment, PaymentKind};

pub const BATCH: usize = 200;
/// The longest wait between two checks of one payment.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
pub use crate::service::create::RESEND_WINDOW_HOURS;
/// Pending at the provider this long (well past its ~1 h confirmation window): give up locally.
pub const GIVE_UP_HOURS: i32 = 24;

/// `lease` (JOB_RECONCILER_LEASE, 5 min): how long a claimed payment is left alone;
/// a provider call with its retries is far shorter.
pub struct Reconciler {
    pub idle: Duration,
    pub lease: Duration,
}

impl Reconciler {
    pub fn new(c: &JobsConfig) -> Self {
        Reconciler {
            idle: c.reconciler_interval,
            lease: c.reconciler_lease,
        }
    }
}

/// One run with the configured settings (tests and one-off runs).
pub async fn run_once(app: &App) -> Result<usize, JobError> {
    Reconciler::new(&app.config.jobs).run_once(app).await
}

#[async_trait::async_trait]
impl Job for Reconciler {
    fn name(&self) -> &'static str {
        "reconciler"
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
        let claimed: Vec<Payment> = {
            let db = app.db.conn().await?;
            payments::claim_for_reconcile(&db, BATCH as i64, self.lease).await?
        };
        use futures::StreamExt;
        futures::stream::iter(claimed.iter())
            .for_each_concurrent(app.config.jobs.concurrency, |payment| async move {
                let answered = match check(app, payment).await {
                    Ok(answered) => answered,
                    Err(e) => {
                        tracing::warn!(payment_id = %payment.id, error = %e, "reconcile failed; will retry");
                        false
                    }
                };
                if let Err(e) = after_check(app, payment, answered).await {
                    tracing::warn!(payment_id = %payment.id, error = %e, "reconcile follow-up failed; will retry");
                }
            })
            .await;
        Ok(claimed.len())
    }
}

/// Asks the provider about one payment and applies its answer. True when the
/// provider answered (as opposed to being unreachable).
async fn check(app: &App, payment: &Payment) -> Result<bool, JobError> {
    match &payment.provider_payment_id {
        Some(pid) => match sync::payment(app, payment.pay_system, pid, None).await {
            Ok(outcome) => {
                tracing::debug!(payment_id = %payment.id, ?outcome, "reconciled");
                Ok(true)
            }
            Err(ProcessError::Transient(e)) => Err(JobError::Unanswered(e)),
            Err(ProcessError::Permanent(e)) => {
                alerts::raise(
                    app,
                    "reconcile_failed",
                    &format!("cannot reconcile: {e}"),
                    payment.id,
                );
                Ok(false)
            }
        },
        // An answered create without a payment id: a CloudPayments order whose
        // viewer has not paid yet. Look for a transaction by our id; re-sending the
        // create would open a second order once the provider forgets the key.
        None if payment.confirmation_url.is_some() => {
            let provider = app.providers.get(payment.pay_system).cloned().ok_or(
                crate::service::BillingError::PaySystemNotEnabled(payment.pay_system),
            )?;
            // CloudPayments finds by InvoiceId; the window only bounds list-based look-ups.
            let until = Utc::now() + ChronoDuration::hours(1);
            match provider
                .find_payment(payment.id, payment.created_at, until)
                .await
            {
                // A declined attempt is not final for an order: the viewer may retry on
                // the same page, so only a success (or capture) is applied from here.
                Ok(Some(pp)) if !pp.id.is_empty() && pp.status != PaymentStatus::Canceled => {
                    settle::apply(app, payment.id, &pp).await?;
                    Ok(true)
                }
                Ok(_) => Ok(true),
                Err(e) if e.is_transient() => Err(JobError::Unanswered(e.to_string())),
                Err(e) => {
                    alerts::raise(
                        app,
                        "reconcile_failed",
                        &format!("cannot look the payment up: {e}"),
                        payment.id,
                    );
                    Ok(false)
                }
            }
        }
        // Never answered: `send` re-sends it with its key while the provider keeps
        // keys, and looks it up by our id after that (never a re-send then).
        None => Ok(matches!(
            create::send(app, payment).await?,
            Sent::Answered(_) | Sent::Refused(_)
        )),
    }
}

/// Still open after the check: back off (RECONCILE_AFTER doubling, capped), and after
/// a day of provider-confirmed pending, fail it locally and alert.
async fn after_check(app: &App, payment: &Payment, answered: bool) -> Result<(), JobError> {
    let db = app.db.conn().await?;
    let Some(open) = payments::schedule_next_check(
        &db,
        payment.id,
        app.config.reconcile_after.max(Duration::from_secs(1)),
        MAX_BACKOFF,
        GIVE_UP_HOURS,
    )
    .await?
    else {
        return Ok(());
    };
    // Renewals are never failed here: a new attempt with a new key could then charge
    // twice if the provider settles the old one late. The expirer decides for them.
    if !(answered
        && open.too_old
        && open.status == PaymentStatus::Pending
        && payment.kind != PaymentKind::Renewal)
    {
        return Ok(());
    }
    drop(db);
    if let Some(checkout) = &payment.provider_checkout_id {
        // A checkout page that outlives us (a CloudPayments order) is voided first, or
        // the viewer could still pay for a purchase we have failed.
        let provider = app.providers.get(payment.pay_system).cloned().ok_or(
            crate::service::BillingError::PaySystemNotEnabled(payment.pay_system),
        )?;
        match provider.void_checkout(checkout).await {
            Ok(()) => {}
            Err(e) if e.is_transient() => return Err(JobError::Unanswered(e.to_string())),
            Err(e) => {
                alerts::raise(
                    app,
                    "checkout_void_failed",
                    &format!(
                        "the checkout could not be voided, so the purchase stays pending: {e}"
                    ),
                    payment.id,
                );
                return Ok(());
            }
        }
        // Paid before the void: applied now, and then not failed below.
        if !check(app, payment).await? {
            return Ok(());
        }
    }
    let db = app.db.conn().await?;
    match payments::fail_stale_pending(&db, payment.id).await? {
        // The viewer's card was declined and they left: nothing for an operator.
        Some(payments::StaleFailed {
            last_decline: Some(reason),
        }) => tracing::info!(
            payment_id = %payment.id,
            reason,
            "checkout abandoned after a declined attempt; marked failed"
        ),
        Some(_) => alerts::raise(
            app,
            "pending_too_long",
            "provider still has the payment pending after a day; marked failed locally",
            payment.id,
        ),
        None => {}
    }
    Ok(())
}
