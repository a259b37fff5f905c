//! Test support, in the manner of zero2prod's `spawn_app`: `TestApp::builder()`
//! starts the real server on port 0 against a database of the test's own (a clone
//! of a template migrated once per migration set), the fake providers over real
//! HTTP when the test asks for them.
#![allow(dead_code)]

pub mod app;
pub mod broker;
pub mod database;
pub mod fakes;

pub use app::{base_config, TestApp, WITH_WORKERS};
pub use database::{TestDb, ADMIN_URL};
pub use fakes::*;

use std::sync::Once;

use serde_json::Value;
use uuid::Uuid;

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
pub const QUARTER_TARIFF: &str = "6a1f0c52-8d0e-4c1e-9a57-0a9f1d3b2c03";
pub const YEAR_TARIFF: &str = "6a1f0c52-8d0e-4c1e-9a57-0a9f1d3b2c12";

/// Inserts a live subscription directly (for tests of what reads or changes one).
pub async fn seed_subscription(
    db: &tokio_postgres::Client,
    user: Uuid,
    auto_renew: bool,
    with_method: bool,
) -> Uuid {
    let tariff = Uuid::parse_str(MONTH_TARIFF).unwrap();
    let method: Option<Uuid> = if with_method {
        let id = Uuid::new_v4();
        db.execute(
            "INSERT INTO payment_methods (id, user_id, pay_system, provider_method_id, title, livemode) \
             VALUES ($1, $2, 'yookassa', $3, 'Bank card *4444', false)",
            &[&id, &user, &format!("pm-{}", Uuid::new_v4())],
        )
        .await
        .unwrap();
        Some(id)
    } else {
        None
    };
    let id = Uuid::new_v4();
    db.execute(
        "INSERT INTO subscriptions (id, user_id, tariff_id, pay_system, status, price_minor, currency, \
         period_count, period_unit, current_period_start, current_period_end, auto_renew, payment_method_id, \
         next_charge_at, livemode) \
         VALUES ($1, $2, $3, 'yookassa', 'active', 29900, 'RUB', 1, 'month', now(), now() + interval '1 month', \
         $4, $5, CASE WHEN $4 THEN now() + interval '1 month' - interval '1 day' END, false)",
        &[&id, &user, &tariff, &auto_renew, &method],
    )
    .await
    .unwrap();
    id
}

/// A seeded subscription whose renewal is due now; answers (id, provider method id).
pub async fn due(db: &tokio_postgres::Client) -> (Uuid, String) {
    let sub = seed_subscription(db, Uuid::new_v4(), true, true).await;
    make_due(db, sub).await;
    let pm: String = db
        .query_one(
            "SELECT m.provider_method_id FROM subscriptions s JOIN payment_methods m ON m.id = s.payment_method_id \
             WHERE s.id = $1",
            &[&sub],
        )
        .await
        .unwrap()
        .get(0);
    (sub, pm)
}

/// The subscription's next charge is due now.
pub async fn make_due(db: &tokio_postgres::Client, sub: Uuid) {
    db.execute(
        "UPDATE subscriptions SET next_charge_at = now() - interval '1 second' WHERE id = $1",
        &[&sub],
    )
    .await
    .unwrap();
}

pub async fn outbox_types(db: &tokio_postgres::Client) -> Vec<String> {
    db.query("SELECT event_type FROM outbox ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

impl TestApp {
    /// A connection to the test's database.
    pub async fn sql(&self) -> tokio_postgres::Client {
        self.db.client().await
    }

    /// The provider id of one of our payments.
    pub async fn provider_id(&self, payment_id: &str) -> String {
        let id = Uuid::parse_str(payment_id).unwrap();
        self.sql()
            .await
            .query_one(
                "SELECT provider_payment_id FROM payments WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0)
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.sql().await.query_one(sql, &[]).await.unwrap().get(0)
    }
}
