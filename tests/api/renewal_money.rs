//! Renewals and provider answers that must never cost the viewer access they paid
//! for, nor money twice (issue 10: scenarios 1, 2, 5, 6 and 10). Black-box: the real
//! service and PostgreSQL, the fake providers over real HTTP with their fault knobs,
//! and the clock moved by rewriting rows.

use crate::helpers::*;
use billing::domain::{
    PaySystem, PaymentId, PaymentStatus, SubscriptionId, SubscriptionStatus, UserId,
};
use billing::jobs::{expirer, reconciler, renewer};
use billing::providers::sandbox::{Garble, Outcome};
use billing::service::create;
use billing::store::Subscription;
use chrono::{DateTime, Duration, Months, SecondsFormat, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

// ----- helpers -----

/// Moves the period end `ago` into the past, keeping one month before it.
async fn end_period_ago(db: &tokio_postgres::Client, sub: SubscriptionId, ago: &str) {
    db.execute(
        &format!(
            "UPDATE subscriptions SET current_period_start = now() - interval '{ago}' - interval '1 month', \
             current_period_end = now() - interval '{ago}' WHERE id = $1"
        ),
        &[&sub],
    )
    .await
    .unwrap();
    // Renewal rows name the period they pay for: keep them pointing at the current one.
    db.execute(
        "UPDATE payments SET period_start = (SELECT current_period_end FROM subscriptions WHERE id = $1) \
         WHERE subscription_id = $1 AND kind = 'renewal'",
        &[&sub],
    )
    .await
    .unwrap();
}

/// Whether the subscription's saved method may still be charged (None: it has none).
async fn method_usable(app: &TestApp, sub: &Subscription) -> Option<bool> {
    app.method_of(sub).await.map(|m| m.usable)
}

fn hours_from_now(t: DateTime<Utc>) -> i64 {
    (t - Utc::now()).num_hours()
}

// ----- scenario 1: a refused renewal -----

#[tokio::test]
async fn a_renewal_refused_for_shop_credentials_keeps_the_cards_and_expires_after_the_grace() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (sub, _) = app.due().await;
    let (other, _) = app.due().await;
    // A key rotation: every create answers 401 invalid_credentials.
    fake.refuse_creates(Some((401, "invalid_credentials", None)));
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 2);
    for id in [sub, other] {
        let s = app.subscription(id).await;
        assert_eq!(
            s.status,
            SubscriptionStatus::PastDue,
            "a renewal that ends without money: {s:?}"
        );
        assert_eq!(
            s.renewal_attempts, 0,
            "our refusal uses none of the viewer's attempts"
        );
        assert_eq!(
            method_usable(&app, &s).await,
            Some(true),
            "a key rotation never burns a card"
        );
        let retry = hours_from_now(s.next_charge_at.expect("retried on the dunning schedule"));
        assert!((23..=24).contains(&retry), "first retry after 1d: {retry}h");
    }
    let rows = app.renewals(sub).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, PaymentStatus::Failed);
    assert_eq!(
        rows[0].cancellation_reason.as_deref(),
        Some("invalid_credentials"),
        "the row says why"
    );
    let text = app.metrics().await;
    assert!(
        text.contains("billing_alerts_total{kind=\"renewal_refused\"}"),
        "alerted at once"
    );
    assert!(text.contains("renewal_failures_total"), "counted");
    assert!(app
        .outbox_types()
        .await
        .contains(&"subscription.past_due".to_owned()));

    // Refused again and again: still past_due, still no viewer attempt used.
    for _ in 0..4 {
        app.make_due(sub).await;
        assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    }
    let s = app.subscription(sub).await;
    assert_eq!(
        (s.status, s.renewal_attempts),
        (SubscriptionStatus::PastDue, 0),
        "{s:?}"
    );
    assert_eq!(app.renewals(sub).await.len(), 5);

    // Access lasts at most REFUSAL_GRACE (3d) after the period end, then ends.
    end_period_ago(&db, sub, "2 days").await;
    expirer::run_once(app.app()).await.unwrap();
    assert_eq!(
        app.subscription(sub).await.status,
        SubscriptionStatus::PastDue,
        "within the grace"
    );
    end_period_ago(&db, sub, "3 days 1 minute").await;
    expirer::run_once(app.app()).await.unwrap();
    assert_eq!(
        app.subscription(sub).await.status,
        SubscriptionStatus::Expired
    );
    assert_eq!(
        app.subscription(other).await.status,
        SubscriptionStatus::PastDue,
        "the other period has not ended"
    );
    let types = app.outbox_types().await;
    assert_eq!(count(&types, "subscription.expired"), 1, "{types:?}");

    // Keys fixed: the next retry of the other subscription renews it.
    fake.refuse_creates(None);
    app.make_due(other).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(
        app.subscription(other).await.status,
        SubscriptionStatus::Active
    );
    assert_eq!(fake.charges(), 1);
}

