//! Changing the tariff (issue 15, part 3): `now` charges the new tariff's price
//! minus the unused part of what was paid and starts a new period when that
//! payment succeeds; `period_end` lets the next renewal charge and switch to it.

use crate::helpers::*;
use billing::domain::{PaymentId, PaymentStatus, SubscriptionId, SubscriptionStatus, UserId};
use billing::jobs::renewer;
use billing::providers::sandbox::Outcome;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

async fn change(app: &TestApp, user: UserId, body: Value, key: Option<&str>) -> (u16, Value) {
    let mut req = app
        .http
        .post(format!("{}/api/v1/subscriptions/change", app.url))
        .header("authorization", app.token(user))
        .json(&body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    read(req.send().await.unwrap()).await
}

/// `change` with a tariff and `when` only, no key.
async fn change_to(app: &TestApp, user: UserId, tariff: &str, when: &str) -> (u16, Value) {
    change(app, user, json!({"tariff_id": tariff, "when": when}), None).await
}

/// Pays a payment at the fake YooKassa and notifies the service.
async fn pay(app: &TestApp, id: PaymentId, outcome: Outcome) {
    let pid = app.provider_id(id).await;
    app.yookassa().settle(&pid, outcome).unwrap();
    assert_eq!(app.yookassa().notify(&pid).await.unwrap(), 200);
}

/// A monthly subscription bought and paid (auto-renewing), moved so that its
/// 30-day period has `left` of it to run: (subscription, purchase).
async fn monthly_with(app: &TestApp, user: UserId, left: Duration) -> (SubscriptionId, PaymentId) {
    let (status, body) = app.buy(user, MONTH_TARIFF, true, None).await;
    assert_eq!(status, 201, "{body}");
    let purchase = payment_id(&body);
    pay(app, purchase, Outcome::Succeed).await;
    let sub = app.subscription_of(user).await.id;
    let sql = app.sql().await;
    let now: DateTime<Utc> = sql.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let (start, end) = (now + left - Duration::days(30), now + left);
    sql.execute(
        "UPDATE subscriptions SET current_period_start = $2, current_period_end = $3, \
         billing_anchor = $2, next_charge_at = $3::timestamptz - interval '1 day' WHERE id = $1",
        &[&sub, &start, &end],
    )
    .await
    .unwrap();
    sql.execute(
        "UPDATE payments SET period_start = $2, period_end = $3 WHERE id = $1",
        &[&purchase, &start, &end],
    )
    .await
    .unwrap();
    (sub, purchase)
}

/// Asks to change to the yearly tariff now: the answer, a 201.
async fn to_yearly_now(app: &TestApp, user: UserId) -> Value {
    let (status, body) = change_to(app, user, YEAR_TARIFF, "now").await;
    assert_eq!(status, 201, "{body}");
    body
}

/// An operator's refund of a payment (`{"reason", "amount"?}`).
async fn refund(app: &TestApp, payment: PaymentId, body: Value) -> (u16, Value) {
    let path = format!("/api/v1/admin/payments/{payment}/refund");
    app.post(&path, Some(&app.admin_token()), body).await
}

/// The change is paid but no longer holds: the subscription stays monthly and
/// the change's money goes back in full.
async fn paid_and_refunded(app: &TestApp, sub: SubscriptionId, paid: PaymentId) {
    pay(app, paid, Outcome::Succeed).await;
    assert_eq!(
        app.subscription(sub).await.tariff_id.to_string(),
        MONTH_TARIFF
    );
    let refunds: Vec<_> = app
        .refunds()
        .await
        .into_iter()
        .filter(|r| r.payment_id == paid)
        .collect();
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].amount, app.payment(paid).await.amount);
}

