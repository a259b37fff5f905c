//! Refunds: recorded with their provider idempotence key before the provider call,
//! then submitted; the provider's answer (or its notification) settles them.
//!
//! Only a definite refusal (a 4xx with a parsed error, or "not found") ends a refund
//! `canceled` (alerted `refund_refused`). Any other failure (network, 5xx, 202, an
//! unreadable answer) leaves the outcome unknown: the refund stays pending, still
//! counted against what is left to refund, and `jobs::refunds` follows it up.
//!
//! Only a full refund changes access, decided by the period the payment paid (recorded
//! on the payment when it succeeded): the current one ends now; a prepaid next one moves
//! the period end back; a past one changes nothing. A refund of a payment we have not
//! yet seen succeed first applies the success, re-read from the provider.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use uuid::Uuid;

use crate::app::App;
use crate::domain::{Money, PaymentStatus, RefundStatus};
use crate::events::{self, EventSubject, EventType};
use crate::providers::{CreateRefund, ProviderError, ProviderRefund};
use crate::service::settle;
use crate::store::{payments, subscriptions, Payment, StoreError, Subscription};

#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("refund {0} not found")]
    NotFound(Uuid),
    /// Money went back for a payment the provider has not (yet) shown us as succeeded.
    #[error("payment {0} has not succeeded at the provider yet")]
    NotYetPaid(Uuid),
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

