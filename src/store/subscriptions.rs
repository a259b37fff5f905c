use crate::domain::SubscriptionId;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{parse_col, GenericClient, StoreError};
use crate::domain::receipt::Receipt;
use crate::domain::{Currency, Money, PaySystem, Period, SubscriptionStatus};
use crate::domain::{MethodId, TariffId, UserId};
use crate::store::Cached as _;

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub user_id: UserId,
    pub tariff_id: TariffId,
    pub pay_system: PaySystem,
    pub status: SubscriptionStatus,
    pub price: Money,
    pub period: Period,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub auto_renew: bool,
    pub payment_method_id: Option<MethodId>,
    pub next_charge_at: Option<DateTime<Utc>>,
    pub renewal_attempts: i32,
    pub past_due_since: Option<DateTime<Utc>>,
    pub livemode: bool,
    pub created_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Where the grid of period ends starts (`Period::end_from`).
    pub billing_anchor: DateTime<Utc>,
    /// The tariff the next renewal charges and switches to (a change at the period end).
    pub scheduled_tariff_id: Option<TariffId>,
}

pub const COLS: &str = "id, user_id, tariff_id, pay_system, status, price_minor, currency, period_count, \
    period_unit, current_period_start, current_period_end, auto_renew, payment_method_id, next_charge_at, \
    renewal_attempts, past_due_since, livemode, created_at, ended_at, billing_anchor, scheduled_tariff_id";

impl Subscription {
    pub fn from_row(row: &Row) -> Result<Subscription, StoreError> {
        Self::from_row_prefixed(row, "")
    }

    /// From columns named `{prefix}{column}` (a subscription joined to another row).
    pub fn from_row_prefixed(row: &Row, prefix: &str) -> Result<Subscription, StoreError> {
        // Unprefixed (every read but a join) without an allocation per column.
        let col = |name: &'static str| -> std::borrow::Cow<'static, str> {
            if prefix.is_empty() {
                name.into()
            } else {
                format!("{prefix}{name}").into()
            }
        };
        let currency: Currency = parse_col(row, &col("currency"))?;
        let count: i32 = row.try_get(&*col("period_count"))?;
        Ok(Subscription {
            id: row.try_get(&*col("id"))?,
            user_id: row.try_get(&*col("user_id"))?,
            tariff_id: row.try_get(&*col("tariff_id"))?,
            pay_system: parse_col(row, &col("pay_system"))?,
            status: parse_col(row, &col("status"))?,
            price: Money::new(row.try_get(&*col("price_minor"))?, currency),
            period: Period::new(count as u32, parse_col(row, &col("period_unit"))?)
                .map_err(StoreError::Corrupt)?,
            current_period_start: row.try_get(&*col("current_period_start"))?,
            current_period_end: row.try_get(&*col("current_period_end"))?,
            auto_renew: row.try_get(&*col("auto_renew"))?,
            payment_method_id: row.try_get(&*col("payment_method_id"))?,
            next_charge_at: row.try_get(&*col("next_charge_at"))?,
            renewal_attempts: row.try_get(&*col("renewal_attempts"))?,
            past_due_since: row.try_get(&*col("past_due_since"))?,
            livemode: row.try_get(&*col("livemode"))?,
            created_at: row.try_get(&*col("created_at"))?,
            ended_at: row.try_get(&*col("ended_at"))?,
            billing_anchor: row.try_get(&*col("billing_anchor"))?,
            scheduled_tariff_id: row.try_get(&*col("scheduled_tariff_id"))?,
        })
    }
}

/// The user's live subscription if any, else the most recent one.
pub async fn current_for_user(
    db: &impl GenericClient,
    user_id: UserId,
) -> Result<Option<Subscription>, StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM subscriptions WHERE user_id = $1 \
         ORDER BY (status IN ('active','past_due')) DESC, created_at DESC LIMIT 1"
    );
    db.q_opt(&sql, &[&user_id])
        .await?
        .as_ref()
        .map(Subscription::from_row)
        .transpose()
}

/// Locks and returns the user's live (active or past_due) subscription.
pub async fn lock_live_for_user(
    db: &impl GenericClient,
    user_id: UserId,
) -> Result<Option<Subscription>, StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM subscriptions WHERE user_id = $1 AND status IN ('active','past_due') FOR UPDATE"
    );
    db.q_opt(&sql, &[&user_id])
        .await?
        .as_ref()
        .map(Subscription::from_row)
        .transpose()
}

pub async fn lock(
    db: &impl GenericClient,
    id: SubscriptionId,
) -> Result<Option<Subscription>, StoreError> {
    let sql = format!("SELECT {COLS} FROM subscriptions WHERE id = $1 FOR UPDATE");
    db.q_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(Subscription::from_row)
        .transpose()
}

pub async fn get(
    db: &impl GenericClient,
    id: SubscriptionId,
) -> Result<Option<Subscription>, StoreError> {
    let sql = format!("SELECT {COLS} FROM subscriptions WHERE id = $1");
    db.q_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(Subscription::from_row)
        .transpose()
}

