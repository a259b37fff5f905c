//! Pure domain code: money, periods, statuses. No I/O here.

pub mod duration;
pub mod ids;
pub mod money;
pub mod period;
pub mod proration;
pub mod receipt;
pub mod status;

pub use ids::{InboxId, MethodId, PaymentId, RefundId, SubscriptionId, TariffId, UserId};
pub use money::{Currency, Money, MoneyError};
pub use period::{Period, PeriodUnit};
pub use status::{
    InboxStatus, PaySystem, PaymentKind, PaymentStatus, RefundStatus, SubscriptionStatus,
};
