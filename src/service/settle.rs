//! The one function that moves a payment to the provider's state. The webhook,
//! the reconciler, the renewer and the admin replay all call `apply`.
//!
//! Order of locks: the payment row, then the subscription row. Every decision is
//! taken under those locks with the database's clock, and the payment change, the
//! subscription change and their outbox events commit in one transaction.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use deadpool_postgres::Transaction;
use uuid::Uuid;

use crate::app::App;
use crate::domain::status::is_hard_decline;
use crate::domain::{PaySystem, PaymentStatus, SubscriptionStatus};
use crate::events::{self, EventSubject, EventType};
use crate::providers::ProviderPayment;
use crate::store::Cached as _;
use crate::store::{payments, subscriptions, Payment, PaymentKind, StoreError, Subscription};

#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The payment moved to this status.
    Moved(PaymentStatus),
    /// Nothing to do: the same state, or an older one than ours.
    Unchanged,
    /// The provider's data disagrees with our row; nothing granted.
    NeedsReview(String),
}

pub fn alert(kind: &'static str, message: &str, payment_id: Uuid) {
    metrics::counter!("billing_alerts_total", "kind" => kind).increment(1);
    tracing::error!(alert = kind, payment_id = %payment_id, "{message}");
}

/// What the provider's object must agree with before it may change anything.
fn review_reason(app: &App, payment: &Payment, pp: &ProviderPayment) -> Option<String> {
    let expect_test = !app.config.mode.livemode();
    if pp.test != expect_test {
        return Some(format!(
            "test flag {} in {} mode",
            pp.test,
            app.config.mode.as_str()
        ));
    }
    match payment.pay_system {
        PaySystem::YooKassa => {
            if let Some(account) = &pp.account_id {
                if account != &app.config.yookassa.shop_id {
                    return Some(format!("recipient account {account} is not our shop"));
                }
            }
        }
        // CloudPayments names the payer: the AccountId we sent, our user id.
        PaySystem::CloudPayments => {
            if let Some(account) = &pp.account_id {
                if Uuid::parse_str(account).ok() != Some(payment.user_id) {
                    return Some(format!("payer account {account:?} is not the buyer"));
                }
            }
        }
    }
    if pp.amount != payment.amount {
        return Some(format!(
            "provider amount {} differs from ours {}",
            pp.amount, payment.amount
        ));
    }
    if let Some(our) = pp.our_id {
        if our != payment.id {
            return Some(format!("provider metadata names payment {our}"));
        }
    }
    None
}

