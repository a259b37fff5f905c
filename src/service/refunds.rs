//! Refunds: recorded with their provider idempotence key before the provider call,
//! then submitted; the provider's answer (or its notification) settles them.

use deadpool_postgres::Transaction;
use uuid::Uuid;

use crate::app::App;
use crate::domain::{Money, RefundStatus};
use crate::events::{self, EventSubject, EventType};
use crate::providers::{CreateRefund, ProviderError};
use crate::store::{payments, subscriptions, Payment, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("refund {0} not found")]
    NotFound(Uuid),
}

impl From<tokio_postgres::Error> for RefundError {
    fn from(e: tokio_postgres::Error) -> Self {
        RefundError::Store(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for RefundError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        RefundError::Store(e.into())
    }
}

/// A full refund the service starts by itself (e.g. a payment that cannot apply).
pub async fn insert_system_refund(
    tx: &Transaction<'_>,
    payment: &Payment,
    reason: &str,
) -> Result<Uuid, StoreError> {
    let id = Uuid::new_v4();
    tx.execute(
        "INSERT INTO refunds (id, payment_id, pay_system, amount_minor, currency, status, reason, initiated_by, \
         provider_idempotence_key) VALUES ($1, $2, $3, $4, $5, 'pending', $6, 'system', $7)",
        &[
            &id,
            &payment.id,
            &payment.pay_system.as_str(),
            &payment.amount.minor(),
            &payment.amount.currency().code(),
            &reason,
            &Uuid::new_v4().to_string(),
        ],
    )
    .await?;
    Ok(id)
}

/// Sends a recorded refund to the provider (same key on every retry) and records the answer.
pub async fn submit(app: &App, refund_id: Uuid) -> Result<RefundStatus, RefundError> {
    let (payment, amount, key, reason) = {
        let db = app.db.get().await?;
        let row = db
            .query_opt(
                "SELECT payment_id, amount_minor, provider_idempotence_key, reason FROM refunds WHERE id = $1",
                &[&refund_id],
            )
            .await?
            .ok_or(RefundError::NotFound(refund_id))?;
        let payment = payments::get(&db, row.get(0))
            .await?
            .ok_or(RefundError::NotFound(refund_id))?;
        (
            payment,
            row.get::<_, i64>(1),
            row.get::<_, String>(2),
            row.get::<_, String>(3),
        )
    };
    let provider =
        app.providers
            .get(payment.pay_system)
            .ok_or_else(|| ProviderError::Rejected {
                code: "disabled".into(),
                description: "provider not configured".into(),
            })?;
    let provider_payment_id =
        payment
            .provider_payment_id
            .clone()
            .ok_or_else(|| ProviderError::Rejected {
                code: "no_provider_id".into(),
                description: "payment unknown at the provider".into(),
            })?;
    let answer = provider
        .create_refund(&CreateRefund {
            provider_payment_id,
            amount: Money::new(amount, payment.amount.currency()),
            description: reason,
            idempotence_key: key,
        })
        .await?;
    record_result(app, refund_id, &answer.id, answer.status).await?;
    Ok(answer.status)
}

/// Records the provider's refund state; a succeeded refund reduces the payment
/// (partially_refunded or refunded) and a full refund of the paid period revokes access.
pub async fn record_result(
    app: &App,
    refund_id: Uuid,
    provider_id: &str,
    status: RefundStatus,
) -> Result<(), RefundError> {
    let mut db = app.db.get().await?;
    let tx = db.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT payment_id, status, amount_minor FROM refunds WHERE id = $1 FOR UPDATE",
            &[&refund_id],
        )
        .await?
        .ok_or(RefundError::NotFound(refund_id))?;
    let payment_id: Uuid = row.get(0);
    let current: String = row.get(1);
    let amount: i64 = row.get(2);
    tx.execute(
        "UPDATE refunds SET provider_refund_id = COALESCE(provider_refund_id, $2), updated_at = now(), \
         status = CASE WHEN status = 'pending' THEN $3 ELSE status END WHERE id = $1",
        &[&refund_id, &provider_id, &status.as_str()],
    )
    .await?;
    if current == "pending" && status == RefundStatus::Succeeded {
        apply_succeeded_refund(app, &tx, payment_id, amount).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Money went back to the viewer: move the payment and, for a full refund, access.
async fn apply_succeeded_refund(
    _app: &App,
    tx: &Transaction<'_>,
    payment_id: Uuid,
    amount: i64,
) -> Result<(), StoreError> {
    let payment = payments::lock(tx, payment_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("refund without payment".into()))?;
    let sub = match payment.subscription_id {
        Some(id) => subscriptions::lock(tx, id).await?,
        None => None,
    };
    let refunded = (payment.refunded_minor + amount).min(payment.amount.minor());
    let status = if refunded >= payment.amount.minor() {
        "refunded"
    } else {
        "partially_refunded"
    };
    let row = tx
        .query_one(
            &format!(
                "UPDATE payments SET refunded_minor = $2, status = $3, updated_at = now() WHERE id = $1 RETURNING {}",
                payments::COLS
            ),
            &[&payment.id, &refunded, &status],
        )
        .await?;
    let moved = Payment::from_row(&row)?;
    let mut sub_after = sub.clone();
    if status == "refunded" {
        if let Some(sub) = sub.filter(|s| s.status.is_live()) {
            sub_after = Some(revoke_for_full_refund(tx, &moved, sub).await?);
        }
    }
    events::record(
        tx,
        EventType::PaymentRefunded,
        EventSubject::payment(&moved, sub_after.as_ref()),
    )
    .await?;
    Ok(())
}

/// A full refund of the payment that paid the current period ends access now; of a
/// prepaid next period, it moves the period end back by one period.
async fn revoke_for_full_refund(
    tx: &Transaction<'_>,
    payment: &Payment,
    sub: crate::store::Subscription,
) -> Result<crate::store::Subscription, StoreError> {
    let prepaid_next = payment
        .period_start
        .is_some_and(|s| s > sub.current_period_start);
    let sql = if prepaid_next {
        format!(
            "UPDATE subscriptions SET current_period_end = $2, updated_at = now() WHERE id = $1 RETURNING {}",
            subscriptions::COLS
        )
    } else {
        format!(
            "UPDATE subscriptions SET status = 'canceled', auto_renew = false, next_charge_at = NULL, \
             ended_at = now(), current_period_end = GREATEST(current_period_start + interval '1 second', LEAST(current_period_end, now())), \
             updated_at = now() WHERE id = $1 AND $2::timestamptz IS NOT NULL RETURNING {}",
            subscriptions::COLS
        )
    };
    let back = sub.period.sub_from(sub.current_period_end);
    let row = tx.query_one(&sql, &[&sub.id, &back]).await?;
    let updated = crate::store::Subscription::from_row(&row)?;
    if !prepaid_next {
        events::record(
            tx,
            EventType::SubscriptionCanceled,
            EventSubject::subscription(&updated),
        )
        .await?;
    }
    Ok(updated)
}
