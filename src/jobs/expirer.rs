//! Ends subscriptions whose paid period is over and that have nothing left to wait
//! for: auto-renewal off, no further charge scheduled (dunning exhausted or a hard
//! decline), no usable method, or a renewal still pending a day after the period
//! end. Under the row lock (SKIP LOCKED), with `subscription.expired` in the same
//! transaction. A renewal that succeeds later starts a new period (`settle::apply`).

use crate::app::App;
use crate::events::{self, EventSubject, EventType};
use crate::store::{subscriptions, Subscription};

pub const BATCH: usize = 100;

pub async fn run_once(app: &App) -> Result<usize, String> {
    let mut db = app.db.get().await.map_err(|e| e.to_string())?;
    let tx = db.transaction().await.map_err(|e| e.to_string())?;
    let rows = tx
        .query(
            &format!(
                "UPDATE subscriptions SET status = 'expired', ended_at = now(), next_charge_at = NULL, \
                 updated_at = now() WHERE id IN ( \
                   SELECT s.id FROM subscriptions s \
                   WHERE s.status IN ('active', 'past_due') AND s.current_period_end <= now() AND ( \
                     NOT s.auto_renew \
                     OR s.next_charge_at IS NULL \
                     OR NOT EXISTS (SELECT 1 FROM payment_methods m WHERE m.id = s.payment_method_id AND m.usable) \
                     OR (s.current_period_end < now() - interval '24 hours' AND EXISTS ( \
                         SELECT 1 FROM payments p WHERE p.subscription_id = s.id AND p.kind = 'renewal' \
                         AND p.period_start = s.current_period_end \
                         AND p.status IN ('pending', 'waiting_for_capture')))) \
                   ORDER BY s.current_period_end LIMIT $1 FOR UPDATE OF s SKIP LOCKED) \
                 RETURNING {}",
                subscriptions::COLS
            ),
            &[&(BATCH as i64)],
        )
        .await
        .map_err(|e| e.to_string())?;
    for row in &rows {
        let sub = Subscription::from_row(row).map_err(|e| e.to_string())?;
        events::record(
            &tx,
            EventType::SubscriptionExpired,
            EventSubject::subscription(&sub),
        )
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(subscription_id = %sub.id, "subscription expired");
    }
    // A renewal still in flight at the period end: access continues as past_due
    // (at most 24 h, then the statement above expires it).
    let overdue = tx
        .query(
            &format!(
                "UPDATE subscriptions SET status = 'past_due', past_due_since = now(), updated_at = now()                  WHERE id IN (                    SELECT s.id FROM subscriptions s WHERE s.status = 'active' AND s.current_period_end <= now()                    AND EXISTS (SELECT 1 FROM payments p WHERE p.subscription_id = s.id AND p.kind = 'renewal'                        AND p.period_start = s.current_period_end AND p.status IN ('pending', 'waiting_for_capture'))                    LIMIT $1 FOR UPDATE OF s SKIP LOCKED)                  RETURNING {}",
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
    metrics::counter!("subscriptions_expired_total").increment(rows.len() as u64);
    Ok(rows.len() + overdue.len())
}
