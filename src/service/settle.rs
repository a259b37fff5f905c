//! The one function that moves a payment to the provider's state. The webhook,
//! the reconciler, the renewer and the admin replay all call `apply`.
//!
//! Order of locks: the payment row, then the subscription row. Every decision is
//! taken under those locks with the database's clock, and the payment change, the
//! subscription change and their outbox events commit in one transaction.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use deadpool_postgres::Transaction;

use crate::app::App;
use crate::domain::status::is_hard_decline;
use crate::domain::{MethodId, PaymentId};
use crate::domain::{PaySystem, PaymentStatus, SubscriptionStatus};
use crate::domain::{RefundId, UserId};
use crate::events::{self, EventSubject, EventType};
use crate::providers::ProviderPayment;
use crate::service::alerts;
use crate::store::payment_methods::{self, SavedMethod};
use crate::store::payments::{DuplicateCharge, StatusMove};
use crate::store::subscriptions::{Extension, NewSubscription};
use crate::store::Connect;
use crate::store::{self, payments, subscriptions, Payment, PaymentKind, StoreError, Subscription};

#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The payment moved to this status.
    Moved(PaymentStatus),
    /// Nothing to do: the same state, or an older one than ours.
    Unchanged,
    /// The provider's data disagrees with our row; nothing granted.
    NeedsReview(String),
}

/// Why a renewal create ended with nothing created at the provider.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// About the viewer's saved method (unknown, revoked, not allowed for this charge,
    /// a refused token): a hard decline.
    Method(String),
    /// About us (credentials after a key rotation, autopayments not enabled, a bad
    /// request, a create lost past the key window): the viewer's card is not blamed.
    Ours(String),
}

impl Refusal {
    pub fn code(&self) -> &str {
        match self {
            Refusal::Method(c) | Refusal::Ours(c) => c,
        }
    }
}

