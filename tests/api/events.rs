//! The outbox relay against the real RabbitMQ and PostgreSQL: what a consumer of
//! `billing.events` receives, and what stays in the outbox.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use crate::helpers::broker::*;
use crate::helpers::*;
use billing::domain::UserId;
use billing::events::{self, relay, EventSubject, EventType};
use billing::jobs::outbox_retention;
use billing::store::{outbox, Subscription};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

/// Polls `check` until it returns Some (at most [`PATIENCE`]).
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many events wait to be published.
async fn unsent(app: &TestApp) -> i64 {
    outbox::backlog(&app.conn().await).await.unwrap().rows
}

/// Records one event in its own committed transaction.
async fn record_committed(app: &TestApp, event: EventType, sub: &Subscription) -> Uuid {
    let mut db = app.app().db.get().await.unwrap();
    let tx = db.transaction().await.unwrap();
    let id = events::record(&tx, event, EventSubject::subscription(sub))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

#[tokio::test]
async fn events_arrive_with_the_designed_properties_in_commit_order() {
    let app = TestApp::builder().rabbitmq().workers().start().await;
    let mut queue = TestQueue::bind().await;
    let db = app.sql().await;
    let user = UserId::new();
    let sub_id = app.seed_subscription(user, true, true).await;
    let token = app.token(user);

    let (status, _) = app
        .post("/api/v1/subscriptions/cancel", Some(&token), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .post("/api/v1/subscriptions/resume", Some(&token), json!({}))
        .await;
    assert_eq!(status, 200);

    let got = queue.wait_for(2, for_users(&[user])).await;
    let kinds: Vec<&str> = got.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "subscription.auto_renew_disabled",
            "subscription.auto_renew_enabled"
        ],
        "commit order"
    );
    assert!(
        got[0].seq() < got[1].seq(),
        "seq increases per subscription: {} then {}",
        got[0].seq(),
        got[1].seq()
    );

    let rows = db
        .query(
            "SELECT event_id, event_type, payload::text, occurred_at FROM outbox ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for (m, row) in got.iter().zip(&rows) {
        let event_id: Uuid = row.get(0);
        let event_type: String = row.get(1);
        let payload: String = row.get(2);
        let occurred_at: DateTime<Utc> = row.get(3);
        let p = &m.properties;

        assert_eq!(m.routing_key, event_type, "routing key = event type");
        assert_eq!(
            p.kind().as_ref().map(|s| s.as_str()),
            Some(event_type.as_str()),
            "type property"
        );
        assert_eq!(
            m.message_id(),
            Some(event_id.to_string().as_str()),
            "message_id = event id"
        );
        assert_eq!(m.body["id"], json!(event_id), "message_id = payload id");
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        assert_eq!(
            *p.timestamp(),
            Some(occurred_at.timestamp() as u64),
            "timestamp = occurred_at (unix s)"
        );
        assert_eq!(
            m.raw,
            payload.as_bytes(),
            "the body is the stored payload, byte for byte"
        );

        let b = &m.body;
        assert_eq!(b["type"], json!(event_type));
        assert_eq!(b["version"], json!(1));
        let body_time: DateTime<Utc> = b["occurred_at"]
            .as_str()
            .expect("occurred_at")
            .parse()
            .unwrap();
        assert_eq!(body_time, occurred_at);
        let d = &b["data"];
        assert_eq!(d["user_id"], json!(user));
        assert_eq!(d["subscription_id"], json!(sub_id));
        assert_eq!(d["status"], "active");
        assert_eq!(d["livemode"], false);
        assert!(
            d["seq"].as_i64().is_some_and(|s| s > 0),
            "seq: {}",
            d["seq"]
        );
        assert_eq!(d["tariff_id"], json!(MONTH_TARIFF));
        assert!(d["current_period_end"]
            .as_str()
            .is_some_and(|s| s.parse::<DateTime<Utc>>().is_ok()));
    }

    // Marked sent only after the ack: the backlog empties.
    eventually("both rows marked sent", || async {
        (unsent(&app).await == 0).then_some(())
    })
    .await;
    let metrics = app.metrics().await;
    for name in [
        "outbox_published_total",
        "outbox_publish_failures_total",
        "outbox_backlog",
        "outbox_oldest_unsent_seconds",
    ] {
        assert!(metrics.contains(name), "/metrics has {name}");
    }
    queue.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_rolled_back_change_publishes_nothing() {
    let mut app = TestApp::builder().rabbitmq().workers().start().await;
    let mut queue = TestQueue::bind().await;
    let user = UserId::new();
    let sub = app
        .subscription(app.seed_subscription(user, true, true).await)
        .await;

    let rolled_back = {
        let mut db = app.app().db.get().await.unwrap();
        let tx = db.transaction().await.unwrap();
        let id = events::record(
            &tx,
            EventType::SubscriptionAutoRenewDisabled,
            EventSubject::subscription(&sub),
        )
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        id
    };
    let committed = record_committed(&app, EventType::SubscriptionAutoRenewEnabled, &sub).await;

    let got = queue.wait_for(1, for_users(&[user])).await;
    assert_eq!(got[0].message_id(), Some(committed.to_string().as_str()));

    // Stop the relay (its batches finish) and read everything left in the queue.
    app.server.take().unwrap().stop().await;
    let rest = queue.drain(for_users(&[user])).await;
    let ids: Vec<&str> = got.iter().chain(&rest).map(|m| m.event_id()).collect();
    assert_eq!(
        ids,
        [committed.to_string()],
        "only the committed event; rolled back: {rolled_back}"
    );
    assert_eq!(
        app.outbox_types().await,
        ["subscription.auto_renew_enabled"]
    );
    queue.close().await;
}

#[tokio::test]
async fn events_wait_in_the_outbox_while_the_broker_is_unreachable_and_arrive_once_after_a_restart()
{
    // The harness points AMQP_URL at a closed port.
    let mut app = TestApp::builder().workers().start().await;
    let db = app.sql().await;
    let user = UserId::new();
    app.seed_subscription(user, true, true).await;
    let token = app.token(user);
    for path in ["cancel", "resume", "cancel"] {
        let (status, body) = app
            .post(
                &format!("/api/v1/subscriptions/{path}"),
                Some(&token),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{path} works without the broker: {body}");
    }
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, 200, "a broker outage is not fatal: {body}");
    assert_eq!(body["broker"], "down");
    assert_eq!(body["database"], "up");
    assert_eq!(body["outbox_backlog"], 3);

    let mut queue = TestQueue::bind().await;
    app.restart(with_broker, WITH_WORKERS).await;

    let got = queue.wait_for(3, for_users(&[user])).await;
    let kinds: Vec<&str> = got.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "subscription.auto_renew_disabled",
            "subscription.auto_renew_enabled",
            "subscription.auto_renew_disabled"
        ]
    );
    let ready: Value = eventually("readyz: broker up, backlog 0", || async {
        let (_, body) = app.get("/readyz", None).await;
        (body["broker"] == "up" && body["outbox_backlog"] == 0).then_some(body)
    })
    .await;
    assert_eq!(ready["oldest_unsent_s"], 0);

    app.server.take().unwrap().stop().await;
    let rest = queue.drain(for_users(&[user])).await;
    assert!(rest.is_empty(), "nothing was sent twice: {rest:#?}");
    let expected: Vec<String> = db
        .query("SELECT event_id::text FROM outbox ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ids: Vec<&str> = got.iter().map(|m| m.event_id()).collect();
    assert_eq!(ids, expected, "every event, once, in outbox order");
    queue.close().await;
}

