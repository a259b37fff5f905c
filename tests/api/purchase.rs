//! The purchase flow: buy, YooKassa (a fake over real HTTP), webhook confirmation.

use crate::helpers::*;
use billing::domain::{InboxStatus, PaymentId, PaymentStatus, SubscriptionStatus, UserId};
use billing::providers::sandbox::Outcome;
use serde_json::{json, Value};
use uuid::Uuid;

async fn bought(app: &TestApp, user: UserId, renew: bool) -> (PaymentId, String) {
    let (status, body) = app.buy(user, MONTH_TARIFF, renew, None).await;
    assert_eq!(status, 201, "{body}");
    let id = payment_id(&body);
    let provider_id = app.provider_id(id).await;
    (id, provider_id)
}

#[tokio::test]
async fn the_full_purchase_activates_a_subscription_for_one_period() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let (status, body) = app.buy(user, MONTH_TARIFF, true, None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(
        body["amount"],
        json!({"value": "299.00", "currency": "RUB"})
    );
    assert!(body["confirmation_url"]
        .as_str()
        .unwrap()
        .contains("/sandbox/checkout/"));
    let payment_id = payment_id(&body);
    let pid = app.provider_id(payment_id).await;

    let sent = fake.payment(&pid).unwrap();
    assert_eq!(
        sent["metadata"]["payment_id"],
        payment_id.to_string(),
        "our id travels in metadata"
    );

    let settled = fake.settle(&pid, Outcome::Succeed).unwrap();
    assert_eq!(fake.notify(&pid).await.unwrap(), 200);

    let (status, sub) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    assert_eq!(status, 200, "{sub}");
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["auto_renew"], true);
    assert_eq!(sub["payment_method"], "Bank card *4444");
    let captured =
        chrono::DateTime::parse_from_rfc3339(settled["captured_at"].as_str().unwrap()).unwrap();
    let end =
        chrono::DateTime::parse_from_rfc3339(sub["current_period_end"].as_str().unwrap()).unwrap();
    assert_eq!(
        end.timestamp(),
        captured
            .checked_add_months(chrono::Months::new(1))
            .unwrap()
            .timestamp()
    );

    let (_, history) = app
        .get("/api/v1/payments/profile", Some(&app.token(user)))
        .await;
    assert_eq!(history[0]["status"], "succeeded");
    assert_eq!(history[0]["subscription_id"], sub["id"]);
    assert_eq!(
        app.outbox_types().await,
        ["payment.succeeded", "subscription.activated"]
    );
}

#[tokio::test]
async fn twenty_concurrent_identical_notifications_activate_once() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let (_, pid) = bought(&app, user, false).await;
    let object = fake.settle(&pid, Outcome::Succeed).unwrap();
    let sends = (0..20).map(|_| app.notify("payment.succeeded", &object));
    let statuses = futures::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(app.subscriptions().await.len(), 1);
    let types = app.outbox_types().await;
    assert_eq!(count(&types, "subscription.activated"), 1, "{types:?}");
    assert_eq!(count(&types, "payment.succeeded"), 1);
    let inbox = app.inbox().await;
    assert_eq!(inbox.len(), 1, "one notification, delivered 20 times");
    assert_eq!(inbox[0].deliveries, 20);
}

async fn deliver_in_order(
    final_outcome: Outcome,
    order: &[&str],
) -> (PaymentStatus, usize, Vec<String>) {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let (id, pid) = bought(&app, user, false).await;
    let base = fake.payment(&pid).unwrap();
    fake.settle(&pid, final_outcome);
    for event in order {
        // Each body claims its own status; the provider's answer decides.
        let mut object = base.clone();
        object["status"] = json!(event.trim_start_matches("payment."));
        assert_eq!(app.notify(event, &object).await, 200);
    }
    let status = app.payment(id).await.status;
    let subs = app.subscriptions().await.len();
    let types = app.outbox_types().await;
    (status, subs, types)
}

