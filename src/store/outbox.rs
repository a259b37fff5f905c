//! The transactional outbox: events are inserted in the transaction that changes
//! the state they describe, published by the relay, and deleted after retention.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{sql_file, Cached as _, GenericClient, StoreError};

/// Inserts one event; `payload` is the JSON body without `data.seq`, which the
/// database fills from `event_seq` at insert time.
pub async fn insert(
    db: &impl GenericClient,
    event_id: Uuid,
    event_type: &str,
    payload: &serde_json::Value,
) -> Result<(), StoreError> {
    db.exec(
        sql_file!("outbox/insert.sql"),
        &[&event_id, &event_type, &payload],
    )
    .await?;
    Ok(())
}

/// What is waiting to be published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub rows: i64,
    /// Age of the oldest unsent row (0 when there is none).
    pub oldest_seconds: f64,
}

/// The unsent rows and the age of the oldest: `/readyz` and the relay's gauges.
pub async fn backlog(db: &impl GenericClient) -> Result<Backlog, StoreError> {
    let row = db.q_one(sql_file!("outbox/backlog.sql"), &[]).await?;
    Ok(Backlog {
        rows: row.try_get("backlog")?,
        oldest_seconds: row.try_get("oldest")?,
    })
}

/// One row to publish, with the body as stored.
#[derive(Debug, Clone)]
pub struct Unsent {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub body: String,
    pub occurred_at: DateTime<Utc>,
}

/// The oldest `limit` unsent rows, in insert order.
pub async fn unsent(db: &impl GenericClient, limit: i64) -> Result<Vec<Unsent>, StoreError> {
    db.q(sql_file!("outbox/unsent.sql"), &[&limit])
        .await?
        .iter()
        .map(|r| {
            Ok(Unsent {
                id: r.try_get("id")?,
                event_id: r.try_get("event_id")?,
                event_type: r.try_get("event_type")?,
                body: r.try_get("body")?,
                occurred_at: r.try_get("occurred_at")?,
            })
        })
        .collect()
}

/// The broker confirmed these rows.
pub async fn mark_sent(db: &impl GenericClient, ids: &[i64]) -> Result<(), StoreError> {
    db.exec(
        "UPDATE outbox SET sent_at = now(), attempts = attempts + 1, last_error = NULL \
         WHERE id = ANY($1)",
        &[&ids],
    )
    .await?;
    Ok(())
}

/// The broker refused or did not confirm these rows: they stay unsent.
pub async fn mark_failed(
    db: &impl GenericClient,
    ids: &[i64],
    reason: &str,
) -> Result<(), StoreError> {
    db.exec(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)",
        &[&ids, &reason],
    )
    .await?;
    Ok(())
}

/// Deletes at most `batch` rows sent longer than `retention` ago; unsent rows are
/// never deleted. Answers how many went.
pub async fn delete_sent(
    db: &impl GenericClient,
    retention: Duration,
    batch: i64,
) -> Result<u64, StoreError> {
    Ok(db
        .exec(
            sql_file!("outbox/delete_sent.sql"),
            &[&retention.as_secs_f64(), &batch],
        )
        .await?)
}

/// Takes the session-level advisory lock `key` if it is free (the relay's election).
pub async fn try_advisory_lock(db: &tokio_postgres::Client, key: i64) -> Result<bool, StoreError> {
    Ok(db
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await?
        .try_get(0)?)
}

/// `LISTEN channel` on this session (the insert trigger NOTIFYs it).
pub async fn listen(db: &tokio_postgres::Client, channel: &str) -> Result<(), StoreError> {
    db.batch_execute(&format!("LISTEN {channel}")).await?;
    Ok(())
}
