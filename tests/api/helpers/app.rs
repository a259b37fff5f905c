//! `TestApp`: the real server on port 0, over a database of the test's own, built
//! from the typed `billing::config::Config`.
//!
//! ```ignore
//! let app = TestApp::builder()
//!     .fake_yookassa() // app.yookassa(): the fake, over real HTTP
//!     .rabbitmq()
//!     .workers()
//!     .config(|c| c.reconcile_after = Duration::from_secs(60))
//!     .start()
//!     .await;
//! ```

use std::sync::Arc;

use billing::config::Config;
use billing::domain::UserId;
use billing::providers::sandbox::cloudpayments::CloudPaymentsSandbox;
use billing::providers::sandbox::Sandbox;
use billing::server::{self, Running, ServeOptions};
use serde_json::Value;

use super::broker::AMQP_URL;
use super::database::TestDb;
use super::{fakes, init_logs, read};

/// A broker port nothing listens on: events wait in the outbox.
const CLOSED_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

/// API and workers (the relay among them).
pub const WITH_WORKERS: ServeOptions = ServeOptions {
    api: true,
    workers: true,
};

/// The configuration every test server starts from: its own database, port 0, a
/// closed broker port, sandbox mode (no provider configured). `Config` has no
/// constructor but its variable reader, so the base is read from these three.
pub fn base_config(db: &TestDb) -> Config {
    Config::from_lookup(|name| match name {
        "DATABASE_URL" => Some(db.url.clone()),
        "LISTEN_ADDR" => Some("127.0.0.1:0".into()),
        "AMQP_URL" => Some(CLOSED_AMQP_URL.into()),
        _ => None,
    })
    .expect("the base test configuration is valid")
}

type Configure = Box<dyn FnOnce(&mut Config)>;

/// What a test's server runs with: [`TestApp::builder`].
#[must_use]
#[derive(Default)]
pub struct TestAppBuilder {
    yookassa: bool,
    cloudpayments: bool,
    live_cloudpayments: bool,
    rabbitmq: bool,
    workers: bool,
    configure: Vec<Configure>,
}

impl TestAppBuilder {
    /// YooKassa in test mode against a fake over real HTTP ([`TestApp::yookassa`]).
    pub fn fake_yookassa(mut self) -> Self {
        self.yookassa = true;
        self
    }

    /// CloudPayments against a fake over real HTTP ([`TestApp::cloudpayments`]).
    pub fn fake_cloudpayments(mut self) -> Self {
        self.cloudpayments = true;
        self
    }

    /// CloudPayments in live mode (its fake's `TestMode` false), beside YooKassa's
    /// own mode.
    pub fn live_cloudpayments(mut self) -> Self {
        self.cloudpayments = true;
        self.live_cloudpayments = true;
        self
    }

    /// The background workers (the outbox relay and every job) besides the API.
    pub fn workers(mut self) -> Self {
        self.workers = true;
        self
    }

    /// The real RabbitMQ instead of a closed port.
    pub fn rabbitmq(mut self) -> Self {
        self.rabbitmq = true;
        self
    }

    /// Any other setting, on the typed configuration; applied after the fakes',
    /// in the order given.
    pub fn config(mut self, configure: impl FnOnce(&mut Config) + 'static) -> Self {
        self.configure.push(Box::new(configure));
        self
    }

    pub async fn start(self) -> TestApp {
        init_logs();
        let db = TestDb::new().await;
        let mut config = base_config(&db);
        if self.rabbitmq {
            config.amqp_url = AMQP_URL.into();
        }
        let yookassa = match self.yookassa {
            true => Some(fakes::yookassa(&mut config).await),
            false => None,
        };
        let cloudpayments = match self.cloudpayments {
            true => Some(fakes::cloudpayments(&mut config, self.live_cloudpayments).await),
            false => None,
        };
        for configure in self.configure {
            configure(&mut config);
        }
        let opts = ServeOptions {
            api: true,
            workers: self.workers,
        };
        let server = server::start(config.clone(), opts)
            .await
            .expect("server starts");
        let app = TestApp {
            url: server.url(),
            server: Some(server),
            http: reqwest::Client::new(),
            store: billing::db::pool(&db.url, 4).expect("a pool for the test's reads"),
            db,
            config,
            yookassa,
            cloudpayments,
        };
        app.send_notifications_here();
        app
    }
}

pub struct TestApp {
    pub server: Option<Running>,
    pub url: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    /// The test's own connections to its database (`app.conn()`).
    pub(super) store: deadpool_postgres::Pool,
    /// What the server was started with (before it filled in its own URLs).
    pub config: Config,
    yookassa: Option<Arc<Sandbox>>,
    cloudpayments: Option<Arc<CloudPaymentsSandbox>>,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    /// The API alone, in sandbox mode.
    pub async fn start() -> TestApp {
        Self::builder().start().await
    }

    /// The fake YooKassa ([`TestAppBuilder::fake_yookassa`]).
    pub fn yookassa(&self) -> &Arc<Sandbox> {
        self.yookassa
            .as_ref()
            .expect("started with .fake_yookassa()")
    }

    /// The fake CloudPayments ([`TestAppBuilder::fake_cloudpayments`]).
    pub fn cloudpayments(&self) -> &Arc<CloudPaymentsSandbox> {
        self.cloudpayments
            .as_ref()
            .expect("started with .fake_cloudpayments()")
    }

    fn send_notifications_here(&self) {
        if let Some(fake) = &self.yookassa {
            fake.set_webhook_url(&format!("{}/webhooks/yookassa", self.url));
        }
        if let Some(fake) = &self.cloudpayments {
            fake.set_webhook_url(&format!("{}/webhooks/cloudpayments", self.url));
        }
    }

    /// Another server against this test's database (a second replica), configured
    /// as this one and then by `configure`.
    pub async fn start_replica(
        &self,
        configure: impl FnOnce(&mut Config),
        opts: ServeOptions,
    ) -> Running {
        let mut config = self.config.clone();
        configure(&mut config);
        server::start(config, opts).await.expect("replica starts")
    }

    /// Stops the server and starts a new one against the same database, its
    /// configuration changed by `configure`.
    pub async fn restart(&mut self, configure: impl FnOnce(&mut Config), opts: ServeOptions) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        configure(&mut self.config);
        let server = server::start(self.config.clone(), opts)
            .await
            .expect("server restarts");
        self.url = server.url();
        self.server = Some(server);
        self.send_notifications_here();
    }

    pub fn app(&self) -> &billing::app::App {
        &self.server.as_ref().unwrap().app
    }

    pub fn token(&self, user: UserId) -> String {
        self.app().keys.issue(user, false, 600)
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

    /// The operator's view of one viewer (`GET /api/v1/admin/users/{user}`), asserted 200.
    pub async fn admin_account(&self, user: UserId) -> Value {
        let (status, account) = self
            .get(
                &format!("/api/v1/admin/users/{user}"),
                Some(&self.admin_token()),
            )
            .await;
        assert_eq!(status, 200, "{account}");
        account
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.http.patch(format!("{}{path}", self.url)).json(&body);
        if let Some(t) = token {
            req = req.header("authorization", t);
        }
        read(req.send().await.unwrap()).await
    }

    /// Buys a tariff through YooKassa; answers (status, body).
    pub async fn buy(
        &self,
        user: UserId,
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

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }
}
