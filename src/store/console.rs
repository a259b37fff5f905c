//! What the operator's console reads beyond the account queries: the overview's
//! figures, a viewer's timeline, payments waiting for a review, the audit log.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;

use super::payments::{self, Payment};
use super::{GenericClient, StoreError};
use crate::domain::{PaySystem, PaymentId, UserId};
use crate::store::Cached as _;

/// The overview's figures, read in one snapshot.
pub struct Overview {
    pub active: i64,
    pub past_due: i64,
    pub renewals_due_24h: i64,
    pub needs_review: i64,
    pub inbox_failed: i64,
    pub outbox_backlog: i64,
    pub outbox_oldest_unsent: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

pub async fn overview(db: &impl GenericClient) -> Result<Overview, StoreError> {
    let row = db
        .q_one(
            "SELECT
               (SELECT count(*) FROM subscriptions WHERE status = 'active'),
               (SELECT count(*) FROM subscriptions WHERE status = 'past_due'),
               (SELECT count(*) FROM subscriptions
                 WHERE status IN ('active', 'past_due') AND auto_renew
                   AND next_charge_at < now() + interval '24 hours'),
               (SELECT count(*) FROM payments
                 WHERE review_reason IS NOT NULL AND reviewed_at IS NULL),
               (SELECT count(*) FROM webhook_inbox WHERE status = 'failed'),
               (SELECT count(*) FROM outbox WHERE sent_at IS NULL),
               (SELECT min(created_at) FROM outbox WHERE sent_at IS NULL),
               now()",
            &[],
        )
        .await?;
    Ok(Overview {
        active: row.try_get(0)?,
        past_due: row.try_get(1)?,
        renewals_due_24h: row.try_get(2)?,
        needs_review: row.try_get(3)?,
        inbox_failed: row.try_get(4)?,
        outbox_backlog: row.try_get(5)?,
        outbox_oldest_unsent: row.try_get(6)?,
        now: row.try_get(7)?,
    })
}

/// Money taken in a currency over a window: captured, refunded of it, what is kept.
pub struct Revenue {
    pub currency: String,
    /// Real money, or a provider's test mode.
    pub livemode: bool,
    pub payments: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
}

/// Payments captured since `since`, by currency (refunds counted against the
/// payment they return, whenever they were made).
pub async fn revenue_since(
    db: &impl GenericClient,
    since: DateTime<Utc>,
) -> Result<Vec<Revenue>, StoreError> {
    let rows = db
        .q(
            "SELECT currency::text, livemode, count(*), sum(amount_minor)::bigint,
                    sum(refunded_minor)::bigint
             FROM payments
             WHERE captured_at >= $1
               AND status IN ('succeeded', 'partially_refunded', 'refunded')
             GROUP BY livemode, currency ORDER BY livemode DESC, currency",
            &[&since],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Revenue {
                currency: r.try_get(0)?,
                livemode: r.try_get(1)?,
                payments: r.try_get(2)?,
                captured_minor: r.try_get(3)?,
                refunded_minor: r.try_get(4)?,
            })
        })
        .collect()
}

/// One event of a viewer's timeline, as published (or waiting to be).
pub struct TimelineEvent {
    pub outbox_id: i64,
    pub event_type: String,
    pub payload: Value,
    pub occurred_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// The newest `limit` events of this viewer still in the outbox, in `seq` order
/// (for one subscription also publication order).
pub async fn timeline(
    db: &impl GenericClient,
    user_id: UserId,
    limit: i64,
) -> Result<Vec<TimelineEvent>, StoreError> {
    let rows = db
        .q(
            "SELECT id, event_type, payload, occurred_at, sent_at FROM (
                 SELECT * FROM outbox WHERE payload -> 'data' ->> 'user_id' = $1
                 ORDER BY id DESC LIMIT $2) last
             ORDER BY (payload -> 'data' ->> 'seq')::bigint, id",
            &[&user_id.to_string(), &limit],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(TimelineEvent {
                outbox_id: r.try_get(0)?,
                event_type: r.try_get(1)?,
                payload: r.try_get(2)?,
                occurred_at: r.try_get(3)?,
                sent_at: r.try_get(4)?,
            })
        })
        .collect()
}

