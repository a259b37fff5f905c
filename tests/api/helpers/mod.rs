//! Test support: each test gets its own database, cloned from a template migrated
//! once per migration set, and the real server on port 0.
#![allow(dead_code)]

pub mod broker;
pub mod database;

pub use database::{TestDb, ADMIN_URL};

use std::collections::HashMap;
use std::sync::Once;

use billing::config::Config;
use billing::domain::UserId;
use billing::server::{self, Running, ServeOptions};
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

/// Environment for a test server: its own database, port 0, a closed broker port
/// unless the test asks for RabbitMQ.
pub fn base_env(db: &TestDb) -> HashMap<String, String> {
    let mut env = HashMap::new();
    env.insert("DATABASE_URL".into(), db.url.clone());
    env.insert("LISTEN_ADDR".into(), "127.0.0.1:0".into());
    env.insert(
        "AMQP_URL".into(),
        "amqp://guest:guest@127.0.0.1:1/%2f".into(),
    );
    env
}

pub struct TestApp {
    pub server: Option<Running>,
    pub url: String,
    pub http: reqwest::Client,
    pub db: TestDb,
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(customize: impl FnOnce(&mut HashMap<String, String>)) -> TestApp {
        Self::start_opts(
            customize,
            ServeOptions {
                api: true,
                workers: false,
            },
        )
        .await
    }

    pub async fn start_opts(
        customize: impl FnOnce(&mut HashMap<String, String>),
        opts: ServeOptions,
    ) -> TestApp {
        init_logs();
        let db = TestDb::new().await;
        let mut env = base_env(&db);
        customize(&mut env);
        let config =
            Config::from_lookup(|k| env.get(k).cloned()).expect("test configuration is valid");
        let server = server::start(config, opts).await.expect("server starts");
        let url = server.url();
        TestApp {
            server: Some(server),
            url,
            http: reqwest::Client::new(),
            db,
        }
    }

    /// Another server against this test's database (a second replica).
    pub async fn start_replica(
        &self,
        customize: impl FnOnce(&mut HashMap<String, String>),
        opts: ServeOptions,
    ) -> Running {
        let mut env = base_env(&self.db);
        customize(&mut env);
        let config =
            Config::from_lookup(|k| env.get(k).cloned()).expect("test configuration is valid");
        server::start(config, opts).await.expect("replica starts")
    }

    /// Stops the server and starts a new one against the same database.
    pub async fn restart(
        &mut self,
        customize: impl FnOnce(&mut HashMap<String, String>),
        opts: ServeOptions,
    ) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        let server = self.start_replica(customize, opts).await;
        self.url = server.url();
        self.server = Some(server);
    }

    pub fn app(&self) -> &billing::app::App {
        &self.server.as_ref().unwrap().app
    }

    pub fn token(&self, user: Uuid) -> String {
        self.app().keys.issue(UserId::from_uuid(user), false, 600)
    }

    pub fn admin_token(&self) -> String {
        self.app().keys.issue(UserId::new(), true, 600)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.header("authorization", t);
        }
        read(req.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(t) = token {
            req = req.header("authorization", t);
        }
        read(req.send().await.unwrap()).await
    }

    pub async fn sql(&self) -> tokio_postgres::Client {
        self.db.client().await
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }
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

pub const OPS_SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
pub const RETURN_URL: &str = "https://cinema.example/return";

/// A server in test mode whose YooKassa is a standalone fake over real HTTP.
pub async fn with_fake_yookassa(
    customize: impl FnOnce(&mut HashMap<String, String>),
) -> (
    TestApp,
    std::sync::Arc<billing::providers::sandbox::Sandbox>,
) {
    let fake = billing::providers::sandbox::Sandbox::new("test-shop", "test_secret", true);
    let addr = fake.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let app = TestApp::start_with(|env| {
        env.insert("YOOKASSA_SHOP_ID".into(), "test-shop".into());
        env.insert("YOOKASSA_SECRET_KEY".into(), "test_secret".into());
        env.insert("JWT_SECRET_KEY".into(), "test-jwt-key".into());
        env.insert(
            "YOOKASSA_API_URL".into(),
            format!("http://{addr}/sandbox/yookassa/v3"),
        );
        env.insert("YOOKASSA_RETURN_URL".into(), RETURN_URL.into());
        env.insert("YOOKASSA_WEBHOOK_ALLOWED_IPS".into(), "127.0.0.1/32".into());
        env.insert("OPS_WEBHOOK_SECRET".into(), OPS_SECRET.into());
        customize(env);
    })
    .await;
    fake.set_webhook_url(&format!("{}/webhooks/yookassa", app.url));
    (app, fake)
}

impl TestApp {
    /// Buys a tariff; answers (status, body).
    pub async fn buy(
        &self,
        user: Uuid,
        tariff: &str,
        renew: bool,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/api/v1/subscriptions/yookassa/buy", self.url))
            .header("authorization", self.token(user))
            .json(&serde_json::json!({"tariff_id": tariff, "renew": renew}));
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        read(req.send().await.unwrap()).await
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

    /// Posts a YooKassa-shaped notification from loopback.
    pub async fn notify(&self, event: &str, object: &Value) -> u16 {
        let body = serde_json::json!({"type": "notification", "event": event, "object": object});
        self.http
            .post(format!("{}/webhooks/yookassa", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.sql().await.query_one(sql, &[]).await.unwrap().get(0)
    }
}
