//! Use cases that combine the store, providers and events. Each one locks what it
//! decides on and commits its change with its events.

pub mod change;
pub mod create;
pub mod error;
pub mod idempotency;
pub mod purchase;
pub mod refunds;
pub mod settle;
pub mod subscriptions;
pub mod sync;
pub mod webhooks;

pub use error::BillingError;
