//! Refunds: recorded with their provider idempotence key before the provider call,
//! then submitted; the provider's answer (or its notification) settles them.
//!
//! Only a definite refusal (a 4xx with a parsed error, or "not found") ends a refund
//! `canceled` (alerted `refund_refused`). Any other failure (network, 5xx, 202, an
//! unreadable answer) leaves the outcome unknown: the refund stays pending, still
//! counted against what is left to refund, and `jobs::refund_follow_up` follows it up.
//!
//! Only a full refund changes access, decided by the period the payment paid (recorded
//! on the payment when it succeeded): the current one ends now when nothing is paid
//! after it; a prepaid next one, or the current one while later ones are paid, gives
//! one period back (the period end moves back); a past one changes nothing. A refund of a payment we have not
//! yet seen succeed first applies the success, re-read from the provider.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use uuid::Uuid;

use crate::app::App;
use crate::domain::receipt::Receipt;
use crate::domain::UserId;
use crate::domain::{Money, PaymentStatus, RefundStatus};
use crate::domain::{PaymentId, RefundId};
use crate::events::{self, EventSubject, EventType};
use crate::providers::{CreateRefund, ProviderError, ProviderRefund};
use crate::service::alerts;
use crate::service::idempotency::{self, Claim, IdempotencyKey, Keyed, Render, Scope};
use crate::service::{settle, BillingError};
use crate::store::refunds::{self, Initiator, NewRefund, Refund};
use crate::store::{self, Connect};
use crate::store::{payments, subscriptions, Payment, StoreError, Subscription};

/// The receipt of a refund of `amount` ("return of income"): the payment's own line,
/// customer and taxes, for the refunded sum. None when the payment had none.
fn refund_receipt(payment: &Payment, amount: Money) -> Option<Receipt> {
    payment.receipt.as_ref().map(|r| r.for_sum(amount))
}

/// A full refund the service starts by itself (e.g. a payment that cannot apply).
pub async fn insert_system_refund(
    tx: &Transaction<'_>,
    payment: &Payment,
    reason: &str,
) -> Result<RefundId, StoreError> {
    let id = RefundId::new();
    refunds::insert(
        tx,
        &NewRefund {
            id,
            payment_id: payment.id,
            pay_system: payment.pay_system,
            amount: payment.amount,
            reason,
            initiated_by: Initiator::System,
            provider_idempotence_key: &Uuid::new_v4().to_string(),
            receipt: refund_receipt(payment, payment.amount).as_ref(),
        },
    )
    .await?;
    Ok(id)
}

