//! `payment_methods`: what a viewer saved to be charged again without them (a
//! YooKassa `payment_method.id` or a CloudPayments token).

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{parse_col, GenericClient, StoreError};
use crate::domain::PaySystem;
use crate::domain::{MethodId, UserId};
use crate::store::Cached as _;

#[derive(Debug, Clone)]
pub struct PaymentMethod {
    pub id: MethodId,
    pub user_id: UserId,
    pub pay_system: PaySystem,
    pub provider_method_id: String,
    pub title: String,
    pub usable: bool,
    pub unusable_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl PaymentMethod {
    pub fn from_row(row: &Row) -> Result<PaymentMethod, StoreError> {
        Ok(PaymentMethod {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            pay_system: parse_col(row, "pay_system")?,
            provider_method_id: row.try_get("provider_method_id")?,
            title: row.try_get("title")?,
            usable: row.try_get("usable")?,
            unusable_reason: row.try_get("unusable_reason")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

pub async fn get(
    db: &impl GenericClient,
    id: MethodId,
) -> Result<Option<PaymentMethod>, StoreError> {
    db.q_opt("SELECT * FROM payment_methods WHERE id = $1", &[&id])
        .await?
        .as_ref()
        .map(PaymentMethod::from_row)
        .transpose()
}

/// The user's saved methods, newest first.
pub async fn of_user(
    db: &impl GenericClient,
    user_id: UserId,
) -> Result<Vec<PaymentMethod>, StoreError> {
    db.query(
        "SELECT * FROM payment_methods WHERE user_id = $1 ORDER BY created_at DESC",
        &[&user_id],
    )
    .await?
    .iter()
    .map(PaymentMethod::from_row)
    .collect()
}

// --- service: settle ---

/// A method the provider saved; the same provider id is the same row (its title refreshed).
pub struct SavedMethod<'a> {
    pub user_id: UserId,
    pub pay_system: PaySystem,
    pub provider_method_id: &'a str,
    pub title: &'a str,
    pub livemode: bool,
}

pub async fn save(db: &impl GenericClient, m: &SavedMethod<'_>) -> Result<MethodId, StoreError> {
    Ok(db
        .q_one(
            "INSERT INTO payment_methods (id, user_id, pay_system, provider_method_id, title, livemode) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (pay_system, provider_method_id) DO UPDATE SET title = EXCLUDED.title \
             RETURNING id",
            &[
                &MethodId::new(),
                &m.user_id,
                &m.pay_system.as_str(),
                &m.provider_method_id,
                &m.title,
                &m.livemode,
            ],
        )
        .await?
        .try_get(0)?)
}

/// A hard decline: the method is not charged again.
pub async fn mark_unusable(
    db: &impl GenericClient,
    id: MethodId,
    reason: &str,
) -> Result<(), StoreError> {
    db.exec(
        "UPDATE payment_methods SET usable = false, unusable_reason = $2 WHERE id = $1",
        &[&id, &reason],
    )
    .await?;
    Ok(())
}
