//! Typed identifiers. A payment id, a user id and a refund id are all UUIDs in
//! the database, but a function that takes a `PaymentId` cannot be handed a
//! `UserId`: the compiler keeps them apart. Ids are parsed once, at the edge
//! (a path segment, a token's `sub`, a database column), and travel typed.
//!
//! How an id is stored is the store's business: `store::ids` gives each type its
//! PostgreSQL encoding (the UUID's).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random (v4) id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// An id read from somewhere that already says what it identifies.
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        /// A string in UUID format.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
        }
    };
}

id!(
    /// One of our payments (`payments.id`); the provider's id is a separate string.
    PaymentId
);
id!(
    /// A viewer, as the auth service's token names them (`sub`).
    UserId
);
id!(
    /// A tariff (`tariffs.id`).
    TariffId
);
id!(
    /// A subscription (`subscriptions.id`).
    SubscriptionId
);
id!(
    /// One of our refunds (`refunds.id`).
    RefundId
);
id!(
    /// A stored notification (`webhook_inbox.id`).
    InboxId
);
id!(
    /// A saved payment method (`payment_methods.id`).
    MethodId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_and_print_as_their_uuid() {
        let text = "0b9e4b1c-3c39-4f7d-9d0a-8f1b7e2a6c11";
        let id: PaymentId = text.parse().unwrap();
        assert_eq!(id.to_string(), text);
        assert_eq!(serde_json::to_value(id).unwrap(), serde_json::json!(text));
        assert!("not-a-uuid".parse::<UserId>().is_err());
    }
}