/// Sends a recorded refund to the provider (same key on every retry) and records the
/// answer. A definite refusal cancels it (and is returned); an unknown outcome leaves
/// it pending.
pub async fn submit(app: &App, refund_id: RefundId) -> Result<RefundStatus, BillingError> {
    let (payment, pending) = {
        let db = app.db.conn().await?;
        let pending = refunds::get_pending(&db, refund_id)
            .await?
            .ok_or(BillingError::RefundNotFound(refund_id))?;
        let payment = payments::get(&db, pending.payment_id)
            .await?
            .ok_or(BillingError::RefundNotFound(refund_id))?;
        (payment, pending)
    };
    let answer = match send(
        app,
        &payment,
        pending.amount_minor,
        pending.provider_idempotence_key,
        pending.reason,
    )
    .await
    {
        Ok(answer) => answer,
        Err(e) if e.is_definite() => {
            refuse(app, refund_id, payment.id, &e.to_string()).await?;
            return Err(BillingError::RefundRefused(e.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    record_result(app, refund_id, &answer.id, answer.status).await?;
    Ok(answer.status)
}

async fn send(
    app: &App,
    payment: &Payment,
    amount: i64,
    idempotence_key: String,
    description: String,
) -> Result<ProviderRefund, ProviderError> {
    let provider =
        app.providers
            .get(payment.pay_system)
            .ok_or_else(|| ProviderError::Rejected {
                code: "disabled".into(),
                description: "provider not configured".into(),
            })?;
    let provider_payment_id =
        payment
            .provider_payment_id
            .clone()
            .ok_or_else(|| ProviderError::Rejected {
                code: "no_provider_id".into(),
                description: "payment unknown at the provider".into(),
            })?;
    let amount = Money::new(amount, payment.amount.currency());
    provider
        .create_refund(&CreateRefund {
            provider_payment_id,
            amount,
            description,
            idempotence_key,
            // What the row stored: the same on every re-send.
            receipt: refund_receipt(payment, amount)
                .filter(|_| app.config.receipts_on(payment.pay_system)),
            whole_payment: amount == payment.amount,
        })
        .await
}

/// The provider refused the refund for good: canceled (what is left to refund grows
/// back), alerted for an operator, never sent again.
async fn refuse(
    app: &App,
    refund_id: RefundId,
    payment_id: PaymentId,
    why: &str,
) -> Result<(), BillingError> {
    if refunds::cancel_pending(&app.db.conn().await?, refund_id, why).await? {
        alerts::raise(
            app,
            "refund_refused",
            &format!("refund {refund_id} refused by the provider: {why}"),
            payment_id,
        );
    }
    Ok(())
}

/// Records the provider's refund state; a succeeded refund reduces the payment
/// (partially_refunded or refunded) and a full refund may change access.
pub async fn record_result(
    app: &App,
    refund_id: RefundId,
    provider_id: &str,
    status: RefundStatus,
) -> Result<(), BillingError> {
    if status == RefundStatus::Succeeded {
        apply_success_first(app, refund_id).await?;
    }
    let mut db = app.db.conn().await?;
    let tx = store::begin(&mut db).await?;
    let locked = refunds::lock(&tx, refund_id)
        .await?
        .ok_or(BillingError::RefundNotFound(refund_id))?;
    let payment_id = locked.payment_id;
    let was_pending = locked.status == RefundStatus::Pending;
    refunds::record_provider_state(&tx, refund_id, provider_id, status).await?;
    if was_pending && status == RefundStatus::Succeeded {
        apply_succeeded_refund(&tx, payment_id, locked.amount_minor).await?;
    }
    store::commit(tx).await?;
    if was_pending && status == RefundStatus::Canceled {
        alerts::raise(
            app,
            "refund_refused",
            &format!("refund {refund_id} canceled by the provider"),
            payment_id,
        );
    }
    Ok(())
}

/// Money went back for a payment we have not seen succeed (its success notification
/// still waits for a retry): apply the provider's success first, so the viewer gets
/// what the rest of the money paid for. No lock is held across the provider read.
async fn apply_success_first(app: &App, refund_id: RefundId) -> Result<(), BillingError> {
    let payment = {
        let db = app.db.conn().await?;
        let payment_id = refunds::payment_of(&db, refund_id)
            .await?
            .ok_or(BillingError::RefundNotFound(refund_id))?;
        payments::get(&db, payment_id)
            .await?
            .ok_or(BillingError::RefundNotFound(refund_id))?
    };
    if payment.status.is_paid() {
        return Ok(());
    }
    let provider = app
        .providers
        .get(payment.pay_system)
        .cloned()
        .ok_or(BillingError::PaymentNotYetPaid(payment.id))?;
    let read = async {
        match &payment.provider_payment_id {
            Some(pid) => provider.get_payment(pid).await.map(Some),
            None => {
                let (from, to) = crate::service::create::lookup_window(payment.created_at);
                provider.find_payment(payment.id, from, to).await
            }
        }
    };
    let found = tokio::time::timeout(crate::service::webhooks::REREAD_BUDGET, read)
        .await
        .map_err(|_| ProviderError::Unavailable("payment re-read timed out".into()))??;
    if let Some(pp) = found {
        // Boxed: `apply` may submit an automatic refund, which records its result here.
        Box::pin(settle::apply(app, payment.id, &pp)).await?;
    }
    let db = app.db.conn().await?;
    match payments::get(&db, payment.id).await? {
        Some(p) if p.status.is_paid() => Ok(()),
        _ => Err(BillingError::PaymentNotYetPaid(payment.id)),
    }
}

/// Money went back to the viewer: move the payment and, for a full refund, access.
async fn apply_succeeded_refund(
    tx: &Transaction<'_>,
    payment_id: PaymentId,
    amount: i64,
) -> Result<(), BillingError> {
    let payment = payments::lock(tx, payment_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("refund without payment".into()))?;
    let sub = match payment.subscription_id {
        Some(id) => subscriptions::lock(tx, id).await?,
        None => None,
    };
    let refunded = (payment.refunded_minor + amount).min(payment.amount.minor());
    let status = if refunded >= payment.amount.minor() {
        PaymentStatus::Refunded
    } else {
        PaymentStatus::PartiallyRefunded
    };
    // Forward only, in SQL too: a payment is refunded only after it succeeded.
    let moved = payments::record_refunded(tx, payment.id, refunded, status)
        .await?
        .ok_or(BillingError::PaymentNotYetPaid(payment.id))?;
    let mut sub_after = sub.clone();
    if status == PaymentStatus::Refunded
        && payment.status != PaymentStatus::Refunded
        && payment.kind == crate::domain::PaymentKind::Change
    {
        // The credit it used is the viewer's again: refundable from its payments.
        crate::store::tariff_changes::release_credits(tx, payment.id).await?;
    }
    if status == PaymentStatus::Refunded && payment.status != PaymentStatus::Refunded {
        if let Some(sub) = sub.filter(|s| s.status.is_live()) {
            sub_after = Some(full_refund_access(tx, &moved, sub).await?);
        }
    }
    events::record(
        tx,
        EventType::PaymentRefunded,
        EventSubject::payment(&moved, sub_after.as_ref()),
    )
    .await?;
    Ok(())
}

/// Which period a fully refunded payment paid, seen from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaidPeriod {
    /// Over: the refund changes no access.
    Past,
    /// In use now: access ends now, unless periods paid after it carry on.
    Current,
    /// Paid ahead (a renewal charged RENEW_BEFORE early): the period end moves back.
    Next,
}

/// Decides from the period the payment paid (`start`..`end`).
pub fn paid_period(start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> PaidPeriod {
    if end <= now {
        PaidPeriod::Past
    } else if start > now {
        PaidPeriod::Next
    } else {
        PaidPeriod::Current
    }
}

/// Rule 12, "only a full refund changes access", decided by the period the payment
/// paid: a past one → nothing; the current one with no period paid after it →
/// canceled now, auto-renew off; otherwise (a prepaid next period, or the current one
/// while later ones are paid) one period is given back: the end moves back one
/// period, auto-renew goes off (or the renewer would charge that period again at
/// once), and `subscription.shortened` says so.
async fn full_refund_access(
    tx: &Transaction<'_>,
    payment: &Payment,
    sub: Subscription,
) -> Result<Subscription, StoreError> {
    let (end, now) = payments::paid_period_end(tx, payment.id).await?;
    let end = end.or(payment
        .period_start
        .map(|s| sub.period.end_from(sub.billing_anchor, s)));
    let which = match (payment.period_start, end) {
        (Some(start), Some(end)) => paid_period(start, end, now),
        // Paid before periods were recorded: current unless a later payment of this
        // subscription pays the period in use.
        _ => {
            if payments::later_payment_pays_now(tx, sub.id, payment.id, payment.created_at).await? {
                PaidPeriod::Past
            } else {
                PaidPeriod::Current
            }
        }
    };
    // Periods paid after the refunded one keep the subscription going.
    let paid_after = end.is_some_and(|e| e < sub.current_period_end);
    match which {
        PaidPeriod::Past => Ok(sub),
        PaidPeriod::Current if !paid_after => {
            let updated = subscriptions::cancel_refunded(tx, sub.id).await?;
            events::record(
                tx,
                EventType::SubscriptionCanceled,
                EventSubject::subscription(&updated),
            )
            .await?;
            Ok(updated)
        }
        PaidPeriod::Current | PaidPeriod::Next => {
            // The refunded period is normally the last one: its start is the new end.
            let new_end = match (which, payment.period_start, end) {
                (PaidPeriod::Next, Some(start), _) if end == Some(sub.current_period_end) => start,
                // A period of the tariff before a switch (a scheduled change renewed
                // ahead): the end moves back by that period's own length, not by one
                // of the new tariff's.
                (_, Some(start), Some(end)) if payment.tariff_id != sub.tariff_id => {
                    sub.current_period_end - (end - start)
                }
                _ => sub
                    .period
                    .start_before(sub.billing_anchor, sub.current_period_end),
            };
            // The period in use is the one that ends there; the payment for it says where it began.
            let new_start = if sub.current_period_start < new_end {
                sub.current_period_start
            } else {
                payments::period_start_ending_at(tx, sub.id, payment.id, new_end)
                    .await?
                    .unwrap_or_else(|| sub.period.start_before(sub.billing_anchor, new_end))
            };
            let updated = subscriptions::move_period_back(tx, sub.id, new_start, new_end).await?;
            events::record(
                tx,
                EventType::SubscriptionShortened,
                EventSubject::subscription(&updated),
            )
            .await?;
            Ok(updated)
        }
    }
}

#[derive(Debug, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    #[serde(default)]
    pub amount: Option<Money>,
    pub reason: String,
}

/// An operator's refund: full when no amount is given, never more than what is left
/// (the amount minus every refund not canceled, pending ones included). Recorded with
/// its provider key before the provider is called. Under an Idempotency-Key the final
/// outcome (the refund, or the provider's refusal) is rendered by `render` and stored.
pub async fn admin_refund(
    app: &App,
    admin: UserId,
    payment_id: PaymentId,
    req: RefundRequest,
    key: Option<IdempotencyKey>,
    render: Render<'_, Refund>,
) -> Result<Keyed<Refund>, BillingError> {
    let reason = req.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(BillingError::BadRefundReason);
    }
    let hash = idempotency::request_hash(&[
        payment_id.as_uuid().as_bytes(),
        &serde_json::to_vec(&req).expect("serializable"),
    ]);
    let scope = key.as_ref().map(|key| Scope {
        user_id: admin,
        scope: "refund",
        key,
    });

    let mut db = app.db.conn().await?;
    let tx = store::begin(&mut db).await?;
    let mut resume = None;
    if let Some(s) = &scope {
        match idempotency::claim(&tx, s, &hash).await? {
            Claim::New => {}
            Claim::Replay(answer) => return Ok(Keyed::Replayed(answer)),
            Claim::Resume(id) => resume = Some(RefundId::from_uuid(id)),
        }
    }
    let refund_id = match resume {
        Some(id) => id,
        None => {
            let payment = payments::lock(&tx, payment_id)
                .await?
                .ok_or(BillingError::PaymentNotFound)?;
            if !matches!(
                payment.status,
                PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded
            ) {
                return Err(BillingError::PaymentNotRefundable(payment.status));
            }
            // What a tariff change used as credit bought the new tariff: not refundable.
            let remaining = payment.amount.minor()
                - refunds::committed_minor(&tx, payment.id).await?
                - crate::store::tariff_changes::credited_minor(&tx, payment.id).await?;
            let amount = match req.amount {
                Some(a) if a.currency() != payment.amount.currency() => {
                    return Err(BillingError::CurrencyMismatch)
                }
                Some(a) => a.minor(),
                None => remaining,
            };
            if amount <= 0 || amount > remaining {
                return Err(BillingError::RefundExceedsRemaining(remaining.max(0)));
            }
            let id = RefundId::new();
            refunds::insert(
                &tx,
                &NewRefund {
                    id,
                    payment_id: payment.id,
                    pay_system: payment.pay_system,
                    amount: Money::new(amount, payment.amount.currency()),
                    reason: &reason,
                    initiated_by: Initiator::Admin,
                    provider_idempotence_key: &Uuid::new_v4().to_string(),
                    receipt: refund_receipt(
                        &payment,
                        Money::new(amount, payment.amount.currency()),
                    )
                    .as_ref(),
                },
            )
            .await?;
            if let Some(s) = &scope {
                idempotency::attach(&tx, s, id.as_uuid()).await?;
            }
            id
        }
    };
    store::commit(tx).await?;
    // No connection is kept while the provider is called.
    drop(db);

    let outcome = match submit(app, refund_id).await {
        Ok(_) => refunds::get(&app.db.conn().await?, refund_id)
            .await?
            .ok_or_else(|| BillingError::internal("refund vanished")),
        // `submit` has already canceled it and alerted.
        Err(e @ BillingError::RefundRefused(_)) => Err(e),
        Err(e @ (BillingError::Provider(_) | BillingError::PaymentNotYetPaid(_))) => {
            // Outcome unknown: the refund stays pending (still counted against what is
            // left) and `jobs::refund_follow_up` re-sends it with the same key.
            tracing::warn!(refund_id = %refund_id, error = %e, "refund outcome unknown; it will be followed up");
            if let Some(s) = &scope {
                idempotency::release(&app.db.conn().await?, s).await?;
            }
            return Err(BillingError::ProviderUnavailable(
                "the provider's answer is unknown; the refund is queued and will be followed up",
            ));
        }
        Err(e) => return Err(e),
    };
    if let Some(s) = &scope {
        idempotency::complete(&app.db.conn().await?, s, &render(&outcome)).await?;
    }
    outcome.map(Keyed::Fresh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, hour, 0, 0).unwrap()
    }

    #[test]
    fn the_period_a_payment_paid_is_past_current_or_next() {
        let now = at(10, 12);
        assert_eq!(paid_period(at(1, 0), at(10, 12), now), PaidPeriod::Past);
        assert_eq!(paid_period(at(1, 0), at(10, 13), now), PaidPeriod::Current);
        assert_eq!(paid_period(at(10, 12), at(20, 0), now), PaidPeriod::Current);
        assert_eq!(paid_period(at(10, 13), at(20, 0), now), PaidPeriod::Next);
    }
}