#[tokio::test]
async fn a_renewal_refused_with_autopayments_disabled_is_ours_not_the_viewers() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (sub, _) = app.due().await;
    fake.refuse_creates(Some((403, "forbidden", None)));
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let s = app.subscription(sub).await;
    assert_eq!(s.status, SubscriptionStatus::PastDue, "{s:?}");
    assert_eq!(s.renewal_attempts, 0);
    assert_eq!(method_usable(&app, &s).await, Some(true));
    assert!(s.next_charge_at.is_some());
    assert_eq!(
        app.renewals(sub).await[0].cancellation_reason.as_deref(),
        Some("forbidden")
    );
}

#[tokio::test]
async fn a_renewal_refused_for_the_saved_method_is_a_hard_decline() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (sub, _) = app.due().await;
    // YooKassa: the saved method is unknown, revoked or not allowed for this charge.
    fake.refuse_creates(Some((400, "invalid_request", Some("payment_method_id"))));
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let s = app.subscription(sub).await;
    assert_eq!(s.status, SubscriptionStatus::PastDue, "{s:?}");
    assert_eq!(s.renewal_attempts, 1, "counted against the viewer");
    assert_eq!(s.next_charge_at, None, "no more tries");
    assert_eq!(
        method_usable(&app, &s).await,
        Some(false),
        "the method is unusable"
    );
    app.make_due(sub).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 0);
    assert_eq!(
        expirer::run_once(app.app()).await.unwrap(),
        0,
        "access lasts to the period end"
    );
    end_period_ago(&db, sub, "1 minute").await;
    assert_eq!(expirer::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(
        app.subscription(sub).await.status,
        SubscriptionStatus::Expired
    );
}

#[tokio::test]
async fn no_subscription_outlives_its_period_dunning_and_grace_without_a_payment() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let db = app.sql().await;
    // Whatever left it so (a bug, a lost update), a charge is still "scheduled".
    let stuck = app.seed_subscription(UserId::new(), true, true).await;
    let recent = app.seed_subscription(UserId::new(), true, true).await;
    db.execute(
        "UPDATE subscriptions SET next_charge_at = now() + interval '1 hour' WHERE id = ANY($1)",
        &[&vec![stuck, recent]],
    )
    .await
    .unwrap();
    // Period end + the whole dunning schedule (1d+3d+5d) + 24 h, and a minute more.
    end_period_ago(&db, stuck, "10 days 1 minute").await;
    end_period_ago(&db, recent, "2 days").await;
    expirer::run_once(app.app()).await.unwrap();
    assert_eq!(
        app.subscription(stuck).await.status,
        SubscriptionStatus::Expired
    );
    assert_eq!(
        app.subscription(recent).await.status,
        SubscriptionStatus::Active,
        "still within its dunning"
    );
}

