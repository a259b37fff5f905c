//! Billing service of an online cinema. See README.md for the architecture.

pub mod app;
pub mod bench;
pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod fuzzing;
pub mod http;
pub mod jobs;
pub mod providers;
pub mod replay;
pub mod server;
pub mod service;
pub mod sim;
pub mod store;
pub mod telemetry;
