//! Refunds against real provider behaviour (issue 10, scenarios 2, 3, 4 and 11):
//! unreadable answers, which period a refunded payment paid, refunds of payments we
//! have not yet seen succeed, and the follow-up of refunds the provider left open.
//! Time moves by shifting the rows' timestamps, never by sleeping.

use crate::helpers::*;
use billing::domain::{
    PaymentId, PaymentKind, PaymentStatus, RefundId, RefundStatus, SubscriptionStatus, UserId,
};
use billing::jobs::renewer;
use billing::providers::sandbox::Outcome;
use chrono::Utc;
use serde_json::{json, Value};

/// One operator for the whole binary: Idempotency-Keys are scoped to the user.
fn operator(app: &TestApp) -> String {
    static OPERATOR: std::sync::OnceLock<billing::domain::UserId> = std::sync::OnceLock::new();
    app.app().keys.issue(
        *OPERATOR.get_or_init(billing::domain::UserId::new),
        true,
        600,
    )
}

async fn refund(app: &TestApp, payment: impl std::fmt::Display, body: Value) -> (u16, Value) {
    app.post(
        &format!("/api/v1/admin/payments/{payment}/refund"),
        Some(&operator(app)),
        body,
    )
    .await
}

/// The id of the refund a refund request answered.
fn refund_id(body: &Value) -> RefundId {
    body["id"].as_str().unwrap().parse().unwrap()
}

fn part(value: &str) -> Value {
    json!({"amount": {"value": value, "currency": "RUB"}, "reason": "support"})
}

/// A viewer with an active subscription (renew on, card saved) paid through the fake;
/// answers (user, payment id, provider id).
async fn paid(app: &TestApp) -> (UserId, PaymentId, String) {
    let fake = app.yookassa();
    let user = UserId::new();
    let (status, body) = app.buy(user, MONTH_TARIFF, true, None).await;
    assert_eq!(status, 201, "{body}");
    let id = payment_id(&body);
    let pid = app.provider_id(id).await;
    fake.settle(&pid, Outcome::Succeed).unwrap();
    assert_eq!(fake.notify(&pid).await.unwrap(), 200);
    (user, id, pid)
}

/// Time passes: every timestamp of payments, subscriptions and refunds moves back by
/// `interval` (one UPDATE per table, so `end > start` holds throughout).
async fn time_passes(db: &tokio_postgres::Client, interval: &str) {
    db.batch_execute(&format!(
        "DO $$ DECLARE t text; cols text; BEGIN \
           FOREACH t IN ARRAY ARRAY['payments', 'subscriptions', 'refunds'] LOOP \
             SELECT string_agg(format('%1$I = %1$I - interval %2$L', column_name, '{interval}'), ', ') INTO cols \
               FROM information_schema.columns WHERE table_schema = 'public' AND table_name = t \
               AND data_type = 'timestamp with time zone'; \
             EXECUTE format('UPDATE %I SET %s', t, cols); \
           END LOOP; END $$"
    ))
    .await
    .unwrap();
}

/// The refund follow-up job, one batch.
async fn follow_up(app: &TestApp) -> usize {
    billing::jobs::refund_follow_up::run_once(app.app())
        .await
        .unwrap()
}

/// The payment's status and how much of it was refunded.
async fn payment_state(app: &TestApp, id: PaymentId) -> (PaymentStatus, i64) {
    let p = app.payment(id).await;
    (p.status, p.refunded_minor)
}

// ----- scenario 2: an unreadable answer is not a refusal -----

