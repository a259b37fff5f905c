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

use deadpool_postgres::Transaction;

use crate::app::App;
use crate::events::{self, EventSubject, EventType};
use crate::store::{subscriptions, Subscription};

pub const BATCH: usize = 100;
/// How long a renewal may stay in flight after the period end.
const IN_FLIGHT: Duration = Duration::from_secs(24 * 3600);

/// The longest a live subscription may outlast its period end without a payment.
pub fn invariant_bound(app: &App) -> Duration {
    let dunning: Duration = app.config.dunning_schedule.iter().sum();
    dunning.max(app.config.refusal_grace) + IN_FLIGHT
}

pub async fn run_once(app: &App) -> Result<usize, String> {
    let mut db = app.db.get().await.map_err(|e| e.to_string())?;
    let tx = db.transaction().await.map_err(|e| e.to_string())?;
    // The latest renewal attempt of the period that starts at the end was refused by
    // the provider for a reason of ours (`settle::renewal_refused`, party 'shop').
    let expired = expire(
        &tx,
        "s.current_period_end <= now() AND ( \
           NOT s.auto_renew \
           OR s.next_charge_at IS NULL \
           OR NOT EXISTS (SELECT 1 FROM payment_methods m WHERE m.id = s.payment_method_id AND m.usable) \
           OR (s.current_period_end < now() - interval '24 hours' AND EXISTS ( \
               SELECT 1 FROM payments p WHERE p.subscription_id = s.id AND p.kind = 'renewal' \
               AND p.period_start = s.current_period_end \
               AND p.status IN ('pending', 'waiting_for_capture'))) \
           OR (s.current_period_end <= now() - make_interval(secs => $2) AND ( \
               SELECT p.status = 'failed' AND p.cancellation_party = 'shop' FROM payments p \
               WHERE p.subscription_id = s.id AND p.kind = 'renewal' \
               AND p.period_start = s.current_period_end \
               ORDER BY p.attempt DESC, p.created_at DESC LIMIT 1)))",
        app.config.refusal_grace,
    )
    .await?;
    let forced = expire(
        &tx,
        "s.current_period_end <= now() - make_interval(secs => $2) AND NOT EXISTS ( \
           SELECT 1 FROM payments p WHERE p.subscription_id = s.id AND p.kind = 'renewal' \
           AND p.period_start = s.current_period_end \
           AND p.status IN ('succeeded', 'partially_refunded', 'refunded'))",
        invariant_bound(app),
    )
    .await?;
    for sub in &forced {
        metrics::counter!("billing_alerts_total", "kind" => "expired_by_invariant").increment(1);
        tracing::error!(alert = "expired_by_invariant", subscription_id = %sub.id,
            period_end = %sub.current_period_end, "a live subscription outlived its period, dunning and grace unpaid; expired");
    }
    // A renewal still in flight at the period end: access continues as past_due
    // (at most 24 h, then the first statement expires it).
    let overdue = tx
        .query(
            &format!(
                "UPDATE subscriptions SET status = 'past_due', past_due_since = now(), updated_at = now() \
                 WHERE id IN ( \
                   SELECT s.id FROM subscriptions s WHERE s.status = 'active' AND s.current_period_end <= now() \
                   AND EXISTS (SELECT 1 FROM payments p WHERE p.subscription_id = s.id AND p.kind = 'renewal' \
                       AND p.period_start = s.current_period_end AND p.status IN ('pending', 'waiting_for_capture')) \
                   LIMIT $1 FOR UPDATE OF s SKIP LOCKED) \
                 RETURNING {}",
                subscriptions::COLS
            ),
            &[&(BATCH as i64)],
        )
        .await
        .map_err(|e| e.to_string())?;
    for row in &overdue {
        let sub = Subscription::from_row(row).map_err(|e| e.to_string())?;
        events::record(
            &tx,
            EventType::SubscriptionPastDue,
            EventSubject::subscription(&sub),
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    let ended = expired.len() + forced.len();
    metrics::counter!("subscriptions_expired_total").increment(ended as u64);
    Ok(ended + overdue.len())
}

/// Expires the live subscriptions matching `condition` (on `s`; `$2` is `secs`) and
/// records `subscription.expired` for each.
async fn expire(
    tx: &Transaction<'_>,
    condition: &str,
    secs: Duration,
) -> Result<Vec<Subscription>, String> {
    let rows = tx
        .query(
            &format!(
                "UPDATE subscriptions SET status = 'expired', ended_at = now(), next_charge_at = NULL, \
                 updated_at = now() WHERE id IN ( \
                   SELECT s.id FROM subscriptions s \
                   WHERE s.status IN ('active', 'past_due') AND {condition} \
                   ORDER BY s.current_period_end LIMIT $1 FOR UPDATE OF s SKIP LOCKED) \
                 RETURNING {}",
                subscriptions::COLS
            ),
            &[&(BATCH as i64), &secs.as_secs_f64()],
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut subs = Vec::with_capacity(rows.len());
    for row in &rows {
        let sub = Subscription::from_row(row).map_err(|e| e.to_string())?;
        events::record(
            tx,
            EventType::SubscriptionExpired,
            EventSubject::subscription(&sub),
        )
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(subscription_id = %sub.id, "subscription expired");
        subs.push(sub);
    }
    Ok(subs)
}
