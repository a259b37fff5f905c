//! `Idempotency-Key` of POST requests, scoped to the user and the operation, kept
//! 24 h. A key holds a lease while its request runs (longer than a provider call
//! with its retries): a repeat meanwhile is refused; after a crash the lease runs
//! out and the next request resumes the work.
//!
//! Why here and not at the HTTP edge (where zero2prod keeps them, storing the
//! response): our keys do more than replay an answer. The key is claimed in the same
//! transaction that records the payment (or refund) with its *provider* idempotence
//! key, and a repeat after a crash resumes that very record, so the provider sees the
//! same key and never charges twice. That is a money rule, so it lives with the use
//! cases. What the answer looks like stays the edge's business: the use case asks the
//! caller to render its outcome ([`Render`]) and stores what it gets back.

use crate::domain::UserId;
use std::time::Duration;

use deadpool_postgres::Transaction;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::providers::RetryPolicy;
use crate::service::BillingError;
use crate::store::idempotency_keys::{self, KeyRef};
use crate::store::{GenericClient, StoreError};

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
    pub fn parse(raw: &str) -> Result<IdempotencyKey, BillingError> {
        if raw.is_empty()
            || raw.len() > 255
            || !raw.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(BillingError::BadIdempotencyKey);
        }
        Ok(IdempotencyKey(raw.to_owned()))
    }
}

/// The answer stored with a key, as the edge rendered it: a repeat gets it back as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: Value,
}

/// How the caller's edge renders a final outcome, so it can be stored with the key.
pub type Render<'a, T> = &'a (dyn Fn(&Result<T, BillingError>) -> StoredAnswer + Sync);

/// A use case's answer under a key: done now, or the answer stored by the first request.
#[derive(Debug)]
pub enum Keyed<T> {
    Fresh(T),
    Replayed(StoredAnswer),
}

impl<T> Keyed<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Keyed<U> {
        match self {
            Keyed::Fresh(t) => Keyed::Fresh(f(t)),
            Keyed::Replayed(a) => Keyed::Replayed(a),
        }
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
    Replay(StoredAnswer),
    /// The first request stopped after recording this resource (the scope says
    /// what it is: a payment for a purchase, a refund for a refund): resume it.
    Resume(Uuid),
}

pub struct Scope<'a> {
    pub user_id: UserId,
    pub scope: &'a str,
    pub key: &'a IdempotencyKey,
}

impl Scope<'_> {
    fn key(&self) -> KeyRef<'_> {
        KeyRef {
            user_id: self.user_id,
            scope: self.scope,
            key: &self.key.0,
        }
    }
}

/// Claims the key inside the caller's transaction.
pub async fn claim(
    tx: &Transaction<'_>,
    s: &Scope<'_>,
    hash: &[u8],
) -> Result<Claim, BillingError> {
    if idempotency_keys::insert(tx, s.key(), hash, lease()).await? {
        return Ok(Claim::New);
    }
    let row = idempotency_keys::lock(tx, s.key()).await?;
    if row.expired {
        idempotency_keys::restart(tx, s.key(), hash, lease()).await?;
        return Ok(Claim::New);
    }
    if row.request_hash != hash {
        return Err(BillingError::IdempotencyKeyReused);
    }
    if let Some((status, body)) = row.answer {
        return Ok(Claim::Replay(StoredAnswer { status, body }));
    }
    if row.busy {
        return Err(BillingError::RequestInProgress);
    }
    idempotency_keys::renew_lease(tx, s.key(), lease()).await?;
    Ok(match row.resource_id {
        Some(id) => Claim::Resume(id),
        None => Claim::New,
    })
}

/// Records what the request created, so a crashed request can be resumed.
pub async fn attach(
    db: &impl GenericClient,
    s: &Scope<'_>,
    resource: &Uuid,
) -> Result<(), StoreError> {
    idempotency_keys::attach(db, s.key(), *resource).await
}

/// Stores the final answer; repeats of the key return it.
pub async fn complete(
    db: &impl GenericClient,
    s: &Scope<'_>,
    answer: &StoredAnswer,
) -> Result<(), StoreError> {
    idempotency_keys::complete(db, s.key(), answer.status, &answer.body).await
}

/// Lets a retry with the same key resume at once (the outcome is still unknown).
pub async fn release(db: &impl GenericClient, s: &Scope<'_>) -> Result<(), StoreError> {
    idempotency_keys::release(db, s.key()).await
}
