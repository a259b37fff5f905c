//! Use cases that combine the store, providers and events. Each one locks what it
//! decides on and commits its change with its events.

pub mod subscriptions;
