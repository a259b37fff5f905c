//! Test support, in the manner of zero2prod's `spawn_app`: `TestApp::builder()`
//! starts the real server on port 0 against a database of the test's own (a clone
//! of a template migrated once per migration set), the fake providers over real
//! HTTP when the test asks for them.
//!
//! - `app`: `TestApp`, its builder over `billing::config::Config`, HTTP helpers;
//! - `database`: the per-test database and the template it is cloned from;
//! - `fakes`: the fake providers and the settings that point a server at them;
//! - `store`: typed reads of what the service stored (assertions use these);
//! - `seed`: set-up in SQL that no API can make;
//! - `broker`: a RabbitMQ queue bound to `billing.events`.

pub mod app;
pub mod broker;
pub mod database;
pub mod fakes;
pub mod seed;
pub mod store;

pub use app::{base_config, TestApp, WITH_WORKERS};
pub use database::{TestDb, ADMIN_URL};
pub use fakes::*;
pub use seed::seed_subscription;
pub use store::count;

use std::sync::Once;

use serde_json::Value;

static LOGS: Once = Once::new();

pub fn init_logs() {
    LOGS.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            billing::telemetry::init_logs(billing::config::LogFormat::Text);
        }
    });
}

pub async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

pub const MONTH_TARIFF: &str = "6a1f0c52-8d0e-4c1e-9a57-0a9f1d3b2c01";
pub const YEAR_TARIFF: &str = "6a1f0c52-8d0e-4c1e-9a57-0a9f1d3b2c12";

/// The `payment_id` of a buy's answer.
pub fn payment_id(body: &Value) -> billing::domain::PaymentId {
    body["payment_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no payment_id in {body}"))
        .parse()
        .expect("payment_id is a UUID")
}