/// The `data` of every outbox event of this type, oldest first.
async fn events_of(app: &TestApp, event_type: &str) -> Vec<Value> {
    app.sql()
        .await
        .query(
            "SELECT payload -> 'data' FROM outbox WHERE event_type = $1 ORDER BY id",
            &[&event_type],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The contract's worked example: 299.00 monthly with 10 of its 30 days left is
/// worth ceil(29900 × 10/30) = 99.67, so the yearly 2990.00 charges 2890.33.
#[tokio::test]
async fn changing_now_charges_the_new_price_minus_the_unused_part_and_starts_a_new_period() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let (sub, purchase) = monthly_with(&app, user, Duration::days(10)).await;

    let body = to_yearly_now(&app, user).await;
    assert_eq!(body["credit"]["value"], "99.67", "{body}");
    assert_eq!(body["amount"]["value"], "2890.33", "{body}");
    assert!(body["confirmation_url"].is_string(), "{body}");
    let paid = payment_id(&body);
    // Nothing changes before the payment succeeds.
    assert_eq!(
        app.subscription(sub).await.tariff_id.to_string(),
        MONTH_TARIFF
    );

    pay(&app, paid, Outcome::Succeed).await;
    let s = app.subscription(sub).await;
    let payment = app.payment(paid).await;
    let captured = payment.captured_at.expect("captured");
    assert_eq!(payment.status, PaymentStatus::Succeeded);
    assert_eq!(s.status, SubscriptionStatus::Active);
    assert_eq!(s.tariff_id.to_string(), YEAR_TARIFF);
    assert_eq!(s.price.minor(), 299_000);
    assert_eq!(s.current_period_start, captured);
    assert_eq!(
        s.current_period_end,
        s.period.add_to(captured),
        "a year from the change"
    );
    assert_eq!(s.billing_anchor, captured);
    assert_eq!(payment.subscription_id, Some(sub));
    // The credited purchase's period ends where the change took over.
    let credited_end: Option<DateTime<Utc>> = app
        .sql()
        .await
        .query_one(
            "SELECT period_end FROM payments WHERE id = $1",
            &[&purchase],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(credited_end, Some(captured));

    let changed = events_of(&app, "subscription.tariff_changed").await;
    assert_eq!(changed.len(), 1, "{changed:?}");
    let data = &changed[0];
    assert_eq!(data["tariff_id"], YEAR_TARIFF);
    assert_eq!(data["from_tariff_id"], MONTH_TARIFF);
    assert_eq!(data["credit"], json!({"value": "99.67", "currency": "RUB"}));
    assert_eq!(
        data["charged"],
        json!({"value": "2890.33", "currency": "RUB"})
    );
    assert_eq!(data["payment_id"], json!(paid));
}

#[tokio::test]
async fn a_declined_change_changes_nothing() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let (sub, _) = monthly_with(&app, user, Duration::days(10)).await;
    let before = app.subscription(sub).await;
    let paid = payment_id(&to_yearly_now(&app, user).await);
    pay(&app, paid, Outcome::Decline("insufficient_funds".into())).await;
    assert_eq!(app.payment(paid).await.status, PaymentStatus::Canceled);
    let after = app.subscription(sub).await;
    assert_eq!(after.tariff_id, before.tariff_id);
    assert_eq!(after.current_period_end, before.current_period_end);
    assert_eq!(after.price, before.price);
    assert!(events_of(&app, "subscription.tariff_changed")
        .await
        .is_empty());
}

/// The change was priced on a period that has moved since (here the period end
/// moved as a renewal or refund would move it): the money goes back, the
/// subscription stays as it is.
#[tokio::test]
async fn a_change_paid_after_its_subscription_moved_is_refunded() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let (sub, _) = monthly_with(&app, user, Duration::days(10)).await;
    let paid = payment_id(&to_yearly_now(&app, user).await);
    app.sql()
        .await
        .execute(
            "UPDATE subscriptions SET current_period_end = current_period_end + interval '30 days' \
             WHERE id = $1",
            &[&sub],
        )
        .await
        .unwrap();
    paid_and_refunded(&app, sub, paid).await;
}

/// Rule 12 after a change: the purchase it credited paid a period that is over
/// now, so refunding it takes nothing from the new tariff's period.
#[tokio::test]
async fn refunding_the_credited_purchase_keeps_the_new_tariffs_period() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let (sub, purchase) = monthly_with(&app, user, Duration::days(10)).await;
    let paid = payment_id(&to_yearly_now(&app, user).await);
    pay(&app, paid, Outcome::Succeed).await;
    let changed = app.subscription(sub).await;

    let (status, body) = refund(&app, purchase, json!({"reason": "asked"})).await;
    assert_eq!(status, 201, "{body}");
    let after = app.subscription(sub).await;
    assert_eq!(after.status, SubscriptionStatus::Active);
    assert_eq!(after.current_period_end, changed.current_period_end);
    assert_eq!(after.tariff_id.to_string(), YEAR_TARIFF);
}