#[tokio::test]
async fn every_order_of_notifications_ends_in_the_providers_final_state() {
    let events = [
        "payment.waiting_for_capture",
        "payment.succeeded",
        "payment.canceled",
    ];
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for order in orders {
        let seq: Vec<&str> = order.iter().map(|i| events[*i]).collect();
        let (status, subs, types) = deliver_in_order(Outcome::Succeed, &seq).await;
        assert_eq!((status, subs), (PaymentStatus::Succeeded, 1), "{seq:?}");
        assert_eq!(
            types,
            ["payment.succeeded", "subscription.activated"],
            "{seq:?}"
        );
        let (status, subs, types) =
            deliver_in_order(Outcome::Decline("insufficient_funds".into()), &seq).await;
        assert_eq!((status, subs), (PaymentStatus::Canceled, 0), "{seq:?}");
        assert_eq!(types, ["payment.canceled"], "{seq:?}");
    }
}

#[tokio::test]
async fn a_stale_waiting_for_capture_after_success_changes_nothing() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let (_, pid) = bought(&app, user, false).await;
    let waiting = fake.settle(&pid, Outcome::WaitForCapture).unwrap();
    assert_eq!(
        app.notify("payment.waiting_for_capture", &waiting).await,
        200
    );
    assert_eq!(
        app.payments_with(PaymentStatus::WaitingForCapture)
            .await
            .len(),
        1
    );
    assert_eq!(
        app.subscriptions().await.len(),
        0,
        "waiting_for_capture grants nothing"
    );

    let done = fake.settle(&pid, Outcome::Succeed).unwrap();
    assert_eq!(app.notify("payment.succeeded", &done).await, 200);
    assert_eq!(
        app.notify("payment.waiting_for_capture", &waiting).await,
        200
    );
    assert_eq!(app.payments_with(PaymentStatus::Succeeded).await.len(), 1);
    assert_eq!(
        app.outbox_types().await,
        ["payment.succeeded", "subscription.activated"]
    );
}

#[tokio::test]
async fn a_forged_success_activates_nothing_and_does_not_block_the_genuine_one() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let (_, pid) = bought(&app, user, false).await;
    let mut forged = fake.payment(&pid).unwrap();
    forged["status"] = json!("succeeded");
    forged["paid"] = json!(true);
    assert_eq!(app.notify("payment.succeeded", &forged).await, 200);
    assert_eq!(app.subscriptions().await.len(), 0);
    assert_eq!(app.payments_with(PaymentStatus::Pending).await.len(), 1);
    assert_eq!(app.inbox_with(InboxStatus::Ignored).await.len(), 1);

    let genuine = fake.settle(&pid, Outcome::Succeed).unwrap();
    assert_eq!(app.notify("payment.succeeded", &genuine).await, 200);
    assert_eq!(
        app.subscriptions_with(SubscriptionStatus::Active)
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn an_amount_mismatch_grants_nothing_and_is_counted() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let (id, pid) = bought(&app, user, false).await;
    fake.patch(&pid, "amount", json!({"value": "2.99", "currency": "RUB"}));
    fake.settle(&pid, Outcome::Succeed);
    assert_eq!(fake.notify(&pid).await.unwrap(), 200);
    assert_eq!(app.subscriptions().await.len(), 0);
    let review = app.payment(id).await.review_reason;
    assert!(review.unwrap().contains("amount"));
    let metrics = app.metrics().await;
    assert!(metrics.contains("payments_needs_review_total"), "{metrics}");
    assert!(app.outbox_types().await.is_empty());
}

#[tokio::test]
async fn a_currency_mismatch_grants_nothing() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (_, pid) = bought(&app, UserId::new(), false).await;
    fake.patch(
        &pid,
        "amount",
        json!({"value": "299.00", "currency": "USD"}),
    );
    fake.settle(&pid, Outcome::Succeed);
    fake.notify(&pid).await.unwrap();
    assert_eq!(app.subscriptions().await.len(), 0);
    let in_review = app.payments().await;
    assert_eq!(
        in_review
            .iter()
            .filter(|p| p.review_reason.is_some())
            .count(),
        1
    );
}

