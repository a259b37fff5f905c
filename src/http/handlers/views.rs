//! Response bodies. Kept apart from the store rows so the wire format is explicit.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::domain::receipt::{TaxSystem, VatCode};
use crate::domain::{InboxId, InboxStatus, MethodId, PaymentKind, RefundId, UserId};
use crate::domain::{Money, PaySystem, PaymentStatus, Period, SubscriptionStatus};
use crate::domain::{PaymentId, SubscriptionId, TariffId};
use crate::store::payment_methods::PaymentMethod;
use crate::store::payments::PaymentLine;
use crate::store::tariffs::PaySystemRow;
use crate::store::webhook_inbox::InboxRow;
use crate::store::{Payment, Subscription, Tariff};

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A tariff.
#[derive(Serialize, ToSchema)]
#[schema(as = Tariff)]
pub struct TariffView {
    pub id: TariffId,
    #[schema(example = "month")]
    pub alias: String,
    #[schema(example = "Monthly")]
    pub name: String,
    pub description: String,
    pub price: Money,
    pub period: Period,
    /// Present only on archived tariffs (never in the public list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<DateTime<Utc>>,
    /// The receipt line's VAT code, 1..12 (admin views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u8>)]
    pub vat_code: Option<VatCode>,
    /// The tax system, 1..6, or null (admin views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Option<u8>>)]
    pub tax_system_code: Option<Option<TaxSystem>>,
}

impl From<&Tariff> for TariffView {
    fn from(t: &Tariff) -> Self {
        TariffView {
            id: t.id,
            alias: t.alias.clone(),
            name: t.name.clone(),
            description: t.description.clone(),
            price: t.price,
            period: t.period,
            archived_at: t.archived_at,
            vat_code: None,
            tax_system_code: None,
        }
    }
}

impl TariffView {
    /// As operators see it: with its receipt settings.
    pub fn admin(t: &Tariff) -> Self {
        TariffView {
            vat_code: Some(t.vat_code),
            tax_system_code: Some(t.tax_system_code),
            ..TariffView::from(t)
        }
    }
}

/// A payment provider a viewer can pay with.
#[derive(Serialize, ToSchema)]
#[schema(as = PaySystemInfo)]
pub struct PaySystemView {
    pub alias: PaySystem,
    #[schema(example = "YooKassa")]
    pub name: String,
    #[schema(example = json!(["RUB"]))]
    pub currencies: Vec<String>,
}

impl From<&PaySystemRow> for PaySystemView {
    fn from(p: &PaySystemRow) -> Self {
        PaySystemView {
            alias: p.alias,
            name: p.name.clone(),
            currencies: p.currencies.clone(),
        }
    }
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
    /// The tariff the next renewal charges and switches to (`POST
    /// /api/v1/subscriptions/change` with `period_end`); null when none.
    #[schema(required = true)]
    pub scheduled_tariff_id: Option<TariffId>,
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
            scheduled_tariff_id: sub.scheduled_tariff_id.filter(|_| sub.status.is_live()),
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
        PaymentView::from(&PaymentLine::from(p))
    }
}

