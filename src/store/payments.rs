use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{parse_col, GenericClient, StoreError};
use crate::domain::{Currency, Money, PaySystem, PaymentStatus};
use crate::store::Cached as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    Purchase,
    Renewal,
}

impl PaymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentKind::Purchase => "purchase",
            PaymentKind::Renewal => "renewal",
        }
    }
}

impl std::str::FromStr for PaymentKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "purchase" => Ok(PaymentKind::Purchase),
            "renewal" => Ok(PaymentKind::Renewal),
            other => Err(format!("unknown payment kind {other:?}")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Payment {
    pub id: Uuid,
    pub user_id: Uuid,
    pub tariff_id: Uuid,
    pub subscription_id: Option<Uuid>,
    pub pay_system: PaySystem,
    pub kind: PaymentKind,
    pub status: PaymentStatus,
    pub amount: Money,
    pub refunded_minor: i64,
    pub renew: bool,
    pub return_url: Option<String>,
    pub description: String,
    pub provider_idempotence_key: String,
    pub provider_payment_id: Option<String>,
    pub confirmation_url: Option<String>,
    pub payment_method_id: Option<Uuid>,
    pub period_start: Option<DateTime<Utc>>,
    pub attempt: i32,
    pub cancellation_party: Option<String>,
    pub cancellation_reason: Option<String>,
    pub captured_at: Option<DateTime<Utc>>,
    pub review_reason: Option<String>,
    pub livemode: bool,
    pub check_attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const COLS: &str = "id, user_id, tariff_id, subscription_id, pay_system, kind, status, amount_minor, \
    currency, refunded_minor, renew, return_url, description, provider_idempotence_key, provider_payment_id, \
    confirmation_url, payment_method_id, period_start, attempt, cancellation_party, cancellation_reason, \
    captured_at, review_reason, livemode, check_attempts, created_at, updated_at";

impl Payment {
    pub fn from_row(row: &Row) -> Result<Payment, StoreError> {
        let currency: Currency = parse_col(row, "currency")?;
        Ok(Payment {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            tariff_id: row.try_get("tariff_id")?,
            subscription_id: row.try_get("subscription_id")?,
            pay_system: parse_col(row, "pay_system")?,
            kind: parse_col(row, "kind")?,
            status: parse_col(row, "status")?,
            amount: Money::new(row.try_get("amount_minor")?, currency),
            refunded_minor: row.try_get("refunded_minor")?,
            renew: row.try_get("renew")?,
            return_url: row.try_get("return_url")?,
            description: row.try_get("description")?,
            provider_idempotence_key: row.try_get("provider_idempotence_key")?,
            provider_payment_id: row.try_get("provider_payment_id")?,
            confirmation_url: row.try_get("confirmation_url")?,
            payment_method_id: row.try_get("payment_method_id")?,
            period_start: row.try_get("period_start")?,
            attempt: row.try_get("attempt")?,
            cancellation_party: row.try_get("cancellation_party")?,
            cancellation_reason: row.try_get("cancellation_reason")?,
            captured_at: row.try_get("captured_at")?,
            review_reason: row.try_get("review_reason")?,
            livemode: row.try_get("livemode")?,
            check_attempts: row.try_get("check_attempts")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

pub async fn get(db: &impl GenericClient, id: Uuid) -> Result<Option<Payment>, StoreError> {
    let sql = format!("SELECT {COLS} FROM payments WHERE id = $1");
    db.q_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(Payment::from_row)
        .transpose()
}

pub async fn get_for_user(
    db: &impl GenericClient,
    id: Uuid,
    user_id: Uuid,
) -> Result<Option<Payment>, StoreError> {
    let sql = format!("SELECT {COLS} FROM payments WHERE id = $1 AND user_id = $2");
    db.q_opt(&sql, &[&id, &user_id])
        .await?
        .as_ref()
        .map(Payment::from_row)
        .transpose()
}

pub async fn lock(db: &impl GenericClient, id: Uuid) -> Result<Option<Payment>, StoreError> {
    let sql = format!("SELECT {COLS} FROM payments WHERE id = $1 FOR UPDATE");
    db.q_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(Payment::from_row)
        .transpose()
}

/// The user's payments, newest first, and the total count.
pub async fn list_for_user(
    db: &impl GenericClient,
    user_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Payment>, i64), StoreError> {
    let sql = format!(
        "SELECT {COLS}, count(*) OVER () AS total FROM payments WHERE user_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
    );
    let rows = db.q(&sql, &[&user_id, &limit, &offset]).await?;
    let total = match rows.first() {
        Some(r) => r.try_get("total")?,
        // Past the last page the window is empty: count separately.
        None => db
            .q_one(
                "SELECT count(*) FROM payments WHERE user_id = $1",
                &[&user_id],
            )
            .await?
            .try_get(0)?,
    };
    let payments = rows
        .iter()
        .map(Payment::from_row)
        .collect::<Result<_, _>>()?;
    Ok((payments, total))
}

#[derive(Debug, Clone, Serialize)]
pub struct PaymentMethod {
    pub id: Uuid,
    pub user_id: Uuid,
    pub pay_system: PaySystem,
    #[serde(skip)]
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

pub async fn get_method(
    db: &impl GenericClient,
    id: Uuid,
) -> Result<Option<PaymentMethod>, StoreError> {
    db.q_opt("SELECT * FROM payment_methods WHERE id = $1", &[&id])
        .await?
        .as_ref()
        .map(PaymentMethod::from_row)
        .transpose()
}