#[tokio::test]
async fn an_unreadable_refund_answer_keeps_the_refund_pending_and_it_is_made_once() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (_, id, pid) = paid(&app).await;

    // The provider makes the refund, but its answer is cut off after the status line.
    fake.cut_refund_answers(true);
    let (status, body) = refund(&app, &id, part("100.00")).await;
    assert_ne!(status, 201, "{body}");
    let rows = app.refunds().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].status,
        RefundStatus::Pending,
        "an unreadable answer is no refusal: the refund may have been made"
    );

    // The operator tries again: the first 100.00 still counts against what is left.
    let (status, body) = refund(&app, &id, part("250.00")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "refund_exceeds_remaining");

    // The follow-up re-sends it with the same key and learns the outcome.
    fake.cut_refund_answers(false);
    time_passes(&db, "2 minutes").await;
    assert_eq!(follow_up(&app).await, 1);
    assert_eq!(app.refunds().await[0].status, RefundStatus::Succeeded);
    assert_eq!(
        payment_state(&app, id).await,
        (PaymentStatus::PartiallyRefunded, 10_000)
    );
    assert_eq!(fake.refunds(), 1, "refunded once at the provider");
    assert_eq!(
        fake.payment(&pid).unwrap()["refunded_amount"]["value"],
        "100.00"
    );
}

// ----- scenario 3: only a full refund of the period in use changes access -----

#[tokio::test]
async fn fully_refunding_last_months_purchase_keeps_the_access_a_renewal_paid_for() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let db = app.sql().await;
    let (user, purchase, _) = paid(&app).await;

    // A month later: the purchase's period is over and the renewal pays this one.
    time_passes(&db, "1 month 1 hour").await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let renewed = app.subscription_of(user).await;
    assert_eq!(renewed.status, SubscriptionStatus::Active);
    assert!(renewed.current_period_end > Utc::now());

    let (status, body) = refund(&app, &purchase, json!({"reason": "charged by mistake"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        payment_state(&app, purchase).await.0,
        PaymentStatus::Refunded
    );
    let after = app.subscription_of(user).await;
    assert_eq!(
        after.status,
        SubscriptionStatus::Active,
        "this month was paid by the renewal, not by the refunded purchase"
    );
    assert_eq!(after.current_period_end, renewed.current_period_end);
    assert!(after.auto_renew);
    let types = app.outbox_types().await;
    assert!(types.contains(&"payment.refunded".to_owned()), "{types:?}");
    assert!(
        !types.contains(&"subscription.canceled".to_owned()),
        "{types:?}"
    );
}

#[tokio::test]
async fn fully_refunding_a_prepaid_renewal_moves_the_period_end_back() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let db = app.sql().await;
    let (user, _, _) = paid(&app).await;

    // Half a day before the end: the renewal is charged RENEW_BEFORE early.
    time_passes(&db, "1 month -12 hours").await;
    let before = app.subscription_of(user).await;
    assert!(before.current_period_end > Utc::now());
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let prepaid = app.subscription_of(user).await;
    assert!(prepaid.current_period_end > before.current_period_end);
    let renewals: Vec<_> = app
        .payments()
        .await
        .into_iter()
        .filter(|p| p.kind == PaymentKind::Renewal)
        .collect();
    assert_eq!(renewals.len(), 1);
    let renewal = renewals[0].id;

    let (status, body) = refund(&app, renewal, json!({"reason": "did not want to renew"})).await;
    assert_eq!(status, 201, "{body}");
    let after = app.subscription_of(user).await;
    assert_eq!(
        after.status,
        SubscriptionStatus::Active,
        "the period in use was paid by the purchase"
    );
    assert_eq!(
        after.current_period_end, before.current_period_end,
        "the end moves back one period"
    );
    assert_eq!(after.current_period_start, before.current_period_start);
    assert!(
        !after.auto_renew,
        "not charged again for the period just refunded"
    );
    let types = app.outbox_types().await;
    assert!(
        !types.contains(&"subscription.canceled".to_owned()),
        "{types:?}"
    );
}

// ----- found by `billing sim` (SIMULATION.md) -----

fn last_subscription_event(types: &[String]) -> Option<&str> {
    types
        .iter()
        .rev()
        .map(String::as_str)
        .find(|t| t.starts_with("subscription."))
}

/// The viewer extends the live subscription with a second purchase of its tariff.
async fn extended(app: &TestApp, user: UserId, renew: bool) -> PaymentId {
    let fake = app.yookassa();
    let (status, body) = app.buy(user, MONTH_TARIFF, renew, None).await;
    assert_eq!(status, 201, "{body}");
    let id = payment_id(&body);
    let pid = app.provider_id(id).await;
    fake.settle(&pid, Outcome::Succeed).unwrap();
    assert_eq!(fake.notify(&pid).await.unwrap(), 200);
    id
}

