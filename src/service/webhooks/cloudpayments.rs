//! CloudPayments notifications: signed (Content-HMAC, checked before storing), so
//! the body is the provider's word, compared field by field with our row.

use crate::app::App;
use crate::domain::{PaySystem, PaymentKind, RefundStatus};
use crate::providers::cloudpayments::{CheckCode, Kind, Notice};
use crate::service::settle::{self, Applied};
use crate::service::sync::{self, ProcessError, Processed};
use crate::store::Connect;
use crate::store::{payments, refunds, StoreError};

/// Decides a `check`: the invoice must be one of our CloudPayments payments, paid by
/// its buyer, for its amount and currency. A payment that is already paid (or under
/// review), or a test flag that disagrees with our mode, is refused (13) so the
/// viewer is not charged twice or in the wrong mode.
pub async fn check_code(app: &App, n: &Notice) -> Result<CheckCode, StoreError> {
    let Some(our) = n.our_id() else {
        return Ok(CheckCode::UnknownInvoice);
    };
    let db = app.db.conn().await?;
    let Some(payment) = payments::get(&db, our)
        .await?
        .filter(|p| p.pay_system == PaySystem::CloudPayments)
    else {
        return Ok(CheckCode::UnknownInvoice);
    };
    if n.user_id() != Some(payment.user_id) {
        return Ok(CheckCode::WrongAccount);
    }
    if n.amount().ok() != Some(payment.amount) {
        return Ok(CheckCode::WrongAmount);
    }
    if payment.status.is_paid()
        || payment.review_reason.is_some()
        || n.test_mode() == app.config.livemode(PaySystem::CloudPayments)
    {
        return Ok(CheckCode::Rejected);
    }
    Ok(CheckCode::Accept)
}

/// `pay`/`confirm` (succeeded), `fail` (declined), `cancel` (voided): matched by
/// TransactionId, else by InvoiceId, then moved by `settle::apply`, which refuses
/// (needs_review, nothing granted) an InvoiceId, AccountId, amount, currency or
/// TestMode that disagrees with our row.
pub async fn payment(app: &App, n: &Notice) -> Result<Processed, ProcessError> {
    let system = PaySystem::CloudPayments;
    let payment = {
        let db = app.db.conn().await?;
        let by_transaction = match n.transaction_id() {
            Some(t) => payments::id_by_provider_id(&db, system, t).await?,
            None => None,
        };
        match (by_transaction, n.our_id()) {
            (Some(id), _) => payments::get(&db, id)
                .await?
                .ok_or_else(|| ProcessError::Transient(format!("payment {id} vanished")))?,
            (None, Some(our)) => match payments::get(&db, our).await? {
                // A second paid transaction for an invoice already paid is alerted and
                // refunded by `settle::apply` (duplicate_charge).
                Some(p) if p.pay_system == system => p,
                Some(_) => {
                    return Ok(Processed::Ignored(
                        "InvoiceId names a payment of another provider".into(),
                    ))
                }
                // Carries our id but is not visible yet: retry, never ignore.
                None => {
                    return Err(ProcessError::Transient(format!(
                        "payment {our} not found yet"
                    )))
                }
            },
            (None, None) => {
                metrics::counter!("webhooks_unknown_payment_total", "provider" => system.as_str())
                    .increment(1);
                return Ok(Processed::Ignored("unknown payment".into()));
            }
        }
    };
    let payment_id = payment.id;
    // A viewer on the checkout page (a purchase or a tariff change) may try another card.
    if n.kind == Kind::Fail && payment.kind != PaymentKind::Renewal {
        return declined_attempt(app, n, &payment).await;
    }
    let pp = match n.payment(payment.amount.currency()) {
        Ok(pp) => pp,
        Err(e) => {
            // Signed, names our payment, but unreadable (e.g. a currency we do not sell in).
            let why = format!("unreadable CloudPayments {}: {e}", n.kind.as_str());
            settle::needs_review(app, payment_id, &why).await?;
            return Ok(Processed::Ignored(format!("needs review: {why}")));
        }
    };
    Ok(match settle::apply(app, payment_id, &pp).await? {
        Applied::NeedsReview(why) => Processed::Ignored(format!("needs review: {why}")),
        Applied::Moved(s) => Processed::Done(format!("payment {payment_id} → {s}")),
        Applied::Unchanged => Processed::Done(format!(
            "payment {payment_id} unchanged by {} ({})",
            n.kind.as_str(),
            pp.status
        )),
    })
}

