//! Writes events to the `outbox` table inside the caller's transaction.

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{EventType, VERSION};
use crate::domain::UserId;
use crate::store::{GenericClient, Payment, StoreError, Subscription};

/// What an event is about: the subscription, the payment, or both.
pub struct EventSubject<'a> {
    pub user_id: UserId,
    pub subscription: Option<&'a Subscription>,
    pub payment: Option<&'a Payment>,
    pub livemode: bool,
    /// Fields of this event type alone (a tariff change's amounts), after the common ones.
    pub extra: Vec<(&'static str, Value)>,
}

impl<'a> EventSubject<'a> {
    pub fn subscription(sub: &'a Subscription) -> Self {
        EventSubject {
            user_id: sub.user_id,
            subscription: Some(sub),
            payment: None,
            livemode: sub.livemode,
            extra: Vec::new(),
        }
    }

    pub fn payment(payment: &'a Payment, sub: Option<&'a Subscription>) -> Self {
        EventSubject {
            user_id: payment.user_id,
            subscription: sub,
            payment: Some(payment),
            livemode: payment.livemode,
            extra: Vec::new(),
        }
    }

    /// Adds a field of this event type's own to `data`.
    pub fn with(mut self, key: &'static str, value: Value) -> Self {
        self.extra.push((key, value));
        self
    }
}

/// Builds the event body of `docs/contract.md`. `seq` is filled in by the INSERT.
pub fn body(id: Uuid, event_type: EventType, subject: &EventSubject<'_>) -> Value {
    let mut data = Map::new();
    data.insert("user_id".into(), json!(subject.user_id));
    data.insert(
        "subscription_id".into(),
        json!(subject.subscription.map(|s| s.id)),
    );
    let status = match (
        event_type.is_payment_event(),
        subject.payment,
        subject.subscription,
    ) {
        (true, Some(p), _) => p.status.as_str(),
        (_, _, Some(s)) => s.status.as_str(),
        (_, Some(p), None) => p.status.as_str(),
        (_, None, None) => "unknown",
    };
    data.insert("status".into(), json!(status));
    data.insert("livemode".into(), json!(subject.livemode));
    data.insert("seq".into(), json!(0));
    if let Some(p) = subject.payment {
        data.insert("payment_id".into(), json!(p.id));
        data.insert("amount".into(), json!(p.amount));
        data.insert("provider".into(), json!(p.pay_system.as_str()));
        if event_type == EventType::PaymentRefunded {
            data.insert(
                "refunded_amount".into(),
                json!({"value": crate::domain::money::format_minor(p.refunded_minor), "currency": p.amount.currency().code()}),
            );
        }
    }
    if let Some(s) = subject.subscription {
        data.insert("tariff_id".into(), json!(s.tariff_id));
        data.insert(
            "current_period_end".into(),
            json!(s
                .current_period_end
                .to_rfc3339_opts(SecondsFormat::Secs, true)),
        );
        data.insert("auto_renew".into(), json!(s.auto_renew));
    }
    for (key, value) in &subject.extra {
        data.insert((*key).into(), value.clone());
    }
    json!({
        "id": id,
        "type": event_type.as_str(),
        "occurred_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "version": VERSION,
        "data": Value::Object(data),
    })
}

/// Records one event in the caller's transaction. The caller holds the subscription's
/// row lock (if there is one), so `seq` and the outbox id increase per subscription in
/// commit order.
pub async fn record(
    db: &impl GenericClient,
    event_type: EventType,
    subject: EventSubject<'_>,
) -> Result<Uuid, StoreError> {
    let id = Uuid::new_v4();
    let payload = body(id, event_type, &subject);
    crate::store::outbox::insert(db, id, event_type.as_str(), &payload).await?;
    Ok(id)
}
