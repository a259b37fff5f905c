//! Every status-like text the service stores or speaks (payment, subscription,
//! refund and inbox statuses, payment kinds, providers), each through one macro
//! that refuses unknown text, and the forward-only payment transitions.
//! The same rules are enforced in SQL (`UPDATE … WHERE status = ANY($from)`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! string_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        /// A string enum of exactly the texts above.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some($name::ALL.iter().map(|s| s.as_str())))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(concat!("unknown ", stringify!($name), " {:?}"), other)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

string_enum!(PaymentStatus {
    Pending => "pending",
    WaitingForCapture => "waiting_for_capture",
    Succeeded => "succeeded",
    Canceled => "canceled",
    Failed => "failed",
    PartiallyRefunded => "partially_refunded",
    Refunded => "refunded",
});

string_enum!(SubscriptionStatus {
    Active => "active",
    PastDue => "past_due",
    Canceled => "canceled",
    Expired => "expired",
});

string_enum!(PaySystem {
    YooKassa => "yookassa",
    CloudPayments => "cloudpayments",
});

string_enum!(PaymentKind {
    Purchase => "purchase",
    Renewal => "renewal",
    // A tariff change paid now (the new price minus the unused part of the old).
    Change => "change",
});

string_enum!(InboxStatus {
    Received => "received",
    Processed => "processed",
    Failed => "failed",
    Ignored => "ignored",
});

string_enum!(RefundStatus {
    Pending => "pending",
    Succeeded => "succeeded",
    Canceled => "canceled",
});

impl PaymentStatus {
    /// The statuses a payment may move to `self` from, as the provider reports it.
    /// `failed` is ours alone (the provider never accepted the create); only the
    /// provider makes a payment final, so its `succeeded`/`canceled` override it.
    pub fn allowed_from(self) -> &'static [PaymentStatus] {
        use PaymentStatus::*;
        match self {
            Pending => &[],
            WaitingForCapture => &[Pending, Failed],
            Succeeded => &[Pending, WaitingForCapture, Failed, Canceled],
            Canceled => &[Pending, WaitingForCapture, Failed],
            Failed => &[Pending],
            PartiallyRefunded => &[Succeeded, PartiallyRefunded],
            Refunded => &[Succeeded, PartiallyRefunded],
        }
    }

    pub fn can_move_to(self, to: PaymentStatus) -> bool {
        to.allowed_from().contains(&self)
    }

    /// Still waiting for the provider's final word.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            PaymentStatus::Pending | PaymentStatus::WaitingForCapture
        )
    }

    /// The viewer's money was taken (possibly partly given back since).
    pub fn is_paid(self) -> bool {
        matches!(
            self,
            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded
        )
    }
}

impl SubscriptionStatus {
    /// Grants access.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Active | SubscriptionStatus::PastDue
        )
    }
}

/// Renewal declines after which the saved method must not be charged again.
pub fn is_hard_decline(reason: &str) -> bool {
    matches!(
        reason,
        "permission_revoked" | "card_expired" | "payment_method_restricted"
    )
}

#[cfg(test)]
mod tests {
    use super::PaymentStatus::*;
    use super::*;

    #[test]
    fn transitions_only_go_forward() {
        assert!(Pending.can_move_to(WaitingForCapture));
        assert!(Pending.can_move_to(Succeeded));
        assert!(Pending.can_move_to(Canceled));
        assert!(WaitingForCapture.can_move_to(Succeeded));
        assert!(WaitingForCapture.can_move_to(Canceled));
        assert!(Succeeded.can_move_to(PartiallyRefunded));
        assert!(PartiallyRefunded.can_move_to(Refunded));

        assert!(!Succeeded.can_move_to(WaitingForCapture));
        assert!(!Succeeded.can_move_to(Pending));
        assert!(!Refunded.can_move_to(Succeeded));
        assert!(!WaitingForCapture.can_move_to(Pending));
        assert!(!Canceled.can_move_to(WaitingForCapture));
        assert!(!Refunded.can_move_to(PartiallyRefunded));
    }

    #[test]
    fn the_provider_may_override_a_local_failure_or_cancel_with_success() {
        assert!(Failed.can_move_to(Succeeded));
        assert!(Canceled.can_move_to(Succeeded));
    }

    #[test]
    fn no_status_moves_to_itself_except_partial_refunds_adding_up() {
        for s in PaymentStatus::ALL {
            assert_eq!(s.can_move_to(*s), *s == PartiallyRefunded, "{s}");
        }
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for s in PaymentStatus::ALL {
            assert_eq!(s.as_str().parse::<PaymentStatus>().unwrap(), *s);
        }
        for s in SubscriptionStatus::ALL {
            assert_eq!(s.as_str().parse::<SubscriptionStatus>().unwrap(), *s);
        }
        for s in InboxStatus::ALL {
            assert_eq!(s.as_str().parse::<InboxStatus>().unwrap(), *s);
        }
        for s in PaymentKind::ALL {
            assert_eq!(s.as_str().parse::<PaymentKind>().unwrap(), *s);
        }
    }

    #[test]
    fn unknown_text_is_refused_not_guessed() {
        assert!("recieved".parse::<InboxStatus>().is_err());
        assert!("Processed".parse::<InboxStatus>().is_err());
        assert!("".parse::<PaymentKind>().is_err());
        assert!("refund".parse::<PaymentKind>().is_err());
        assert!("active ".parse::<SubscriptionStatus>().is_err());
    }

    #[test]
    fn hard_declines() {
        assert!(is_hard_decline("card_expired"));
        assert!(!is_hard_decline("insufficient_funds"));
    }
}