/// Seeds 1 and 2 of the first simulator run: a full refund of the period in use
/// canceled the subscription although the viewer had paid for the next one too.
#[tokio::test]
async fn fully_refunding_the_period_in_use_keeps_the_period_paid_after_it() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let (user, first, _) = paid(&app).await;
    let one = app.subscription_of(user).await;
    extended(&app, user, true).await;
    let two = app.subscription_of(user).await;
    assert!(two.current_period_end > one.current_period_end);

    let (status, body) = refund(&app, first, json!({"reason": "charged by mistake"})).await;
    assert_eq!(status, 201, "{body}");
    let after = app.subscription_of(user).await;
    assert_eq!(
        after.status,
        SubscriptionStatus::Active,
        "the second payment still pays a period"
    );
    assert_eq!(
        after.current_period_end, one.current_period_end,
        "one period is given back: the end moves back by one"
    );
    assert!(
        !after.auto_renew,
        "not charged again for what was just refunded"
    );
    let types = app.outbox_types().await;
    assert!(
        !types.contains(&"subscription.canceled".to_owned()),
        "{types:?}"
    );
    assert_eq!(
        last_subscription_event(&types),
        Some("subscription.shortened")
    );
}

/// Seed 14 of the first simulator run: a refund that moved the period end back
/// published no subscription event when auto-renewal was already off, so a consumer
/// kept granting the refunded period.
#[tokio::test]
async fn moving_the_period_end_back_is_published_even_with_auto_renewal_off() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let (user, _, _) = paid(&app).await;
    let one = app.subscription_of(user).await;
    let second = extended(&app, user, false).await;
    let token = app.token(user);
    let (status, body) = app
        .post("/api/v1/subscriptions/cancel", Some(&token), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = refund(&app, second, json!({"reason": "did not mean to extend"})).await;
    assert_eq!(status, 201, "{body}");
    let after = app.subscription_of(user).await;
    assert_eq!(after.current_period_end, one.current_period_end);
    let types = app.outbox_types().await;
    assert_eq!(
        last_subscription_event(&types),
        Some("subscription.shortened"),
        "{types:?}"
    );
}

/// Seed 1155 of the long run: a renewal whose charge went through only after the
/// viewer had extended the subscription by buying its tariff again recorded the
/// period the extension had already paid, so refunding the extension took back
/// a period the renewal paid for (and the checker counted one period twice).
#[tokio::test]
async fn a_renewal_applied_after_an_extension_pays_the_period_after_it() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (user, _, _) = paid(&app).await;
    time_passes(&db, "1 month -12 hours").await;
    let due = app.subscription_of(user).await;

    // The viewer opens a checkout for the same tariff; then the renewal is claimed
    // while YooKassa is down: its row waits, unsent.
    let (status, body) = app.buy(user, MONTH_TARIFF, true, None).await;
    assert_eq!(status, 201, "{body}");
    let extension = payment_id(&body);
    fake.set_down(true);
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    fake.set_down(false);
    assert_eq!(
        fake.charges(),
        0,
        "the renewal was not charged while YooKassa was down"
    );
    // The checkout is paid: the purchase extends the subscription by the period the
    // renewal was for.
    let pid = app.provider_id(extension).await;
    fake.settle(&pid, Outcome::Succeed).unwrap();
    assert_eq!(fake.notify(&pid).await.unwrap(), 200);
    let after_extension = app.subscription_of(user).await;
    let month = after_extension.current_period_end - due.current_period_end;
    assert!(month > chrono::Duration::days(27), "{month}");

    // The reconciler re-sends the renewal with its key: the charge goes through now.
    app.make_checks_due().await;
    billing::jobs::reconciler::run_once(app.app())
        .await
        .unwrap();
    let renewal = app.renewals(due.id).await;
    assert_eq!(renewal.len(), 1, "{renewal:?}");
    assert_eq!(renewal[0].status, PaymentStatus::Succeeded);
    let renewed = app.subscription_of(user).await;
    assert!(
        renewed.current_period_end > after_extension.current_period_end + month / 2,
        "the renewal's money buys one more period: {} then {}",
        after_extension.current_period_end,
        renewed.current_period_end
    );
    assert_eq!(
        renewal[0].period_start,
        Some(after_extension.current_period_end),
        "the renewal paid the period after the extension's, not the one the extension paid"
    );

    // Each payment gives back its own period: refunding the extension keeps the renewal's.
    let (status, body) = refund(&app, extension, json!({"reason": "did not mean to extend"})).await;
    assert_eq!(status, 201, "{body}");
    let after = app.subscription_of(user).await;
    assert_eq!(after.status, SubscriptionStatus::Active);
    // One period given back: the end is where the extension had put it (give or take
    // the days months differ by).
    let off = (after.current_period_end - after_extension.current_period_end).abs();
    assert!(
        off <= chrono::Duration::days(3),
        "{} then {}",
        after_extension.current_period_end,
        after.current_period_end
    );
}