pub async fn apply(
    app: &App,
    payment_id: Uuid,
    pp: &ProviderPayment,
) -> Result<Applied, StoreError> {
    let mut db = app.db.get().await?;
    let tx = db.transaction().await?;
    let payment = payments::lock(&tx, payment_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("payment {payment_id} vanished")))?;

    if let Some(reason) = review_reason(app, &payment, pp) {
        flag_for_review(&tx, &payment, &reason).await?;
        tx.commit().await?;
        return Ok(Applied::NeedsReview(reason));
    }

    // Adopt the provider's id if the create's answer was never recorded (or, for
    // CloudPayments, once the order became a transaction). An empty id lends nothing.
    if payment.provider_payment_id.is_none() && !pp.id.is_empty() {
        tx.exec(
            "UPDATE payments SET provider_payment_id = $2, updated_at = now() WHERE id = $1",
            &[&payment.id, &pp.id],
        )
        .await?;
    }

    let target = pp.status;
    if !payment.status.can_move_to(target) {
        tx.commit().await?;
        return Ok(Applied::Unchanged);
    }

    let now: DateTime<Utc> = tx.q_one("SELECT now()", &[]).await?.get(0);
    let sub = match payment.subscription_id {
        Some(id) => subscriptions::lock(&tx, id).await?,
        None => None,
    };

    let method_id = match (&pp.method, target) {
        (Some(m), PaymentStatus::Succeeded) if m.saved && !m.id.is_empty() => {
            Some(save_method(&tx, &payment, &m.id, &m.title).await?)
        }
        _ => None,
    };
    let (party, reason) = match &pp.cancellation {
        Some(c) => (Some(c.party.as_str()), Some(c.reason.as_str())),
        None => (None, None),
    };
    let allowed: Vec<&str> = target.allowed_from().iter().map(|s| s.as_str()).collect();
    let updated = tx
        .q_opt(
            &format!(
                "UPDATE payments SET status = $2, captured_at = COALESCE($3, captured_at), \
                 cancellation_party = COALESCE($4, cancellation_party), \
                 cancellation_reason = COALESCE($5, cancellation_reason), \
                 payment_method_id = COALESCE(payment_method_id, $6), next_check_at = NULL, \
                 lease_until = NULL, updated_at = now() \
                 WHERE id = $1 AND status = ANY($7) RETURNING {}",
                payments::COLS
            ),
            &[
                &payment.id,
                &target.as_str(),
                &pp.captured_at,
                &party,
                &reason,
                &method_id,
                &allowed,
            ],
        )
        .await?;
    let Some(row) = updated else {
        tx.commit().await?;
        return Ok(Applied::Unchanged);
    };
    let mut moved = Payment::from_row(&row)?;

    let mut refund_after_commit = None;
    match target {
        PaymentStatus::Succeeded => {
            if matches!(
                payment.status,
                PaymentStatus::Failed | PaymentStatus::Canceled
            ) {
                alert(
                    "succeeded_after_local_final",
                    &format!(
                        "provider says succeeded for a payment we had as {}",
                        payment.status
                    ),
                    payment.id,
                );
            }
            let start = pp.captured_at.unwrap_or(now);
            let outcome = match payment.kind {
                PaymentKind::Purchase => {
                    activate_purchase(app, &tx, &moved, method_id, start, now).await?
                }
                PaymentKind::Renewal => renew(app, &tx, &moved, sub, start, now).await?,
            };
            match outcome {
                Granted::Sub(sub, event) => {
                    if moved.subscription_id != Some(sub.id) {
                        tx.exec(
                            "UPDATE payments SET subscription_id = $2 WHERE id = $1",
                            &[&moved.id, &sub.id],
                        )
                        .await?;
                        moved.subscription_id = Some(sub.id);
                    }
                    // Any success for a subscription ends its pending dunning retries.
                    events::record(
                        &tx,
                        EventType::PaymentSucceeded,
                        EventSubject::payment(&moved, Some(&sub)),
                    )
                    .await?;
                    // The subscription event names the payment that caused it (design's example body).
                    events::record(&tx, event, EventSubject::payment(&moved, Some(&sub))).await?;
                }
                Granted::Conflict(why) => {
                    events::record(
                        &tx,
                        EventType::PaymentSucceeded,
                        EventSubject::payment(&moved, None),
                    )
                    .await?;
                    alert(
                        "conflicting_tariff",
                        &format!("paid but cannot apply: {why}; refunding"),
                        moved.id,
                    );
                    refund_after_commit = Some(
                        super::refunds::insert_system_refund(&tx, &moved, "conflicting_tariff")
                            .await?,
                    );
                }
            }
        }
        PaymentStatus::Canceled => {
            let sub = match (payment.kind, sub) {
                (PaymentKind::Renewal, Some(sub)) => {
                    Some(renewal_failed(app, &tx, &moved, sub, reason, now).await?)
                }
                (_, sub) => sub,
            };
            events::record(
                &tx,
                EventType::PaymentCanceled,
                EventSubject::payment(&moved, sub.as_ref()),
            )
            .await?;
        }
        // waiting_for_capture grants nothing (we always ask capture: true); failed is ours alone.
        _ => {}
    }
    tx.commit().await?;
    // Give the connection back before the provider call below.
    drop(db);
    metrics::counter!("payments_settled_total", "status" => target.as_str()).increment(1);

    if let Some(refund_id) = refund_after_commit {
        if let Err(e) = super::refunds::submit(app, refund_id).await {
            tracing::warn!(refund_id = %refund_id, error = %e, "automatic refund not submitted yet; it will be retried");
        }
    }
    Ok(Applied::Moved(target))
}

async fn flag_for_review(
    tx: &Transaction<'_>,
    payment: &Payment,
    reason: &str,
) -> Result<(), StoreError> {
    if payment.review_reason.is_none() {
        tx.execute(
            "UPDATE payments SET review_reason = $2, updated_at = now() WHERE id = $1",
            &[&payment.id, &reason],
        )
        .await?;
        metrics::counter!("payments_needs_review_total", "provider" => payment.pay_system.as_str())
            .increment(1);
        alert(
            "needs_review",
            &format!("payment needs review: {reason}"),
            payment.id,
        );
    }
    Ok(())
}

