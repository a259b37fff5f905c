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
//! adopted, or failed once the whole window was searched (`jobs::create`).
//!
//! Only the provider makes a payment final. One the provider keeps pending for a
//! day is marked `failed` locally and alerted; `settle::apply` still accepts a later
//! provider `succeeded` for it.

use chrono::{Duration as ChronoDuration, Utc};

use crate::app::App;
use crate::jobs::create::{self, Sent};
use crate::service::settle;
use crate::service::sync::{self, ProcessError};
use crate::store::Cached as _;
use crate::store::{payments, Payment};

pub const BATCH: usize = 200;
/// Claimed payments checked at once (each is one provider read and one transaction).
pub const PARALLEL: usize = 16;
/// A claimed payment is left alone this long (a provider call with retries is far shorter).
pub const LEASE_SECS: f64 = 300.0;
/// The longest wait between two checks of one payment.
pub const MAX_BACKOFF_SECS: f64 = 3600.0;
pub use crate::jobs::create::RESEND_WINDOW_HOURS;
/// Pending at the provider this long (well past its ~1 h confirmation window): give up locally.
pub const GIVE_UP_HOURS: i64 = 24;

pub async fn run_once(app: &App) -> Result<usize, String> {
    let claimed: Vec<Payment> = {
        let db = app.db.get().await.map_err(|e| e.to_string())?;
        // NULL next_check_at on an open payment (e.g. moved to waiting_for_capture) means due now.
        let rows = db
            .q(
                &format!(
                    "UPDATE payments SET next_check_at = now() + make_interval(secs => $2), \
                     lease_until = now() + make_interval(secs => $2) WHERE id IN ( \
                       SELECT id FROM payments WHERE status IN ('pending', 'waiting_for_capture') \
                         AND review_reason IS NULL AND (next_check_at <= now() OR next_check_at IS NULL) \
                       ORDER BY next_check_at NULLS FIRST LIMIT $1 FOR UPDATE SKIP LOCKED) \
                     RETURNING {}",
                    payments::COLS
                ),
                &[&(BATCH as i64), &LEASE_SECS],
            )
            .await
            .map_err(|e| e.to_string())?;
        rows.iter()
            .map(Payment::from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?
    };
    use futures::StreamExt;
    futures::stream::iter(claimed.iter())
        .for_each_concurrent(PARALLEL, |payment| async move {
            let answered = match check(app, payment).await {
                Ok(answered) => answered,
                Err(e) => {
                    tracing::warn!(payment_id = %payment.id, error = %e, "reconcile failed; will retry");
                    false
                }
            };
            if let Err(e) = after_check(app, payment, answered).await {
                tracing::warn!(payment_id = %payment.id, error = %e, "could not schedule the next check");
            }
        })
        .await;
    Ok(claimed.len())
}

/// Asks the provider about one payment and applies its answer. True when the
/// provider answered (as opposed to being unreachable).
async fn check(app: &App, payment: &Payment) -> Result<bool, String> {
    match &payment.provider_payment_id {
        Some(pid) => match sync::payment(app, payment.pay_system, pid, None).await {
            Ok(outcome) => {
                tracing::debug!(payment_id = %payment.id, ?outcome, "reconciled");
                Ok(true)
            }
            Err(ProcessError::Transient(e)) => Err(e),
            Err(ProcessError::Permanent(e)) => {
                settle::alert(
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
            let provider = app
                .providers
                .get(payment.pay_system)
                .cloned()
                .ok_or_else(|| format!("{} is not configured", payment.pay_system))?;
            // CloudPayments finds by InvoiceId; the window only bounds list-based look-ups.
            let until = Utc::now() + ChronoDuration::hours(1);
            match provider
                .find_payment(payment.id, payment.created_at, until)
                .await
            {
                // A declined attempt is not final for an order: the viewer may retry on
                // the same page, so only a success (or capture) is applied from here.
                Ok(Some(pp))
                    if !pp.id.is_empty() && pp.status != crate::domain::PaymentStatus::Canceled =>
                {
                    settle::apply(app, payment.id, &pp)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(true)
                }
                Ok(_) => Ok(true),
                Err(e) if e.is_transient() => Err(e.to_string()),
                Err(e) => {
                    settle::alert(
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
async fn after_check(app: &App, payment: &Payment, answered: bool) -> Result<(), String> {
    let db = app.db.get().await.map_err(|e| e.to_string())?;
    let row = db
        .q_opt(
            "UPDATE payments SET check_attempts = check_attempts + 1, lease_until = NULL, \
             next_check_at = now() + make_interval(secs => LEAST($2 * power(2, LEAST(check_attempts, 20)), $3)), \
             updated_at = now() \
             WHERE id = $1 AND status IN ('pending', 'waiting_for_capture') AND review_reason IS NULL \
             RETURNING status, created_at < now() - make_interval(hours => $4)",
            &[
                &payment.id,
                &app.config.reconcile_after.as_secs_f64().max(1.0),
                &MAX_BACKOFF_SECS,
                &(GIVE_UP_HOURS as i32),
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
    let Some(row) = row else { return Ok(()) };
    let status: String = row.get(0);
    let too_old: bool = row.get(1);
    // Renewals are never failed here: a new attempt with a new key could then charge
    // twice if the provider settles the old one late. The expirer decides for them.
    if answered
        && too_old
        && status == "pending"
        && payment.kind == crate::store::PaymentKind::Purchase
    {
        let n = db
            .exec(
                "UPDATE payments SET status = 'failed', next_check_at = NULL, updated_at = now() \
                 WHERE id = $1 AND status = 'pending'",
                &[&payment.id],
            )
            .await
            .map_err(|e| e.to_string())?;
        if n == 1 {
            settle::alert(
                "pending_too_long",
                "provider still has the payment pending after a day; marked failed locally",
                payment.id,
            );
        }
    }
    Ok(())
}