/// A `fail` of a purchase: the viewer is still on the order page and may pay with
/// another card, so the attempt and its reason are recorded and the purchase stays
/// as it is (pending until it succeeds or the order is voided after a day). A
/// renewal's `fail` is final (no viewer, no page) and goes through `settle::apply`.
async fn declined_attempt(
    app: &App,
    n: &Notice,
    payment: &payments::Payment,
) -> Result<Processed, ProcessError> {
    let transaction = n
        .transaction_id()
        .ok_or_else(|| ProcessError::Permanent("fail without TransactionId".into()))?;
    let declined = n
        .payment(payment.amount.currency())
        .ok()
        .and_then(|pp| pp.cancellation);
    let (reason, provider_reason) = match &declined {
        Some(c) => (c.reason.as_str(), Some(c.party.as_str())),
        None => ("general_decline", None),
    };
    let db = app.db.conn().await?;
    let new = payments::record_decline(
        &db,
        payment.id,
        PaySystem::CloudPayments,
        transaction,
        reason,
        provider_reason,
    )
    .await?;
    Ok(Processed::Done(format!(
        "payment {}: declined attempt {transaction} ({reason}){}; the payment stays {}",
        payment.id,
        if new { "" } else { " already recorded" },
        payment.status
    )))
}

/// `refund`: its TransactionId is the refund transaction. One we started is matched
/// by provider_refund_id (or, if our answer was lost, as the pending refund of the
/// same payment and amount); any other is recorded as made at the provider. Both
/// are applied by `refunds::record_result`.
pub async fn refund(app: &App, n: &Notice) -> Result<Processed, ProcessError> {
    let system = PaySystem::CloudPayments;
    let refund_id = n
        .transaction_id()
        .ok_or_else(|| ProcessError::Permanent("refund without TransactionId".into()))?;
    let ours = {
        let db = app.db.conn().await?;
        match refunds::id_by_provider_id(&db, system, refund_id).await? {
            Some(id) => id,
            None => {
                let by_transaction = match n.payment_transaction_id() {
                    Some(t) => payments::id_by_provider_id(&db, system, t).await?,
                    None => None,
                };
                let payment_id = by_transaction.or(n.our_id());
                let payment = match payment_id {
                    Some(id) => payments::get(&db, id).await?,
                    None => None,
                };
                let payment = match (payment, payment_id) {
                    (Some(p), _) if p.pay_system != system => {
                        return Ok(Processed::Ignored(
                            "InvoiceId names a payment of another provider".into(),
                        ))
                    }
                    (Some(p), _) if p.status.is_paid() => p,
                    // Ours, but its pay has not been applied yet (lost, late or out of
                    // order): keep the refund and retry; CloudPayments will not re-send it.
                    (Some(p), _) => {
                        return Err(ProcessError::Transient(format!(
                            "refund of payment {} before its success ({})",
                            p.id, p.status
                        )))
                    }
                    (None, Some(id)) => {
                        return Err(ProcessError::Transient(format!(
                            "refund names payment {id}, not found yet"
                        )))
                    }
                    (None, None) => {
                        return Ok(Processed::Ignored("refund of an unknown payment".into()))
                    }
                };
                let amount = n
                    .amount_in(payment.amount.currency())
                    .map_err(|e| ProcessError::Permanent(e.to_string()))?;
                sync::adopt_refund(&db, system, payment.id, amount, refund_id).await?
            }
        }
    };
    crate::service::refunds::record_result(app, ours, refund_id, RefundStatus::Succeeded)
        .await
        .map_err(|e| ProcessError::Transient(e.to_string()))?;
    Ok(Processed::Done(format!("refund {ours} → succeeded")))
}
