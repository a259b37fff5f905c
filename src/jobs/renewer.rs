//! Charges due subscriptions with their saved payment method, with no viewer present.
//!
//! Per subscription: claim it (SKIP LOCKED, `next_charge_at` pushed out by a lease
//! that outlasts a provider call with its retries), then in one transaction under
//! the subscription's row lock commit the renewal payment row with a provider key
//! derived from (subscription, period start, attempt); only then call the provider,
//! holding no lock. A crash anywhere re-sends the same key; the partial unique index
//! `payments_one_renewal_per_period` keeps one pending-or-succeeded renewal per period.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::app::App;
use crate::domain::PaymentStatus;
use crate::jobs::create::{self, Sent};
use crate::store::Cached as _;
use crate::store::{payments, subscriptions, Payment};

pub const BATCH: usize = 200;
/// Claimed subscriptions charged at once: each is a few queries and one provider call,
/// mostly waiting, so one at a time left the database and the provider idle.
pub const PARALLEL: usize = 16;
/// How long a claimed subscription is left alone (a provider call with its retries
/// takes well under a minute).
pub const LEASE_SECS: f64 = 600.0;

/// The provider idempotence key of one renewal attempt: the same inputs always give
/// the same key, so a crashed attempt is re-sent, never duplicated. 64 hex chars
/// (YooKassa's limit).
pub fn renewal_key(subscription_id: Uuid, period_start: DateTime<Utc>, attempt: i32) -> String {
    let digest = Sha256::digest(
        format!(
            "renewal:{subscription_id}:{}:{attempt}",
            period_start.timestamp_micros()
        )
        .as_bytes(),
    );
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn run_once(app: &App) -> Result<usize, String> {
    let ids: Vec<Uuid> = crate::jobs::claim(
        app,
            "UPDATE subscriptions SET next_charge_at = now() + make_interval(secs => $2) WHERE id IN ( \
               SELECT s.id FROM subscriptions s JOIN payment_methods m ON m.id = s.payment_method_id \
               WHERE s.status IN ('active', 'past_due') AND s.auto_renew AND m.usable \
                 AND s.next_charge_at <= now() \
               ORDER BY s.next_charge_at LIMIT $1 FOR UPDATE OF s SKIP LOCKED) RETURNING id",
            &[&(BATCH as i64), &LEASE_SECS],
    )
    .await?;
    use futures::StreamExt;
    futures::stream::iter(ids.iter().copied())
        .for_each_concurrent(PARALLEL, |id| async move {
            if let Err(e) = renew_one(app, id).await {
                // The lease runs out and the next run (or replica) resumes with the same key.
                tracing::warn!(subscription_id = %id, error = %e, "renewal not completed; will be resumed");
            }
        })
        .await;
    Ok(ids.len())
}

/// Charges one claimed subscription; answers what the provider said (None: nothing to charge).
pub async fn renew_one(app: &App, subscription_id: Uuid) -> Result<Option<Sent>, String> {
    let Some(payment) = prepare(app, subscription_id).await? else {
        return Ok(None);
    };
    if payment.provider_payment_id.is_some() {
        // Already at the provider and still open: the reconciler follows it.
        return Ok(None);
    }
    // Past the key window `send` looks the payment up instead of re-sending it; a
    // refusal has already moved the subscription (past_due, dunning) by then.
    let sent = create::send(app, &payment).await?;
    if let Sent::Refused(why) = &sent {
        tracing::warn!(subscription_id = %subscription_id, why = %why, "renewal create refused");
    }
    Ok(Some(sent))
}

/// Under the subscription's row lock: the open renewal of the period that starts at
/// `current_period_end`, or a new one committed here. None when the subscription is
/// no longer due (canceled, expired, method unusable) or the period is already paid.
pub async fn prepare(app: &App, subscription_id: Uuid) -> Result<Option<Payment>, String> {
    let mut db = app.db.get().await.map_err(|e| e.to_string())?;
    let tx = db.transaction().await.map_err(|e| e.to_string())?;
    let Some(sub) = subscriptions::lock(&tx, subscription_id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    if !sub.status.is_live() || !sub.auto_renew || sub.next_charge_at.is_none() {
        tx.commit().await.map_err(|e| e.to_string())?;
        return Ok(None);
    }
    let Some(method_id) = sub.payment_method_id else {
        tx.commit().await.map_err(|e| e.to_string())?;
        return Ok(None);
    };
    let method = payments::get_method(&tx, method_id)
        .await
        .map_err(|e| e.to_string())?
        .filter(|m| m.usable);
    let Some(method) = method else {
        tx.commit().await.map_err(|e| e.to_string())?;
        return Ok(None);
    };
    let period_start = sub.current_period_end;
    let open = tx
        .q_opt(
            &format!(
                "SELECT {} FROM payments WHERE subscription_id = $1 AND kind = 'renewal' AND period_start = $2 \
                 AND status IN ('pending', 'waiting_for_capture', 'succeeded')",
                payments::COLS
            ),
            &[&sub.id, &period_start],
        )
        .await
        .map_err(|e| e.to_string())?;
    if let Some(row) = open {
        let p = Payment::from_row(&row).map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        return Ok((p.status != PaymentStatus::Succeeded).then_some(p));
    }
    // Never reuse an attempt number of this period: a reused key with another body is refused.
    let attempt: i32 = tx
        .q_one(
            "SELECT GREATEST($3::int, COALESCE(max(attempt) + 1, 0)) FROM payments \
             WHERE subscription_id = $1 AND kind = 'renewal' AND period_start = $2",
            &[&sub.id, &period_start, &sub.renewal_attempts],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let tariff_name: String = tx
        .q_one("SELECT name FROM tariffs WHERE id = $1", &[&sub.tariff_id])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let key = renewal_key(sub.id, period_start, attempt);
    // The subscription's own price, never today's tariff price.
    let row = tx
        .q_one(
            &format!(
                "INSERT INTO payments (id, user_id, tariff_id, subscription_id, pay_system, kind, status, amount_minor, \
                 currency, renew, description, provider_idempotence_key, payment_method_id, period_start, attempt, \
                 livemode, next_check_at) \
                 VALUES ($1, $2, $3, $4, $5, 'renewal', 'pending', $6, $7, false, $8, $9, $10, $11, $12, $13, \
                 now() + make_interval(secs => $14)) RETURNING {}",
                payments::COLS
            ),
            &[
                &Uuid::new_v4(),
                &sub.user_id,
                &sub.tariff_id,
                &sub.id,
                // The provider that saved the method charges it, whichever provider
                // sold the subscription first (a same-tariff purchase elsewhere moves it).
                &method.pay_system.as_str(),
                &sub.price.minor(),
                &sub.price.currency().code(),
                &format!("Subscription renewal: {tariff_name}"),
                &key,
                &method_id,
                &period_start,
                &attempt,
                &sub.livemode,
                &app.config.reconcile_after.as_secs_f64(),
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
    tx.exec(
        "UPDATE subscriptions SET next_charge_at = GREATEST(next_charge_at, now() + make_interval(secs => $2)), \
         updated_at = now() WHERE id = $1",
        &[&sub.id, &LEASE_SECS],
    )
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Payment::from_row(&row).map(Some).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_keys_are_stable_and_differ_per_attempt() {
        let sub = Uuid::nil();
        let at = DateTime::from_timestamp(1_700_000_000, 123_000).unwrap();
        assert_eq!(renewal_key(sub, at, 0), renewal_key(sub, at, 0));
        assert_ne!(renewal_key(sub, at, 0), renewal_key(sub, at, 1));
        assert_eq!(renewal_key(sub, at, 0).len(), 64);
    }
}