// ----- scenario 4: a refund of a payment whose success we have not applied yet -----

#[tokio::test]
async fn a_dashboard_refund_of_a_payment_whose_success_was_not_applied_yet_applies_the_success_first(
) {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let (status, body) = app.buy(user, MONTH_TARIFF, true, None).await;
    assert_eq!(status, 201, "{body}");
    let id = payment_id(&body);
    let pid = app.provider_id(id).await;

    // Paid 299; the success's re-read fails, so the notification is left for the retry worker.
    fake.settle(&pid, Outcome::Succeed).unwrap();
    fake.set_down(true);
    assert_eq!(fake.notify(&pid).await.unwrap(), 200);
    fake.set_down(false);
    assert_eq!(payment_state(&app, id).await.0, PaymentStatus::Pending);

    // Support refunds 100.00 in the provider's dashboard.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/refunds",
            app.app().config.yookassa.api_url.clone().unwrap()
        ))
        .basic_auth(YOOKASSA_SHOP_ID, Some(YOOKASSA_SECRET_KEY))
        .header("idempotence-key", "dashboard-1")
        .json(&json!({"payment_id": pid, "amount": {"value": "100.00", "currency": "RUB"}}))
        .send()
        .await
        .unwrap();
    let object: Value = resp.json().await.unwrap();
    assert_eq!(
        fake.notify_raw("refund.succeeded", object).await.unwrap(),
        200
    );

    assert_eq!(
        payment_state(&app, id).await,
        (PaymentStatus::PartiallyRefunded, 10_000)
    );
    let (status, sub) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    assert_eq!(status, 200, "paid 299, refunded 100: {sub}");
    assert_eq!(sub["status"], "active");
    let types = app.outbox_types().await;
    let succeeded = types.iter().position(|t| t == "payment.succeeded");
    let refunded = types.iter().position(|t| t == "payment.refunded");
    assert!(
        succeeded.is_some() && succeeded < refunded,
        "the success first, then the refund: {types:?}"
    );
}

// ----- scenario 11: the refund follow-up -----