#[tokio::test]
async fn a_disallowed_ip_is_403_and_stores_nothing() {
    // Default allow-list: YooKassa's ranges only (test mode does not add loopback).
    let app = TestApp::builder()
        .fake_yookassa()
        .config(|c| {
            c.yookassa.allowed_ips = yookassa_ips();
            c.trusted_proxies = cidrs("127.0.0.1/32");
        })
        .start()
        .await;
    let fake = app.yookassa();
    let (_, pid) = bought(&app, UserId::new(), false).await;
    let object = fake.settle(&pid, Outcome::Succeed).unwrap();
    assert_eq!(app.notify("payment.succeeded", &object).await, 403);
    let body = json!({"type": "notification", "event": "payment.succeeded", "object": object});
    let spoofed = app
        .http
        .post(format!("{}/webhooks/yookassa", app.url))
        .header("x-forwarded-for", "185.71.76.5, 8.8.8.8")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        spoofed.status(),
        403,
        "the rightmost untrusted hop is 8.8.8.8"
    );
    assert_eq!(app.inbox().await.len(), 0);

    // Through our trusted proxy from YooKassa's range: accepted.
    let via_proxy = app
        .http
        .post(format!("{}/webhooks/yookassa", app.url))
        .header("x-forwarded-for", "185.71.76.5")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(via_proxy.status(), 200);
    assert_eq!(app.subscriptions().await.len(), 1);
}

async fn ops_post(app: &TestApp, body: &Value, id: &str, ts: i64, key: &[u8]) -> u16 {
    let raw = serde_json::to_vec(body).unwrap();
    let sig = billing::http::webhook_auth::sign_ops(key, id, ts, &raw);
    app.http
        .post(format!("{}/webhooks/yookassa", app.url))
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn ops_signatures_decide_whatever_the_ip() {
    let app = TestApp::builder()
        .fake_yookassa()
        .config(|c| c.yookassa.allowed_ips = yookassa_ips())
        .start()
        .await;
    let fake = app.yookassa();
    let key = billing::config::decode_whsec(OPS_SECRET).unwrap();
    let (_, pid) = bought(&app, UserId::new(), false).await;
    let object = fake.settle(&pid, Outcome::Succeed).unwrap();
    let body = json!({"type": "notification", "event": "payment.succeeded", "object": object});
    let now = chrono::Utc::now().timestamp();

    assert_eq!(
        ops_post(&app, &body, "msg_bad", now, b"another-key-0123456789").await,
        401,
        "bad signature"
    );
    assert_eq!(
        ops_post(&app, &body, "msg_old", now - 301, &key).await,
        401,
        "stale"
    );
    assert_eq!(app.inbox().await.len(), 0, "rejections store nothing");

    assert_eq!(
        ops_post(&app, &body, "msg_1", now, &key).await,
        200,
        "a valid signature from a disallowed IP"
    );
    assert_eq!(app.subscriptions().await.len(), 1);
    assert_eq!(
        ops_post(&app, &body, "msg_1", now, &key).await,
        401,
        "a webhook-id is used once"
    );
    assert_eq!(app.inbox().await.len(), 1);
}

#[tokio::test]
async fn a_provider_that_times_out_on_reread_is_retried_by_the_worker() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let (_, pid) = bought(&app, user, false).await;
    let object = fake.settle(&pid, Outcome::Succeed).unwrap();
    fake.set_get_delay(Some(std::time::Duration::from_secs(8)));
    // The webhook answers 200 once the row is stored, even though the re-read hangs.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(7))
        .build()
        .unwrap();
    let resp = client
        .post(format!("{}/webhooks/yookassa", app.url))
        .json(&json!({"type": "notification", "event": "payment.succeeded", "object": object}))
        .send()
        .await
        .expect("answered within the client's 7 s");
    assert_eq!(resp.status(), 200);
    assert_eq!(app.subscriptions().await.len(), 0);
    assert_eq!(app.inbox_with(InboxStatus::Received).await.len(), 1);

    fake.set_get_delay(None);
    app.make_inbox_due().await;
    let n = billing::jobs::inbox_retry::run_once(app.app())
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        app.subscriptions_with(SubscriptionStatus::Active)
            .await
            .len(),
        1
    );
    assert_eq!(app.inbox_with(InboxStatus::Processed).await.len(), 1);
}

