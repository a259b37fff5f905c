//! A tariff change paid now: its terms, kept beside its payment (`kind = 'change'`)
//! for the settle that applies them, and the paid periods it credits.

use chrono::{DateTime, Utc};

use super::{GenericClient, StoreError};
use crate::domain::proration::PaidPeriod;
use crate::domain::{PaymentId, SubscriptionId, TariffId};
use crate::store::Cached as _;

/// How a change's payment was priced, on which subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeTerms {
    pub payment_id: PaymentId,
    pub subscription_id: SubscriptionId,
    pub from_tariff_id: TariffId,
    /// The unused part of what was paid, in minor units of the payment's currency.
    pub credit_minor: i64,
    /// The subscription's period end the credit was computed on.
    pub credited_until: DateTime<Utc>,
}

pub async fn insert(db: &impl GenericClient, t: &ChangeTerms) -> Result<(), StoreError> {
    db.exec(
        "INSERT INTO tariff_changes (payment_id, subscription_id, from_tariff_id, credit_minor, \
         credited_until) VALUES ($1, $2, $3, $4, $5)",
        &[
            &t.payment_id,
            &t.subscription_id,
            &t.from_tariff_id,
            &t.credit_minor,
            &t.credited_until,
        ],
    )
    .await?;
    Ok(())
}

pub async fn get(
    db: &impl GenericClient,
    payment_id: PaymentId,
) -> Result<Option<ChangeTerms>, StoreError> {
    let row = db
        .q_opt(
            "SELECT payment_id, subscription_id, from_tariff_id, credit_minor, credited_until \
             FROM tariff_changes WHERE payment_id = $1",
            &[&payment_id],
        )
        .await?;
    row.map(|r| {
        Ok(ChangeTerms {
            payment_id: r.try_get(0)?,
            subscription_id: r.try_get(1)?,
            from_tariff_id: r.try_get(2)?,
            credit_minor: r.try_get(3)?,
            credited_until: r.try_get(4)?,
        })
    })
    .transpose()
}

/// The subscription's paid periods not over at `at`: every succeeded (or partly
/// refunded) payment whose recorded period ends after it.
pub async fn paid_periods_after(
    db: &impl GenericClient,
    sub: SubscriptionId,
    at: DateTime<Utc>,
) -> Result<Vec<PaidPeriod>, StoreError> {
    db.q(
        "SELECT amount_minor - refunded_minor, period_start, period_end FROM payments \
         WHERE subscription_id = $1 AND status IN ('succeeded', 'partially_refunded') \
           AND period_start IS NOT NULL AND period_end > $2 \
         ORDER BY period_start",
        &[&sub, &at],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(PaidPeriod {
            net_minor: r.try_get(0)?,
            start: r.try_get(1)?,
            end: r.try_get(2)?,
        })
    })
    .collect()
}

/// The periods a change credited end where it took over (`at`): a refund of one of
/// their payments afterwards finds its period over and takes no access from the new
/// tariff's period (rule 12).
pub async fn end_credited_periods(
    db: &impl GenericClient,
    sub: SubscriptionId,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    db.exec(
        "UPDATE payments SET period_start = LEAST(period_start, $2), period_end = $2, \
         updated_at = now() \
         WHERE subscription_id = $1 AND status IN ('succeeded', 'partially_refunded') \
           AND period_start IS NOT NULL AND period_end > $2",
        &[&sub, &at],
    )
    .await?;
    Ok(())
}