#[tokio::test]
async fn the_same_idempotency_key_answers_the_same_change() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    monthly_with(&app, user, Duration::days(10)).await;
    let body = json!({"tariff_id": YEAR_TARIFF, "when": "now"});
    let first = change(&app, user, body.clone(), Some("change-1")).await;
    let again = change(&app, user, body, Some("change-1")).await;
    assert_eq!(first.0, 201, "{}", first.1);
    assert_eq!(first, again);
    let other = change(
        &app,
        user,
        json!({"tariff_id": YEAR_TARIFF, "when": "period_end"}),
        Some("change-1"),
    )
    .await;
    assert_eq!(other.0, 422, "{}", other.1);
    let changes = app
        .payments()
        .await
        .into_iter()
        .filter(|p| p.kind == billing::domain::PaymentKind::Change)
        .count();
    assert_eq!(changes, 1);
}

#[tokio::test]
async fn a_change_the_subscription_does_not_allow_is_refused_and_records_nothing() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let nobody = UserId::new();
    let (status, body) = change_to(&app, nobody, YEAR_TARIFF, "now").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("no_active_subscription"))
    );

    let (sub, _) = monthly_with(&app, user, Duration::days(10)).await;
    let payments_before = app.payments().await.len();
    let refusals = [
        (
            json!({"tariff_id": MONTH_TARIFF, "when": "now"}),
            409,
            "same_tariff",
        ),
        (
            json!({"tariff_id": "00000000-0000-4000-8000-000000000000", "when": "now"}),
            404,
            "tariff_not_found",
        ),
        (
            json!({"tariff_id": YEAR_TARIFF, "when": "tomorrow"}),
            400,
            "bad_json",
        ),
        (
            json!({"tariff_id": YEAR_TARIFF, "when": "now", "coupon": "x"}),
            400,
            "bad_json",
        ),
        (
            json!({"tariff_id": YEAR_TARIFF, "when": "now", "email": "not-an-email"}),
            400,
            "bad_field",
        ),
    ];
    for (body, want, code) in refusals {
        let (status, answer) = change(&app, user, body.clone(), None).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (want, Some(code)),
            "{body}: {answer}"
        );
    }
    // Auto-renewal off: a change at the period end would never happen.
    app.sql()
        .await
        .execute(
            "UPDATE subscriptions SET auto_renew = false WHERE id = $1",
            &[&sub],
        )
        .await
        .unwrap();
    let (status, answer) = change_to(&app, user, YEAR_TARIFF, "period_end").await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("auto_renew_off"))
    );
    assert_eq!(app.payments().await.len(), payments_before);
    assert_eq!(app.subscription(sub).await.scheduled_tariff_id, None);
}

/// Down from the yearly tariff with most of the year left: the unused part is
/// worth more than a month, so only `period_end` can do it.
#[tokio::test]
async fn a_downgrade_now_that_the_credit_covers_is_refused() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let (status, body) = app.buy(user, YEAR_TARIFF, true, None).await;
    assert_eq!(status, 201, "{body}");
    pay(&app, payment_id(&body), Outcome::Succeed).await;
    let (status, body) = change_to(&app, user, MONTH_TARIFF, "now").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("credit_covers_price")),
        "{body}"
    );
    assert_eq!(app.payments().await.len(), 1);
}

