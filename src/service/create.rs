//! Sending (or re-sending) a payment's create to its provider, shared by the
//! renewer and the reconciler. The request is rebuilt from the committed row, so a
//! retry sends the same body with the same key and the provider answers the
//! original payment instead of charging again.
//!
//! Only a definite answer ends an attempt (see `ProviderError`): an unknown outcome
//! leaves the row pending for the same key. Past the provider's key window (23 h of
//! YooKassa's 24) a create is never re-sent: it is looked up by our id instead.

use chrono::Duration as ChronoDuration;

use crate::app::App;
use crate::domain::PaymentStatus;
use crate::providers::{CreatePayment, ProviderError, ProviderPayment};
use crate::service::alerts;
use crate::service::settle::{self, Refusal};
use crate::service::BillingError;
use crate::store::Connect;
use crate::store::{payments, GenericClient, Payment, PaymentKind};

/// YooKassa keeps idempotence keys 24 h: a create older than this is looked up, not re-sent.
pub const RESEND_WINDOW_HOURS: i64 = 23;
/// The look-up searches the provider's payments created from a little before our row
/// (clock skew) to the end of the key window (the last moment a re-send could create it).
const LOOKUP_BEFORE_MINUTES: i64 = 5;
const LOOKUP_AFTER_HOURS: i64 = 24;

/// Where a payment we created at `created_at` can stand in the provider's list:
/// from a little before (clock skew) to the end of the key window.
pub fn lookup_window(
    created_at: chrono::DateTime<chrono::Utc>,
) -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
    (
        created_at - ChronoDuration::minutes(LOOKUP_BEFORE_MINUTES),
        created_at + ChronoDuration::hours(LOOKUP_AFTER_HOURS),
    )
}

/// What the provider said to a create.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    /// It answered; the payment now has a provider id and is in this status.
    Answered(PaymentStatus),
    /// Outcome unknown (network, timeout, 5xx, 429, 202, an unreadable answer): retry
    /// later with the same key.
    Unknown(String),
    /// A definite refusal (a parsed 4xx), or no payment found after the key window:
    /// nothing was created; the payment is failed (a renewal's subscription past_due).
    Refused(String),
}

/// The create request for a committed payment row: identical on every retry.
pub async fn request_for(
    app: &App,
    db: &impl GenericClient,
    payment: &Payment,
) -> Result<CreatePayment, BillingError> {
    let saved_method_id = match payment.kind {
        PaymentKind::Purchase | PaymentKind::Change => None,
        PaymentKind::Renewal => {
            let method_id = payment.payment_method_id.ok_or_else(|| {
                BillingError::internal(format!("renewal {} has no payment method", payment.id))
            })?;
            let method = payments::get_method(db, method_id).await?.ok_or_else(|| {
                BillingError::internal(format!("payment method {method_id} vanished"))
            })?;
            // A saved method is only meaningful to the provider that saved it.
            if method.pay_system != payment.pay_system {
                return Err(BillingError::internal(format!(
                    "renewal {} is for {} but its method belongs to {}",
                    payment.id, payment.pay_system, method.pay_system
                )));
            }
            Some(method.provider_method_id)
        }
    };
    Ok(request(app, payment, saved_method_id))
}

/// The create request of a payment row whose saved method (a renewal's) is known.
pub fn request(app: &App, payment: &Payment, saved_method_id: Option<String>) -> CreatePayment {
    let return_url = match payment.kind {
        PaymentKind::Purchase | PaymentKind::Change => payment
            .return_url
            .clone()
            .or_else(|| app.config.yookassa.return_url.clone()),
        PaymentKind::Renewal => None,
    };
    CreatePayment {
        our_id: payment.id,
        user_id: payment.user_id,
        amount: payment.amount,
        description: payment.description.clone(),
        idempotence_key: payment.provider_idempotence_key.clone(),
        return_url,
        save_method: payment.renew,
        saved_method_id,
        // Stored with the row before the first send; sent while receipts are on.
        receipt: payment
            .receipt
            .clone()
            .filter(|_| app.config.receipts_on(payment.pay_system)),
    }
}

/// Sends the create for `payment` (no lock is held across the call) and records the
/// answer: the provider id, and through `settle` any non-pending state. A row past
/// the key window is looked up instead of re-sent.
pub async fn send(app: &App, payment: &Payment) -> Result<Sent, BillingError> {
    let start = {
        let db = app.db.conn().await?;
        payments::start_send(&db, payment.id, RESEND_WINDOW_HOURS as i32).await?
    };
    send_started(app, payment, start, None).await
}

