//! `webhook_inbox`: every authenticated notification, stored before it is processed,
//! with where processing left it. Rows still `received` are retried by
//! `jobs::inbox_retry`; housekeeping purges old bodies.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::{parse_col, GenericClient, StoreError};
use crate::domain::{InboxId, InboxStatus, PaySystem};
use crate::store::Cached as _;

/// A notification to store, keyed by (provider, event, object id), or by its
/// `webhook-id` when it is an ops replay.
pub struct NewNotification<'a> {
    pub provider: PaySystem,
    pub event: &'a str,
    pub object_id: &'a str,
    pub ops_webhook_id: Option<&'a str>,
    pub body: &'a [u8],
    pub content_type: Option<&'a str>,
    pub source_ip: Option<IpAddr>,
}

/// Stores (or re-counts) a notification. A repeat of a processed row keeps it
/// processed (and its body); anything else takes the new body and is processed again.
/// A reused `webhook-id` is a unique violation.
pub async fn insert(
    db: &impl GenericClient,
    n: &NewNotification<'_>,
) -> Result<(InboxId, InboxStatus), StoreError> {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(n.body).to_vec();
    let ip = n.source_ip.map(|ip| ip.to_string());
    let row = match n.ops_webhook_id {
        None => {
            db.q_one(
                include_str!("webhook_inbox/insert.sql"),
                &[
                    &InboxId::new(),
                    &n.provider.as_str(),
                    &n.event,
                    &n.object_id,
                    &n.body,
                    &hash,
                    &n.content_type,
                    &ip,
                ],
            )
            .await?
        }
        Some(ops_id) => {
            db.q_one(
                include_str!("webhook_inbox/insert_ops.sql"),
                &[
                    &InboxId::new(),
                    &n.provider.as_str(),
                    &n.event,
                    &n.object_id,
                    &ops_id,
                    &n.body,
                    &hash,
                    &n.content_type,
                    &ip,
                ],
            )
            .await?
        }
    };
    Ok((row.try_get(0)?, parse_col(&row, "status")?))
}

/// Whether an ops replay with this `webhook-id` was stored already.
pub async fn ops_id_used(db: &impl GenericClient, ops_id: &str) -> Result<bool, StoreError> {
    Ok(db
        .q_opt(
            "SELECT 1 FROM webhook_inbox WHERE ops_webhook_id = $1",
            &[&ops_id],
        )
        .await?
        .is_some())
}

/// What processing needs of a stored notification (the body is gone once purged).
pub struct Stored {
    pub provider: String,
    pub event: String,
    pub object_id: String,
    pub body: Option<Vec<u8>>,
    pub content_type: Option<String>,
}

pub async fn stored(db: &impl GenericClient, id: InboxId) -> Result<Stored, StoreError> {
    let row = db
        .q_one(
            "SELECT provider, event, object_id, body, content_type FROM webhook_inbox WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(Stored {
        provider: row.get(0),
        event: row.get(1),
        object_id: row.get(2),
        body: row.get(3),
        content_type: row.get(4),
    })
}

/// Records one processing attempt: `processed`/`ignored` with the outcome, or
/// `received` with the error and the next attempt (5 s doubling to 5 min), which
/// becomes `failed` once the row is a day old; `failed` as it is. Answers the
/// status recorded and the row's provider.
pub async fn record_outcome(
    db: &impl GenericClient,
    id: InboxId,
    status: InboxStatus,
    outcome: Option<&str>,
    error: Option<&str>,
) -> Result<(InboxStatus, String), StoreError> {
    let row = db
        .q_one(
            include_str!("webhook_inbox/record_outcome.sql"),
            &[&id, &status.as_str(), &outcome, &error],
        )
        .await?;
    Ok((parse_col(&row, "status")?, row.try_get(1)?))
}

/// Deletes processing history older than `before`, at most `limit` rows.
pub async fn purge_attempts(
    db: &impl GenericClient,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, StoreError> {
    Ok(db
        .execute(
            "DELETE FROM webhook_attempts WHERE (inbox_id, attempt) IN (
                 SELECT inbox_id, attempt FROM webhook_attempts WHERE at < $1 LIMIT $2)",
            &[&before, &limit],
        )
        .await?)
}

