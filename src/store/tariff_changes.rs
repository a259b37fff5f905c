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

/// A payment whose paid period is not over, and what of it is still the viewer's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paid {
    pub payment_id: PaymentId,
    /// Its refunds not canceled (pending ones included) when read.
    pub refunded_minor: i64,
    /// Net of those refunds and of earlier credits.
    pub period: PaidPeriod,
}

/// The subscription's paid periods not over at `at`: every succeeded (or partly
/// refunded) payment whose recorded period ends after it.
pub async fn paid_periods_after(
    db: &impl GenericClient,
    sub: SubscriptionId,
    at: DateTime<Utc>,
) -> Result<Vec<Paid>, StoreError> {
    db.q(
        "SELECT p.id, r.committed, p.amount_minor - r.committed - p.credited_minor, \
                p.period_start, p.period_end \
           FROM payments p, LATERAL (SELECT COALESCE(sum(amount_minor), 0)::bigint AS committed \
                                      FROM refunds WHERE payment_id = p.id AND status <> 'canceled') r \
          WHERE p.subscription_id = $1 AND p.status IN ('succeeded', 'partially_refunded') \
            AND p.period_start IS NOT NULL AND p.period_end > $2 \
          ORDER BY p.period_start",
        &[&sub, &at],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Paid {
            payment_id: r.try_get(0)?,
            refunded_minor: r.try_get(1)?,
            period: PaidPeriod {
                net_minor: r.try_get(2)?,
                start: r.try_get(3)?,
                end: r.try_get(4)?,
            },
        })
    })
    .collect()
}

/// What one payment gave to a change's credit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Credited {
    pub payment_id: PaymentId,
    pub credit_minor: i64,
    pub refunded_minor: i64,
}

pub async fn insert_credits(
    db: &impl GenericClient,
    change: PaymentId,
    credits: &[Credited],
) -> Result<(), StoreError> {
    // One statement for them all, not one per credited payment.
    let ids: Vec<PaymentId> = credits.iter().map(|c| c.payment_id).collect();
    let credit: Vec<i64> = credits.iter().map(|c| c.credit_minor).collect();
    let refunded: Vec<i64> = credits.iter().map(|c| c.refunded_minor).collect();
    db.exec(
        "INSERT INTO tariff_change_credits (change_payment_id, credited_payment_id, \
         credit_minor, refunded_minor) \
         SELECT $1, * FROM unnest($2::uuid[], $3::bigint[], $4::bigint[])",
        &[&change, &ids, &credit, &refunded],
    )
    .await?;
    Ok(())
}

/// True when a payment the change credited was refunded since it was priced (or
/// a refund of it then pending was canceled): the credit no longer holds.
pub async fn credits_moved(db: &impl GenericClient, change: PaymentId) -> Result<bool, StoreError> {
    Ok(db
        .q_one(
            "SELECT EXISTS (SELECT 1 FROM tariff_change_credits c \
               WHERE c.change_payment_id = $1 \
                 AND c.refunded_minor <> (SELECT COALESCE(sum(amount_minor), 0)::bigint FROM refunds \
                                           WHERE payment_id = c.credited_payment_id \
                                             AND status <> 'canceled'))",
            &[&change],
        )
        .await?
        .try_get(0)?)
}

/// The change took over: what it credited of each payment is no longer refundable.
pub async fn spend_credits(db: &impl GenericClient, change: PaymentId) -> Result<(), StoreError> {
    move_credits(db, change, true).await
}

/// The change was refunded in full: what it credited is the viewer's again, so
/// refundable again.
pub async fn release_credits(db: &impl GenericClient, change: PaymentId) -> Result<(), StoreError> {
    move_credits(db, change, false).await
}

async fn move_credits(
    db: &impl GenericClient,
    change: PaymentId,
    spend: bool,
) -> Result<(), StoreError> {
    db.exec(
        "WITH moved AS ( \
             UPDATE tariff_change_credits SET spent = $2 \
              WHERE change_payment_id = $1 AND spent <> $2 \
          RETURNING credited_payment_id, credit_minor) \
         UPDATE payments p \
            SET credited_minor = p.credited_minor \
                + CASE WHEN $2 THEN m.credit_minor ELSE -m.credit_minor END, \
                updated_at = now() \
           FROM moved m WHERE p.id = m.credited_payment_id",
        &[&change, &spend],
    )
    .await?;
    Ok(())
}

/// What a tariff change used of this payment as credit (not refundable).
pub async fn credited_minor(
    db: &impl GenericClient,
    payment: PaymentId,
) -> Result<i64, StoreError> {
    Ok(db
        .q_one(
            "SELECT credited_minor FROM payments WHERE id = $1",
            &[&payment],
        )
        .await?
        .try_get(0)?)
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
