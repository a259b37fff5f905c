//! Charges due subscriptions with their saved payment method, with no viewer present.
//!
//! Per subscription: claim it (SKIP LOCKED, `next_charge_at` pushed out by a lease
//! that outlasts a provider call with its retries), then in one transaction under
//! the subscription's row lock commit the renewal payment row with a provider key
//! derived from (subscription, period start, attempt); only then call the provider,
//! holding no lock. A crash anywhere re-sends the same key; the partial unique index
//! `payments_one_renewal_per_period` keeps one pending-or-succeeded renewal per period.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{Job, JobError};
use crate::app::App;
use crate::config::JobsConfig;
use crate::domain::PaymentId;
use crate::domain::PaymentStatus;
use crate::domain::SubscriptionId;
use crate::service::create::{self, Sent};
use crate::store::payments::NewRenewal;
use crate::store::{self, Connect};
use crate::store::{payments, subscriptions, tariffs, Payment, StoreError};

pub const BATCH: usize = 200;
/// Claimed subscriptions charged at once: each is a few queries and one provider call,
/// mostly waiting, so one at a time left the database and the provider idle.
pub const PARALLEL: usize = 16;

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
        let ids = {
            let db = app.db.conn().await?;
            subscriptions::claim_due_renewals(&db, BATCH as i64, self.lease).await?
        };
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
}

/// The provider idempotence key of one renewal attempt: the same inputs always give
/// the same key, so a crashed attempt is re-sent, never duplicated. 64 hex chars
/// (YooKassa's limit).
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

/// Charges one claimed subscription; answers what the provider said (None: nothing to charge).
pub async fn renew_one(
    app: &App,
    subscription_id: SubscriptionId,
) -> Result<Option<Sent>, JobError> {
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
pub async fn prepare(
    app: &App,
    subscription_id: SubscriptionId,
) -> Result<Option<Payment>, JobError> {
    let lease = app.config.jobs.renewer_lease;
    let mut db = app.db.conn().await?;
    let tx = store::begin(&mut db).await?;
    let Some(sub) = subscriptions::lock(&tx, subscription_id).await? else {
        return Ok(None);
    };
    let method = match sub.payment_method_id {
        Some(id) if sub.status.is_live() && sub.auto_renew && sub.next_charge_at.is_some() => {
            payments::get_method(&tx, id).await?.filter(|m| m.usable)
        }
        _ => None,
    };
    let Some(method) = method else {
        store::commit(tx).await?;
        return Ok(None);
    };
    let period_start = sub.current_period_end;
    if let Some(p) = payments::open_renewal(&tx, sub.id, period_start).await? {
        store::commit(tx).await?;
        return Ok((p.status != PaymentStatus::Succeeded).then_some(p));
    }
    let attempt =
        payments::next_renewal_attempt(&tx, sub.id, period_start, sub.renewal_attempts).await?;
    let tariff_name = tariffs::get(&tx, sub.tariff_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("tariff {} is gone", sub.tariff_id)))?
        .name;
    let key = renewal_key(sub.id, period_start, attempt);
    let payment = payments::insert_renewal(
        &tx,
        &NewRenewal {
            id: PaymentId::new(),
            user_id: sub.user_id,
            tariff_id: sub.tariff_id,
            subscription_id: sub.id,
            // The provider that saved the method charges it, whichever provider
            // sold the subscription first (a same-tariff purchase elsewhere moves it).
            pay_system: method.pay_system,
            // The subscription's own price, never today's tariff price.
            amount: sub.price,
            description: &format!("Subscription renewal: {tariff_name}"),
            idempotence_key: &key,
            payment_method_id: method.id,
            period_start,
            attempt,
            livemode: sub.livemode,
            check_after: app.config.reconcile_after,
        },
    )
    .await?;
    subscriptions::push_next_charge(&tx, sub.id, lease).await?;
    store::commit(tx).await?;
    Ok(Some(payment))
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