/// Provider data about this payment that cannot even be read as a payment (e.g. a
/// signed notification in a currency we do not sell in): flagged, nothing granted.
pub async fn needs_review(
    app: &App,
    payment_id: Uuid,
    reason: &str,
) -> Result<Applied, StoreError> {
    let mut db = app.db.get().await?;
    let tx = db.transaction().await?;
    let payment = payments::lock(&tx, payment_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("payment {payment_id} vanished")))?;
    flag_for_review(&tx, &payment, reason).await?;
    tx.commit().await?;
    Ok(Applied::NeedsReview(reason.to_owned()))
}

enum Granted {
    Sub(Subscription, EventType),
    Conflict(String),
}

async fn save_method(
    tx: &Transaction<'_>,
    payment: &Payment,
    provider_id: &str,
    title: &str,
) -> Result<Uuid, StoreError> {
    let row = tx
        .q_one(
            "INSERT INTO payment_methods (id, user_id, pay_system, provider_method_id, title, livemode) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (pay_system, provider_method_id) DO UPDATE SET title = EXCLUDED.title \
             RETURNING id",
            &[&Uuid::new_v4(), &payment.user_id, &payment.pay_system.as_str(), &provider_id, &title, &payment.livemode],
        )
        .await?;
    Ok(row.get(0))
}

fn renew_at(app: &App, end: DateTime<Utc>) -> DateTime<Utc> {
    end - ChronoDuration::from_std(app.config.renew_before).unwrap_or(ChronoDuration::days(1))
}

/// A first purchase (or a repeat purchase of the same tariff) has been paid.
async fn activate_purchase(
    app: &App,
    tx: &Transaction<'_>,
    payment: &Payment,
    method_id: Option<Uuid>,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Granted, StoreError> {
    let tariff = crate::store::tariffs::get(tx, payment.tariff_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("payment without its tariff".into()))?;
    let auto_renew = payment.renew && method_id.is_some();
    match subscriptions::lock_live_for_user(tx, payment.user_id).await? {
        Some(live) if live.tariff_id != payment.tariff_id => Ok(Granted::Conflict(format!(
            "user already has tariff {} active",
            live.tariff_id
        ))),
        Some(live) => {
            // Same tariff: one more period from the current end, at the price it was bought at.
            let end = live.period.add_to(live.current_period_end.max(now));
            let (renew, method) = if auto_renew {
                (true, method_id)
            } else {
                (live.auto_renew, live.payment_method_id)
            };
            let next = renew.then(|| renew_at(app, end));
            let row = tx
                .q_one(
                    &format!(
                        "UPDATE subscriptions SET current_period_end = $2, status = 'active', auto_renew = $3, \
                         payment_method_id = $4, next_charge_at = $5, renewal_attempts = 0, past_due_since = NULL, \
                         updated_at = now() WHERE id = $1 RETURNING {}",
                        subscriptions::COLS
                    ),
                    &[&live.id, &end, &renew, &method, &next],
                )
                .await?;
            record_paid_period(tx, payment, live.current_period_end.max(now), end).await?;
            Ok(Granted::Sub(
                Subscription::from_row(&row)?,
                EventType::SubscriptionRenewed,
            ))
        }
        None => {
            let end = tariff.period.add_to(start);
            let next = auto_renew.then(|| renew_at(app, end));
            let row = tx
                .q_one(
                    &format!(
                        "INSERT INTO subscriptions (id, user_id, tariff_id, pay_system, status, price_minor, currency, \
                         period_count, period_unit, current_period_start, current_period_end, auto_renew, \
                         payment_method_id, next_charge_at, livemode) \
                         VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING {}",
                        subscriptions::COLS
                    ),
                    &[
                        &Uuid::new_v4(),
                        &payment.user_id,
                        &payment.tariff_id,
                        &payment.pay_system.as_str(),
                        &payment.amount.minor(),
                        &payment.amount.currency().code(),
                        &(tariff.period.count as i32),
                        &tariff.period.unit.as_str(),
                        &start,
                        &end,
                        &auto_renew,
                        &method_id,
                        &next,
                        &payment.livemode,
                    ],
                )
                .await?;
            record_paid_period(tx, payment, start, end).await?;
            Ok(Granted::Sub(
                Subscription::from_row(&row)?,
                EventType::SubscriptionActivated,
            ))
        }
    }
}

/// The period a purchase paid, so a later full refund looks it up (`refunds`).
async fn record_paid_period(
    tx: &Transaction<'_>,
    payment: &Payment,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE payments SET period_start = $2, period_end = $3 WHERE id = $1",
        &[&payment.id, &start, &end],
    )
    .await?;
    Ok(())
}