#[tokio::test]
async fn unknown_events_and_unknown_payments_are_200_and_ignored() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fixture: Value = serde_json::from_str(include_str!(
        "../../fixtures/yookassa/unknown.payout.succeeded.json"
    ))
    .unwrap();
    let status = app
        .notify(fixture["event"].as_str().unwrap(), &fixture["object"])
        .await;
    assert_eq!(status, 200);
    let fixture: Value = serde_json::from_str(include_str!(
        "../../fixtures/yookassa/payment.succeeded.json"
    ))
    .unwrap();
    assert_eq!(
        app.notify("payment.succeeded", &fixture["object"]).await,
        200,
        "not at the provider"
    );
    assert_eq!(app.inbox_with(InboxStatus::Ignored).await.len(), 2);
    let (status, _) = {
        let r = app
            .http
            .post(format!("{}/webhooks/yookassa", app.url))
            .body("{not json")
            .send()
            .await
            .unwrap();
        read(r).await
    };
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_payment_and_calls_the_provider_once() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let (s1, first) = app.buy(user, MONTH_TARIFF, true, Some("order-1")).await;
    let (s2, second) = app.buy(user, MONTH_TARIFF, true, Some("order-1")).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first, second);
    assert_eq!(fake.creates(), 1);
    assert_eq!(app.payments().await.len(), 1);

    let (status, body) = app.buy(user, MONTH_TARIFF, false, Some("order-1")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "idempotency_key_reused");

    // Another user's identical key is theirs alone.
    let (status, other) = app
        .buy(UserId::new(), MONTH_TARIFF, true, Some("order-1"))
        .await;
    assert_eq!(status, 201);
    assert_ne!(other["payment_id"], first["payment_id"]);

    // While the first request with a key is still running: 409.
    app.sql()
        .await
        .execute(
            "UPDATE idempotency_keys SET response_code = NULL, response_body = NULL, \
             locked_until = now() + interval '1 minute' WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    let (status, body) = app.buy(user, MONTH_TARIFF, true, Some("order-1")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "request_in_progress");
}

#[tokio::test]
async fn a_crashed_request_is_resumed_with_the_same_provider_key() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    fake.fail_creates(10);
    let (status, body) = app.buy(user, MONTH_TARIFF, false, Some("k-502")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "provider_unavailable");
    let unsent = app.payments_with(PaymentStatus::Pending).await;
    assert_eq!(
        unsent
            .iter()
            .filter(|p| p.provider_payment_id.is_none())
            .count(),
        1
    );

    fake.fail_creates(0);
    let (status, body) = app.buy(user, MONTH_TARIFF, false, Some("k-502")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        app.payments().await.len(),
        1,
        "resumed, not a second payment"
    );
    let key = app.payments().await[0].provider_idempotence_key.clone();
    assert!(
        fake.requests_with_key(&key) >= 2,
        "the same key was re-sent"
    );
    assert_eq!(fake.creates(), 1);
}

#[tokio::test]
async fn a_lost_create_answer_is_retried_with_the_same_key_and_creates_once() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    fake.lose_create_answers(1);
    let (status, body) = app.buy(UserId::new(), MONTH_TARIFF, false, None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(fake.creates(), 1);
    let created = app.payments().await;
    assert_eq!(
        created
            .iter()
            .filter(|p| p.provider_payment_id.is_some())
            .count(),
        1
    );
}

