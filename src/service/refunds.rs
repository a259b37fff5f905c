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

#[derive(Debug, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    #[serde(default)]
    pub amount: Option<Money>,
    pub reason: String,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RefundView {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub amount: Money,
    pub status: String,
    pub reason: String,
    pub initiated_by: String,
    pub created_at: String,
}

pub async fn view(
    db: &impl crate::store::GenericClient,
    refund_id: Uuid,
) -> Result<Option<RefundView>, StoreError> {
    let rows = list(db, "r.id = $1", &refund_id).await?;
    Ok(rows.into_iter().next())
}

/// Refunds of one payment (`r.payment_id = $1`) or of one user (`p.user_id = $1`).
pub async fn list(
    db: &impl crate::store::GenericClient,
    filter: &str,
    id: &Uuid,
) -> Result<Vec<RefundView>, StoreError> {
    let sql = format!(
        "SELECT r.id, r.payment_id, r.amount_minor, r.currency, r.status, r.reason, r.initiated_by, r.created_at \
         FROM refunds r JOIN payments p ON p.id = r.payment_id WHERE {filter} ORDER BY r.created_at DESC LIMIT 200"
    );
    db.query(&sql, &[id])
        .await?
        .iter()
        .map(|r| {
            let currency: crate::domain::Currency = crate::store::parse_col(r, "currency")?;
            Ok(RefundView {
                id: r.get("id"),
                payment_id: r.get("payment_id"),
                amount: Money::new(r.get("amount_minor"), currency),
                status: r.get("status"),
                reason: r.get("reason"),
                initiated_by: r.get("initiated_by"),
                created_at: crate::http::handlers::views::rfc3339(r.get("created_at")),
            })
        })
        .collect()
}

/// An operator's refund: full when no amount is given, never more than what is left
/// (the amount minus every refund not canceled, pending ones included). Recorded with
/// its provider key before the provider is called.
pub async fn admin_refund(
    app: &App,
    admin: Uuid,
    payment_id: Uuid,
    raw: &[u8],
    key: Option<crate::service::idempotency::IdempotencyKey>,
) -> Result<(warp::http::StatusCode, serde_json::Value), crate::http::error::ApiError> {
    use crate::http::error::ApiError;
    use crate::service::idempotency::{self, Claim, Scope};
    use warp::http::StatusCode;

    let req: RefundRequest = crate::http::body::json(raw)?;
    let reason = req.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::bad_request(
            "bad_reason",
            "reason must be 1..=500 characters",
        ));
    }
    let hash = idempotency::request_hash(&[
        payment_id.as_bytes(),
        &serde_json::to_vec(&req).expect("serializable"),
    ]);
    let scope = key.as_ref().map(|key| Scope {
        user_id: admin,
        scope: "refund",
        key,
    });

    let mut db = app.db.get().await?;
    let tx = db.transaction().await?;
    let mut resume = None;
    if let Some(s) = &scope {
        match idempotency::claim(&tx, s, &hash).await? {
            Claim::New => {}
            Claim::Replay(status, body) => return Ok((status, body)),
            Claim::Resume(id) => resume = Some(id),
        }
    }
    let refund_id = match resume {
        Some(id) => id,
        None => {
            let payment = payments::lock(&tx, payment_id)
                .await?
                .ok_or_else(|| ApiError::not_found("payment_not_found", "no such payment"))?;
            if !matches!(
                payment.status,
                crate::domain::PaymentStatus::Succeeded
                    | crate::domain::PaymentStatus::PartiallyRefunded
            ) {
                return Err(ApiError::conflict(
                    "payment_not_refundable",
                    format!("a {} payment cannot be refunded", payment.status),
                ));
            }
            let committed: i64 = tx
                .query_one(
                    "SELECT COALESCE(sum(amount_minor), 0)::bigint FROM refunds WHERE payment_id = $1 AND status <> 'canceled'",
                    &[&payment.id],
                )
                .await?
                .get(0);
            let remaining = payment.amount.minor() - committed;
            let amount = match req.amount {
                Some(a) if a.currency() != payment.amount.currency() => {
                    return Err(ApiError::bad_request(
                        "currency_mismatch",
                        "refund currency differs from the payment's",
                    ))
                }
                Some(a) => a.minor(),
                None => remaining,
            };
            if amount <= 0 || amount > remaining {
                return Err(ApiError::conflict(
                    "refund_exceeds_remaining",
                    format!(
                        "at most {} can be refunded",
                        crate::domain::money::format_minor(remaining.max(0))
                    ),
                ));
            }
            let id = Uuid::new_v4();
            tx.execute(
                "INSERT INTO refunds (id, payment_id, pay_system, amount_minor, currency, status, reason, initiated_by, \
                 provider_idempotence_key) VALUES ($1, $2, $3, $4, $5, 'pending', $6, 'admin', $7)",
                &[&id, &payment.id, &payment.pay_system.as_str(), &amount, &payment.amount.currency().code(), &reason,
                  &Uuid::new_v4().to_string()],
            )
            .await?;
            if let Some(s) = &scope {
                idempotency::attach(&tx, s, id).await?;
            }
            id
        }
    };
    tx.commit().await?;
    // No connection is kept while the provider is called.
    drop(db);

    let answer = match submit(app, refund_id).await {
        Ok(_) => {
            let db = app.db.get().await?;
            let view = view(&db, refund_id)
                .await?
                .ok_or_else(|| ApiError::internal(&"refund vanished"))?;
            (
                StatusCode::CREATED,
                serde_json::to_value(view).expect("serializable"),
            )
        }
        Err(RefundError::Provider(ProviderError::Unavailable(e))) => {
            // Outcome unknown: the refund stays pending and is re-sent with the same key.
            tracing::warn!(refund_id = %refund_id, error = %e, "refund submission deferred");
            if let Some(s) = &scope {
                idempotency::release(&app.db.get().await?, s).await?;
            }
            return Err(ApiError::bad_gateway(
                "the provider is unavailable; the refund is queued and will be retried",
            ));
        }
        Err(RefundError::Provider(e)) => {
            app.db
                .get()
                .await?
                .execute("UPDATE refunds SET status = 'canceled', updated_at = now() WHERE id = $1 AND status = 'pending'", &[&refund_id])
                .await?;
            let err = ApiError::bad_gateway(format!("the provider refused the refund: {e}"));
            (
                err.status,
                serde_json::json!({"code": "provider_rejected", "detail": err.detail}),
            )
        }
        Err(e) => return Err(ApiError::internal(&e)),
    };
    if let Some(s) = &scope {
        idempotency::complete(&app.db.get().await?, s, answer.0, &answer.1).await?;
    }
    Ok(answer)
}

/// Re-sends refunds whose provider call never completed (same key each time).
pub async fn resubmit_pending(app: &App) -> Result<usize, String> {
    let ids: Vec<Uuid> = crate::jobs::claim(
        app,
            "UPDATE refunds SET updated_at = now() WHERE id IN (SELECT id FROM refunds WHERE status = 'pending' \
             AND provider_refund_id IS NULL AND updated_at < now() - interval '1 minute' \
             ORDER BY updated_at LIMIT 20 FOR UPDATE SKIP LOCKED) RETURNING id",
            &[],
    )
    .await?;
    for id in &ids {
        if let Err(e) = submit(app, *id).await {
            tracing::warn!(refund_id = %id, error = %e, "refund still not submitted");
        }
    }
    Ok(ids.len())
}
