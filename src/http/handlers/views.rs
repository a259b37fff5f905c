//! Response bodies. Kept apart from the store rows so the wire format is explicit.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::PaymentKind;
use crate::domain::RefundId;
use crate::domain::{Money, PaySystem, PaymentStatus, Period, SubscriptionStatus};
use crate::domain::{PaymentId, SubscriptionId, TariffId};
use crate::store::{Payment, Subscription, Tariff};

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Serialize, ToSchema)]
pub struct TariffRef {
    pub id: TariffId,
    pub alias: String,
    pub name: String,
}

/// A viewer's subscription.
#[derive(Serialize, ToSchema)]
#[schema(as = Subscription)]
pub struct SubscriptionView {
    pub id: SubscriptionId,
    pub status: SubscriptionStatus,
    pub tariff: TariffRef,
    /// The price the subscription was bought at.
    pub price: Money,
    pub period: Period,
    #[schema(format = DateTime)]
    pub current_period_start: String,
    /// Access lasts until this time.
    #[schema(format = DateTime)]
    pub current_period_end: String,
    pub auto_renew: bool,
    /// Next renewal charge; null unless auto-renewing a live subscription.
    #[schema(format = DateTime, required = true)]
    pub next_charge_at: Option<String>,
    /// Title of the saved payment method, `"Bank card *4444"`.
    #[schema(required = true, example = "Bank card *4444")]
    pub payment_method: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, required = true)]
    pub ended_at: Option<String>,
}

impl SubscriptionView {
    pub fn new(sub: &Subscription, tariff: &Tariff, method_title: Option<String>) -> Self {
        let renewing = sub.auto_renew && sub.status.is_live();
        SubscriptionView {
            id: sub.id,
            status: sub.status,
            tariff: TariffRef {
                id: tariff.id,
                alias: tariff.alias.clone(),
                name: tariff.name.clone(),
            },
            price: sub.price,
            period: sub.period,
            current_period_start: rfc3339(sub.current_period_start),
            current_period_end: rfc3339(sub.current_period_end),
            auto_renew: sub.auto_renew,
            next_charge_at: sub.next_charge_at.filter(|_| renewing).map(rfc3339),
            payment_method: method_title,
            created_at: rfc3339(sub.created_at),
            ended_at: sub.ended_at.map(rfc3339),
        }
    }
}

/// A payment, as its owner and operators see it.
#[derive(Serialize, ToSchema)]
#[schema(as = Payment)]
pub struct PaymentView {
    pub id: PaymentId,
    pub status: PaymentStatus,
    pub amount: Money,
    /// Sum refunded so far (`"0.00"` when none).
    pub refunded_amount: Money,
    pub pay_system: PaySystem,
    pub kind: PaymentKind,
    pub tariff_id: TariffId,
    #[schema(required = true)]
    pub subscription_id: Option<SubscriptionId>,
    /// Present only while the payment is pending or waiting_for_capture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmation_url: Option<String>,
    #[schema(required = true, example = "insufficient_funds")]
    pub cancellation_reason: Option<String>,
    /// false in sandbox and test modes.
    pub livemode: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, required = true)]
    pub captured_at: Option<String>,
}

impl From<&Payment> for PaymentView {
    fn from(p: &Payment) -> Self {
        PaymentView {
            id: p.id,
            status: p.status,
            amount: p.amount,
            refunded_amount: Money::new(p.refunded_minor, p.amount.currency()),
            pay_system: p.pay_system,
            kind: p.kind,
            tariff_id: p.tariff_id,
            subscription_id: p.subscription_id,
            confirmation_url: p.confirmation_url.clone().filter(|_| p.status.is_open()),
            cancellation_reason: p.cancellation_reason.clone(),
            livemode: p.livemode,
            created_at: rfc3339(p.created_at),
            captured_at: p.captured_at.map(rfc3339),
        }
    }
}

/// A refund, as operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    pub id: RefundId,
    pub payment_id: PaymentId,
    pub amount: Money,
    pub status: crate::domain::RefundStatus,
    pub reason: String,
    pub initiated_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&crate::store::refunds::Refund> for RefundView {
    fn from(r: &crate::store::refunds::Refund) -> Self {
        RefundView {
            id: r.id,
            payment_id: r.payment_id,
            amount: r.amount,
            status: r.status,
            reason: r.reason.clone(),
            initiated_by: r.initiated_by.clone(),
            created_at: rfc3339(r.created_at),
        }
    }
}