/// Turns auto-renewal on or off; the caller holds the row lock.
pub async fn set_auto_renew(
    db: &impl GenericClient,
    id: SubscriptionId,
    on: bool,
    next_charge_at: Option<DateTime<Utc>>,
) -> Result<Subscription, StoreError> {
    let sql = format!(
        "UPDATE subscriptions SET auto_renew = $2, next_charge_at = $3, updated_at = now() \
         WHERE id = $1 RETURNING {COLS}"
    );
    Subscription::from_row(&db.q_one(&sql, &[&id, &on, &next_charge_at]).await?)
}

// --- service: refunds ---

/// The period in use was refunded: canceled now, auto-renew off.
pub async fn cancel_refunded(
    db: &impl GenericClient,
    id: SubscriptionId,
) -> Result<Subscription, StoreError> {
    let sql = format!(
        "UPDATE subscriptions SET status = 'canceled', auto_renew = false, next_charge_at = NULL, \
         ended_at = now(), current_period_end = GREATEST(current_period_start + interval '1 second', \
         LEAST(current_period_end, now())), updated_at = now() WHERE id = $1 RETURNING {COLS}"
    );
    Subscription::from_row(&db.query_one(&sql, &[&id]).await?)
}

/// A prepaid period was refunded: the period moves back, auto-renew off.
pub async fn move_period_back(
    db: &impl GenericClient,
    id: SubscriptionId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Subscription, StoreError> {
    let sql = format!(
        "UPDATE subscriptions SET current_period_start = $2, current_period_end = $3, \
         auto_renew = false, next_charge_at = NULL, updated_at = now() WHERE id = $1 RETURNING {COLS}"
    );
    Subscription::from_row(&db.query_one(&sql, &[&id, &start, &end]).await?)
}

// --- service: settle ---

/// A subscription a first purchase starts.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub user_id: UserId,
    pub tariff_id: TariffId,
    pub pay_system: PaySystem,
    pub price: Money,
    pub period: Period,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub auto_renew: bool,
    pub payment_method_id: Option<MethodId>,
    pub next_charge_at: Option<DateTime<Utc>>,
    pub livemode: bool,
    /// The purchase's receipt: the template of the renewals' receipts.
    pub receipt: Option<Receipt>,
}

pub async fn insert_active(
    db: &impl GenericClient,
    s: &NewSubscription,
) -> Result<Subscription, StoreError> {
    let row = db
        .q_one(
            super::sql_file!("subscriptions/insert_active.sql", COLS),
            &[
                &SubscriptionId::new(),
                &s.user_id,
                &s.tariff_id,
                &s.pay_system.as_str(),
                &s.price.minor(),
                &s.price.currency().code(),
                &(s.period.count as i32),
                &s.period.unit.as_str(),
                &s.start,
                &s.end,
                &s.auto_renew,
                &s.payment_method_id,
                &s.next_charge_at,
                &s.livemode,
                &super::payments::receipt_json(s.receipt.as_ref()),
            ],
        )
        .await?;
    Subscription::from_row(&row)
}

/// The same tariff bought again.
#[derive(Debug, Clone)]
pub struct Extension {
    pub end: DateTime<Utc>,
    pub auto_renew: bool,
    pub payment_method_id: Option<MethodId>,
    pub next_charge_at: Option<DateTime<Utc>>,
    pub pay_system: PaySystem,
    /// A new billing anchor: the extension starts over after the period ended.
    pub anchor: Option<DateTime<Utc>>,
    /// The purchase's receipt, which becomes the renewals' template (None: keep).
    pub receipt: Option<Receipt>,
    /// The mode of `pay_system`'s provider: the renewals' `livemode`.
    pub livemode: bool,
}

pub async fn extend_purchase(
    db: &impl GenericClient,
    id: SubscriptionId,
    e: &Extension,
) -> Result<Subscription, StoreError> {
    let row = db
        .q_one(
            super::sql_file!("subscriptions/extend_purchase.sql", COLS),
            &[
                &id,
                &e.end,
                &e.auto_renew,
                &e.payment_method_id,
                &e.next_charge_at,
                &e.pay_system.as_str(),
                &e.anchor,
                &super::payments::receipt_json(e.receipt.as_ref()),
                &e.livemode,
            ],
        )
        .await?;
    Subscription::from_row(&row)
}

/// A renewal paid the period `start`..`end`; `anchor` starts a new grid of
/// period ends (a renewal that starts over after expiry).
pub async fn renewed(
    db: &impl GenericClient,
    id: SubscriptionId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    next_charge_at: Option<DateTime<Utc>>,
    anchor: Option<DateTime<Utc>>,
) -> Result<Subscription, StoreError> {
    let row = db
        .q_one(
            super::sql_file!("subscriptions/renewed.sql", COLS),
            &[&id, &start, &end, &next_charge_at, &anchor],
        )
        .await?;
    Subscription::from_row(&row)
}

