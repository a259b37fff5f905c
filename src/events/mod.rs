//! Domain events: their types, their JSON body, and the outbox write that commits
//! with the change it describes. Publishing is the relay's job (`relay`).

pub mod outbox;
pub mod relay;

use serde::Serialize;

pub use outbox::{record, EventSubject};

pub const EXCHANGE: &str = "billing.events";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    #[serde(rename = "payment.succeeded")]
    PaymentSucceeded,
    #[serde(rename = "payment.canceled")]
    PaymentCanceled,
    #[serde(rename = "payment.refunded")]
    PaymentRefunded,
    #[serde(rename = "subscription.activated")]
    SubscriptionActivated,
    #[serde(rename = "subscription.renewed")]
    SubscriptionRenewed,
    #[serde(rename = "subscription.past_due")]
    SubscriptionPastDue,
    #[serde(rename = "subscription.expired")]
    SubscriptionExpired,
    #[serde(rename = "subscription.canceled")]
    SubscriptionCanceled,
    #[serde(rename = "subscription.auto_renew_disabled")]
    SubscriptionAutoRenewDisabled,
    #[serde(rename = "subscription.auto_renew_enabled")]
    SubscriptionAutoRenewEnabled,
    #[serde(rename = "subscription.shortened")]
    SubscriptionShortened,
    #[serde(rename = "subscription.tariff_changed")]
    SubscriptionTariffChanged,
    #[serde(rename = "subscription.tariff_change_scheduled")]
    SubscriptionTariffChangeScheduled,
}

impl EventType {
    pub const ALL: &'static [EventType] = &[
        EventType::PaymentSucceeded,
        EventType::PaymentCanceled,
        EventType::PaymentRefunded,
        EventType::SubscriptionActivated,
        EventType::SubscriptionRenewed,
        EventType::SubscriptionPastDue,
        EventType::SubscriptionExpired,
        EventType::SubscriptionCanceled,
        EventType::SubscriptionAutoRenewDisabled,
        EventType::SubscriptionAutoRenewEnabled,
        EventType::SubscriptionShortened,
        EventType::SubscriptionTariffChanged,
        EventType::SubscriptionTariffChangeScheduled,
    ];

    /// Also the routing key.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PaymentSucceeded => "payment.succeeded",
            EventType::PaymentCanceled => "payment.canceled",
            EventType::PaymentRefunded => "payment.refunded",
            EventType::SubscriptionActivated => "subscription.activated",
            EventType::SubscriptionRenewed => "subscription.renewed",
            EventType::SubscriptionPastDue => "subscription.past_due",
            EventType::SubscriptionExpired => "subscription.expired",
            EventType::SubscriptionCanceled => "subscription.canceled",
            EventType::SubscriptionAutoRenewDisabled => "subscription.auto_renew_disabled",
            EventType::SubscriptionAutoRenewEnabled => "subscription.auto_renew_enabled",
            EventType::SubscriptionShortened => "subscription.shortened",
            EventType::SubscriptionTariffChanged => "subscription.tariff_changed",
            EventType::SubscriptionTariffChangeScheduled => "subscription.tariff_change_scheduled",
        }
    }

    pub fn is_payment_event(self) -> bool {
        self.as_str().starts_with("payment.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_match_routing_keys() {
        for t in EventType::ALL {
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!(t.as_str())
            );
        }
    }
}