/// Sends a recorded refund to the provider (same key on every retry) and records the
/// answer. A definite refusal cancels it (and is returned); an unknown outcome leaves
/// it pending.
pub async fn submit(app: &App, refund_id: Uuid) -> Result<RefundStatus, RefundError> {
    let (payment, amount, key, reason) = {
        let db = app.db.get().await?;
        let row = db
            .query_opt(
                "SELECT payment_id, amount_minor, provider_idempotence_key, reason FROM refunds \
                 WHERE id = $1 AND status = 'pending'",
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
    let answer = match send(app, &payment, amount, key, reason).await {
        Ok(answer) => answer,
        Err(e) if e.is_definite() => {
            refuse(app, refund_id, payment.id, &e.to_string()).await?;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    record_result(app, refund_id, &answer.id, answer.status).await?;
    Ok(answer.status)
}

async fn send(
    app: &App,
    payment: &Payment,
    amount: i64,
    idempotence_key: String,
    description: String,
) -> Result<ProviderRefund, ProviderError> {
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
    provider
        .create_refund(&CreateRefund {
            provider_payment_id,
            amount: Money::new(amount, payment.amount.currency()),
            description,
            idempotence_key,
        })
        .await
}

/// The provider refused the refund for good: canceled (what is left to refund grows
/// back), alerted for an operator, never sent again.
async fn refuse(
    app: &App,
    refund_id: Uuid,
    payment_id: Uuid,
    why: &str,
) -> Result<(), RefundError> {
    let n = app
        .db
        .get()
        .await?
        .execute(
            "UPDATE refunds SET status = 'canceled', last_error = $2, next_attempt_at = NULL, updated_at = now() \
             WHERE id = $1 AND status = 'pending'",
            &[&refund_id, &why],
        )
        .await?;
    if n == 1 {
        settle::alert(
            "refund_refused",
            &format!("refund {refund_id} refused by the provider: {why}"),
            payment_id,
        );
    }
    Ok(())
}

/// Records the provider's refund state; a succeeded refund reduces the payment
/// (partially_refunded or refunded) and a full refund may change access.
pub async fn record_result(
    app: &App,
    refund_id: Uuid,
    provider_id: &str,
    status: RefundStatus,
) -> Result<(), RefundError> {
    if status == RefundStatus::Succeeded {
        apply_success_first(app, refund_id).await?;
    }
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
         next_attempt_at = CASE WHEN status = 'pending' AND $3 <> 'pending' THEN NULL ELSE next_attempt_at END, \
         status = CASE WHEN status = 'pending' THEN $3 ELSE status END WHERE id = $1",
        &[&refund_id, &provider_id, &status.as_str()],
    )
    .await?;
    if current == "pending" && status == RefundStatus::Succeeded {
        apply_succeeded_refund(&tx, payment_id, amount).await?;
    }
    tx.commit().await?;
    if current == "pending" && status == RefundStatus::Canceled {
        settle::alert(
            "refund_refused",
            &format!("refund {refund_id} canceled by the provider"),
            payment_id,
        );
    }
    Ok(())
}

/// Money went back for a payment we have not seen succeed (its success notification
/// still waits for a retry): apply the provider's success first, so the viewer gets
/// what the rest of the money paid for. No lock is held across the provider read.
async fn apply_success_first(app: &App, refund_id: Uuid) -> Result<(), RefundError> {
    let payment = {
        let db = app.db.get().await?;
        let row = db
            .query_opt(
                "SELECT payment_id FROM refunds WHERE id = $1",
                &[&refund_id],
            )
            .await?
            .ok_or(RefundError::NotFound(refund_id))?;
        payments::get(&db, row.get(0))
            .await?
            .ok_or(RefundError::NotFound(refund_id))?
    };
    if payment.status.is_paid() {
        return Ok(());
    }
    let provider = app
        .providers
        .get(payment.pay_system)
        .cloned()
        .ok_or(RefundError::NotYetPaid(payment.id))?;
    let read = async {
        match &payment.provider_payment_id {
            Some(pid) => provider.get_payment(pid).await.map(Some),
            None => {
                let (from, to) = crate::jobs::create::lookup_window(payment.created_at);
                provider.find_payment(payment.id, from, to).await
            }
        }
    };
    let found = tokio::time::timeout(crate::service::webhooks::REREAD_BUDGET, read)
        .await
        .map_err(|_| ProviderError::Unavailable("payment re-read timed out".into()))??;
    if let Some(pp) = found {
        // Boxed: `apply` may submit an automatic refund, which records its result here.
        Box::pin(settle::apply(app, payment.id, &pp)).await?;
    }
    let db = app.db.get().await?;
    match payments::get(&db, payment.id).await? {
        Some(p) if p.status.is_paid() => Ok(()),
        _ => Err(RefundError::NotYetPaid(payment.id)),
    }
}

/// Money went back to the viewer: move the payment and, for a full refund, access.
async fn apply_succeeded_refund(
    tx: &Transaction<'_>,
    payment_id: Uuid,
    amount: i64,
) -> Result<(), RefundError> {
    let payment = payments::lock(tx, payment_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("refund without payment".into()))?;
    let sub = match payment.subscription_id {
        Some(id) => subscriptions::lock(tx, id).await?,
        None => None,
    };
    let refunded = (payment.refunded_minor + amount).min(payment.amount.minor());
    let status = if refunded >= payment.amount.minor() {
        PaymentStatus::Refunded
    } else {
        PaymentStatus::PartiallyRefunded
    };
    // Forward only, in SQL too: a payment is refunded only after it succeeded.
    let row = tx
        .query_opt(
            &format!(
                "UPDATE payments SET refunded_minor = $2, status = $3, updated_at = now() \
                 WHERE id = $1 AND status IN ('succeeded', 'partially_refunded', 'refunded') RETURNING {}",
                payments::COLS
            ),
            &[&payment.id, &refunded, &status.as_str()],
        )
        .await?
        .ok_or(RefundError::NotYetPaid(payment.id))?;
    let moved = Payment::from_row(&row)?;
    let mut sub_after = sub.clone();
    if status == PaymentStatus::Refunded && payment.status != PaymentStatus::Refunded {
        if let Some(sub) = sub.filter(|s| s.status.is_live()) {
            sub_after = Some(full_refund_access(tx, &moved, sub).await?);
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

/// Which period a fully refunded payment paid, seen from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaidPeriod {
    /// Over: the refund changes no access.
    Past,
    /// In use now: access ends now.
    Current,
    /// Paid ahead (a renewal charged RENEW_BEFORE early): the period end moves back.
    Next,
}

/// Decides from the period the payment paid (`start`..`end`).
pub fn paid_period(start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> PaidPeriod {
    if end <= now {
        PaidPeriod::Past
    } else if start > now {
        PaidPeriod::Next
    } else {
        PaidPeriod::Current
    }
}

/// The design's "only a full refund changes access", decided by the period the payment
/// paid: the current one → canceled now, auto-renew off; a prepaid next one → the end
/// moves back one period (and auto-renew off, or the renewer would charge that period
/// again at once); a past one → nothing.
async fn full_refund_access(
    tx: &Transaction<'_>,
    payment: &Payment,
    sub: Subscription,
) -> Result<Subscription, StoreError> {
    let row = tx
        .query_one(
            "SELECT period_end, now() FROM payments WHERE id = $1",
            &[&payment.id],
        )
        .await?;
    let (end, now): (Option<DateTime<Utc>>, DateTime<Utc>) = (row.get(0), row.get(1));
    let end = end.or(payment.period_start.map(|s| sub.period.add_to(s)));
    let which = match (payment.period_start, end) {
        (Some(start), Some(end)) => paid_period(start, end, now),
        // Paid before periods were recorded: current unless a later payment of this
        // subscription pays the period in use.
        _ => {
            let later: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM payments WHERE subscription_id = $1 AND id <> $2 \
                     AND created_at > $3 AND status IN ('succeeded', 'partially_refunded') \
                     AND (period_start IS NULL OR period_start <= now()))",
                    &[&sub.id, &payment.id, &payment.created_at],
                )
                .await?
                .get(0);
            if later {
                PaidPeriod::Past
            } else {
                PaidPeriod::Current
            }
        }
    };
    match which {
        PaidPeriod::Past => Ok(sub),
        PaidPeriod::Current => {
            let row = tx
                .query_one(
                    &format!(
                        "UPDATE subscriptions SET status = 'canceled', auto_renew = false, next_charge_at = NULL, \
                         ended_at = now(), current_period_end = GREATEST(current_period_start + interval '1 second', \
                         LEAST(current_period_end, now())), updated_at = now() WHERE id = $1 RETURNING {}",
                        subscriptions::COLS
                    ),
                    &[&sub.id],
                )
                .await?;
            let updated = Subscription::from_row(&row)?;
            events::record(
                tx,
                EventType::SubscriptionCanceled,
                EventSubject::subscription(&updated),
            )
            .await?;
            Ok(updated)
        }
        PaidPeriod::Next => {
            let start = payment.period_start.expect("a prepaid period has a start");
            // The refunded period is normally the last one: its start is the new end.
            let new_end = if end == Some(sub.current_period_end) {
                start
            } else {
                sub.period.sub_from(sub.current_period_end)
            };
            // The period in use is the one that ends there; the payment for it says where it began.
            let new_start = if sub.current_period_start < new_end {
                sub.current_period_start
            } else {
                tx.query_opt(
                    "SELECT period_start FROM payments WHERE subscription_id = $1 AND id <> $2 AND period_end = $3 \
                     AND period_start < $3 AND status IN ('succeeded', 'partially_refunded') \
                     ORDER BY created_at DESC LIMIT 1",
                    &[&sub.id, &payment.id, &new_end],
                )
                .await?
                .map(|r| r.get(0))
                .unwrap_or_else(|| sub.period.sub_from(new_end))
            };
            let row = tx
                .query_one(
                    &format!(
                        "UPDATE subscriptions SET current_period_start = $2, current_period_end = $3, \
                         auto_renew = false, next_charge_at = NULL, updated_at = now() WHERE id = $1 RETURNING {}",
                        subscriptions::COLS
                    ),
                    &[&sub.id, &new_start, &new_end],
                )
                .await?;
            let updated = Subscription::from_row(&row)?;
            if sub.auto_renew {
                events::record(
                    tx,
                    EventType::SubscriptionAutoRenewDisabled,
                    EventSubject::subscription(&updated),
                )
                .await?;
            }
            Ok(updated)
        }
    }
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
        // `submit` has already canceled it and alerted.
        Err(RefundError::Provider(e)) if e.is_definite() => {
            let err = ApiError::bad_gateway(format!("the provider refused the refund: {e}"));
            (
                err.status,
                serde_json::json!({"code": "provider_rejected", "detail": err.detail}),
            )
        }
        Err(RefundError::Provider(e)) => {
            // Outcome unknown: the refund stays pending (still counted against what is
            // left) and `jobs::refunds` re-sends it with the same key.
            tracing::warn!(refund_id = %refund_id, error = %e, "refund outcome unknown; it will be followed up");
            if let Some(s) = &scope {
                idempotency::release(&app.db.get().await?, s).await?;
            }
            return Err(ApiError::bad_gateway(
                "the provider's answer is unknown; the refund is queued and will be followed up",
            ));
        }
        Err(e) => return Err(ApiError::internal(&e)),
    };
    if let Some(s) = &scope {
        idempotency::complete(&app.db.get().await?, s, answer.0, &answer.1).await?;
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, hour, 0, 0).unwrap()
    }

    #[test]
    fn the_period_a_payment_paid_is_past_current_or_next() {
        let now = at(10, 12);
        assert_eq!(paid_period(at(1, 0), at(10, 12), now), PaidPeriod::Past);
        assert_eq!(paid_period(at(1, 0), at(10, 13), now), PaidPeriod::Current);
        assert_eq!(paid_period(at(10, 12), at(20, 0), now), PaidPeriod::Current);
        assert_eq!(paid_period(at(10, 13), at(20, 0), now), PaidPeriod::Next);
    }
}
