//! Response bodies. Kept apart from the store rows so the wire format is explicit.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::money::format_minor;
use crate::domain::{Money, Period};
use crate::store::{Payment, Subscription, Tariff};

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Serialize)]
pub struct TariffRef {
    pub id: Uuid,
    pub alias: String,
    pub name: String,
}

#[derive(Serialize)]
pub struct SubscriptionView {
    pub id: Uuid,
    pub status: &'static str,
    pub tariff: TariffRef,
    pub price: Money,
    pub period: Period,
    pub current_period_start: String,
    pub current_period_end: String,
    pub auto_renew: bool,
    pub next_charge_at: Option<String>,
    /// `"Bank card *4444"`
    pub payment_method: Option<String>,
    pub created_at: String,
    pub ended_at: Option<String>,
}

impl SubscriptionView {
    pub fn new(sub: &Subscription, tariff: &Tariff, method_title: Option<String>) -> Self {
        let renewing = sub.auto_renew && sub.status.is_live();
        SubscriptionView {
            id: sub.id,
            status: sub.status.as_str(),
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

#[derive(Serialize)]
pub struct MoneyOut {
    pub value: String,
    pub currency: &'static str,
}

#[derive(Serialize)]
pub struct PaymentView {
    pub id: Uuid,
    pub status: &'static str,
    pub amount: Money,
    pub refunded_amount: MoneyOut,
    pub pay_system: &'static str,
    pub kind: &'static str,
    pub tariff_id: Uuid,
    pub subscription_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmation_url: Option<String>,
    pub cancellation_reason: Option<String>,
    pub livemode: bool,
    pub created_at: String,
    pub captured_at: Option<String>,
}

impl From<&Payment> for PaymentView {
    fn from(p: &Payment) -> Self {
        PaymentView {
            id: p.id,
            status: p.status.as_str(),
            amount: p.amount,
            refunded_amount: MoneyOut {
                value: format_minor(p.refunded_minor),
                currency: p.amount.currency().code(),
            },
            pay_system: p.pay_system.as_str(),
            kind: p.kind.as_str(),
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