/// Backends of this database holding an advisory lock (the elected relay).
async fn relay_lock_holders(db: &tokio_postgres::Client) -> Vec<i32> {
    db.query(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn two_relays_deliver_a_thousand_events_exactly_once() {
    const SUBSCRIPTIONS: usize = 10;
    const ROUNDS: usize = 100;

    let mut app = TestApp::builder().rabbitmq().workers().start().await;
    let db = app.sql().await;
    // The first server is elected before the second starts, so stopping it half-way
    // makes the standby take over.
    eventually("the first relay holds the lock", || async {
        (relay_lock_holders(&db).await.len() == 1).then_some(())
    })
    .await;
    let replica = app.start_replica(with_broker, WITH_WORKERS).await;
    let mut queue = TestQueue::bind().await;
    let users: Vec<UserId> = (0..SUBSCRIPTIONS).map(|_| UserId::new()).collect();
    let mut subs = Vec::new();
    for &user in &users {
        subs.push(
            app.subscription(app.seed_subscription(user, true, true).await)
                .await,
        );
    }

    // 100 commits of 10 events each, while the relays run.
    for round in 0..ROUNDS {
        if round == ROUNDS / 2 {
            app.server.take().unwrap().stop().await;
        }
        let mut client = replica.app.db.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        for sub in &subs {
            events::record(
                &tx,
                EventType::SubscriptionRenewed,
                EventSubject::subscription(sub),
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let total = SUBSCRIPTIONS * ROUNDS;
    assert_eq!(app.outbox_types().await.len(), total);

    eventually(
        "every row marked sent (by the replica after the first stopped)",
        || async { (unsent(&app).await == 0).then_some(()) },
    )
    .await;
    replica.stop().await;
    let got = queue.drain(for_users(&users)).await;

    let mut seen: HashMap<&str, usize> = HashMap::new();
    for m in &got {
        *seen.entry(m.event_id()).or_default() += 1;
    }
    let duplicates: Vec<(&str, usize)> = seen
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(id, &n)| (*id, n))
        .collect();
    let retried: i64 = db
        .query_one("SELECT count(*) FROM outbox WHERE attempts > 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        duplicates.is_empty(),
        "{} of {total} events arrived more than once ({} extra messages): {:?}. The advisory lock lets one relay \
         publish at a time, so a duplicate means the election failed (both replicas published the same row) or a \
         row was re-sent after an ack whose UPDATE failed ({retried} rows with attempts > 1).",
        duplicates.len(),
        got.len() - seen.len(),
        &duplicates[..duplicates.len().min(10)],
    );
    assert_eq!(
        seen.len(),
        total,
        "every event arrived: {} of {total}",
        seen.len()
    );

    // One relay publishing in id order keeps each subscription's events in seq order.
    let mut last_seq: HashMap<&str, i64> = HashMap::new();
    for m in &got {
        let sub = m.body["data"]["subscription_id"].as_str().unwrap();
        let prev = last_seq.insert(sub, m.seq()).unwrap_or(0);
        assert!(
            m.seq() > prev,
            "subscription {sub}: seq {} after {prev}",
            m.seq()
        );
    }
    queue.close().await;
}

#[tokio::test]
async fn the_relay_is_elected_again_when_its_lock_connection_dies() {
    let app = TestApp::builder().rabbitmq().workers().start().await;
    let mut queue = TestQueue::bind().await;
    let db = app.sql().await;
    let user = UserId::new();
    let sub = app
        .subscription(app.seed_subscription(user, true, true).await)
        .await;
    let first = eventually("a relay holds the lock", || async {
        relay_lock_holders(&db).await.pop()
    })
    .await;

    let killed: bool = db
        .query_one("SELECT pg_terminate_backend($1)", &[&first])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    let second = eventually(
        "the relay takes the lock again on a new session",
        || async {
            relay_lock_holders(&db)
                .await
                .pop()
                .filter(|&pid| pid != first)
        },
    )
    .await;
    assert_ne!(first, second);

    let id = record_committed(&app, EventType::SubscriptionAutoRenewDisabled, &sub).await;
    let got = queue.wait_for(1, for_users(&[user])).await;
    assert_eq!(got[0].event_id(), id.to_string());
    queue.close().await;
    app.stop().await;
}

#[tokio::test]
async fn relay_run_once_publishes_one_batch_and_returns_its_size() {
    // No workers: this test drives the relay by hand.
    let app = TestApp::start().await;
    let mut queue = TestQueue::bind().await;
    let user = UserId::new();
    let sub = app
        .subscription(app.seed_subscription(user, true, true).await)
        .await;
    for _ in 0..3 {
        record_committed(&app, EventType::SubscriptionRenewed, &sub).await;
    }
    let broker = relay::Broker::connect(AMQP_URL)
        .await
        .expect("RabbitMQ is running");
    let pool = &app.app().db;
    assert_eq!(relay::run_once(pool, broker.channel(), 2).await.unwrap(), 2);
    assert_eq!(unsent(&app).await, 1);
    assert_eq!(relay::run_once(pool, broker.channel(), 2).await.unwrap(), 1);
    assert_eq!(relay::run_once(pool, broker.channel(), 2).await.unwrap(), 0);
    broker.close().await;

    let got = queue.wait_for(3, for_users(&[user])).await;
    let seqs: Vec<i64> = got.iter().map(|m| m.seq()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    let attempts: Vec<i32> = app
        .sql()
        .await
        .query("SELECT attempts FROM outbox ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(attempts, [1, 1, 1]);
    queue.close().await;
    app.stop().await;
}

#[tokio::test]
async fn retention_sweep_deletes_only_sent_rows_older_than_the_limit() {
    // No workers, so no relay publishes the old unsent row behind the test's back.
    let app = TestApp::builder()
        .config(|c| c.outbox_retention = Duration::from_secs(2 * 86_400))
        .start()
        .await;
    let retention = app.app().config.outbox_retention;
    assert_eq!(retention, Duration::from_secs(2 * 86_400));
    let db = app.sql().await;
    let old_sent = db
        .execute(
            "INSERT INTO outbox (event_id, event_type, payload, occurred_at, created_at, sent_at) \
             SELECT gen_random_uuid(), 'subscription.renewed', '{}', now() - interval '4 days', \
                    now() - interval '4 days', now() - interval '3 days' \
             FROM generate_series(1, 1500)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(old_sent, 1500);
    let keep: Vec<i64> = db
        .query(
            "INSERT INTO outbox (event_id, event_type, payload, occurred_at, created_at, sent_at) VALUES \
             (gen_random_uuid(), 'subscription.expired', '{}', now() - interval '30 days', \
              now() - interval '30 days', NULL), \
             (gen_random_uuid(), 'subscription.renewed', '{}', now() - interval '1 day', \
              now() - interval '1 day', now() - interval '1 day') \
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    let mut batches = Vec::new();
    loop {
        let n = outbox_retention::run_once(app.app()).await.unwrap();
        batches.push(n);
        if n == 0 {
            break;
        }
    }
    assert_eq!(batches, [1000, 500, 0], "1 000 rows per statement");
    let left: Vec<i64> = db
        .query("SELECT id FROM outbox ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        left, keep,
        "the old unsent row and the recently sent row stay"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_purchase_publishes_payment_succeeded_then_subscription_activated() {
    let app = TestApp::builder()
        .fake_yookassa()
        .rabbitmq()
        .workers()
        .start()
        .await;
    let fake = app.yookassa();
    let mut queue = TestQueue::bind().await;
    let user = UserId::new();
    let (status, body) = app.buy(user, MONTH_TARIFF, true, None).await;
    assert_eq!(status, 201, "{body}");
    let payment_id = payment_id(&body);
    let pid = app.provider_id(payment_id).await;
    fake.settle(&pid, billing::providers::sandbox::Outcome::Succeed);
    assert_eq!(fake.notify(&pid).await.unwrap(), 200);

    let got = queue.wait_for(2, for_users(&[user])).await;
    let kinds: Vec<&str> = got.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(kinds, ["payment.succeeded", "subscription.activated"]);
    for m in &got {
        assert_eq!(m.message_id(), Some(m.event_id()));
        assert_eq!(
            m.properties.kind().as_ref().map(|t| t.as_str()),
            Some(m.routing_key.as_str())
        );
        assert_eq!(
            m.properties.content_type().as_ref().map(|t| t.as_str()),
            Some("application/json")
        );
        assert_eq!(*m.properties.delivery_mode(), Some(2), "persistent");
        assert!(m.properties.timestamp().is_some());
        assert_eq!(m.body["version"], 1);
        assert_eq!(m.body["data"]["payment_id"], payment_id.to_string());
        assert_eq!(
            m.body["data"]["amount"],
            json!({"value": "299.00", "currency": "RUB"})
        );
        assert_eq!(m.body["data"]["livemode"], false);
        assert_eq!(m.body["data"]["tariff_id"], MONTH_TARIFF);
        assert!(m.body["data"]["subscription_id"].is_string());
        assert!(m.body["data"]["current_period_end"].is_string());
    }
    assert_eq!(
        got[0].body["data"]["status"], "succeeded",
        "payment events carry the payment's status"
    );
    assert_eq!(got[1].body["data"]["status"], "active");
    assert_eq!(got[0].body["data"]["provider"], "yookassa");
    assert!(got[0].seq() < got[1].seq());
}