/// A renewal charge succeeded: the period that starts at the old end is paid.
async fn renew(
    app: &App,
    tx: &Transaction<'_>,
    payment: &Payment,
    sub: Option<Subscription>,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Granted, StoreError> {
    let sub = sub.ok_or_else(|| StoreError::Corrupt("renewal without its subscription".into()))?;
    let (period_start, status_event) = if sub.status.is_live() {
        // Normally the paid period starts where the current one ends.
        (
            payment
                .period_start
                .unwrap_or(sub.current_period_end)
                .max(sub.current_period_start),
            EventType::SubscriptionRenewed,
        )
    } else {
        // Expired meanwhile: a new period starts at confirmation, if nothing else is live.
        if let Some(other) = subscriptions::lock_live_for_user(tx, sub.user_id).await? {
            return Ok(Granted::Conflict(format!(
                "renewal after expiry, but subscription {} is live",
                other.id
            )));
        }
        (start, EventType::SubscriptionRenewed)
    };
    let (new_start, end) = if sub.status.is_live() && period_start >= sub.current_period_end {
        (
            sub.current_period_end,
            sub.period.add_to(sub.current_period_end),
        )
    } else if sub.status.is_live() {
        // Already extended past this period (should not happen: one renewal per period).
        (
            sub.current_period_start,
            sub.period.add_to(sub.current_period_end),
        )
    } else {
        (period_start, sub.period.add_to(period_start.max(now)))
    };
    // A renewal's period_start is the period it was charged for; its end is recorded now.
    tx.exec(
        "UPDATE payments SET period_end = $2 WHERE id = $1",
        &[&payment.id, &end],
    )
    .await?;
    let next = sub.auto_renew.then(|| renew_at(app, end));
    let row = tx
        .q_one(
            &format!(
                "UPDATE subscriptions SET status = 'active', current_period_start = $2, current_period_end = $3, \
                 next_charge_at = $4, renewal_attempts = 0, past_due_since = NULL, ended_at = NULL, updated_at = now() \
                 WHERE id = $1 RETURNING {}",
                subscriptions::COLS
            ),
            &[&sub.id, &new_start, &end, &next],
        )
        .await?;
    Ok(Granted::Sub(Subscription::from_row(&row)?, status_event))
}

/// A renewal charge was declined: past_due and a retry per the dunning schedule,
/// or no retry at all after a hard decline (and the method is not used again).
async fn renewal_failed(
    app: &App,
    tx: &Transaction<'_>,
    payment: &Payment,
    sub: Subscription,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Subscription, StoreError> {
    if !sub.status.is_live() || payment.period_start != Some(sub.current_period_end) {
        return Ok(sub);
    }
    let reason = reason.unwrap_or("unknown");
    let hard = is_hard_decline(reason);
    if hard {
        if let Some(method) = payment.payment_method_id.or(sub.payment_method_id) {
            tx.exec(
                "UPDATE payment_methods SET usable = false, unusable_reason = $2 WHERE id = $1",
                &[&method, &reason],
            )
            .await?;
        }
    }
    let attempts = sub.renewal_attempts + 1;
    let next = if hard || !sub.auto_renew {
        None
    } else {
        app.config
            .dunning_schedule
            .get((attempts - 1) as usize)
            .map(|d| now + ChronoDuration::from_std(*d).unwrap_or(ChronoDuration::days(1)))
    };
    let row = tx
        .q_one(
            &format!(
                "UPDATE subscriptions SET status = 'past_due', past_due_since = COALESCE(past_due_since, now()), \
                 renewal_attempts = $2, next_charge_at = $3, updated_at = now() WHERE id = $1 RETURNING {}",
                subscriptions::COLS
            ),
            &[&sub.id, &attempts, &next],
        )
        .await?;
    let updated = Subscription::from_row(&row)?;
    if sub.status == SubscriptionStatus::Active {
        events::record(
            tx,
            EventType::SubscriptionPastDue,
            EventSubject::subscription(&updated),
        )
        .await?;
    }
    Ok(updated)
}
