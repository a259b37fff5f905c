//! The black-box tests, in one binary: the real server on port 0 against its own
//! PostgreSQL database, the fake providers over real HTTP, the real RabbitMQ.
//!
//! One module per area; `helpers` starts servers and reads what they stored.
//! Run one area with `cargo test --test api purchase::`.

mod helpers;

mod admin;
mod api;
mod bench_smoke;
mod billing_anchor;
mod cloudpayments;
mod console;
mod edge;
mod events;
mod housekeeping;
mod jobs;
mod openapi;
mod purchase;
mod receipts;
mod refund_money;
mod renewal_money;
mod settle_paths;
mod sim_smoke;
mod slow_clients;
mod tariff_change;
