//! `Idempotency-Key` of POST requests, scoped to the user and the operation, kept
//! 24 h. A key holds a lease while its request runs (longer than a provider call
//! with its retries): a repeat meanwhile is 409; after a crash the lease runs out
//! and the next request resumes the work.

use std::time::Duration;

use deadpool_postgres::Transaction;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use warp::http::StatusCode;

use crate::http::error::ApiError;
use crate::providers::RetryPolicy;
use crate::store::GenericClient;

/// How long a request holds its key: a provider call with all its re-sends
/// ([`RetryPolicy::budget`], the clients' own policy) plus the database work around it,
/// so a repeat can never start a second call while the first may still be running.
pub fn lease() -> Duration {
    RetryPolicy::DEFAULT.budget() + Duration::from_secs(10)
}

/// At most 255 printable ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<IdempotencyKey, ApiError> {
        if raw.is_empty()
            || raw.len() > 255
            || !raw.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(ApiError::bad_request(
                "bad_idempotency_key",
                "Idempotency-Key must be 1..=255 printable ASCII characters",
            ));
        }
        Ok(IdempotencyKey(raw.to_owned()))
    }
}

pub fn request_hash(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().to_vec()
}

pub enum Claim {
    /// First use (or the previous use is over 24 h old): do the work.
    New,
    /// The stored answer of the first request.
    Replay(StatusCode, Value),
    /// The first request stopped after recording this resource: resume it.
    Resume(Uuid),
}

pub struct Scope<'a> {
    pub user_id: Uuid,
    pub scope: &'a str,
    pub key: &'a IdempotencyKey,
}

/// Claims the key inside the caller's transaction.
pub async fn claim(tx: &Transaction<'_>, s: &Scope<'_>, hash: &[u8]) -> Result<Claim, ApiError> {
    let inserted = tx
        .execute(
            "INSERT INTO idempotency_keys (user_id, scope, key, request_hash, locked_until) \
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) ON CONFLICT DO NOTHING",
            &[
                &s.user_id,
                &s.scope,
                &s.key.0,
                &hash,
                &lease().as_secs_f64(),
            ],
        )
        .await?;
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let row = tx
        .query_one(
            "SELECT request_hash, response_code, response_body, locked_until > now() AS busy, resource_id, \
             created_at < now() - interval '24 hours' AS expired \
             FROM idempotency_keys WHERE user_id = $1 AND scope = $2 AND key = $3 FOR UPDATE",
            &[&s.user_id, &s.scope, &s.key.0],
        )
        .await?;
    if row.get::<_, bool>("expired") {
        tx.execute(
            "UPDATE idempotency_keys SET request_hash = $4, response_code = NULL, response_body = NULL, \
             resource_id = NULL, created_at = now(), locked_until = now() + make_interval(secs => $5) \
             WHERE user_id = $1 AND scope = $2 AND key = $3",
            &[&s.user_id, &s.scope, &s.key.0, &hash, &lease().as_secs_f64()],
        )
        .await?;
        return Ok(Claim::New);
    }
    if row.get::<_, Vec<u8>>("request_hash") != hash {
        return Err(ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        ));
    }
    if let (Some(code), Some(body)) = (
        row.get::<_, Option<i32>>("response_code"),
        row.get::<_, Option<Value>>("response_body"),
    ) {
        return Ok(Claim::Replay(
            StatusCode::from_u16(code as u16).unwrap_or(StatusCode::OK),
            body,
        ));
    }
    if row.get::<_, Option<bool>>("busy").unwrap_or(false) {
        return Err(ApiError::conflict(
            "request_in_progress",
            "a request with this Idempotency-Key is still running",
        ));
    }
    tx.execute(
        "UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => $4) \
         WHERE user_id = $1 AND scope = $2 AND key = $3",
        &[&s.user_id, &s.scope, &s.key.0, &lease().as_secs_f64()],
    )
    .await?;
    Ok(match row.get::<_, Option<Uuid>>("resource_id") {
        Some(id) => Claim::Resume(id),
        None => Claim::New,
    })
}

/// Records what the request created, so a crashed request can be resumed.
pub async fn attach(
    db: &impl GenericClient,
    s: &Scope<'_>,
    resource: Uuid,
) -> Result<(), ApiError> {
    db.execute(
        "UPDATE idempotency_keys SET resource_id = $4 WHERE user_id = $1 AND scope = $2 AND key = $3",
        &[&s.user_id, &s.scope, &s.key.0, &resource],
    )
    .await?;
    Ok(())
}

/// Stores the final answer; repeats of the key return it.
pub async fn complete(
    db: &impl GenericClient,
    s: &Scope<'_>,
    status: StatusCode,
    body: &Value,
) -> Result<(), ApiError> {
    db.execute(
        "UPDATE idempotency_keys SET response_code = $4, response_body = $5, locked_until = NULL \
         WHERE user_id = $1 AND scope = $2 AND key = $3",
        &[
            &s.user_id,
            &s.scope,
            &s.key.0,
            &(status.as_u16() as i32),
            body,
        ],
    )
    .await?;
    Ok(())
}

/// Lets a retry with the same key resume at once (the outcome is still unknown).
pub async fn release(db: &impl GenericClient, s: &Scope<'_>) -> Result<(), ApiError> {
    db.execute(
        "UPDATE idempotency_keys SET locked_until = NULL WHERE user_id = $1 AND scope = $2 AND key = $3",
        &[&s.user_id, &s.scope, &s.key.0],
    )
    .await?;
    Ok(())
}