/// Why a renewal attempt ended without money (see `renewal_failed`).
enum Failure<'a> {
    /// The provider declined the charge (a `canceled` payment) for this reason.
    Declined(&'a str),
    Refused(&'a Refusal),
}

/// `cancellation_party` of a failed renewal row refused by the provider: whose fault.
const PARTY_SHOP: &str = "shop";
const PARTY_METHOD: &str = "payment_method";

/// What the provider's object must agree with before it may change anything.
fn review_reason(app: &App, payment: &Payment, pp: &ProviderPayment) -> Option<String> {
    let mode = app.config.provider_mode(payment.pay_system);
    if pp.test == mode.livemode() {
        return Some(format!("test flag {} in {} mode", pp.test, mode.as_str()));
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
                if account.parse::<UserId>().ok() != Some(payment.user_id) {
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
    payment_id: PaymentId,
    pp: &ProviderPayment,
) -> Result<Applied, StoreError> {
    let mut db = app.db.conn().await?;
    let tx = store::begin(&mut db).await?;
    let payment = payments::lock(&tx, payment_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("payment {payment_id} vanished")))?;

    if let Some(reason) = review_reason(app, &payment, pp) {
        flag_for_review(app, &tx, &payment, &reason).await?;
        store::commit(tx).await?;
        return Ok(Applied::NeedsReview(reason));
    }

    // Another provider payment for a row that already has one: never moves the row.
    if let Some(ours) = payment.provider_payment_id.as_deref() {
        if !pp.id.is_empty() && pp.id != ours {
            let refund = other_provider_payment(app, &tx, &payment, pp).await?;
            store::commit(tx).await?;
            drop(db);
            if let Some(refund_id) = refund {
                if let Err(e) = super::refunds::submit(app, refund_id).await {
                    tracing::warn!(refund_id = %refund_id, error = %e, "duplicate-charge refund not submitted yet; it will be retried");
                }
            }
            return Ok(Applied::Unchanged);
        }
    }

    // Adopt the provider's id if the create's answer was never recorded (or, for
    // CloudPayments, once the order became a transaction). An empty id lends nothing.
    if payment.provider_payment_id.is_none() && !pp.id.is_empty() {
        payments::adopt_provider_id(&tx, payment.id, &pp.id).await?;
    }

    let target = pp.status;
    if !payment.status.can_move_to(target) {
        store::commit(tx).await?;
        return Ok(Applied::Unchanged);
    }

    let now = store::now(&tx).await?;
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
    let updated = payments::move_status(
        &tx,
        payment.id,
        &StatusMove {
            status: target,
            captured_at: pp.captured_at,
            cancellation_party: party,
            cancellation_reason: reason,
            payment_method_id: method_id,
        },
    )
    .await?;
    let Some(mut moved) = updated else {
        store::commit(tx).await?;
        return Ok(Applied::Unchanged);
    };

    let mut refund_after_commit = None;
    match target {
        PaymentStatus::Succeeded => {
            if matches!(
                payment.status,
                PaymentStatus::Failed | PaymentStatus::Canceled
            ) {
                alerts::raise(
                    app,
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
                PaymentKind::Change => change_now(app, &tx, &moved, method_id, start).await?,
            };
            match outcome {
                Granted::Sub(sub, event, extra) => {
                    let sub = *sub;
                    if moved.subscription_id != Some(sub.id) {
                        payments::link_subscription(&tx, moved.id, sub.id).await?;
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
                    let mut subject = EventSubject::payment(&moved, Some(&sub));
                    subject.extra = extra;
                    events::record(&tx, event, subject).await?;
                }
                Granted::Conflict(why) => {
                    events::record(
                        &tx,
                        EventType::PaymentSucceeded,
                        EventSubject::payment(&moved, None),
                    )
                    .await?;
                    alerts::raise(
                        app,
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
                (PaymentKind::Renewal, Some(sub)) => Some(
                    renewal_failed(
                        app,
                        &tx,
                        &moved,
                        sub,
                        Failure::Declined(reason.unwrap_or("unknown")),
                        now,
                    )
                    .await?,
                ),
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
    store::commit(tx).await?;
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

/// A provider payment `pp` names our row, which already has another provider id.
/// If it took money, that is a second charge for one payment: alert, record it as a
/// payment of its own (so the refund and its `payment.refunded` event concern it,
/// not the row that paid the period) and refund it in full. Answers the refund to submit.
async fn other_provider_payment(
    app: &App,
    tx: &Transaction<'_>,
    payment: &Payment,
    pp: &ProviderPayment,
) -> Result<Option<RefundId>, StoreError> {
    if pp.status != PaymentStatus::Succeeded {
        tracing::warn!(payment_id = %payment.id, other = %pp.id, status = %pp.status,
            "another provider payment names this payment; it took no money, nothing to do");
        return Ok(None);
    }
    alerts::raise(
        app,
        "duplicate_charge",
        &format!(
            "provider payment {} charged again for payment {} (already {}); refunding it",
            pp.id,
            payment.id,
            payment.provider_payment_id.as_deref().unwrap_or("?")
        ),
        payment.id,
    );
    let inserted = payments::insert_duplicate_charge(
        tx,
        &DuplicateCharge {
            of: payment,
            provider_payment_id: &pp.id,
            amount: pp.amount,
            captured_at: pp.captured_at,
        },
    )
    .await?;
    // Already recorded (a repeated notification): its refund exists too.
    let Some(extra) = inserted else {
        return Ok(None);
    };
    Ok(Some(
        super::refunds::insert_system_refund(tx, &extra, "duplicate_charge").await?,
    ))
}

/// A renewal create the provider refused (nothing was created there), or one lost
/// past the key window: the row is `failed` with the refusal's code, and the
/// subscription moves on as `renewal_failed` decides, in one transaction. False when
/// the row was no longer an unanswered pending create (nothing changed).
pub async fn renewal_refused(
    app: &App,
    payment_id: PaymentId,
    refusal: &Refusal,
) -> Result<bool, StoreError> {
    let mut db = app.db.conn().await?;
    let tx = store::begin(&mut db).await?;
    let party = match refusal {
        Refusal::Method(_) => PARTY_METHOD,
        Refusal::Ours(_) => PARTY_SHOP,
    };
    let failed =
        payments::fail_refused_create(&tx, payment_id, Some(party), refusal.code()).await?;
    let Some(payment) = failed else {
        store::commit(tx).await?;
        return Ok(false);
    };
    if let Some(sub_id) = payment.subscription_id {
        if let Some(sub) = subscriptions::lock(&tx, sub_id).await? {
            let now = store::now(&tx).await?;
            renewal_failed(app, &tx, &payment, sub, Failure::Refused(refusal), now).await?;
        }
    }
    store::commit(tx).await?;
    Ok(true)
}

async fn flag_for_review(
    app: &App,
    tx: &Transaction<'_>,
    payment: &Payment,
    reason: &str,
) -> Result<(), StoreError> {
    if payment.review_reason.is_none() {
        payments::set_review_reason(tx, payment.id, reason).await?;
        metrics::counter!("payments_needs_review_total", "provider" => payment.pay_system.as_str())
            .increment(1);
        alerts::raise(
            app,
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
    payment_id: PaymentId,
    reason: &str,
) -> Result<Applied, StoreError> {
    let mut db = app.db.conn().await?;
    let tx = store::begin(&mut db).await?;
    let payment = payments::lock(&tx, payment_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("payment {payment_id} vanished")))?;
    flag_for_review(app, &tx, &payment, reason).await?;
    store::commit(tx).await?;
    Ok(Applied::NeedsReview(reason.to_owned()))
}

enum Granted {
    /// The subscription after the payment, the event that says so, and that
    /// event's own fields (a tariff change's amounts).
    Sub(
        Box<Subscription>,
        EventType,
        Vec<(&'static str, serde_json::Value)>,
    ),
    Conflict(String),
}

async fn save_method(
    tx: &Transaction<'_>,
    payment: &Payment,
    provider_id: &str,
    title: &str,
) -> Result<MethodId, StoreError> {
    payment_methods::save(
        tx,
        &SavedMethod {
            user_id: payment.user_id,
            pay_system: payment.pay_system,
            provider_method_id: provider_id,
            title,
            livemode: payment.livemode,
        },
    )
    .await
}

fn renew_at(app: &App, end: DateTime<Utc>) -> DateTime<Utc> {
    end - ChronoDuration::from_std(app.config.renew_before).unwrap_or(ChronoDuration::days(1))
}

/// A first purchase (or a repeat purchase of the same tariff) has been paid.
async fn activate_purchase(
    app: &App,
    tx: &Transaction<'_>,
    payment: &Payment,
    method_id: Option<MethodId>,
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
            // Same tariff: one more period from the current end, at the price it was
            // bought at, on the anchor's grid; after the end, a new grid from now.
            let (end, anchor) = if live.current_period_end >= now {
                (
                    live.period
                        .end_from(live.billing_anchor, live.current_period_end),
                    None,
                )
            } else {
                (live.period.add_to(now), Some(now))
            };
            // A newly saved method replaces the old one, and the subscription then
            // belongs to that method's provider (renewals go there).
            let (renew, method, pay_system, livemode) = if auto_renew {
                (true, method_id, payment.pay_system, payment.livemode)
            } else {
                (
                    live.auto_renew,
                    live.payment_method_id,
                    live.pay_system,
                    live.livemode,
                )
            };
            let next = renew.then(|| renew_at(app, end));
            let extended = subscriptions::extend_purchase(
                tx,
                live.id,
                &Extension {
                    end,
                    auto_renew: renew,
                    payment_method_id: method,
                    next_charge_at: next,
                    pay_system,
                    anchor,
                    receipt: payment.receipt.clone(),
                    livemode,
                },
            )
            .await?;
            payments::record_paid_period(tx, payment.id, live.current_period_end.max(now), end)
                .await?;
            Ok(Granted::Sub(
                Box::new(extended),
                EventType::SubscriptionRenewed,
                vec![],
            ))
        }
        None => {
            let end = tariff.period.add_to(start);
            let next = auto_renew.then(|| renew_at(app, end));
            let created = subscriptions::insert_active(
                tx,
                &NewSubscription {
                    user_id: payment.user_id,
                    tariff_id: payment.tariff_id,
                    pay_system: payment.pay_system,
                    price: payment.amount,
                    period: tariff.period,
                    start,
                    end,
                    auto_renew,
                    payment_method_id: method_id,
                    next_charge_at: next,
                    livemode: payment.livemode,
                    receipt: payment.receipt.clone(),
                },
            )
            .await?;
            payments::record_paid_period(tx, payment.id, start, end).await?;
            Ok(Granted::Sub(
                Box::new(created),
                EventType::SubscriptionActivated,
                vec![],
            ))
        }
    }
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
    if payment.tariff_id != sub.tariff_id {
        return switch_at_renewal(app, tx, payment, sub, start, now).await;
    }
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
    if sub.status.is_live() && period_start < sub.current_period_end {
        // The period this renewal was charged for was paid meanwhile by a purchase of
        // the same tariff (an extension): the money buys the period after the current
        // end, and the payment records that period, not the one the extension holds
        // (a refund of either then gives back its own period).
        let end = sub
            .period
            .end_from(sub.billing_anchor, sub.current_period_end);
        payments::record_paid_period(tx, payment.id, sub.current_period_end, end).await?;
        let next = sub.auto_renew.then(|| renew_at(app, end));
        let renewed =
            subscriptions::renewed(tx, sub.id, sub.current_period_start, end, next, None).await?;
        return Ok(Granted::Sub(Box::new(renewed), status_event, vec![]));
    }
    let (new_start, end, anchor) = if sub.status.is_live() {
        (
            sub.current_period_end,
            sub.period
                .end_from(sub.billing_anchor, sub.current_period_end),
            None,
        )
    } else {
        // Starting over after expiry: a new grid from the new period.
        let from = period_start.max(now);
        (period_start, sub.period.add_to(from), Some(from))
    };
    // A renewal's period_start is the period it was charged for; its end is recorded now.
    payments::record_period_end(tx, payment.id, end).await?;
    let next = sub.auto_renew.then(|| renew_at(app, end));
    let renewed = subscriptions::renewed(tx, sub.id, new_start, end, next, anchor).await?;
    Ok(Granted::Sub(Box::new(renewed), status_event, vec![]))
}

/// The amounts of `subscription.tariff_changed`.
fn change_fields(
    from: crate::domain::TariffId,
    credit: i64,
    charged: crate::domain::Money,
) -> Vec<(&'static str, serde_json::Value)> {
    let credit = crate::domain::Money::new(credit, charged.currency());
    vec![
        ("from_tariff_id", serde_json::json!(from)),
        ("credit", serde_json::json!(credit)),
        ("charged", serde_json::json!(charged)),
    ]
}

/// A tariff change paid now: the subscription it was priced on switches to the new
/// tariff, a new period (and billing anchor) from the capture, if it is still live
/// on the old tariff with the period end the credit was computed on and no renewal
/// being charged. Anything else moved it since: the payment is refunded.
async fn change_now(
    app: &App,
    tx: &Transaction<'_>,
    payment: &Payment,
    method_id: Option<MethodId>,
    start: DateTime<Utc>,
) -> Result<Granted, StoreError> {
    let terms = crate::store::tariff_changes::get(tx, payment.id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("change {} without its terms", payment.id)))?;
    let sub = subscriptions::lock(tx, terms.subscription_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("change without its subscription".into()))?;
    let stale = if !sub.status.is_live() {
        Some("the subscription is no longer live")
    } else if sub.tariff_id != terms.from_tariff_id {
        Some("the subscription changed tariff since")
    } else if sub.current_period_end != terms.credited_until {
        Some("the subscription's period end moved since the change was priced")
    } else if start >= terms.credited_until {
        // Paid after the period the credit was for had ended.
        Some("the credited period ended before the change was paid")
    } else if payments::renewal_in_flight(tx, sub.id).await? {
        Some("a renewal of the subscription is being charged")
    } else if crate::store::tariff_changes::credits_moved(tx, payment.id).await? {
        Some("a payment the change credited was refunded since")
    } else {
        None
    };
    if let Some(why) = stale {
        return Ok(Granted::Conflict(format!("tariff change: {why}")));
    }
    let tariff = crate::store::tariffs::get(tx, payment.tariff_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("payment without its tariff".into()))?;
    let end = tariff.period.add_to(start);
    // A newly saved method replaces the old one, as an extension's does; auto-renewal
    // stays off if the viewer turned it off while the change was being paid.
    let (renew, method, pay_system, livemode) = match method_id {
        Some(m) if payment.renew && sub.auto_renew => {
            (true, Some(m), payment.pay_system, payment.livemode)
        }
        _ => (
            sub.auto_renew,
            sub.payment_method_id,
            sub.pay_system,
            sub.livemode,
        ),
    };
    // The renewals' receipt: the new tariff's line, for its full price.
    let receipt = payment
        .receipt
        .as_ref()
        .map(|r| tariff.receipt(r.customer.clone(), tariff.price));
    // What the credit paid for ends here: a refund of it later takes nothing from
    // the new tariff's period.
    crate::store::tariff_changes::end_credited_periods(tx, sub.id, start).await?;
    crate::store::tariff_changes::spend_credits(tx, payment.id).await?;
    let switched = subscriptions::switch_tariff(
        tx,
        sub.id,
        &subscriptions::Switch {
            tariff_id: tariff.id,
            price: tariff.price,
            period: tariff.period,
            start,
            end,
            auto_renew: renew,
            payment_method_id: method,
            next_charge_at: renew.then(|| renew_at(app, end)),
            pay_system,
            livemode,
            receipt,
        },
    )
    .await?;
    payments::record_paid_period(tx, payment.id, start, end).await?;
    Ok(Granted::Sub(
        Box::new(switched),
        EventType::SubscriptionTariffChanged,
        change_fields(terms.from_tariff_id, terms.credit_minor, payment.amount),
    ))
}

/// A renewal that charged the tariff scheduled for the period end: the subscription
/// switches to it, a new period (and billing anchor) where the old one ended. A
/// renewal that succeeds after expiry starts over on it, unless another
/// subscription is live (then it is refunded, as any conflicting payment).
async fn switch_at_renewal(
    app: &App,
    tx: &Transaction<'_>,
    payment: &Payment,
    sub: Subscription,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Granted, StoreError> {
    let from = if sub.status.is_live() {
        if payment.period_start != Some(sub.current_period_end) {
            return Ok(Granted::Conflict(format!(
                "a renewal of tariff {} for a period the subscription no longer starts",
                payment.tariff_id
            )));
        }
        sub.current_period_end
    } else {
        if let Some(other) = subscriptions::lock_live_for_user(tx, sub.user_id).await? {
            return Ok(Granted::Conflict(format!(
                "renewal after expiry, but subscription {} is live",
                other.id
            )));
        }
        start.max(now)
    };
    let tariff = crate::store::tariffs::get(tx, payment.tariff_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("payment without its tariff".into()))?;
    let end = tariff.period.add_to(from);
    let switched = subscriptions::switch_tariff(
        tx,
        sub.id,
        &subscriptions::Switch {
            tariff_id: tariff.id,
            price: payment.amount,
            period: tariff.period,
            start: from,
            end,
            auto_renew: sub.auto_renew,
            payment_method_id: sub.payment_method_id,
            next_charge_at: sub.auto_renew.then(|| renew_at(app, end)),
            pay_system: sub.pay_system,
            livemode: sub.livemode,
            // The renewal's own receipt has the new tariff's line.
            receipt: payment.receipt.clone(),
        },
    )
    .await?;
    payments::record_paid_period(tx, payment.id, from, end).await?;
    Ok(Granted::Sub(
        Box::new(switched),
        EventType::SubscriptionTariffChanged,
        change_fields(sub.tariff_id, 0, payment.amount),
    ))
}

/// A renewal attempt ended without money: always `past_due` (counted, with the
/// event when access was `active`), then by whose fault:
/// - a decline: a retry per the dunning schedule, each one using up one of the
///   viewer's attempts; a hard decline is not retried and the method is not used again;
/// - a refusal about the viewer's method: a hard decline;
/// - a refusal about us: a retry on the dunning schedule that uses none of the
///   viewer's attempts (the n-th refusal of the period waits the n-th delay, the last
///   one repeating); the expirer ends access `REFUSAL_GRACE` after the period end.
async fn renewal_failed(
    app: &App,
    tx: &Transaction<'_>,
    payment: &Payment,
    sub: Subscription,
    why: Failure<'_>,
    now: DateTime<Utc>,
) -> Result<Subscription, StoreError> {
    if !sub.status.is_live() || payment.period_start != Some(sub.current_period_end) {
        return Ok(sub);
    }
    let (reason, hard, ours, label) = match why {
        Failure::Declined(r) if is_hard_decline(r) => (r, true, false, "hard_decline"),
        Failure::Declined(r) => (r, false, false, "decline"),
        Failure::Refused(Refusal::Method(r)) => (r.as_str(), true, false, "method_refused"),
        Failure::Refused(Refusal::Ours(r)) => (r.as_str(), false, true, "refused_ours"),
    };
    metrics::counter!("renewal_failures_total", "why" => label).increment(1);
    if hard {
        if let Some(method) = payment.payment_method_id.or(sub.payment_method_id) {
            payment_methods::mark_unusable(tx, method, reason).await?;
        }
    }
    let schedule = &app.config.dunning_schedule;
    let delay = |i: usize| {
        schedule
            .get(i)
            .map(|d| now + ChronoDuration::from_std(*d).unwrap_or(ChronoDuration::days(1)))
    };
    let attempts = if ours {
        sub.renewal_attempts
    } else {
        sub.renewal_attempts + 1
    };
    let next = if hard || !sub.auto_renew {
        None
    } else if ours {
        let refusals =
            payments::count_refused_renewals(tx, sub.id, sub.current_period_end, PARTY_SHOP)
                .await?;
        let i = (refusals.max(1) as usize - 1).min(schedule.len().saturating_sub(1));
        delay(i)
    } else {
        delay((attempts - 1) as usize)
    };
    let updated = subscriptions::mark_past_due(tx, sub.id, attempts, next).await?;
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

/// A create's final answer (`create::send`): settled in one statement when it is
/// one of the common successes. False when it is not, or the row moved meanwhile:
/// the caller records the answer and takes `apply`.
pub async fn answered(
    app: &App,
    payment_id: PaymentId,
    pp: &ProviderPayment,
) -> Result<bool, StoreError> {
    let snap = {
        let db = app.db.conn().await?;
        payments::snapshot(&db, payment_id).await?
    };
    Ok(match snap {
        Some(snap) => Box::pin(fast(app, &snap, pp)).await?.is_some(),
        None => false,
    })
}

/// Moves the payment of `snap` to the provider's state: one statement for the
/// common successes, else `apply` under row locks.
pub async fn settle(
    app: &App,
    snap: &payments::Snapshot,
    pp: &ProviderPayment,
) -> Result<Applied, StoreError> {
    // Boxed: both are large state machines, and a webhook's future holds this one.
    match Box::pin(fast(app, snap, pp)).await? {
        Some(applied) => Ok(applied),
        None => Box::pin(apply(app, snap.payment.id, pp)).await,
    }
}

/// The two successes that make most of the traffic, decided from an unlocked
/// snapshot and written in one statement that re-checks the decision on the latest
/// rows (payments/settle_activation.sql, settle_renewal.sql):
/// - a pending purchase paid by a user with no live subscription: a new one;
/// - a pending renewal paid for the period after its live subscription's current one.
///
/// They do what `apply` does in those cases, row for row and event for event (the
/// tests settle the same payments both ways). None when the case is any other, or
/// the statement found the rows changed: nothing was written, the caller takes
/// `apply`.
pub async fn fast(
    app: &App,
    snap: &payments::Snapshot,
    pp: &ProviderPayment,
) -> Result<Option<Applied>, StoreError> {
    let payment = &snap.payment;
    if pp.status != PaymentStatus::Succeeded
        || payment.status != PaymentStatus::Pending
        || payment.review_reason.is_some()
        || review_reason(app, payment, pp).is_some()
    {
        return Ok(None);
    }
    if let Some(ours) = payment.provider_payment_id.as_deref() {
        if !pp.id.is_empty() && pp.id != ours {
            return Ok(None);
        }
    }
    let saved = match &pp.method {
        Some(m) if m.saved && !m.id.is_empty() => Some((m.id.as_str(), m.title.as_str())),
        _ => None,
    };
    let start = pp.captured_at.unwrap_or(snap.now);
    let mut moved = payment.clone();
    moved.status = PaymentStatus::Succeeded;
    moved.captured_at = pp.captured_at.or(payment.captured_at);
    if moved.provider_payment_id.is_none() && !pp.id.is_empty() {
        moved.provider_payment_id = Some(pp.id.clone());
    }
    let done = match payment.kind {
        PaymentKind::Purchase => {
            if snap.user_has_live || payment.subscription_id.is_some() {
                return Ok(None);
            }
            let auto_renew = payment.renew && saved.is_some();
            let end = snap.tariff_period.add_to(start);
            let next = auto_renew.then(|| renew_at(app, end));
            let sub = Subscription {
                id: crate::domain::SubscriptionId::new(),
                user_id: payment.user_id,
                tariff_id: payment.tariff_id,
                pay_system: payment.pay_system,
                status: SubscriptionStatus::Active,
                price: payment.amount,
                period: snap.tariff_period,
                current_period_start: start,
                current_period_end: end,
                auto_renew,
                payment_method_id: None,
                next_charge_at: next,
                renewal_attempts: 0,
                past_due_since: None,
                livemode: payment.livemode,
                created_at: snap.now,
                ended_at: None,
                billing_anchor: start,
                scheduled_tariff_id: None,
            };
            moved.subscription_id = Some(sub.id);
            let events = success_events(&moved, &sub, EventType::SubscriptionActivated);
            let db = app.db.conn().await?;
            let written = payments::settle_activation(
                &db,
                &payments::Activation {
                    payment_id: payment.id,
                    captured_at: pp.captured_at,
                    provider_payment_id: &pp.id,
                    saved_method: saved,
                    subscription_id: sub.id,
                    start,
                    end,
                    auto_renew,
                    next_charge_at: next,
                    events: &events,
                },
            )
            .await;
            match written {
                Ok(done) => done,
                // A live subscription appeared since the snapshot: the locked path decides.
                Err(e) if e.is_unique_violation() => false,
                Err(e) => return Err(e),
            }
        }
        // A tariff change is decided under the locks only (`change_now`).
        PaymentKind::Change => return Ok(None),
        PaymentKind::Renewal => {
            let Some(sub) = &snap.subscription else {
                return Ok(None);
            };
            let same_method = match (saved, &snap.method) {
                (None, _) => true,
                (Some((id, title)), Some((our_id, our_title))) => {
                    id == our_id && title == our_title
                }
                (Some(_), None) => false,
            };
            if !sub.status.is_live()
                || payment.period_start != Some(sub.current_period_end)
                || payment.tariff_id != sub.tariff_id
                || !same_method
            {
                return Ok(None);
            }
            let end = sub
                .period
                .end_from(sub.billing_anchor, sub.current_period_end);
            let next = sub.auto_renew.then(|| renew_at(app, end));
            let renewed = Subscription {
                status: SubscriptionStatus::Active,
                current_period_start: sub.current_period_end,
                current_period_end: end,
                next_charge_at: next,
                renewal_attempts: 0,
                past_due_since: None,
                ended_at: None,
                ..sub.clone()
            };
            let events = success_events(&moved, &renewed, EventType::SubscriptionRenewed);
            let db = app.db.conn().await?;
            payments::settle_renewal(
                &db,
                &payments::RenewalPaid {
                    payment_id: payment.id,
                    period_start: sub.current_period_end,
                    end,
                    auto_renew: sub.auto_renew,
                    captured_at: pp.captured_at,
                    provider_payment_id: &pp.id,
                    next_charge_at: next,
                    events: &events,
                },
            )
            .await?
        }
    };
    if !done {
        return Ok(None);
    }
    metrics::counter!("payments_settled_total", "status" => PaymentStatus::Succeeded.as_str())
        .increment(1);
    Ok(Some(Applied::Moved(PaymentStatus::Succeeded)))
}

/// `payment.succeeded` and the subscription's event, as `apply` records them.
fn success_events(
    paid: &Payment,
    sub: &Subscription,
    sub_event: EventType,
) -> [payments::NewEvent; 2] {
    let subject = || EventSubject::payment(paid, Some(sub));
    let one = |t: EventType| {
        let id = uuid::Uuid::new_v4();
        (id, t.as_str(), events::outbox::body(id, t, &subject()))
    };
    [one(EventType::PaymentSucceeded), one(sub_event)]
}
