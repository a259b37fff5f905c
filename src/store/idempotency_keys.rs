//! `idempotency_keys`: one row per (user, scope, key), with the request's hash, a
//! lease while its request runs, the resource it created and its stored answer.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::Cached as _;
use super::{GenericClient, StoreError};
use crate::domain::UserId;

/// Which key: the user's, for one operation.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    pub user_id: UserId,
    pub scope: &'a str,
    pub key: &'a str,
}

/// A key's row as its repeat finds it (locked).
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub request_hash: Vec<u8>,
    /// The stored answer: status code and body.
    pub answer: Option<(u16, Value)>,
    /// Its lease has not run out: the first request may still be running.
    pub busy: bool,
    pub resource_id: Option<Uuid>,
    /// Older than 24 h: the key may be used again.
    pub expired: bool,
}

/// Inserts the key with a lease; false when it exists already.
pub async fn insert(
    db: &impl GenericClient,
    k: KeyRef<'_>,
    hash: &[u8],
    lease: Duration,
) -> Result<bool, StoreError> {
    let n = db
        .execute(
            "INSERT INTO idempotency_keys (user_id, scope, key, request_hash, locked_until) \
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) ON CONFLICT DO NOTHING",
            &[&k.user_id, &k.scope, &k.key, &hash, &lease.as_secs_f64()],
        )
        .await?;
    Ok(n == 1)
}

/// The existing row, locked until the caller's transaction ends.
pub async fn lock(db: &impl GenericClient, k: KeyRef<'_>) -> Result<KeyRow, StoreError> {
    let row = db
        .query_one(
            "SELECT request_hash, response_code, response_body, locked_until > now() AS busy, resource_id, \
             created_at < now() - interval '24 hours' AS expired \
             FROM idempotency_keys WHERE user_id = $1 AND scope = $2 AND key = $3 FOR UPDATE",
            &[&k.user_id, &k.scope, &k.key],
        )
        .await?;
    let code: Option<i32> = row.get("response_code");
    let body: Option<Value> = row.get("response_body");
    Ok(KeyRow {
        request_hash: row.get("request_hash"),
        answer: code.zip(body).map(|(c, b)| (c as u16, b)),
        busy: row.get::<_, Option<bool>>("busy").unwrap_or(false),
        resource_id: row.get("resource_id"),
        expired: row.get("expired"),
    })
}

/// An expired key used again: a new request with a new lease.
pub async fn restart(
    db: &impl GenericClient,
    k: KeyRef<'_>,
    hash: &[u8],
    lease: Duration,
) -> Result<(), StoreError> {
    db.execute(
        "UPDATE idempotency_keys SET request_hash = $4, response_code = NULL, response_body = NULL, \
         resource_id = NULL, created_at = now(), locked_until = now() + make_interval(secs => $5) \
         WHERE user_id = $1 AND scope = $2 AND key = $3",
        &[&k.user_id, &k.scope, &k.key, &hash, &lease.as_secs_f64()],
    )
    .await?;
    Ok(())
}

/// A repeat takes the work over: a new lease.
pub async fn renew_lease(
    db: &impl GenericClient,
    k: KeyRef<'_>,
    lease: Duration,
) -> Result<(), StoreError> {
    db.execute(
        "UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => $4) \
         WHERE user_id = $1 AND scope = $2 AND key = $3",
        &[&k.user_id, &k.scope, &k.key, &lease.as_secs_f64()],
    )
    .await?;
    Ok(())
}

pub async fn attach(
    db: &impl GenericClient,
    k: KeyRef<'_>,
    resource: Uuid,
) -> Result<(), StoreError> {
    db.execute(
        "UPDATE idempotency_keys SET resource_id = $4 WHERE user_id = $1 AND scope = $2 AND key = $3",
        &[&k.user_id, &k.scope, &k.key, &resource],
    )
    .await?;
    Ok(())
}

/// Stores the final answer and ends the lease.
pub async fn complete(
    db: &impl GenericClient,
    k: KeyRef<'_>,
    status: u16,
    body: &Value,
) -> Result<(), StoreError> {
    db.execute(
        "UPDATE idempotency_keys SET response_code = $4, response_body = $5, locked_until = NULL \
         WHERE user_id = $1 AND scope = $2 AND key = $3",
        &[&k.user_id, &k.scope, &k.key, &(status as i32), body],
    )
    .await?;
    Ok(())
}

/// Ends the lease without an answer.
pub async fn release(db: &impl GenericClient, k: KeyRef<'_>) -> Result<(), StoreError> {
    db.execute(
        "UPDATE idempotency_keys SET locked_until = NULL WHERE user_id = $1 AND scope = $2 AND key = $3",
        &[&k.user_id, &k.scope, &k.key],
    )
    .await?;
    Ok(())
}

/// Deletes up to `batch` keys past their 24 hours (never one still locked).
pub async fn delete_expired(db: &impl GenericClient, batch: i64) -> Result<u64, StoreError> {
    Ok(db
        .exec(
            super::sql_file!("idempotency_keys/delete_expired.sql"),
            &[&batch],
        )
        .await?)
}