#[tokio::test]
async fn a_cloudpayments_token_refusal_is_a_hard_decline() {
    let app = TestApp::builder()
        .fake_yookassa()
        .fake_cloudpayments()
        .start()
        .await;
    let cp = app.cloudpayments();
    let user = UserId::new();
    let (sub, token) = subscribed_cloudpayments(&app, user).await;
    cp.refuse_token(&token, "Token not found");
    let db = app.sql().await;
    app.make_due(sub).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let s = app.subscription(sub).await;
    assert_eq!(s.status, SubscriptionStatus::PastDue, "{s:?}");
    assert_eq!(s.next_charge_at, None, "no more tries");
    assert_eq!(method_usable(&app, &s).await, Some(false));
    assert_eq!(s.renewal_attempts, 1);
    end_period_ago(&db, sub, "1 minute").await;
    assert_eq!(expirer::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(
        app.subscription(sub).await.status,
        SubscriptionStatus::Expired
    );
}

// ----- scenario 2: an unreadable answer is no refusal -----

#[tokio::test]
async fn an_unreadable_renewal_answer_is_resent_with_the_same_key_and_charged_once() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    for (n, how) in [Garble::CutOff, Garble::NotJson].into_iter().enumerate() {
        let (sub, _) = app.due().await;
        let before = app.subscription(sub).await;
        // The charge is made, but every answer the client gets (3 tries) is unreadable.
        fake.garble_create_answers(3, how);
        assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
        let rows = app.renewals(sub).await;
        assert_eq!(rows.len(), 1, "{how:?}: {rows:?}");
        assert_eq!(
            rows[0].status,
            PaymentStatus::Pending,
            "{how:?}: outcome unknown, not failed"
        );
        assert_eq!(
            app.subscription(sub).await.status,
            SubscriptionStatus::Active,
            "{how:?}"
        );
        let key = rows[0].provider_idempotence_key.clone();
        // The lease lapses: the same key again, and the provider's answer is read this time.
        app.make_due(sub).await;
        renewer::run_once(app.app()).await.unwrap();
        assert_eq!(fake.charges(), n as u64 + 1, "{how:?}: charged once");
        assert_eq!(fake.requests_with_key(&key), 4, "{how:?}: 3 unreadable + 1");
        let rows = app.renewals(sub).await;
        assert_eq!(rows.len(), 1, "{how:?}: never a new key: {rows:?}");
        assert_eq!(rows[0].status, PaymentStatus::Succeeded, "{how:?}");
        let s = app.subscription(sub).await;
        assert_eq!(s.status, SubscriptionStatus::Active);
        assert_eq!(
            s.current_period_end,
            before
                .current_period_end
                .checked_add_months(Months::new(1))
                .unwrap()
        );
    }
}

#[tokio::test]
async fn an_unreadable_purchase_answer_leaves_the_payment_pending_under_its_key() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    fake.garble_create_answers(3, Garble::CutOff);
    let user = UserId::new();
    let (status, body) = app.buy(user, MONTH_TARIFF, true, None).await;
    assert_eq!(status, 502, "{body}");
    let payments: Vec<_> = app
        .payments()
        .await
        .into_iter()
        .filter(|p| p.user_id == user)
        .collect();
    assert_eq!(payments.len(), 1);
    let (id, key) = (payments[0].id, payments[0].provider_idempotence_key.clone());
    assert_eq!(
        payments[0].status,
        PaymentStatus::Pending,
        "unknown, not refused"
    );
    app.make_checks_due().await;
    reconciler::run_once(app.app()).await.unwrap();
    assert_eq!(fake.creates(), 1);
    assert_eq!(fake.requests_with_key(&key), 4);
    let pid = app.provider_id(id).await;
    assert!(fake.payment(&pid).is_some());
}

// ----- scenario 5: looking up an old create; a second provider payment -----

/// A renewal row sent to the provider before a crash (the answer never recorded),
/// whose creation is moved `age` back on both sides. Answers (sub, payment id, provider id).
async fn renewal_sent_before_a_crash(
    app: &TestApp,
    age: Duration,
) -> (SubscriptionId, PaymentId, String) {
    let fake = app.yookassa();
    let db = app.sql().await;
    let (sub, _) = app.due().await;
    let payment = app.claimed_renewal(sub).await;
    let req = create::request_for(app.app(), &app.app().db.get().await.unwrap(), &payment)
        .await
        .unwrap();
    let provider = app
        .app()
        .providers
        .get(PaySystem::YooKassa)
        .unwrap()
        .clone();
    let pp = provider.create_payment(&req).await.unwrap();
    let at = Utc::now() - age;
    db.execute(
        "UPDATE payments SET created_at = $2 WHERE id = $1",
        &[&payment.id, &at],
    )
    .await
    .unwrap();
    fake.patch(
        &pp.id,
        "created_at",
        json!((at + Duration::seconds(1)).to_rfc3339_opts(SecondsFormat::Millis, true)),
    );
    (sub, payment.id, pp.id)
}