/// A renewal attempt ended without money.
pub async fn mark_past_due(
    db: &impl GenericClient,
    id: SubscriptionId,
    renewal_attempts: i32,
    next_charge_at: Option<DateTime<Utc>>,
) -> Result<Subscription, StoreError> {
    let sql = format!(
        "UPDATE subscriptions SET status = 'past_due', past_due_since = COALESCE(past_due_since, now()), \
         renewal_attempts = $2, next_charge_at = $3, updated_at = now() WHERE id = $1 RETURNING {COLS}"
    );
    let row = db
        .q_one(&sql, &[&id, &renewal_attempts, &next_charge_at])
        .await?;
    Subscription::from_row(&row)
}

// --- jobs: renewer, expirer ---

async fn update_returning(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Subscription>, StoreError> {
    db.q(sql, params)
        .await?
        .iter()
        .map(Subscription::from_row)
        .collect()
}

/// Expires up to `batch` live subscriptions past their period end with nothing left
/// to wait for (see the statement); `refusal_grace` bounds renewals refused for a
/// reason of ours.
pub async fn expire_unrenewable(
    db: &impl GenericClient,
    batch: i64,
    refusal_grace: std::time::Duration,
) -> Result<Vec<Subscription>, StoreError> {
    update_returning(
        db,
        super::sql_file!("subscriptions/expire_unrenewable.sql", COLS),
        &[&batch, &refusal_grace.as_secs_f64()],
    )
    .await
}

/// Expires up to `batch` live subscriptions more than `bound` past their period end
/// without a paid renewal (the invariant behind every other rule).
pub async fn expire_unpaid_past(
    db: &impl GenericClient,
    batch: i64,
    bound: std::time::Duration,
) -> Result<Vec<Subscription>, StoreError> {
    update_returning(
        db,
        super::sql_file!("subscriptions/expire_unpaid_past.sql", COLS),
        &[&batch, &bound.as_secs_f64()],
    )
    .await
}

/// Moves up to `batch` active subscriptions at their period end with a renewal in
/// flight to past_due.
pub async fn past_due_in_flight(
    db: &impl GenericClient,
    batch: i64,
) -> Result<Vec<Subscription>, StoreError> {
    update_returning(
        db,
        super::sql_file!("subscriptions/past_due_in_flight.sql", COLS),
        &[&batch],
    )
    .await
}

/// The receipt template of a subscription's renewals (its contact changed).
pub async fn set_receipt(
    db: &impl GenericClient,
    id: SubscriptionId,
    receipt: &Receipt,
) -> Result<(), StoreError> {
    db.execute(
        "UPDATE subscriptions SET receipt = $2, updated_at = now() WHERE id = $1",
        &[&id, &super::payments::receipt_json(Some(receipt))],
    )
    .await?;
    Ok(())
}

/// The receipt template of a subscription's renewals, if it has one.
pub async fn receipt_of(
    db: &impl GenericClient,
    id: SubscriptionId,
) -> Result<Option<Receipt>, StoreError> {
    let row = db
        .q_one("SELECT receipt FROM subscriptions WHERE id = $1", &[&id])
        .await?;
    super::payments::receipt_col(&row, "receipt")
}

// --- service: tariff changes ---

/// The tariff the next renewal switches to (None: no change scheduled); the
/// caller holds the row lock.
pub async fn schedule_tariff(
    db: &impl GenericClient,
    id: SubscriptionId,
    tariff: Option<TariffId>,
) -> Result<Subscription, StoreError> {
    let sql = format!(
        "UPDATE subscriptions SET scheduled_tariff_id = $2, updated_at = now() \
         WHERE id = $1 RETURNING {COLS}"
    );
    Subscription::from_row(&db.q_one(&sql, &[&id, &tariff]).await?)
}

/// A subscription moving to another tariff: its price and period, a new period
/// from `start` anchored there, dunning over, no change left scheduled.
#[derive(Debug, Clone)]
pub struct Switch {
    pub tariff_id: TariffId,
    pub price: Money,
    pub period: Period,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub auto_renew: bool,
    pub payment_method_id: Option<MethodId>,
    pub next_charge_at: Option<DateTime<Utc>>,
    pub pay_system: PaySystem,
    pub livemode: bool,
    /// The renewals' receipt template for the new tariff (None: keep).
    pub receipt: Option<Receipt>,
}

pub async fn switch_tariff(
    db: &impl GenericClient,
    id: SubscriptionId,
    s: &Switch,
) -> Result<Subscription, StoreError> {
    let row = db
        .q_one(
            super::sql_file!("subscriptions/switch_tariff.sql", COLS),
            &[
                &id,
                &s.tariff_id,
                &s.price.minor(),
                &s.price.currency().code(),
                &(s.period.count as i32),
                &s.period.unit.as_str(),
                &s.start,
                &s.end,
                &s.auto_renew,
                &s.payment_method_id,
                &s.next_charge_at,
                &s.pay_system.as_str(),
                &s.livemode,
                &super::payments::receipt_json(s.receipt.as_ref()),
            ],
        )
        .await?;
    Subscription::from_row(&row)
}