#[tokio::test]
async fn a_refund_the_provider_refuses_is_final_alerted_and_never_resent() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (_, id, pid) = paid(&app).await;

    // Our refund's outcome is unknown (the provider is down) ...
    fake.set_down(true);
    let (status, body) = refund(&app, &id, json!({"reason": "viewer asked"})).await;
    assert_eq!(status, 502, "{body}");
    fake.set_down(false);
    assert_eq!(app.refunds().await[0].status, RefundStatus::Pending);
    // ... and meanwhile the payment is refunded in full in the dashboard, so ours is refused.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/refunds",
            app.app().config.yookassa.api_url.clone().unwrap()
        ))
        .basic_auth(YOOKASSA_SHOP_ID, Some(YOOKASSA_SECRET_KEY))
        .header("idempotence-key", "dashboard-1")
        .json(&json!({"payment_id": pid, "amount": {"value": "299.00", "currency": "RUB"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let posts = fake.refund_requests();

    time_passes(&db, "2 minutes").await;
    follow_up(&app).await;
    assert_eq!(fake.refund_requests(), posts + 1, "re-sent once");
    assert_eq!(
        app.refunds().await[0].status,
        RefundStatus::Canceled,
        "a refusal is final"
    );
    assert!(
        app.metrics()
            .await
            .contains("billing_alerts_total{kind=\"refund_refused\"}"),
        "a refused refund is alerted"
    );

    for _ in 0..3 {
        time_passes(&db, "1 hour").await;
        follow_up(&app).await;
    }
    assert_eq!(fake.refund_requests(), posts + 1, "never re-sent");
}

#[tokio::test]
async fn a_refund_whose_answer_was_lost_past_the_key_window_is_found_at_the_provider() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (_, id, _) = paid(&app).await;

    // YooKassa makes the refund; its answer is cut off, and nobody follows it up
    // for a day.
    fake.cut_refund_answers(true);
    let (status, body) = refund(&app, &id, part("100.00")).await;
    assert_ne!(status, 201, "{body}");
    fake.cut_refund_answers(false);
    let posts = fake.refund_requests();

    // Past the key window the same key could refund a second time: it is looked up
    // among the payment's refunds instead, and adopted.
    time_passes(&db, "24 hours").await;
    follow_up(&app).await;
    assert_eq!(
        fake.refund_requests(),
        posts,
        "not re-sent past the key window"
    );
    let rows = app.refunds().await;
    assert_eq!(rows[0].status, RefundStatus::Succeeded);
    assert_eq!(
        payment_state(&app, id).await,
        (PaymentStatus::PartiallyRefunded, 10_000)
    );
    assert_eq!(fake.refunds(), 1);
}

#[tokio::test]
async fn a_refund_never_made_is_canceled_past_the_key_window_and_alerted() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (_, id, _) = paid(&app).await;

    fake.set_down(true);
    let (status, body) = refund(&app, &id, part("100.00")).await;
    assert_eq!(status, 502, "{body}");
    fake.set_down(false);
    let posts = fake.refund_requests();

    // A day later the payment's refunds at YooKassa do not hold it: it was never
    // made. It stops counting against what is left, and an operator is told.
    time_passes(&db, "24 hours").await;
    follow_up(&app).await;
    assert_eq!(
        fake.refund_requests(),
        posts,
        "not re-sent past the key window"
    );
    assert_eq!(app.refunds().await[0].status, RefundStatus::Canceled);
    assert!(app
        .metrics()
        .await
        .contains("billing_alerts_total{kind=\"refund_lost\"}"));
    assert_eq!(payment_state(&app, id).await, (PaymentStatus::Succeeded, 0));
    let (status, body) = refund(&app, &id, part("250.00")).await;
    assert_eq!(status, 201, "the whole amount is refundable again: {body}");
}

#[tokio::test]
async fn a_refund_past_the_key_window_stays_pending_while_its_provider_cannot_be_asked() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (_, id, _) = paid(&app).await;

    fake.set_down(true);
    let (status, body) = refund(&app, &id, part("100.00")).await;
    assert_eq!(status, 502, "{body}");
    time_passes(&db, "24 hours").await;
    follow_up(&app).await;
    assert_eq!(
        app.refunds().await[0].status,
        RefundStatus::Pending,
        "unknown until the provider answers the look-up"
    );
    let (status, _) = refund(&app, &id, part("250.00")).await;
    assert_eq!(status, 409, "still counted against what is left");

    // The provider is back: the next follow-up asks and settles it.
    fake.set_down(false);
    time_passes(&db, "2 hours").await;
    follow_up(&app).await;
    assert_eq!(app.refunds().await[0].status, RefundStatus::Canceled);
}

