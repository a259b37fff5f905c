//! Pure domain code: money, periods, statuses. No I/O here.

pub mod duration;
pub mod money;
pub mod period;
pub mod status;

pub use money::{Currency, Money, MoneyError};
pub use period::{Period, PeriodUnit};
pub use status::{PaySystem, PaymentStatus, RefundStatus, SubscriptionStatus};