#[tokio::test]
async fn an_answer_later_than_the_provider_timeout_is_asked_again_with_the_same_key() {
    let app = TestApp::builder()
        .fake_yookassa()
        .config(|c| c.provider_timeout = std::time::Duration::from_millis(300))
        .start()
        .await;
    let fake = app.yookassa();
    // YooKassa makes the payment at once and answers after the service gave up.
    fake.set_late_create_answers(Some(std::time::Duration::from_millis(600)));
    let (status, body) = app.buy(UserId::new(), MONTH_TARIFF, false, None).await;
    fake.set_late_create_answers(None);
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("provider_unavailable")),
        "an answer that never came is an unknown outcome: {body}"
    );
    assert_eq!(fake.creates(), 1);
    let key = app.payments().await[0].provider_idempotence_key.clone();
    let sent = fake.requests_with_key(&key);
    assert!(sent >= 2, "the same key was re-sent ({sent})");

    // The reconciler re-sends the key once answers come in time: the same payment.
    app.sql()
        .await
        .execute("UPDATE payments SET next_check_at = now()", &[])
        .await
        .unwrap();
    billing::jobs::reconciler::run_once(app.app())
        .await
        .unwrap();
    assert_eq!(fake.creates(), 1, "never a second payment");
    let payments = app.payments().await;
    assert_eq!(payments.len(), 1);
    assert!(payments[0].provider_payment_id.is_some(), "{payments:?}");
}