#[tokio::test]
async fn a_change_at_the_period_end_renews_on_the_new_tariff() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let sub = app.seed_subscription(user, true, true).await;
    let before = app.subscription(sub).await;

    let (status, body) = change_to(&app, user, YEAR_TARIFF, "period_end").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payment_id"], Value::Null);
    let effective: DateTime<Utc> = body["effective_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(effective.timestamp(), before.current_period_end.timestamp());
    let (_, profile) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    assert_eq!(profile["scheduled_tariff_id"], YEAR_TARIFF);
    assert_eq!(
        profile["tariff"]["id"], MONTH_TARIFF,
        "nothing changes before the renewal"
    );
    let scheduled = events_of(&app, "subscription.tariff_change_scheduled").await;
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0]["scheduled_tariff_id"], YEAR_TARIFF);

    app.make_due(sub).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let renewal = app.renewals(sub).await.pop().expect("a renewal");
    assert_eq!(renewal.amount.minor(), 299_000, "the new tariff's price");
    assert_eq!(renewal.tariff_id.to_string(), YEAR_TARIFF);
    assert_eq!(renewal.status, PaymentStatus::Succeeded);
    let s = app.subscription(sub).await;
    assert_eq!(s.tariff_id.to_string(), YEAR_TARIFF);
    assert_eq!(s.price.minor(), 299_000);
    assert_eq!(s.current_period_start, before.current_period_end);
    assert_eq!(
        s.current_period_end,
        s.period.add_to(before.current_period_end)
    );
    assert_eq!(s.billing_anchor, before.current_period_end);
    assert_eq!(s.scheduled_tariff_id, None);
    let changed = events_of(&app, "subscription.tariff_changed").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["credit"]["value"], "0.00");
    assert_eq!(changed[0]["charged"]["value"], "2990.00");
}

/// The current tariff at the period end withdraws a scheduled change.
#[tokio::test]
async fn the_current_tariff_at_the_period_end_withdraws_a_scheduled_change() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let sub = app.seed_subscription(user, true, true).await;
    for (tariff, scheduled) in [(YEAR_TARIFF, Some(YEAR_TARIFF)), (MONTH_TARIFF, None)] {
        let (status, body) = change_to(&app, user, tariff, "period_end").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            app.subscription(sub)
                .await
                .scheduled_tariff_id
                .map(|t| t.to_string()),
            scheduled.map(str::to_owned)
        );
    }
    app.make_due(sub).await;
    renewer::run_once(app.app()).await.unwrap();
    let renewal = app.renewals(sub).await.pop().expect("a renewal");
    assert_eq!(renewal.amount.minor(), 29_900);
    assert_eq!(
        app.subscription(sub).await.tariff_id.to_string(),
        MONTH_TARIFF
    );
}

/// Turned off while the change was being paid, auto-renewal stays off: the card
/// the viewer paid with must not start renewing the yearly tariff.
#[tokio::test]
async fn a_change_paid_after_a_cancel_does_not_turn_auto_renewal_back_on() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let (sub, _) = monthly_with(&app, user, Duration::days(10)).await;
    let paid = payment_id(&to_yearly_now(&app, user).await);
    let (status, body) = app
        .post(
            "/api/v1/subscriptions/cancel",
            Some(&app.token(user)),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    pay(&app, paid, Outcome::Succeed).await;
    let s = app.subscription(sub).await;
    assert_eq!(s.tariff_id.to_string(), YEAR_TARIFF);
    assert!(!s.auto_renew);
    assert_eq!(s.next_charge_at, None);
}