/// `send` for a row whose send is already counted (`start`), e.g. by the renewer's
/// claim, which also read the saved method (`saved_method`: its provider id).
pub async fn send_started(
    app: &App,
    payment: &Payment,
    start: payments::SendStart,
    saved_method: Option<String>,
) -> Result<Sent, BillingError> {
    let provider = app
        .providers
        .get(payment.pay_system)
        .cloned()
        .ok_or(BillingError::PaySystemNotEnabled(payment.pay_system))?;
    if start.past_window {
        return look_up(app, payment).await;
    }
    let req = match saved_method {
        Some(id) if payment.kind == PaymentKind::Renewal => request(app, payment, Some(id)),
        _ => {
            let db = app.db.conn().await?;
            request_for(app, &db, payment).await?
        }
    };
    let resent = start.resent;
    match provider.create_payment(&req).await {
        Ok(pp) => {
            // A final answer is recorded with the state it brings, in one statement
            // where it can be (`settle::answered`); a pending one only names the
            // provider's payment.
            if pp.status == PaymentStatus::Pending
                || !Box::pin(settle::answered(app, payment.id, &pp)).await?
            {
                let db = app.db.conn().await?;
                payments::record_create_answer(&db, payment.id, &answer_of(&pp)).await?;
                drop(db);
                if pp.status != PaymentStatus::Pending {
                    settle::apply(app, payment.id, &pp).await?;
                }
            }
            Ok(Sent::Answered(pp.status))
        }
        Err(e) if !e.is_definite() => {
            tracing::warn!(payment_id = %payment.id, error = %e, "create outcome unknown; will re-send with the same key");
            Ok(Sent::Unknown(e.to_string()))
        }
        Err(e) => {
            if resent {
                // This send was refused, but an earlier send of the same key, whose
                // answer was never read, may have charged (a 401 is answered before
                // the key is looked at): only a look-up that finds nothing proves it.
                match find(app, payment).await? {
                    Found::Adopted(sent) => return Ok(sent),
                    Found::Unanswered(why) => {
                        tracing::warn!(payment_id = %payment.id, refusal = %e, error = %why, "a re-sent create was refused and the look-up did not answer; will retry");
                        return Ok(Sent::Unknown(why));
                    }
                    Found::Missing => {}
                }
            }
            let refusal = if e.refuses_method() {
                Refusal::Method(code_of(&e))
            } else {
                Refusal::Ours(code_of(&e))
            };
            let alert = match (payment.kind, &refusal) {
                (PaymentKind::Renewal, Refusal::Method(_)) => None,
                (PaymentKind::Renewal, Refusal::Ours(_)) => Some("renewal_refused"),
                (PaymentKind::Purchase | PaymentKind::Change, _) => Some("create_refused"),
            };
            if let Some(kind) = alert {
                alerts::raise(
                    app,
                    kind,
                    &format!("provider refused the create: {e}"),
                    payment.id,
                );
            }
            fail(app, payment, &refusal).await?;
            Ok(Sent::Refused(e.to_string()))
        }
    }
}

fn code_of(e: &ProviderError) -> String {
    match e {
        ProviderError::Rejected { code, .. } => code.clone(),
        ProviderError::NotFound => "not_found".into(),
        other => other.to_string(),
    }
}

/// Nothing was created at the provider: a purchase (or a tariff change) is failed; a renewal is failed
/// and its subscription moves on (past_due, dunning or hard decline) in one transaction.
async fn fail(app: &App, payment: &Payment, refusal: &Refusal) -> Result<(), BillingError> {
    match payment.kind {
        PaymentKind::Renewal => {
            settle::renewal_refused(app, payment.id, refusal).await?;
        }
        PaymentKind::Purchase | PaymentKind::Change => {
            let db = app.db.conn().await?;
            payments::fail_refused_create(&db, payment.id, None, refusal.code()).await?;
        }
    }
    Ok(())
}

/// Past the key window: find the provider's payment by our id and adopt it, or, once
/// the whole window was searched, conclude there is none. An unanswered or
/// unfinished search is `Unknown` (asked again later), never "not found".
async fn look_up(app: &App, payment: &Payment) -> Result<Sent, BillingError> {
    match find(app, payment).await? {
        Found::Adopted(sent) => Ok(sent),
        Found::Missing => {
            alerts::raise(
                app,
                "create_lost",
                "no provider payment for a create older than the key window; marked failed",
                payment.id,
            );
            fail(app, payment, &Refusal::Ours("create_lost".into())).await?;
            Ok(Sent::Refused("no payment at the provider".into()))
        }
        Found::Unanswered(why) => {
            tracing::warn!(payment_id = %payment.id, error = %why, "look-up of an old create not completed; will retry");
            Ok(Sent::Unknown(why))
        }
    }
}

/// What a look-up of our payment at the provider found.
enum Found {
    /// The provider's payment, applied to our row.
    Adopted(Sent),
    /// The whole window was searched: the provider has no payment of this row.
    Missing,
    /// Unanswered or unfinished: nothing is known.
    Unanswered(String),
}

/// Looks the provider's payment of this row up by our id (rule 9) and applies it.
async fn find(app: &App, payment: &Payment) -> Result<Found, BillingError> {
    let provider = app
        .providers
        .get(payment.pay_system)
        .cloned()
        .ok_or(BillingError::PaySystemNotEnabled(payment.pay_system))?;
    let (from, to) = lookup_window(payment.created_at);
    match provider.find_payment(payment.id, from, to).await {
        Ok(Some(pp)) => {
            settle::apply(app, payment.id, &pp).await?;
            Ok(Found::Adopted(Sent::Answered(pp.status)))
        }
        Ok(None) => Ok(Found::Missing),
        Err(e) => Ok(Found::Unanswered(e.to_string())),
    }
}

/// What the provider's answer to a create tells our row.
pub fn answer_of(pp: &ProviderPayment) -> payments::CreateAnswer<'_> {
    payments::CreateAnswer {
        provider_payment_id: &pp.id,
        confirmation_url: pp.confirmation_url.as_deref(),
        checkout_id: pp.checkout_id.as_deref(),
    }
}
