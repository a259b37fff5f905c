//! `refunds`: one row per refund we asked for (or found made in the provider's
//! dashboard), with its provider idempotence key.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{parse_col, GenericClient, StoreError};
use crate::domain::receipt::Receipt;
use crate::domain::{Currency, Money, PaySystem, RefundStatus};
use crate::domain::{PaymentId, RefundId, UserId};
use crate::store::Cached as _;

// --- service: refunds ---

/// A refund as operators and viewers see it.
#[derive(Debug, Clone)]
pub struct Refund {
    pub id: RefundId,
    pub payment_id: PaymentId,
    pub amount: Money,
    pub status: RefundStatus,
    pub reason: String,
    pub initiated_by: String,
    pub created_at: DateTime<Utc>,
}

impl Refund {
    fn from_row(r: &Row) -> Result<Refund, StoreError> {
        let currency: Currency = parse_col(r, "currency")?;
        Ok(Refund {
            id: r.try_get("id")?,
            payment_id: r.try_get("payment_id")?,
            amount: Money::new(r.try_get("amount_minor")?, currency),
            status: parse_col(r, "status")?,
            reason: r.try_get("reason")?,
            initiated_by: r.try_get("initiated_by")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

const VIEW: &str = "SELECT r.id, r.payment_id, r.amount_minor, r.currency, r.status, r.reason, \
    r.initiated_by, r.created_at FROM refunds r";

pub async fn get(db: &impl GenericClient, id: RefundId) -> Result<Option<Refund>, StoreError> {
    db.query_opt(&format!("{VIEW} WHERE r.id = $1"), &[&id])
        .await?
        .as_ref()
        .map(Refund::from_row)
        .transpose()
}

/// The user's refunds, newest first (at most 200).
pub async fn list_for_user(
    db: &impl GenericClient,
    user_id: UserId,
) -> Result<Vec<Refund>, StoreError> {
    db.query(
        &format!(
            "{VIEW} JOIN payments p ON p.id = r.payment_id WHERE p.user_id = $1 \
             ORDER BY r.created_at DESC LIMIT 200"
        ),
        &[&user_id],
    )
    .await?
    .iter()
    .map(Refund::from_row)
    .collect()
}

/// Who started a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    Admin,
    System,
}

/// A refund to record before the provider is called.
#[derive(Debug, Clone)]
pub struct NewRefund<'a> {
    pub id: RefundId,
    pub payment_id: PaymentId,
    pub pay_system: PaySystem,
    pub amount: Money,
    pub reason: &'a str,
    pub initiated_by: Initiator,
    pub provider_idempotence_key: &'a str,
    /// The refund receipt sent with it (the payment had one).
    pub receipt: Option<&'a Receipt>,
}

pub async fn insert(db: &impl GenericClient, r: &NewRefund<'_>) -> Result<(), StoreError> {
    let by = match r.initiated_by {
        Initiator::Admin => "admin",
        Initiator::System => "system",
    };
    db.execute(
        "INSERT INTO refunds (id, payment_id, pay_system, amount_minor, currency, status, reason, initiated_by, \
         provider_idempotence_key, receipt) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9)",
        &[
            &r.id,
            &r.payment_id,
            &r.pay_system.as_str(),
            &r.amount.minor(),
            &r.amount.currency().code(),
            &r.reason,
            &by,
            &r.provider_idempotence_key,
            &super::payments::receipt_json(r.receipt),
        ],
    )
    .await?;
    Ok(())
}

/// The payment's refunds not canceled, pending ones included, in minor units.
pub async fn committed_minor(
    db: &impl GenericClient,
    payment_id: PaymentId,
) -> Result<i64, StoreError> {
    Ok(db
        .query_one(
            "SELECT COALESCE(sum(amount_minor), 0)::bigint FROM refunds WHERE payment_id = $1 AND status <> 'canceled'",
            &[&payment_id],
        )
        .await?
        .get(0))
}

/// What the provider call of a pending refund needs.
#[derive(Debug, Clone)]
pub struct PendingRefund {
    pub payment_id: PaymentId,
    pub amount_minor: i64,
    pub provider_idempotence_key: String,
    pub reason: String,
}

pub async fn get_pending(
    db: &impl GenericClient,
    id: RefundId,
) -> Result<Option<PendingRefund>, StoreError> {
    Ok(db
        .query_opt(
            "SELECT payment_id, amount_minor, provider_idempotence_key, reason FROM refunds \
             WHERE id = $1 AND status = 'pending'",
            &[&id],
        )
        .await?
        .map(|row| PendingRefund {
            payment_id: row.get(0),
            amount_minor: row.get(1),
            provider_idempotence_key: row.get(2),
            reason: row.get(3),
        }))
}

pub async fn payment_of(
    db: &impl GenericClient,
    id: RefundId,
) -> Result<Option<PaymentId>, StoreError> {
    Ok(db
        .query_opt("SELECT payment_id FROM refunds WHERE id = $1", &[&id])
        .await?
        .map(|r| r.get(0)))
}

/// A pending refund refused for good: canceled, never sent again. False if it was
/// not pending.
pub async fn cancel_pending(
    db: &impl GenericClient,
    id: RefundId,
    why: &str,
) -> Result<bool, StoreError> {
    Ok(db
        .execute(
            "UPDATE refunds SET status = 'canceled', last_error = $2, next_attempt_at = NULL, updated_at = now() \
             WHERE id = $1 AND status = 'pending'",
            &[&id, &why],
        )
        .await?
        == 1)
}

/// A refund row locked for recording the provider's state.
#[derive(Debug, Clone)]
pub struct LockedRefund {
    pub payment_id: PaymentId,
    pub status: RefundStatus,
    pub amount_minor: i64,
}

pub async fn lock(
    db: &impl GenericClient,
    id: RefundId,
) -> Result<Option<LockedRefund>, StoreError> {
    db.query_opt(
        "SELECT payment_id, status, amount_minor FROM refunds WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await?
    .map(|row| {
        Ok(LockedRefund {
            payment_id: row.try_get(0)?,
            status: parse_col(&row, "status")?,
            amount_minor: row.try_get(2)?,
        })
    })
    .transpose()
}

/// The provider's id and state; a final state is never overwritten.
pub async fn record_provider_state(
    db: &impl GenericClient,
    id: RefundId,
    provider_refund_id: &str,
    status: RefundStatus,
) -> Result<(), StoreError> {
    db.execute(
        "UPDATE refunds SET provider_refund_id = COALESCE(provider_refund_id, $2), updated_at = now(), \
         next_attempt_at = CASE WHEN status = 'pending' AND $3 <> 'pending' THEN NULL ELSE next_attempt_at END, \
         status = CASE WHEN status = 'pending' THEN $3 ELSE status END WHERE id = $1",
        &[&id, &provider_refund_id, &status.as_str()],
    )
    .await?;
    Ok(())
}

// --- webhooks ---

/// Our refund with this provider id, at this provider.
pub async fn id_by_provider_id(
    db: &impl GenericClient,
    system: PaySystem,
    provider_refund_id: &str,
) -> Result<Option<RefundId>, StoreError> {
    Ok(db
        .q_opt(
            "SELECT id FROM refunds WHERE pay_system = $1 AND provider_refund_id = $2",
            &[&system.as_str(), &provider_refund_id],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Which of these provider refund ids our refunds hold with a final status (nothing
/// left to learn about them).
pub async fn settled_of(
    db: &impl GenericClient,
    system: PaySystem,
    provider_refund_ids: &[String],
) -> Result<std::collections::HashSet<String>, StoreError> {
    Ok(db
        .query(
            "SELECT provider_refund_id FROM refunds \
             WHERE pay_system = $1 AND provider_refund_id = ANY($2) AND status <> 'pending'",
            &[&system.as_str(), &provider_refund_ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The provider's ids our refunds of this payment already hold.
pub async fn provider_ids_of_payment(
    db: &impl GenericClient,
    payment_id: PaymentId,
) -> Result<Vec<String>, StoreError> {
    Ok(db
        .query(
            "SELECT provider_refund_id FROM refunds WHERE payment_id = $1 AND provider_refund_id IS NOT NULL",
            &[&payment_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The oldest pending refund of this payment and amount that never got a provider id
/// (its answer was lost).
pub async fn pending_without_provider_id(
    db: &impl GenericClient,
    payment_id: PaymentId,
    amount_minor: i64,
) -> Result<Option<RefundId>, StoreError> {
    Ok(db
        .query_opt(
            "SELECT id FROM refunds WHERE payment_id = $1 AND status = 'pending' \
             AND provider_refund_id IS NULL AND amount_minor = $2 ORDER BY created_at LIMIT 1",
            &[&payment_id, &amount_minor],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Records a refund made at the provider as pending, initiated by the provider.
/// `None` when a row with the same key already exists (a concurrent delivery).
pub async fn insert_made_at_provider(
    db: &impl GenericClient,
    system: PaySystem,
    payment_id: PaymentId,
    amount: Money,
    provider_refund_id: &str,
) -> Result<Option<RefundId>, StoreError> {
    Ok(db
        .query_opt(
            include_str!("refunds/insert_made_at_provider.sql"),
            &[
                &RefundId::new(),
                &payment_id,
                &system.as_str(),
                &amount.minor(),
                &amount.currency().code(),
                &format!("external:{provider_refund_id}"),
                &provider_refund_id,
            ],
        )
        .await?
        .map(|r| r.get(0)))
}

// --- jobs: refund follow-up ---

/// A pending refund claimed for a follow-up.
#[derive(Debug, Clone)]
pub struct ClaimedRefund {
    pub id: RefundId,
    pub payment_id: PaymentId,
    pub pay_system: PaySystem,
    pub provider_refund_id: Option<String>,
    /// Still inside the provider's idempotence-key window: safe to re-send.
    pub in_key_window: bool,
}

/// Claims up to `batch` pending refunds due a follow-up for `lease`.
pub async fn claim_due(
    db: &impl GenericClient,
    batch: i64,
    lease: std::time::Duration,
    key_window_hours: i32,
) -> Result<Vec<ClaimedRefund>, StoreError> {
    db.q(
        super::sql_file!("refunds/claim_due.sql"),
        &[&batch, &lease.as_secs_f64(), &key_window_hours],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(ClaimedRefund {
            id: r.try_get("id")?,
            payment_id: r.try_get("payment_id")?,
            pay_system: parse_col(r, "pay_system")?,
            provider_refund_id: r.try_get("provider_refund_id")?,
            in_key_window: r.try_get("in_key_window")?,
        })
    })
    .collect()
}

/// Still open: try again after `first` doubling per attempt, capped at `max`.
pub async fn schedule_retry(
    db: &impl GenericClient,
    id: RefundId,
    why: &str,
    first: std::time::Duration,
    max: std::time::Duration,
) -> Result<(), StoreError> {
    db.exec(
        super::sql_file!("refunds/schedule_retry.sql"),
        &[&id, &why, &first.as_secs_f64(), &max.as_secs_f64()],
    )
    .await?;
    Ok(())
}

/// Unanswered past the key window: no more tries, left pending for an operator.
/// True when this call stopped it.
pub async fn stop_unresolved(db: &impl GenericClient, id: RefundId) -> Result<bool, StoreError> {
    Ok(db
        .exec(
            "UPDATE refunds SET next_attempt_at = NULL, updated_at = now(), \
             last_error = 'unanswered past the provider''s idempotence-key window; not re-sent' \
             WHERE id = $1 AND status = 'pending'",
            &[&id],
        )
        .await?
        == 1)
}
