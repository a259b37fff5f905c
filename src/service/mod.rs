//! Use cases that combine the store, providers and events. Each one locks what it
//! decides on and commits its change with its events.

pub mod alerts;
pub mod change;
pub mod create;
pub mod error;
pub mod idempotency;
pub mod purchase;
pub mod refunds;
pub mod review;
pub mod settle;
pub mod subscriptions;
pub mod sync;
pub mod tariffs;
pub mod webhooks;

pub use error::BillingError;