#[tokio::test]
async fn a_renewal_create_older_than_23h_is_looked_up_not_resent_when_its_lease_lapses() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (sub, payment, pid) =
        renewal_sent_before_a_crash(&app, Duration::minutes(23 * 60 + 30)).await;
    let key = app.payment(payment).await.provider_idempotence_key;
    // The provider may have forgotten the key by now: a re-send would charge again.
    fake.expire_keys();
    app.make_due(sub).await;
    renewer::run_once(app.app()).await.unwrap();
    app.make_checks_due().await;
    reconciler::run_once(app.app()).await.unwrap();
    assert_eq!(fake.requests_with_key(&key), 1, "never re-sent after 23 h");
    assert_eq!(fake.charges(), 1, "charged once");
    let rows = app.renewals(sub).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0].status,
        PaymentStatus::Succeeded,
        "found and adopted: {rows:?}"
    );
    assert_eq!(rows[0].provider_payment_id.as_deref(), Some(pid.as_str()));
    assert_eq!(
        app.subscription(sub).await.status,
        SubscriptionStatus::Active
    );
}

#[tokio::test]
async fn the_look_up_pages_a_long_newest_first_list_and_skips_unreadable_items() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (sub, _payment, pid) =
        renewal_sent_before_a_crash(&app, Duration::minutes(23 * 60 + 30)).await;
    // Busy shop: 2 100 payments made since, newest listed first, one of them unreadable.
    for i in 0..2100 {
        let id = format!("bulk-{i:05}");
        fake.insert_pending(
            &id,
            json!({"value": "299.00", "currency": "RUB"}),
            json!({"payment_id": Uuid::new_v4().to_string()}),
        );
        if i == 1000 {
            fake.patch(&id, "status", json!("being_processed"));
        }
    }
    app.make_checks_due().await;
    reconciler::run_once(app.app()).await.unwrap();
    let rows = app.renewals(sub).await;
    assert_eq!(
        rows[0].status,
        PaymentStatus::Succeeded,
        "found past 20 pages: {rows:?}"
    );
    assert_eq!(rows[0].provider_payment_id.as_deref(), Some(pid.as_str()));
    assert_eq!(fake.charges(), 1);
}

#[tokio::test]
async fn a_second_provider_payment_for_a_settled_renewal_is_alerted_and_refunded() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (sub, _) = app.due().await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let rows = app.renewals(sub).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, PaymentStatus::Succeeded);
    let first = rows[0].provider_payment_id.clone().unwrap();
    let end = app.subscription(sub).await.current_period_end;
    // The same row charged again at the provider under another key (the old defect).
    let stored = app.payment(rows[0].id).await;
    let mut req = create::request_for(app.app(), &app.app().db.get().await.unwrap(), &stored)
        .await
        .unwrap();
    req.idempotence_key = format!("again-{}", &req.idempotence_key[..50]);
    let provider = app
        .app()
        .providers
        .get(PaySystem::YooKassa)
        .unwrap()
        .clone();
    let second = provider.create_payment(&req).await.unwrap();
    assert_ne!(second.id, first);
    assert_eq!(fake.notify(&second.id).await.unwrap(), 200);

    assert_eq!(fake.refunds(), 1, "the extra charge is refunded");
    let refunded: Value = fake.payment(&second.id).unwrap()["refunded_amount"].clone();
    assert_eq!(refunded["value"], "299.00", "all of the second payment");
    assert_eq!(
        fake.payment(&first).unwrap()["refunded_amount"]["value"],
        "0.00",
        "the first payment stays paid"
    );
    let rows = app.renewals(sub).await;
    assert_eq!(rows[0].status, PaymentStatus::Succeeded, "{rows:?}");
    assert_eq!(rows[0].provider_payment_id.as_deref(), Some(first.as_str()));
    let s = app.subscription(sub).await;
    assert_eq!(
        (s.status, s.current_period_end),
        (SubscriptionStatus::Active, end),
        "access unchanged"
    );
    assert!(app
        .metrics()
        .await
        .contains("billing_alerts_total{kind=\"duplicate_charge\"}"));
    // A repeat of the notification refunds nothing more.
    assert_eq!(fake.notify(&second.id).await.unwrap(), 200);
    assert_eq!(fake.refunds(), 1);
}

// ----- scenario 6: renewals go to the provider of the saved method -----