impl From<&PaymentLine> for PaymentView {
    fn from(p: &PaymentLine) -> Self {
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

/// A saved payment method; the provider's token is never shown.
#[derive(Serialize, ToSchema)]
#[schema(as = PaymentMethod)]
pub struct PaymentMethodView {
    pub id: MethodId,
    pub user_id: UserId,
    pub pay_system: PaySystem,
    #[schema(example = "Bank card *4444")]
    pub title: String,
    pub usable: bool,
    #[schema(required = true)]
    pub unusable_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<&PaymentMethod> for PaymentMethodView {
    fn from(m: &PaymentMethod) -> Self {
        PaymentMethodView {
            id: m.id,
            user_id: m.user_id,
            pay_system: m.pay_system,
            title: m.title.clone(),
            usable: m.usable,
            unusable_reason: m.unusable_reason.clone(),
            created_at: m.created_at,
        }
    }
}

/// One viewer's account as operators see it.
#[derive(Serialize, ToSchema)]
pub struct UserAccount {
    pub user_id: UserId,
    #[schema(required = true)]
    pub subscription: Option<SubscriptionView>,
    /// The newest 100.
    pub payments: Vec<PaymentView>,
    pub payments_total: i64,
    pub refunds: Vec<RefundView>,
    pub payment_methods: Vec<PaymentMethodView>,
    /// Cards declined on a checkout page that stayed open (CloudPayments), newest
    /// first: the purchase stays pending meanwhile.
    pub declined_attempts: Vec<DeclineView>,
    /// The 54-FZ receipts sent for this viewer's payments and refunds, newest first.
    pub receipts: Vec<ReceiptView>,
}

/// A receipt as it was sent with a payment (or, with `refund_id`, a refund).
#[derive(Serialize, ToSchema)]
pub struct ReceiptView {
    pub payment_id: PaymentId,
    #[schema(required = true)]
    pub refund_id: Option<RefundId>,
    pub receipt: crate::domain::receipt::Receipt,
    pub created_at: DateTime<Utc>,
}

impl From<&crate::store::payments::SentReceipt> for ReceiptView {
    fn from(r: &crate::store::payments::SentReceipt) -> Self {
        ReceiptView {
            payment_id: r.payment_id,
            refund_id: r.refund_id,
            receipt: r.receipt.clone(),
            created_at: r.created_at,
        }
    }
}

/// A declined attempt on an open checkout page.
#[derive(Serialize, ToSchema)]
#[schema(as = DeclinedAttempt)]
pub struct DeclineView {
    pub payment_id: PaymentId,
    pub pay_system: PaySystem,
    pub provider_transaction_id: String,
    /// Our vocabulary, as in a payment's `cancellation_reason`.
    #[schema(example = "insufficient_funds")]
    pub reason: String,
    /// The provider's own code and text.
    #[schema(required = true, example = "5051 InsufficientFunds")]
    pub provider_reason: Option<String>,
    pub declined_at: DateTime<Utc>,
}

impl From<&crate::store::payments::Decline> for DeclineView {
    fn from(d: &crate::store::payments::Decline) -> Self {
        DeclineView {
            payment_id: d.payment_id,
            pay_system: d.pay_system,
            provider_transaction_id: d.provider_transaction_id.clone(),
            reason: d.reason.clone(),
            provider_reason: d.provider_reason.clone(),
            declined_at: d.declined_at,
        }
    }
}

/// A stored notification, as operators see it; personal fields of the body and the
/// sender's address are redacted.
#[derive(Serialize, ToSchema)]
#[schema(as = InboxRow)]
pub struct InboxView {
    pub id: InboxId,
    pub provider: PaySystem,
    pub event: String,
    pub object_id: String,
    #[schema(required = true)]
    pub ops_webhook_id: Option<String>,
    pub status: InboxStatus,
    #[schema(required = true)]
    pub outcome: Option<String>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    pub attempts: i32,
    pub deliveries: i32,
    #[schema(format = DateTime)]
    pub received_at: String,
    #[schema(format = DateTime)]
    pub last_received_at: String,
    #[schema(format = DateTime, required = true)]
    pub processed_at: Option<String>,
    pub body_purged: bool,
    /// `"[redacted]"` when the sender's address was recorded, else null.
    #[schema(required = true)]
    pub source_ip: Option<&'static str>,
    /// The stored body (JSON, or form fields as an object), redacted; null once purged.
    #[schema(required = true)]
    pub body: Option<Value>,
}

impl From<&InboxRow> for InboxView {
    fn from(r: &InboxRow) -> Self {
        InboxView {
            id: r.id,
            provider: r.provider,
            event: r.event.clone(),
            object_id: r.object_id.clone(),
            ops_webhook_id: r.ops_webhook_id.clone(),
            status: r.status,
            outcome: r.outcome.clone(),
            last_error: r.last_error.clone(),
            attempts: r.attempts,
            deliveries: r.deliveries,
            received_at: rfc3339(r.received_at),
            last_received_at: rfc3339(r.last_received_at),
            processed_at: r.processed_at.map(rfc3339),
            body_purged: r.body_purged_at.is_some(),
            source_ip: r.source_ip.as_ref().map(|_| "[redacted]"),
            body: r.body.as_deref().and_then(body_json),
        }
    }
}

/// Keys whose values are personal data in provider bodies (both providers' spellings).
fn is_personal(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("email")
        || k.contains("phone")
        || k.contains("holder")
        || k.contains("ipaddress")
        || k == "ip"
        || k == "name"
        || k == "payer"
        || k == "address"
        || k == "description"
        // A CloudPayments card token charges the card again: never shown.
        || k == "token"
}

fn redact(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_personal(k) && !v.is_null() {
                        json!("[redacted]")
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// A stored body as JSON (form fields become an object), redacted; `None` when it
/// is neither.
fn body_json(raw: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(raw)
        .ok()
        .or_else(|| {
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw)
                .ok()
                .map(|pairs| {
                    Value::Object(
                        pairs
                            .into_iter()
                            .map(|(k, v)| (k, Value::String(v)))
                            .collect(),
                    )
                })
        })
        .map(|v| redact(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_fields_are_redacted_at_any_depth() {
        let v = json!({"Email": "a@b.c", "object": {"payment_method": {"card": {"last4": "4444"}},
            "metadata": {"customer_phone": "+7900"}}, "IpAddress": "1.2.3.4", "Amount": 299});
        let r = redact(&v);
        assert_eq!(r["Email"], "[redacted]");
        assert_eq!(r["IpAddress"], "[redacted]");
        assert_eq!(r["object"]["metadata"]["customer_phone"], "[redacted]");
        assert_eq!(r["object"]["payment_method"]["card"]["last4"], "4444");
        assert_eq!(r["Amount"], 299);
    }
}