/// What a change credited bought the new tariff: a refund of the credited
/// purchase afterwards gives back only the rest of it.
#[tokio::test]
async fn the_credited_part_of_a_payment_is_not_refunded_again() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let (_, purchase) = monthly_with(&app, user, Duration::days(10)).await;
    let paid = payment_id(&to_yearly_now(&app, user).await);
    pay(&app, paid, Outcome::Succeed).await;
    let (status, body) = refund(&app, purchase, json!({"reason": "asked"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["amount"]["value"], "199.33",
        "299.00 less the 99.67 credited"
    );
    let (status, body) = refund(
        &app,
        purchase,
        json!({"amount": {"value": "0.01", "currency": "RUB"}, "reason": "again"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("refund_exceeds_remaining"))
    );
}

#[tokio::test]
async fn the_consoles_refund_form_offers_only_what_the_credit_left() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let (_, purchase) = monthly_with(&app, user, Duration::days(10)).await;
    let paid = payment_id(&to_yearly_now(&app, user).await);
    pay(&app, paid, Outcome::Succeed).await;
    let mut console = crate::console::Console::new(&app);
    console.sign_in(&app.admin_token()).await;
    let page = console.get(&format!("/console/users/{user}")).await;
    assert_eq!(page.status, 200, "{}", page.html);
    let form = page
        .html
        .split("<tr data-payment=")
        .find(|row| row.starts_with(&format!("\"{purchase}\"")))
        .expect("the purchase's row");
    assert!(
        form.contains("placeholder=\"199.33 (all that is left)\""),
        "299.00 less the 99.67 credited: {form}"
    );
}

/// A refund of a credited payment between the pricing and the payment: the
/// credit no longer holds, so the change is refunded rather than applied.
#[tokio::test]
async fn a_refund_of_a_credited_payment_before_the_change_is_paid_voids_the_change() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let (sub, purchase) = monthly_with(&app, user, Duration::days(10)).await;
    let paid = payment_id(&to_yearly_now(&app, user).await);
    let (status, body) = refund(
        &app,
        purchase,
        json!({"amount": {"value": "100.00", "currency": "RUB"}, "reason": "asked"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    paid_and_refunded(&app, sub, paid).await;
}

/// Paid after the period it was priced on had ended (a checkout left open while
/// the subscription ran out): the credit was for time already used.
#[tokio::test]
async fn a_change_paid_after_the_credited_period_ended_is_refunded() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let (sub, _) = monthly_with(&app, user, Duration::days(10)).await;
    let paid = payment_id(&to_yearly_now(&app, user).await);
    let sql = app.sql().await;
    sql.execute(
        "UPDATE subscriptions SET current_period_end = now() - interval '1 minute', \
         status = 'past_due' WHERE id = $1",
        &[&sub],
    )
    .await
    .unwrap();
    sql.execute(
        "UPDATE tariff_changes t SET credited_until = s.current_period_end \
         FROM subscriptions s WHERE t.payment_id = $1 AND s.id = t.subscription_id",
        &[&paid],
    )
    .await
    .unwrap();
    paid_and_refunded(&app, sub, paid).await;
}

/// After a scheduled switch renewed ahead, a full refund of the old tariff's
/// period moves the end back by that period (30 days), not by a year.
#[tokio::test]
async fn refunding_the_old_tariffs_period_after_a_scheduled_switch_gives_back_that_period() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let (sub, purchase) = monthly_with(&app, user, Duration::days(10)).await;
    let (status, body) = change_to(&app, user, YEAR_TARIFF, "period_end").await;
    assert_eq!(status, 200, "{body}");
    app.make_due(sub).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let switched = app.subscription(sub).await;
    assert_eq!(switched.tariff_id.to_string(), YEAR_TARIFF);

    let (status, body) = refund(&app, purchase, json!({"reason": "asked"})).await;
    assert_eq!(status, 201, "{body}");
    let after = app.subscription(sub).await;
    assert_eq!(after.status, SubscriptionStatus::Active);
    assert_eq!(
        after.current_period_end,
        switched.current_period_end - Duration::days(30)
    );
}

/// The subscription's own tariff withdraws a scheduled change even once it is
/// no longer on sale.
#[tokio::test]
async fn a_scheduled_change_can_be_withdrawn_when_the_current_tariff_is_archived() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let sub = app.seed_subscription(user, true, true).await;
    let body = json!({"tariff_id": YEAR_TARIFF, "when": "period_end"});
    assert_eq!(change(&app, user, body, None).await.0, 200);
    let (status, body) = app
        .patch(
            &format!("/api/v1/admin/tariffs/{MONTH_TARIFF}"),
            Some(&app.admin_token()),
            json!({"archived": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let body = json!({"tariff_id": MONTH_TARIFF, "when": "period_end"});
    let (status, answer) = change(&app, user, body, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(app.subscription(sub).await.scheduled_tariff_id, None);
}

/// Refunding the change itself ends the new tariff's period (rule 12) and gives
/// back what it credited: the old purchase is refundable in full again.
#[tokio::test]
async fn a_refunded_change_makes_its_credit_refundable_again() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let (_, purchase) = monthly_with(&app, user, Duration::days(10)).await;
    let paid = payment_id(&to_yearly_now(&app, user).await);
    pay(&app, paid, Outcome::Succeed).await;
    for (payment, refunded) in [(paid, "2890.33"), (purchase, "299.00")] {
        let (status, body) = refund(&app, payment, json!({"reason": "asked"})).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["amount"]["value"], refunded);
    }
}