/// Buys the monthly tariff through CloudPayments and pays on its page: answers the
/// live subscription and the saved token.
async fn subscribed_cloudpayments(app: &TestApp, user: UserId) -> (SubscriptionId, String) {
    let cp = app.cloudpayments();
    let (status, body) = read(
        app.http
            .post(format!(
                "{}/api/v1/subscriptions/cloudpayments/buy",
                app.url
            ))
            .header("authorization", app.token(user))
            .json(&json!({"tariff_id": MONTH_TARIFF, "renew": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let order = cp
        .order_for_invoice(&payment_id(&body).to_string())
        .unwrap();
    let t = cp
        .pay_order(order["Id"].as_str().unwrap(), None)
        .await
        .unwrap()
        .unwrap();
    let sub = app.subscription_of(user).await;
    assert_eq!(sub.status, SubscriptionStatus::Active);
    (sub.id, t["Token"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_same_tariff_purchase_through_the_other_provider_keeps_renewals_working() {
    let app = TestApp::builder()
        .fake_yookassa()
        .fake_cloudpayments()
        .start()
        .await;
    let (yk, cp) = (app.yookassa(), app.cloudpayments());
    let user = UserId::new();
    // First bought through YooKassa, with its card saved.
    let (status, body) = app.buy(user, MONTH_TARIFF, true, None).await;
    assert_eq!(status, 201, "{body}");
    let pid = app.provider_id(payment_id(&body)).await;
    yk.settle(&pid, Outcome::Succeed).unwrap();
    assert_eq!(yk.notify(&pid).await.unwrap(), 200);
    // Then the same tariff again through CloudPayments: its token is now the saved method.
    let (sub, token) = subscribed_cloudpayments(&app, user).await;
    let before = app.subscription(sub).await;
    assert_eq!(
        before.pay_system,
        PaySystem::CloudPayments,
        "the subscription names the provider that now holds its saved method"
    );
    app.make_due(sub).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(
        yk.charges(),
        0,
        "a CloudPayments token is never sent to YooKassa"
    );
    assert_eq!(cp.charges(), 1, "the renewal goes to the method's provider");
    let charged = cp.transactions().pop().unwrap();
    assert_eq!(charged["Token"], token.as_str());
    let s = app.subscription(sub).await;
    assert_eq!(s.status, SubscriptionStatus::Active, "{s:?}");
    assert_eq!(
        s.current_period_end,
        before
            .current_period_end
            .checked_add_months(Months::new(1))
            .unwrap()
    );
    let rows = app.renewals(sub).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].pay_system, PaySystem::CloudPayments);
    assert_eq!(rows[0].status, PaymentStatus::Succeeded);
}

// ----- scenario 10: the idempotency-key lease outlasts a provider call -----

#[tokio::test]
async fn a_repeated_buy_is_409_for_as_long_as_the_provider_call_can_take() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    fake.set_create_delay(Some(std::time::Duration::from_secs(2)));
    let user = UserId::new();
    let first = {
        let http = app.http.clone();
        let url = app.url.clone();
        let token = app.token(user);
        tokio::spawn(async move {
            read(
                http.post(format!("{url}/api/v1/subscriptions/yookassa/buy"))
                    .header("authorization", token)
                    .header("idempotency-key", "buy-once")
                    .json(&json!({"tariff_id": MONTH_TARIFF, "renew": false}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        })
    };
    let db = app.sql().await;
    let mut claimed = false;
    for _ in 0..200 {
        if app.idempotency_keys().await == 1 {
            claimed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(claimed, "the first request holds the key");
    // 31 s into the first request's provider call (a 10 s timeout, two retries and
    // their waits): it may still be running, so the key is still held.
    db.execute(
        "UPDATE idempotency_keys SET locked_until = locked_until - interval '31 seconds'",
        &[],
    )
    .await
    .unwrap();
    let (status, body) = app.buy(user, MONTH_TARIFF, false, Some("buy-once")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "request_in_progress");
    let (status, body) = first.await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(fake.creates(), 1);
    let payments = app.payments().await;
    assert_eq!(payments.len(), 1);
    let key = &payments[0].provider_idempotence_key;
    assert_eq!(fake.requests_with_key(key), 1, "one create sent");
}