#[tokio::test]
async fn a_refund_answered_pending_is_reread_with_backoff_until_final() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (_, id, _) = paid(&app).await;

    fake.hold_refunds(true);
    let (status, body) = refund(&app, &id, part("100.00")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "pending");
    let ours = refund_id(&body);
    let first = app
        .provider_refund_id(ours)
        .await
        .expect("answered with the provider's id");

    // Still pending at the provider: re-read, then left alone for a while.
    time_passes(&db, "2 minutes").await;
    assert_eq!(follow_up(&app).await, 1);
    assert_eq!(app.refund(ours).await.status, RefundStatus::Pending);
    assert_eq!(follow_up(&app).await, 0, "not re-read again at once");

    // It succeeds at the provider; the notification is lost. The next re-read finds it.
    fake.settle_refund(&first, "succeeded");
    time_passes(&db, "1 hour").await;
    follow_up(&app).await;
    assert_eq!(app.refund(ours).await.status, RefundStatus::Succeeded);
    assert_eq!(
        payment_state(&app, id).await,
        (PaymentStatus::PartiallyRefunded, 10_000)
    );

    // A second one the provider cancels: final, alerted, and the amount can be refunded again.
    let (status, body) = refund(&app, &id, part("199.00")).await;
    assert_eq!(status, 201, "{body}");
    let ours = refund_id(&body);
    let second = app
        .provider_refund_id(ours)
        .await
        .expect("answered with the provider's id");
    assert_ne!(second, first);
    fake.settle_refund(&second, "canceled");
    time_passes(&db, "1 hour").await;
    follow_up(&app).await;
    assert_eq!(app.refund(ours).await.status, RefundStatus::Canceled);
    assert!(app
        .metrics()
        .await
        .contains("billing_alerts_total{kind=\"refund_refused\"}"));
    fake.hold_refunds(false);
    let (status, body) = refund(&app, &id, part("199.00")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        payment_state(&app, id).await,
        (PaymentStatus::Refunded, 29_900)
    );
}

#[tokio::test]
async fn a_refund_notification_for_our_refund_whose_answer_was_lost_matches_it() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (_, id, _) = paid(&app).await;

    // The provider makes the refund, but its answer never reaches us.
    fake.cut_refund_answers(true);
    let (status, body) = refund(&app, &id, part("100.00")).await;
    assert_ne!(status, 201, "{body}");
    let made = fake.refund_ids();
    assert_eq!(made.len(), 1);
    let object = fake.refund_object(&made[0]).unwrap();
    assert_eq!(
        fake.notify_raw("refund.succeeded", object).await.unwrap(),
        200
    );

    let rows = app.refunds().await;
    assert_eq!(
        rows.len(),
        1,
        "matched to our pending refund, not recorded twice: {rows:?}"
    );
    assert_eq!(rows[0].status, RefundStatus::Succeeded);
    assert_eq!(
        payment_state(&app, id).await,
        (PaymentStatus::PartiallyRefunded, 10_000)
    );

    // Nothing is left for the follow-up to send.
    fake.cut_refund_answers(false);
    time_passes(&db, "2 minutes").await;
    follow_up(&app).await;
    assert_eq!(fake.refunds(), 1);
    assert_eq!(app.refunds().await.len(), 1);
    assert_eq!(
        payment_state(&app, id).await,
        (PaymentStatus::PartiallyRefunded, 10_000)
    );
}

#[tokio::test]
async fn a_dashboard_refund_whose_notification_never_came_is_found_by_the_refund_sweep() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (user, payment, pid) = paid(&app).await;
    // Support gives the whole payment back in YooKassa's dashboard; the
    // notification never arrives.
    fake.refund_in_dashboard(&pid, "299.00").unwrap();
    assert_eq!(app.payment(payment).await.refunded_minor, 0);

    billing::jobs::refund_sweep::run_once(app.app())
        .await
        .unwrap();
    let p = app.payment(payment).await;
    assert_eq!(p.status, PaymentStatus::Refunded);
    assert_eq!(p.refunded_minor, 29_900);
    let refunds = app.refunds().await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].initiated_by, "provider");
    assert_eq!(refunds[0].status, RefundStatus::Succeeded);
    assert_eq!(
        app.subscription_of(user).await.status,
        SubscriptionStatus::Canceled,
        "the whole paid period given back ends access"
    );

    // Listed again by the next run: recorded once.
    billing::jobs::refund_sweep::run_once(app.app())
        .await
        .unwrap();
    assert_eq!(app.refunds().await.len(), 1);
}
