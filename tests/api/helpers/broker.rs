//! RabbitMQ helpers for event tests: a private queue bound to `billing.events`.
//!
//! Every test's queue sees every test's events (one broker, one exchange, tests in
//! parallel), so tests filter what they read, by user id, and never assume an
//! empty queue.

use std::time::Duration;

use billing::config::Config;
use billing::domain::UserId;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// How long a test waits for a condition before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// For a replica or a restart: the real broker (what `.rabbitmq()` sets).
pub fn with_broker(config: &mut Config) {
    config.amqp_url = AMQP_URL.into();
}

/// One delivered message, as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Message {
    pub routing_key: String,
    pub properties: BasicProperties,
    pub raw: Vec<u8>,
    /// The body parsed as JSON (Null when it is not JSON).
    pub body: Value,
}

impl Message {
    pub fn message_id(&self) -> Option<&str> {
        self.properties.message_id().as_ref().map(|s| s.as_str())
    }

    pub fn user_id(&self) -> Option<&str> {
        self.body["data"]["user_id"].as_str()
    }

    pub fn event_id(&self) -> &str {
        self.body["id"].as_str().unwrap_or_default()
    }

    pub fn seq(&self) -> i64 {
        self.body["data"]["seq"]
            .as_i64()
            .expect("data.seq is an integer")
    }
}

/// Messages about any of these users.
pub fn for_users(users: &[UserId]) -> impl Fn(&Message) -> bool {
    let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
    move |m| m.user_id().is_some_and(|u| users.iter().any(|x| x == u))
}

/// An exclusive, auto-delete, server-named queue bound to `billing.events` with `#`.
pub struct TestQueue {
    conn: Connection,
    channel: Channel,
    consumer: Consumer,
}

impl TestQueue {
    pub async fn bind() -> TestQueue {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("RabbitMQ is running on 127.0.0.1:5672");
        let channel = conn.create_channel().await.unwrap();
        // Declared exactly as the design fixes it: had the relay declared it any
        // other way, one of the two declarations would fail (PRECONDITION_FAILED).
        channel
            .exchange_declare(
                billing::events::EXCHANGE.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    auto_delete: false,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("billing.events is a durable topic exchange without arguments");
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.name().clone(),
                billing::events::EXCHANGE.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        TestQueue {
            conn,
            channel,
            consumer,
        }
    }

    async fn next_until(&mut self, deadline: Instant) -> Option<Message> {
        let delivery = tokio::time::timeout_at(deadline, self.consumer.next())
            .await
            .ok()??;
        let delivery = delivery.expect("consumer delivery");
        let body = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
        Some(Message {
            routing_key: delivery.routing_key.to_string(),
            properties: delivery.properties.clone(),
            raw: delivery.data.clone(),
            body,
        })
    }

    /// Waits (at most [`PATIENCE`]) until `n` messages matching `filter` arrived;
    /// returns them in arrival order.
    pub async fn wait_for(&mut self, n: usize, filter: impl Fn(&Message) -> bool) -> Vec<Message> {
        let deadline = Instant::now() + PATIENCE;
        let mut got = Vec::new();
        while got.len() < n {
            match self.next_until(deadline).await {
                Some(m) if filter(&m) => got.push(m),
                Some(_) => {}
                None => panic!(
                    "{} of {n} expected messages arrived within {PATIENCE:?}: {got:#?}",
                    got.len()
                ),
            }
        }
        got
    }

    /// Everything matching `filter` that is in the queue now: publishes a sentinel
    /// and reads up to it. A queue is FIFO, so once the relays have stopped (every
    /// publish confirmed, hence enqueued) nothing they sent can come after it.
    pub async fn drain(&mut self, filter: impl Fn(&Message) -> bool) -> Vec<Message> {
        let sentinel = Uuid::new_v4().to_string();
        self.channel
            .basic_publish(
                billing::events::EXCHANGE.into(),
                "test.sentinel".into(),
                BasicPublishOptions::default(),
                b"{}",
                BasicProperties::default().with_message_id(sentinel.clone().into()),
            )
            .await
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        let mut got = Vec::new();
        loop {
            match self.next_until(deadline).await {
                Some(m) if m.message_id() == Some(sentinel.as_str()) => return got,
                Some(m) if filter(&m) => got.push(m),
                Some(_) => {}
                None => panic!("the drain sentinel did not come back within {PATIENCE:?}"),
            }
        }
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "test done".into()).await;
    }
}