/// One processing of a stored notification, as it ended.
pub struct Attempt {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub status: InboxStatus,
    pub outcome: Option<String>,
    pub error: Option<String>,
}

/// A row's processing history, oldest first (the newest `limit`).
pub async fn attempts(
    db: &impl GenericClient,
    id: InboxId,
    limit: i64,
) -> Result<Vec<Attempt>, StoreError> {
    let rows = db
        .query(
            "SELECT attempt, at, status, outcome, error FROM (
                 SELECT * FROM webhook_attempts WHERE inbox_id = $1
                 ORDER BY attempt DESC LIMIT $2) last
             ORDER BY attempt",
            &[&id, &limit],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Attempt {
                attempt: r.try_get(0)?,
                at: r.try_get(1)?,
                status: parse_col(r, "status")?,
                outcome: r.try_get(3)?,
                error: r.try_get(4)?,
            })
        })
        .collect()
}

/// Claims up to `batch` rows due for another attempt, leasing them for 60 s (its
/// own statement, committed at once: processing calls providers with no lock held).
pub async fn claim_due(db: &impl GenericClient, batch: i64) -> Result<Vec<InboxId>, StoreError> {
    let rows = db
        .query(include_str!("webhook_inbox/claim_due.sql"), &[&batch])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A row as operators see it (`GET /api/v1/admin/webhooks`).
#[derive(Debug, Clone)]
pub struct InboxRow {
    pub id: InboxId,
    pub provider: PaySystem,
    pub event: String,
    pub object_id: String,
    pub ops_webhook_id: Option<String>,
    pub status: InboxStatus,
    pub outcome: Option<String>,
    pub last_error: Option<String>,
    pub attempts: i32,
    pub deliveries: i32,
    pub received_at: DateTime<Utc>,
    pub last_received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    pub body: Option<Vec<u8>>,
    pub body_purged_at: Option<DateTime<Utc>>,
    pub source_ip: Option<String>,
}

impl InboxRow {
    fn from_row(r: &tokio_postgres::Row) -> Result<InboxRow, StoreError> {
        Ok(InboxRow {
            id: r.try_get("id")?,
            provider: parse_col(r, "provider")?,
            event: r.try_get("event")?,
            object_id: r.try_get("object_id")?,
            ops_webhook_id: r.try_get("ops_webhook_id")?,
            status: parse_col(r, "status")?,
            outcome: r.try_get("outcome")?,
            last_error: r.try_get("last_error")?,
            attempts: r.try_get("attempts")?,
            deliveries: r.try_get("deliveries")?,
            received_at: r.try_get("received_at")?,
            last_received_at: r.try_get("last_received_at")?,
            processed_at: r.try_get("processed_at")?,
            body: r.try_get("body")?,
            body_purged_at: r.try_get("body_purged_at")?,
            source_ip: r.try_get("source_ip")?,
        })
    }
}

/// Newest first, optionally of one status and one provider.
pub async fn list(
    db: &impl GenericClient,
    status: Option<&str>,
    provider: Option<&str>,
    received_since: Option<DateTime<Utc>>,
    limit: i64,
    offset: i64,
) -> Result<Vec<InboxRow>, StoreError> {
    db.query(
        include_str!("webhook_inbox/list.sql"),
        &[&status, &provider, &limit, &offset, &received_since],
    )
    .await?
    .iter()
    .map(InboxRow::from_row)
    .collect()
}

pub async fn exists(db: &impl GenericClient, id: InboxId) -> Result<bool, StoreError> {
    Ok(db
        .query_opt("SELECT 1 FROM webhook_inbox WHERE id = $1", &[&id])
        .await?
        .is_some())
}

/// One row; an error when there is none.
pub async fn get(db: &impl GenericClient, id: InboxId) -> Result<InboxRow, StoreError> {
    InboxRow::from_row(
        &db.query_one(include_str!("webhook_inbox/get.sql"), &[&id])
            .await?,
    )
}

/// Drops up to `batch` raw bodies older than `retention` (failed rows: 180 days).
pub async fn purge_bodies(
    db: &impl GenericClient,
    retention: std::time::Duration,
    batch: i64,
) -> Result<u64, StoreError> {
    Ok(db
        .exec(
            super::sql_file!("webhook_inbox/purge_bodies.sql"),
            &[&retention.as_secs_f64(), &batch],
        )
        .await?)
}