/// The part of each of the user's payments a tariff change took as credit (not
/// refundable), for the payments that have one.
pub async fn credited_of_user(
    db: &impl GenericClient,
    user_id: UserId,
) -> Result<Vec<(PaymentId, i64)>, StoreError> {
    let rows = db
        .q(
            "SELECT id, credited_minor FROM payments WHERE user_id = $1 AND credited_minor > 0",
            &[&user_id],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Payments flagged for review that no one has marked reviewed, oldest first.
pub async fn needing_review(
    db: &impl GenericClient,
    limit: i64,
) -> Result<Vec<Payment>, StoreError> {
    let sql = format!(
        "SELECT {} FROM payments
         WHERE review_reason IS NOT NULL AND reviewed_at IS NULL
         ORDER BY created_at, id LIMIT $1",
        payments::COLS
    );
    let rows = db.query(&sql, &[&limit]).await?;
    rows.iter().map(Payment::from_row).collect()
}

/// Marks a flagged payment reviewed. None when it is not waiting for a review.
pub async fn mark_reviewed(
    db: &impl GenericClient,
    id: PaymentId,
    operator: UserId,
    note: &str,
) -> Result<bool, StoreError> {
    Ok(db
        .exec(
            "UPDATE payments SET reviewed_at = now(), reviewed_by = $2, review_note = $3,
                    updated_at = now()
             WHERE id = $1 AND review_reason IS NOT NULL AND reviewed_at IS NULL",
            &[&id, &operator, &note],
        )
        .await?
        == 1)
}

/// The user a payment id, or a provider's payment id, belongs to.
pub async fn find_user(db: &impl GenericClient, q: &str) -> Result<Option<UserId>, StoreError> {
    let row = match q.parse::<uuid::Uuid>() {
        Ok(id) => {
            db.q_opt(
                "SELECT user_id FROM payments WHERE id = $1
                 UNION ALL SELECT user_id FROM subscriptions WHERE user_id = $1
                 UNION ALL SELECT user_id FROM payments WHERE user_id = $1
                 LIMIT 1",
                &[&id],
            )
            .await?
        }
        Err(_) => None,
    };
    let row = match row {
        Some(r) => Some(r),
        None => {
            // Both providers named, so the (pay_system, provider_payment_id)
            // index answers; an id known at both is the newest payment's.
            db.q_opt(
                "SELECT user_id FROM payments
                 WHERE pay_system = ANY($2) AND provider_payment_id = $1
                 ORDER BY created_at DESC LIMIT 1",
                &[
                    &q,
                    &PaySystem::ALL
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>(),
                ],
            )
            .await?
        }
    };
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// One console action as recorded.
pub struct AuditEntry {
    pub id: i64,
    pub operator_id: UserId,
    pub action: String,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub outcome: String,
    pub at: DateTime<Utc>,
}

impl AuditEntry {
    fn from_row(r: &Row) -> Result<AuditEntry, StoreError> {
        Ok(AuditEntry {
            id: r.try_get("id")?,
            operator_id: r.try_get("operator_id")?,
            action: r.try_get("action")?,
            target: r.try_get("target")?,
            before: r.try_get("before")?,
            after: r.try_get("after")?,
            outcome: r.try_get("outcome")?,
            at: r.try_get("at")?,
        })
    }
}

/// What to record of one console action.
pub struct NewAuditEntry<'a> {
    pub operator_id: UserId,
    pub action: &'a str,
    pub target: &'a str,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub outcome: &'a str,
}

pub async fn audit(db: &impl GenericClient, e: &NewAuditEntry<'_>) -> Result<(), StoreError> {
    db.exec(
        "INSERT INTO audit_log (operator_id, action, target, before, after, outcome)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &e.operator_id,
            &e.action,
            &e.target,
            &e.before,
            &e.after,
            &e.outcome,
        ],
    )
    .await?;
    Ok(())
}

/// The newest entries first; `target` narrows to one object.
pub async fn audit_log(
    db: &impl GenericClient,
    target: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    const COLS: &str = "id, operator_id, action, target, before, after, outcome, at";
    let rows = match target {
        // Two statements: one plan each, each with its index.
        Some(target) => {
            db.q(
                &format!(
                    "SELECT {COLS} FROM audit_log WHERE target = $1 ORDER BY id DESC LIMIT $2"
                ),
                &[&target, &limit],
            )
            .await?
        }
        None => {
            db.q(
                &format!("SELECT {COLS} FROM audit_log ORDER BY id DESC LIMIT $1"),
                &[&limit],
            )
            .await?
        }
    };
    rows.iter().map(AuditEntry::from_row).collect()
}