#[tokio::test]
async fn buy_rejects_conflicts_unknowns_and_bad_input() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let (_, pid) = bought(&app, user, false).await;
    fake.settle(&pid, Outcome::Succeed);
    fake.notify(&pid).await.unwrap();

    let (status, body) = app.buy(user, YEAR_TARIFF, false, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "tariff_conflict");
    let (status, _) = app.buy(user, MONTH_TARIFF, false, None).await;
    assert_eq!(status, 201, "the same tariff extends");

    let (status, body) = app
        .buy(user, &Uuid::new_v4().to_string(), false, None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("tariff_not_found"))
    );

    let token = app.token(user);
    let post = |path: &str, body: &str| {
        app.http
            .post(format!("{}{path}", app.url))
            .header("authorization", &token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };
    let cases = [
        (
            "/api/v1/subscriptions/cloudpayments/buy",
            format!(r#"{{"tariff_id":"{MONTH_TARIFF}","renew":false}}"#),
            404,
        ),
        (
            "/api/v1/subscriptions/paypal/buy",
            format!(r#"{{"tariff_id":"{MONTH_TARIFF}","renew":false}}"#),
            404,
        ),
        (
            "/api/v1/subscriptions/yookassa/buy",
            "{not json".to_owned(),
            400,
        ),
        (
            "/api/v1/subscriptions/yookassa/buy",
            r#"{"tariff_id":"nope","renew":false}"#.to_owned(),
            400,
        ),
        (
            "/api/v1/subscriptions/yookassa/buy",
            format!(r#"{{"tariff_id":"{MONTH_TARIFF}"}}"#),
            400,
        ),
        (
            "/api/v1/subscriptions/yookassa/buy",
            format!(
                r#"{{"tariff_id":"{MONTH_TARIFF}","renew":false,"return_url":"https://evil.example/x"}}"#
            ),
            400,
        ),
        (
            "/api/v1/subscriptions/yookassa/buy",
            format!(
                r#"{{"tariff_id":"{MONTH_TARIFF}","renew":false,"return_url":"javascript:alert(1)"}}"#
            ),
            400,
        ),
    ];
    let before = app.payments().await.len();
    for (path, body, expected) in cases {
        let resp = post(path, &body).await.unwrap();
        let (status, json) = read(resp).await;
        assert_eq!(status, expected, "{path} {body}: {json}");
        assert!(json["code"].is_string());
    }
    assert_eq!(
        app.payments().await.len(),
        before,
        "bad input changes nothing"
    );
    let (status, _) = read(
        app.http
            .post(format!("{}/api/v1/subscriptions/yookassa/buy", app.url))
            .json(&json!({"tariff_id": MONTH_TARIFF, "renew": false}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    let chunked = futures::stream::iter((0..70).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let resp = app
        .http
        .post(format!("{}/api/v1/subscriptions/yookassa/buy", app.url))
        .header("authorization", &token)
        .body(reqwest::Body::wrap_stream(chunked))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413, "a chunked body over 64 KiB");
}

#[tokio::test]
async fn a_pending_renewal_blocks_a_purchase_with_409() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let db = app.sql().await;
    let sub = app.seed_subscription(user, true, true).await;
    db.execute(
        "INSERT INTO payments (id, user_id, tariff_id, subscription_id, pay_system, kind, status, amount_minor, currency, \
         renew, description, provider_idempotence_key, livemode, period_start) \
         SELECT $1, user_id, tariff_id, id, 'yookassa', 'renewal', 'pending', 29900, 'RUB', true, 'renewal', 'k', false, \
         current_period_end FROM subscriptions WHERE id = $2",
        &[&Uuid::new_v4(), &sub],
    )
    .await
    .unwrap();
    let (status, body) = app.buy(user, MONTH_TARIFF, false, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "renewal_pending");
}

#[tokio::test]
async fn the_sandbox_checkout_page_completes_a_purchase_end_to_end() {
    // No provider configuration at all: sandbox mode, the built-in provider.
    let app = TestApp::start().await;
    let user = UserId::new();
    let (status, body) = app.buy(user, MONTH_TARIFF, true, None).await;
    assert_eq!(status, 201, "{body}");
    let page_url = body["confirmation_url"].as_str().unwrap().to_owned();
    assert!(page_url.starts_with(&app.url), "{page_url}");

    let page = app
        .http
        .get(&page_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("SANDBOX") && page.contains("Pay") && page.contains("Decline"),
        "{page}"
    );

    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirect
        .post(&page_url)
        .form(&[("action", "pay"), ("card", "4444")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert!(resp.headers()["location"]
        .to_str()
        .unwrap()
        .contains("/sandbox/return"));

    let (status, sub) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    assert_eq!(status, 200, "{sub}");
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["payment_method"], "Bank card *4444");
    let (_, payments) = app
        .get("/api/v1/payments/profile", Some(&app.token(user)))
        .await;
    assert_eq!(payments[0]["status"], "succeeded");
    assert_eq!(payments[0]["livemode"], false);
}

#[tokio::test]
async fn a_declined_sandbox_card_cancels_the_payment() {
    let app = TestApp::start().await;
    let user = UserId::new();
    let (_, body) = app.buy(user, MONTH_TARIFF, false, None).await;
    let page_url = body["confirmation_url"].as_str().unwrap();
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    no_redirect
        .post(page_url)
        .form(&[("action", "pay"), ("card", "0002")])
        .send()
        .await
        .unwrap();
    let (_, payments) = app
        .get("/api/v1/payments/profile", Some(&app.token(user)))
        .await;
    assert_eq!(payments[0]["status"], "canceled");
    assert_eq!(payments[0]["cancellation_reason"], "insufficient_funds");
    let (status, _) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn billing_replay_signs_fixtures_and_the_service_accepts_them_once() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let (payment_id, pid) = bought(&app, user, false).await;
    fake.settle(&pid, Outcome::Succeed);
    // `billing replay` reads the service's configuration: its database and OPS_WEBHOOK_SECRET.
    let config = &app.app().config;
    let files = vec![std::path::PathBuf::from(
        "fixtures/yookassa/payment.succeeded.json",
    )];
    let ok = billing::replay::run(config, &files, &app.url, Some(&payment_id.to_string()))
        .await
        .unwrap();
    assert!(ok);
    assert_eq!(
        app.subscriptions_with(SubscriptionStatus::Active)
            .await
            .len(),
        1
    );
    // A second replay has a fresh webhook-id and is processed again, changing nothing.
    assert!(
        billing::replay::run(config, &files, &app.url, Some(&payment_id.to_string()))
            .await
            .unwrap()
    );
    assert_eq!(
        app.outbox_types().await,
        ["payment.succeeded", "subscription.activated"]
    );
    let replayed = app.inbox().await;
    assert_eq!(
        replayed
            .iter()
            .filter(|r| r.ops_webhook_id.is_some())
            .count(),
        2
    );
}

#[tokio::test]
async fn a_forged_forwarded_for_line_before_the_proxys_own_line_is_not_believed() {
    // Behind a proxy that appends its own X-Forwarded-For line, the sender's forged
    // line comes first; the hops of all lines, in order, form one list.
    let app = TestApp::builder()
        .fake_yookassa()
        .config(|c| {
            c.yookassa.allowed_ips = yookassa_ips();
            c.trusted_proxies = cidrs("127.0.0.1/32");
        })
        .start()
        .await;
    let fake = app.yookassa();
    let (_, pid) = bought(&app, UserId::new(), false).await;
    let object = fake.settle(&pid, Outcome::Succeed).unwrap();
    let body = json!({"type": "notification", "event": "payment.succeeded", "object": object});
    let forged = app
        .http
        .post(format!("{}/webhooks/yookassa", app.url))
        .header("x-forwarded-for", "185.71.76.5")
        .header("x-forwarded-for", "8.8.8.8")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        403,
        "the proxy's line names 8.8.8.8 as the sender"
    );
    assert_eq!(app.inbox().await.len(), 0);
    assert_eq!(app.subscriptions().await.len(), 0);
}

#[tokio::test]
async fn deadlocks_serialization_failures_and_unique_violations_leave_the_inbox_row_for_retry() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    // A fault injected in the real database: every payment update raises the SQLSTATE
    // named in `fault` while it has a row.
    app.sql()
        .await
        .batch_execute(
            "CREATE TABLE fault (code text NOT NULL); \
             CREATE FUNCTION raise_fault() RETURNS trigger LANGUAGE plpgsql AS $$ \
             DECLARE c text; BEGIN SELECT code INTO c FROM fault LIMIT 1; \
             IF c IS NOT NULL THEN RAISE EXCEPTION 'injected fault %', c USING ERRCODE = c; END IF; \
             RETURN NEW; END $$; \
             CREATE TRIGGER payments_fault BEFORE UPDATE ON payments FOR EACH ROW EXECUTE FUNCTION raise_fault();",
        )
        .await
        .unwrap();
    for code in ["40P01", "40001", "23505"] {
        let (_, pid) = bought(&app, UserId::new(), false).await;
        let object = fake.settle(&pid, Outcome::Succeed).unwrap();
        let db = app.sql().await;
        db.execute("INSERT INTO fault VALUES ($1)", &[&code])
            .await
            .unwrap();
        assert_eq!(app.notify("payment.succeeded", &object).await, 200);
        assert_eq!(
            app.inbox_status(&pid).await,
            InboxStatus::Received,
            "SQLSTATE {code} is retried, not failed"
        );

        db.execute("DELETE FROM fault", &[]).await.unwrap();
        db.execute(
            "UPDATE webhook_inbox SET next_attempt_at = now() WHERE object_id = $1",
            &[&pid],
        )
        .await
        .unwrap();
        billing::jobs::inbox_retry::run_once(app.app())
            .await
            .unwrap();
        assert_eq!(
            app.inbox_status(&pid).await,
            InboxStatus::Processed,
            "after SQLSTATE {code} cleared"
        );
    }
    assert_eq!(
        app.subscriptions_with(SubscriptionStatus::Active)
            .await
            .len(),
        3,
        "each viewer got the access they paid for"
    );

    // A fault that outlasts a day fails the row (and alerts), as any transient error does.
    let (_, pid) = bought(&app, UserId::new(), false).await;
    let object = fake.settle(&pid, Outcome::Succeed).unwrap();
    let db = app.sql().await;
    db.execute("INSERT INTO fault VALUES ('40P01')", &[])
        .await
        .unwrap();
    assert_eq!(app.notify("payment.succeeded", &object).await, 200);
    db.execute(
        "UPDATE webhook_inbox SET next_attempt_at = now(), received_at = now() - interval '25 hours' \
         WHERE object_id = $1",
        &[&pid],
    )
    .await
    .unwrap();
    billing::jobs::inbox_retry::run_once(app.app())
        .await
        .unwrap();
    assert_eq!(app.inbox_status(&pid).await, InboxStatus::Failed);
}

/// Seed 1831's other face: a purchase whose create answer was cut off is resumed by
/// the client's retry with the same Idempotency-Key while YooKassa refuses our
/// credentials. The refusal of the re-send must not fail a payment the first send
/// may have made: it stays pending, and the reconciler adopts the checkout.
#[tokio::test]
async fn a_refused_retry_of_a_purchase_whose_answer_was_cut_off_keeps_it_open() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    fake.garble_create_answers(1_000, billing::providers::sandbox::Garble::CutOff);
    let (status, body) = app.buy(user, MONTH_TARIFF, true, Some("buy-1")).await;
    fake.garble_create_answers(0, billing::providers::sandbox::Garble::CutOff);
    assert_eq!(status, 502, "{body}");
    assert_eq!(fake.payments().len(), 1, "made at the provider");

    fake.refuse_creates(Some((401, "invalid_credentials", None)));
    let (status, body) = app.buy(user, MONTH_TARIFF, true, Some("buy-1")).await;
    fake.refuse_creates(None);
    assert_eq!(status, 502, "{body}");
    let payments = app.payments().await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0].status, PaymentStatus::Pending);

    app.make_checks_due().await;
    billing::jobs::reconciler::run_once(app.app())
        .await
        .unwrap();
    let payment = app.payment(payments[0].id).await;
    assert_eq!(
        payment.status,
        PaymentStatus::Pending,
        "awaiting the viewer"
    );
    let pid = payment
        .provider_payment_id
        .expect("the checkout was adopted");
    fake.settle(&pid, Outcome::Succeed).unwrap();
    assert_eq!(fake.notify(&pid).await.unwrap(), 200);
    assert_eq!(
        app.payment(payments[0].id).await.status,
        PaymentStatus::Succeeded
    );
    assert_eq!(fake.payments().len(), 1, "one payment at the provider");
}

/// What a viewer sees in the sandbox (issue 16's findings in Chromium): the return
/// page tells a declined payment from a paid one, every page is sized for a
/// phone and carries the banner, a paid checkout does not offer to pay again.
#[tokio::test]
async fn the_sandbox_pages_tell_the_viewer_the_outcome() {
    let app = TestApp::start().await;
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |url: String| {
        let http = app.http.clone();
        async move {
            let resp = http.get(&url).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let mut pages = vec![];
    for (card, action, heading) in [
        ("4444", "pay", "<h1>Paid</h1>"),
        ("0002", "pay", "<h1>Declined</h1>"),
        ("4444", "decline", "<h1>Declined</h1>"),
    ] {
        let (status, body) = app.buy(UserId::new(), MONTH_TARIFF, false, None).await;
        assert_eq!(status, 201, "{body}");
        let checkout = body["confirmation_url"].as_str().unwrap().to_owned();
        let resp = no_redirect
            .post(&checkout)
            .form(&[("action", action), ("card", card)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303);
        let back = resp.headers()["location"].to_str().unwrap().to_owned();
        assert!(back.contains("/sandbox/return?payment="), "{back}");
        let (status, page) = get(back).await;
        assert_eq!(status, 200);
        assert!(page.contains(heading), "{card} {action}: {page}");
        if heading.contains("Declined") {
            assert!(!page.contains("Thank you"), "{page}");
        }
        // Reopened after paying, the checkout says so and offers no Pay button.
        let (status, again) = get(checkout.clone()).await;
        assert_eq!(status, 200);
        assert!(
            !again.contains("<button") && !again.contains("<h1>Pay "),
            "{again}"
        );
        pages.push(page);
        pages.push(again);
    }
    let declined_why = &pages[2];
    assert!(
        declined_why.contains("insufficient_funds"),
        "{declined_why}"
    );
    let (status, unknown) = get(format!("{}/sandbox/checkout/nope", app.url)).await;
    assert_eq!(status, 404);
    let (status, untold) = get(format!("{}/sandbox/return", app.url)).await;
    assert_eq!(status, 200);
    assert!(!untold.contains("Thank you"), "{untold}");
    for page in pages.iter().chain([&unknown, &untold]) {
        assert!(page.contains("<html lang=en>"), "{page}");
        assert!(page.contains("name=viewport"), "{page}");
        assert!(page.contains("SANDBOX: no real money moves."), "{page}");
    }
    let (status, _) = get(format!("{}/favicon.ico", app.url)).await;
    assert_eq!(status, 204);
}
