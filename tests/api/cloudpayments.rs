//! CloudPayments: the adapter, the signed webhook and the fake, over real HTTP
//! against real PostgreSQL.

use crate::helpers::*;
use billing::domain::{
    Currency, InboxStatus, Money, PaySystem, PaymentId, PaymentKind, PaymentStatus, RefundId,
    RefundStatus, SubscriptionId, SubscriptionStatus, TariffId, UserId,
};
use billing::http::webhook_auth::sign_content_hmac;
use billing::providers::{CreatePayment, CreateRefund};
use billing::service::settle::{self, Applied};
use billing::store::webhook_inbox;
use serde_json::{json, Value};
use uuid::Uuid;

async fn buy(app: &TestApp, user: UserId, renew: bool) -> (u16, Value) {
    let req = app
        .http
        .post(format!(
            "{}/api/v1/subscriptions/cloudpayments/buy",
            app.url
        ))
        .header("authorization", app.token(user))
        .json(&json!({"tariff_id": MONTH_TARIFF, "renew": renew}));
    read(req.send().await.unwrap()).await
}

/// Buys and answers (our payment id, the fake's order id).
async fn bought(app: &TestApp, user: UserId) -> (PaymentId, String) {
    let fake = app.cloudpayments();
    let (status, body) = buy(app, user, true).await;
    assert_eq!(status, 201, "{body}");
    let payment_id = payment_id(&body);
    let order = fake
        .order_for_invoice(&payment_id.to_string())
        .expect("an order");
    (payment_id, order["Id"].as_str().unwrap().to_owned())
}

/// The purchase has been pending for over a day and is due for the reconciler.
async fn a_day_pending(app: &TestApp, id: PaymentId) {
    app.sql()
        .await
        .execute(
            "UPDATE payments SET created_at = now() - interval '25 hours', \
             next_check_at = now() - interval '1 second' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
}

/// Posts a notification signed with `secret` (None: no Content-HMAC at all).
async fn post_notification(
    app: &TestApp,
    kind: &str,
    body: &[u8],
    content_type: &str,
    secret: Option<&str>,
) -> (u16, Value) {
    let mut req = app
        .http
        .post(format!("{}/webhooks/cloudpayments/{kind}", app.url))
        .header("content-type", content_type)
        .body(body.to_vec());
    if let Some(s) = secret {
        req = req.header("Content-HMAC", sign_content_hmac(s.as_bytes(), body));
    }
    read(req.send().await.unwrap()).await
}

async fn post_json(app: &TestApp, kind: &str, body: &Value) -> (u16, Value) {
    let raw = serde_json::to_vec(body).unwrap();
    post_notification(app, kind, &raw, "application/json", Some(CP_API_SECRET)).await
}

/// A pay notification for our payment, as CloudPayments would send it.
fn pay_body(payment_id: PaymentId, user: UserId, transaction: i64) -> Value {
    json!({
        "TransactionId": transaction, "Amount": 299.00, "Currency": "RUB",
        "InvoiceId": payment_id, "AccountId": user.to_string(), "Status": "Completed",
        "OperationType": "Payment", "TestMode": true, "Token": "tk_manual",
        "CardFirstSix": "555555", "CardLastFour": "4444", "CardType": "MasterCard",
        "DateTime": "2026-11-27 10:00:01", "Email": "viewer@example.com",
    })
}

#[tokio::test]
async fn a_purchase_through_the_checkout_page_activates_a_subscription_with_the_saved_token() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let user = UserId::new();
    let (status, body) = buy(&app, user, true).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(
        body["amount"],
        json!({"value": "299.00", "currency": "RUB"})
    );
    let url = body["confirmation_url"].as_str().unwrap();
    assert!(url.contains("/sandbox/cloudpayments/checkout/"), "{url}");
    let payment_id = payment_id(&body);

    let order = fake.order_for_invoice(&payment_id.to_string()).unwrap();
    assert_eq!(
        order["AccountId"],
        user.to_string(),
        "AccountId is our user id"
    );
    assert_eq!(
        order["Amount"],
        json!(299.0),
        "a JSON number in major units"
    );
    assert_eq!(
        app.payment(payment_id).await.provider_payment_id,
        None,
        "an order is not a transaction: no provider id yet"
    );

    // The viewer presses Pay on the provider's page: check, then a signed pay.
    let page = app
        .http
        .post(url)
        .form(&[("action", "pay"), ("card", "4444")])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Paid"));

    let (status, sub) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    assert_eq!(status, 200, "{sub}");
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["auto_renew"], true);
    assert_eq!(sub["payment_method"], "Bank card *4444");

    let transaction = fake
        .transactions()
        .into_iter()
        .find(|t| t["InvoiceId"] == payment_id.to_string())
        .unwrap();
    let payment = app.payment(payment_id).await;
    assert_eq!(payment.status, PaymentStatus::Succeeded);
    assert_eq!(
        payment.provider_payment_id,
        Some(transaction["TransactionId"].to_string()),
        "the pay notification's TransactionId is adopted"
    );
    let methods = app.methods_of(user).await;
    let saved = methods
        .iter()
        .find(|m| m.pay_system == PaySystem::CloudPayments)
        .expect("the token is saved");
    assert_eq!(
        saved.provider_method_id,
        transaction["Token"].as_str().unwrap()
    );
    assert_eq!(
        app.outbox_types().await,
        ["payment.succeeded", "subscription.activated"]
    );
    let processed = app.inbox_with(InboxStatus::Processed).await;
    assert_eq!(
        processed
            .iter()
            .filter(|r| r.provider == PaySystem::CloudPayments)
            .count(),
        2,
        "check and pay, both processed"
    );
}

#[tokio::test]
async fn a_form_encoded_notification_verifies_and_applies() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    fake.set_form_notifications(true);
    let user = UserId::new();
    let (payment_id, order) = bought(&app, user).await;
    let t = fake
        .pay_order(&order, None)
        .await
        .unwrap()
        .expect("check accepted");
    assert_eq!(t["Status"], "Completed");
    assert_eq!(
        app.payment(payment_id).await.status,
        PaymentStatus::Succeeded
    );
    let pay = app
        .inbox()
        .await
        .into_iter()
        .find(|r| r.event == "pay")
        .unwrap();
    let stored = webhook_inbox::stored(&app.conn().await, pay.id)
        .await
        .unwrap();
    let content_type = stored.content_type.unwrap();
    assert!(content_type.starts_with("application/x-www-form-urlencoded"));

    // And by hand: TestMode as `1`, the amount as text.
    let user2 = UserId::new();
    let (payment2, _) = bought(&app, user2).await;
    let form = format!(
        "TransactionId=555&Amount=299.00&Currency=RUB&InvoiceId={payment2}&AccountId={user2}&TestMode=1&Status=Completed&Token=tk_form&CardLastFour=1111"
    );
    let (status, answer) = post_notification(
        &app,
        "pay",
        form.as_bytes(),
        "application/x-www-form-urlencoded",
        Some(CP_API_SECRET),
    )
    .await;
    assert_eq!((status, answer), (200, json!({"code": 0})));
    assert_eq!(app.payment(payment2).await.status, PaymentStatus::Succeeded);
}

#[tokio::test]
async fn a_missing_or_wrong_content_hmac_is_401_and_stores_nothing() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let user = UserId::new();
    let (payment_id, _) = bought(&app, user).await;
    let body = serde_json::to_vec(&pay_body(payment_id, user, 777)).unwrap();

    let (status, err) = post_notification(&app, "pay", &body, "application/json", None).await;
    assert_eq!(status, 401, "{err}");
    assert_eq!(err["code"], "unauthorized");
    let (status, _) = post_notification(
        &app,
        "pay",
        &body,
        "application/json",
        Some("another-secret"),
    )
    .await;
    assert_eq!(status, 401);
    // A valid signature of another body.
    let resp = app
        .http
        .post(format!("{}/webhooks/cloudpayments/pay", app.url))
        .header("content-type", "application/json")
        .header(
            "Content-HMAC",
            sign_content_hmac(CP_API_SECRET.as_bytes(), b"{}"),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = app
        .http
        .post(format!("{}/webhooks/cloudpayments/pay", app.url))
        .header("Content-HMAC", "not base64 at all!")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    assert_eq!(app.inbox().await.len(), 0);
    assert_eq!(app.subscriptions().await.len(), 0);
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("webhooks_rejected_total")
                && l.contains("cloudpayments")
                && l.contains("missing_signature")),
        "rejections are counted"
    );
}

#[tokio::test]
async fn check_answers_by_code_and_unknown_kinds_are_404() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let user = UserId::new();
    let (payment_id, _) = bought(&app, user).await;
    let base = pay_body(payment_id, user, 900);
    let with = |field: &str, value: Value| {
        let mut b = base.clone();
        b[field] = value;
        b
    };
    let cases = [
        (base.clone(), 0),
        (with("Amount", json!(1.00)), 12),
        (with("Currency", json!("USD")), 12),
        (with("AccountId", json!(Uuid::new_v4().to_string())), 11),
        (with("InvoiceId", json!(Uuid::new_v4().to_string())), 10),
        (with("InvoiceId", json!("not-ours")), 10),
        (with("TestMode", json!(false)), 13),
    ];
    for (i, (body, code)) in cases.into_iter().enumerate() {
        let mut body = body;
        body["TransactionId"] = json!(900 + i as i64);
        let (status, answer) = post_json(&app, "check", &body).await;
        assert_eq!(
            (status, answer["code"].as_i64()),
            (200, Some(code)),
            "{body}"
        );
    }
    let processed = app.inbox_with(InboxStatus::Processed).await;
    assert_eq!(processed.iter().filter(|r| r.event == "check").count(), 7);
    assert_eq!(
        app.payment(payment_id).await.status,
        PaymentStatus::Pending,
        "a check moves nothing"
    );

    let (status, err) = post_json(&app, "payout", &base).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("unknown_notification_kind"))
    );

    // recurrent: recorded and ignored.
    let (status, answer) = post_json(
        &app,
        "recurrent",
        &json!({"Id": "sc_1", "AccountId": user.to_string(), "Status": "Active"}),
    )
    .await;
    assert_eq!((status, answer), (200, json!({"code": 0})));
    let ignored = app.inbox_with(InboxStatus::Ignored).await;
    assert_eq!(ignored.iter().filter(|r| r.event == "recurrent").count(), 1);
}

#[tokio::test]
async fn a_pay_that_disagrees_with_our_payment_grants_nothing() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let mismatches = [
        ("Amount", json!(1.00)),
        ("Currency", json!("USD")),
        ("AccountId", json!(Uuid::new_v4().to_string())),
        ("TestMode", json!(false)),
    ];
    for (i, (field, value)) in mismatches.into_iter().enumerate() {
        let user = UserId::new();
        let (payment_id, _) = bought(&app, user).await;
        let mut body = pay_body(payment_id, user, 7_000 + i as i64);
        body[field] = value;
        let (status, answer) = post_json(&app, "pay", &body).await;
        assert_eq!((status, answer), (200, json!({"code": 0})), "{field}");
        let payment = app.payment(payment_id).await;
        assert_eq!(payment.status, PaymentStatus::Pending, "{field}");
        assert!(
            payment.review_reason.is_some(),
            "{field}: flagged for review"
        );
    }
    assert_eq!(app.subscriptions().await.len(), 0);
    assert!(app.outbox_types().await.is_empty());
}

#[tokio::test]
async fn repeated_pay_notifications_activate_once() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let user = UserId::new();
    let (payment_id, _) = bought(&app, user).await;
    let body = pay_body(payment_id, user, 4242);
    let sends = (0..10).map(|_| post_json(&app, "pay", &body));
    for (status, answer) in futures::future::join_all(sends).await {
        assert_eq!((status, answer), (200, json!({"code": 0})));
    }
    let (status, _) = post_json(&app, "confirm", &body).await;
    assert_eq!(status, 200);
    assert_eq!(app.subscriptions().await.len(), 1);
    assert_eq!(
        app.outbox_types().await,
        ["payment.succeeded", "subscription.activated"]
    );
}

/// Issue 15: a declined card on the CloudPayments page leaves the viewer on the
/// page to try another; the purchase used to be canceled, and the success that
/// followed raised `succeeded_after_local_final`.
#[tokio::test]
async fn a_declined_attempt_leaves_the_purchase_open_for_another_card() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let user = UserId::new();
    let (payment_id, order) = bought(&app, user).await;
    let declined = fake.pay_order(&order, Some(5051)).await.unwrap().unwrap();
    assert_eq!(declined["Status"], "Declined");
    let payment = app.payment(payment_id).await;
    assert_eq!(
        payment.status,
        PaymentStatus::Pending,
        "a decline is not final"
    );
    assert_eq!(
        payment.provider_payment_id, None,
        "a declined TransactionId is not ours"
    );
    assert_eq!(payment.cancellation_reason, None);
    assert!(
        app.outbox_types().await.is_empty(),
        "nothing happened to the payment"
    );

    let account = app.admin_account(user).await;
    let attempts = account["declined_attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{account}");
    assert_eq!(attempts[0]["payment_id"], payment_id.to_string());
    assert_eq!(attempts[0]["reason"], "insufficient_funds");
    assert_eq!(
        attempts[0]["provider_transaction_id"],
        declined["TransactionId"].to_string()
    );
    assert!(attempts[0]["provider_reason"]
        .as_str()
        .unwrap()
        .contains("5051"));

    let paid = fake.pay_order(&order, None).await.unwrap().unwrap();
    let payment = app.payment(payment_id).await;
    assert_eq!(payment.status, PaymentStatus::Succeeded);
    assert_eq!(
        payment.provider_payment_id.as_deref(),
        Some(paid["TransactionId"].to_string().as_str())
    );
    assert_eq!(
        app.subscription_of(user).await.status,
        SubscriptionStatus::Active
    );
    assert_eq!(
        app.outbox_types().await,
        ["payment.succeeded", "subscription.activated"]
    );
}

#[tokio::test]
async fn a_repeated_fail_notification_records_the_attempt_once() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let user = UserId::new();
    let (payment_id, order) = bought(&app, user).await;
    let declined = fake.pay_order(&order, Some(5054)).await.unwrap().unwrap();
    let body = fake.notification_fields(&declined);
    let (status, code) = fake.notify("fail", &body).await.unwrap();
    assert_eq!((status, code), (200, 0));
    let attempts: i64 = app
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM declined_attempts WHERE payment_id = $1",
            &[&payment_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 1);
    assert_eq!(app.payment(payment_id).await.status, PaymentStatus::Pending);
}

/// The order the viewer left after a decline is voided a day later like any other;
/// the purchase ends `failed` with the decline's reason.
#[tokio::test]
async fn a_purchase_abandoned_after_a_decline_fails_with_the_decline_reason() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let (payment_id, order) = bought(&app, UserId::new()).await;
    fake.pay_order(&order, Some(5051)).await.unwrap().unwrap();
    a_day_pending(&app, payment_id).await;
    assert_eq!(
        billing::jobs::reconciler::run_once(app.app())
            .await
            .unwrap(),
        1
    );
    let payment = app.payment(payment_id).await;
    assert_eq!(payment.status, PaymentStatus::Failed);
    assert_eq!(
        payment.cancellation_reason.as_deref(),
        Some("insufficient_funds")
    );
    assert_eq!(fake.order(&order).unwrap()["Status"], "Canceled");
}

#[tokio::test]
async fn pay_systems_list_cloudpayments_when_configured() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let (status, body) = app.get("/api/v1/pay-systems", None).await;
    assert_eq!(status, 200);
    let aliases: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["alias"].as_str().unwrap())
        .collect();
    assert_eq!(aliases, ["yookassa", "cloudpayments"]);
}

/// A paid subscription with a saved token: (subscription id, token, period end).
async fn subscribed(
    app: &TestApp,
    user: UserId,
) -> (SubscriptionId, String, chrono::DateTime<chrono::Utc>) {
    let fake = app.cloudpayments();
    let (_, order) = bought(app, user).await;
    let t = fake.pay_order(&order, None).await.unwrap().unwrap();
    let sub = app.subscription_of(user).await;
    (
        sub.id,
        t["Token"].as_str().unwrap().to_owned(),
        sub.current_period_end,
    )
}

/// A renewal payment row, committed before the provider call as the renewer does.
async fn renewal_row(
    app: &TestApp,
    user: UserId,
    sub: SubscriptionId,
    period_start: chrono::DateTime<chrono::Utc>,
) -> (PaymentId, String) {
    let id = PaymentId::new();
    let key = format!("renewal:{sub}:{}:1", period_start.timestamp());
    app.sql()
        .await
        .execute(
            "INSERT INTO payments (id, user_id, tariff_id, subscription_id, pay_system, kind, status, amount_minor, \
             currency, renew, description, provider_idempotence_key, livemode, period_start, attempt) \
             VALUES ($1, $2, $3, $4, 'cloudpayments', 'renewal', 'pending', 29900, 'RUB', true, \
             'Renewal: Monthly', $5, false, $6, 1)",
            &[&id, &user, &MONTH_TARIFF.parse::<TariffId>().unwrap(), &sub, &key, &period_start],
        )
        .await
        .unwrap();
    (id, key)
}

#[tokio::test]
async fn a_renewal_charges_the_saved_token_once_and_extends_the_period() {
    // The renewer job is not on this branch: drive its two steps directly.
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let user = UserId::new();
    let (sub, token, end) = subscribed(&app, user).await;
    let (payment_id, key) = renewal_row(&app, user, sub, end).await;
    let provider = app
        .app()
        .providers
        .cloudpayments
        .clone()
        .expect("configured");
    let create = CreatePayment {
        our_id: payment_id,
        user_id: user,
        amount: Money::new(29_900, Currency::Rub),
        description: "Renewal: Monthly".into(),
        idempotence_key: key.clone(),
        return_url: None,
        save_method: true,
        saved_method_id: Some(token.clone()),
        receipt: None,
    };
    let first = provider.create_payment(&create).await.unwrap();
    // A crash after the call: the same key is re-sent and charges nothing more.
    let again = provider.create_payment(&create).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(fake.charges(), 1);
    assert_eq!(fake.requests_with_key(&key), 2);
    assert_eq!(first.status, PaymentStatus::Succeeded);
    assert_eq!(first.our_id, Some(payment_id));
    assert_eq!(first.method.as_ref().unwrap().id, token);

    assert_eq!(
        settle::apply(app.app(), payment_id, &first).await.unwrap(),
        Applied::Moved(PaymentStatus::Succeeded)
    );
    let renewed = app.subscription(sub).await;
    assert_eq!(
        renewed.current_period_end,
        end.checked_add_months(chrono::Months::new(1)).unwrap()
    );
    assert_eq!(renewed.status, SubscriptionStatus::Active);
    assert_eq!(
        app.payment(payment_id).await.provider_payment_id,
        Some(first.id.clone())
    );
    let types = app.outbox_types().await;
    assert_eq!(
        types.last().map(String::as_str),
        Some("subscription.renewed")
    );
}

#[tokio::test]
async fn a_hard_decline_of_a_renewal_stops_using_the_token() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let user = UserId::new();
    let (sub, token, end) = subscribed(&app, user).await;
    fake.decline_token(&token, 5054);
    let (payment_id, key) = renewal_row(&app, user, sub, end).await;
    let provider = app.app().providers.cloudpayments.clone().unwrap();
    let pp = provider
        .create_payment(&CreatePayment {
            our_id: payment_id,
            user_id: user,
            amount: Money::new(29_900, Currency::Rub),
            description: "Renewal: Monthly".into(),
            idempotence_key: key,
            return_url: None,
            save_method: true,
            saved_method_id: Some(token.clone()),
            receipt: None,
        })
        .await
        .unwrap();
    assert_eq!(pp.status, PaymentStatus::Canceled);
    let c = pp.cancellation.clone().unwrap();
    assert_eq!(c.reason, "card_expired");
    assert!(c.party.contains("5054"), "{}", c.party);
    settle::apply(app.app(), payment_id, &pp).await.unwrap();
    let s = app.subscription(sub).await;
    let method = app.method_of(&s).await.expect("a saved method");
    assert_eq!(s.status, SubscriptionStatus::PastDue);
    assert!(s.next_charge_at.is_none(), "a hard decline is not retried");
    assert!(!method.usable, "the token is not used again");
}

#[tokio::test]
async fn refunds_ours_are_matched_by_id_and_dashboard_ones_are_recorded() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let provider = app.app().providers.cloudpayments.clone().unwrap();

    // Ours: a partial refund through the API, then its notification matches it.
    let user = UserId::new();
    let (_, order) = bought(&app, user).await;
    let t = fake.pay_order(&order, None).await.unwrap().unwrap();
    let refund = provider
        .create_refund(&CreateRefund {
            provider_payment_id: t["TransactionId"].to_string(),
            amount: Money::new(10_000, Currency::Rub),
            description: "goodwill".into(),
            idempotence_key: Uuid::new_v4().to_string(),
            receipt: None,
            whole_payment: false,
        })
        .await
        .unwrap();
    assert_eq!(fake.refunds(), 1);
    let payment_id: PaymentId = t["InvoiceId"].as_str().unwrap().parse().unwrap();
    app.sql()
        .await
        .execute(
            "INSERT INTO refunds (id, payment_id, pay_system, amount_minor, currency, status, reason, initiated_by, \
             provider_idempotence_key, provider_refund_id) VALUES ($1, $2, 'cloudpayments', 10000, 'RUB', 'pending', \
             'goodwill', 'admin', 'k1', $3)",
            &[&RefundId::new(), &payment_id, &refund.id],
        )
        .await
        .unwrap();
    let (status, _) = post_json(
        &app,
        "refund",
        &json!({"TransactionId": refund.id.parse::<i64>().unwrap(), "PaymentTransactionId": t["TransactionId"],
                "Amount": 100.00, "InvoiceId": payment_id, "AccountId": user.to_string(), "OperationType": "Refund"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(app.refunds().await.len(), 1, "matched, not duplicated");
    assert_eq!(
        app.payment(payment_id).await.status,
        PaymentStatus::PartiallyRefunded
    );

    // Theirs: a full refund made in the merchant dashboard.
    let user2 = UserId::new();
    let (payment2, order2) = bought(&app, user2).await;
    let t2 = fake.pay_order(&order2, None).await.unwrap().unwrap();
    let tx2 = t2["TransactionId"].as_i64().unwrap();
    assert_eq!(
        fake.refund_in_dashboard(tx2, json!(299.00)).await.unwrap(),
        (200, 0)
    );
    let payment2 = app.payment(payment2).await;
    assert_eq!(payment2.provider_payment_id, Some(tx2.to_string()));
    let refunds: Vec<_> = app
        .refunds()
        .await
        .into_iter()
        .filter(|r| r.payment_id == payment2.id)
        .collect();
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].initiated_by, "provider");
    assert_eq!(refunds[0].status, RefundStatus::Succeeded);
    assert_eq!(refunds[0].amount.minor(), 29_900);
    assert_eq!(payment2.status, PaymentStatus::Refunded);
    assert_eq!(
        app.subscription_of(user2).await.status,
        SubscriptionStatus::Canceled,
        "a full refund of the paid period ends access"
    );
}

#[tokio::test]
async fn every_fixture_is_accepted_when_signed() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cloudpayments");
    for kind in [
        "check",
        "pay",
        "fail",
        "confirm",
        "refund",
        "cancel",
        "recurrent",
    ] {
        let raw = std::fs::read(dir.join(format!("{kind}.json"))).unwrap();
        let (status, answer) =
            post_notification(&app, kind, &raw, "application/json", Some(CP_API_SECRET)).await;
        assert_eq!(status, 200, "{kind}: {answer}");
        // No such invoice here: check refuses it, every other kind is accepted.
        let expected = if kind == "check" { 10 } else { 0 };
        assert_eq!(answer["code"], expected, "{kind}");
    }
    assert_eq!(app.inbox().await.len(), 7);
}

#[tokio::test]
async fn a_failed_call_is_retried_with_the_same_request_id() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    fake.fail_requests(1);
    let user = UserId::new();
    let (status, body) = buy(&app, user, false).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(fake.orders_created(), 1);
    let key = app
        .payment(payment_id(&body))
        .await
        .provider_idempotence_key;
    assert_eq!(
        fake.requests_with_key(&key),
        2,
        "one 500, one retry, same key"
    );
}

#[tokio::test]
async fn a_payment_whose_pay_notification_is_lost_is_found_by_the_reconciler() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let user = UserId::new();
    let (status, body) = buy(&app, user, true).await;
    assert_eq!(status, 201, "{body}");
    let payment_id = payment_id(&body);
    let order = fake.order_for_invoice(&payment_id.to_string()).unwrap();
    fake.lose_notifications(true);
    let paid = fake
        .pay_order(order["Id"].as_str().unwrap(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        app.payment(payment_id).await.status,
        PaymentStatus::Pending,
        "no notification arrived"
    );

    app.make_checks_due().await;
    assert_eq!(
        billing::jobs::reconciler::run_once(app.app())
            .await
            .unwrap(),
        1
    );
    let payment = app.payment(payment_id).await;
    assert_eq!(payment.status, PaymentStatus::Succeeded);
    assert_eq!(
        payment.provider_payment_id,
        Some(paid["TransactionId"].to_string())
    );
    let (_, sub) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    assert_eq!(sub["status"], "active");
    assert_eq!(
        fake.orders_created(),
        1,
        "the order was looked up, not created again"
    );
}

#[tokio::test]
async fn the_renewer_charges_the_saved_token_once_per_period() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let user = UserId::new();
    let (_, body) = buy(&app, user, true).await;
    let order = fake
        .order_for_invoice(&payment_id(&body).to_string())
        .unwrap();
    fake.pay_order(order["Id"].as_str().unwrap(), None)
        .await
        .unwrap()
        .unwrap();
    let (_, before) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    assert_eq!(before["status"], "active");

    app.sql()
        .await
        .execute(
            "UPDATE subscriptions SET next_charge_at = now() - interval '1 minute'",
            &[],
        )
        .await
        .unwrap();
    for _ in 0..2 {
        billing::jobs::renewer::run_once(app.app()).await.unwrap();
    }
    assert_eq!(
        fake.charges(),
        1,
        "one charge of the saved token for the period"
    );
    let (_, after) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    let end = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v["current_period_end"].as_str().unwrap()).unwrap()
    };
    assert_eq!(
        end(&after),
        end(&before)
            .checked_add_months(chrono::Months::new(1))
            .unwrap()
    );
    let renewals = app.payments_with(PaymentStatus::Succeeded).await;
    assert_eq!(
        renewals
            .iter()
            .filter(|p| p.kind == PaymentKind::Renewal)
            .count(),
        1
    );
    let types = app.outbox_types().await;
    assert_eq!(
        types.last().map(String::as_str),
        Some("subscription.renewed"),
        "{types:?}"
    );
}

#[tokio::test]
async fn a_refund_notification_that_arrives_before_its_pay_is_kept_and_applied_later() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let user = UserId::new();
    let (payment_id, order) = bought(&app, user).await;
    // The pay notification is lost on the way; support refunds part of it at once.
    fake.lose_notifications(true);
    let t = fake.pay_order(&order, None).await.unwrap().unwrap();
    fake.lose_notifications(false);
    let tx = t["TransactionId"].as_i64().unwrap();
    assert_eq!(
        fake.refund_in_dashboard(tx, json!(100.00)).await.unwrap(),
        (200, 0)
    );
    let refund = app
        .inbox()
        .await
        .into_iter()
        .find(|r| r.event == "refund")
        .unwrap();
    let inbox: InboxStatus = refund.status;
    assert!(
        inbox != InboxStatus::Ignored && inbox != InboxStatus::Failed,
        "a refund that names our payment is kept for retry, got {inbox}"
    );

    // The pay arrives late; the stored refund is then applied by the retry worker.
    let (status, body) = post_json(&app, "pay", &t).await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)));
    app.make_inbox_due().await;
    billing::jobs::inbox_retry::run_once(app.app())
        .await
        .unwrap();
    let payment = app.payment(payment_id).await;
    assert_eq!(payment.status, PaymentStatus::PartiallyRefunded);
    assert_eq!(payment.refunded_minor, 10_000);
    assert_eq!(
        app.subscription_of(user).await.status,
        SubscriptionStatus::Active,
        "a partial refund changes no access"
    );
}

/// Seed 297 of the simulator: a purchase left unpaid for a day was failed locally
/// while its CloudPayments order stayed payable; the viewer paid it weeks later with
/// the notifications lost, and the money had no payment of ours. The order is now
/// voided before the purchase is given up.
#[tokio::test]
async fn an_order_we_gave_up_on_is_voided_and_cannot_be_paid_later() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let (status, body) = buy(&app, UserId::new(), true).await;
    assert_eq!(status, 201, "{body}");
    let id = payment_id(&body);
    let order = fake.order_for_invoice(&id.to_string()).unwrap();
    let order_id = order["Id"].as_str().unwrap();
    assert_eq!(
        app.payment(id).await.provider_checkout_id.as_deref(),
        Some(order_id),
        "the order's id is kept"
    );
    a_day_pending(&app, id).await;

    assert_eq!(
        billing::jobs::reconciler::run_once(app.app())
            .await
            .unwrap(),
        1
    );
    assert_eq!(app.payment(id).await.status, PaymentStatus::Failed);
    assert_eq!(fake.order(order_id).unwrap()["Status"], "Canceled");
    fake.lose_notifications(true);
    let late = fake.pay_order(order_id, None).await;
    assert!(late.is_err(), "{late:?}");
    assert!(
        fake.transactions().is_empty(),
        "no money moved: {:?}",
        fake.transactions()
    );
}

/// Seed 1957 of the long run: an operator refund CloudPayments failed to answer
/// waited for its re-send; meanwhile a refund in the dashboard gave the whole
/// payment back. The re-send must not refund it a second time: CloudPayments
/// refuses more than what is left, and ours ends canceled, the money counted once.
#[tokio::test]
async fn a_queued_refund_overtaken_by_a_dashboard_refund_is_not_made_twice() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let (id, order) = bought(&app, UserId::new()).await;
    let t = fake.pay_order(&order, None).await.unwrap().unwrap();
    assert_eq!(app.payment(id).await.status, PaymentStatus::Succeeded);

    fake.fail_requests(1_000);
    let (status, body) = app
        .post(
            &format!("/api/v1/admin/payments/{id}/refund"),
            Some(&app.admin_token()),
            json!({"reason": "viewer asked"}),
        )
        .await;
    fake.fail_requests(0);
    assert_ne!(status, 201, "{body}");
    assert_eq!(fake.refunds(), 0, "not made yet");
    let tx = t["TransactionId"].as_i64().unwrap();
    assert_eq!(
        fake.refund_in_dashboard(tx, json!(299.00)).await.unwrap(),
        (200, 0)
    );

    app.sql()
        .await
        .execute("UPDATE refunds SET next_attempt_at = now()", &[])
        .await
        .unwrap();
    billing::jobs::refund_follow_up::run_once(app.app())
        .await
        .unwrap();
    assert_eq!(fake.refunds(), 1, "the whole payment was given back once");
    let refunds = app.refunds().await;
    let made: i64 = refunds
        .iter()
        .filter(|r| r.status == RefundStatus::Succeeded)
        .map(|r| r.amount.minor())
        .sum();
    assert_eq!(made, 29_900, "{refunds:?}");
    assert!(
        refunds.iter().all(|r| r.status != RefundStatus::Pending),
        "{refunds:?}"
    );
    let payment = app.payment(id).await;
    assert_eq!(
        (payment.status, payment.refunded_minor),
        (PaymentStatus::Refunded, 29_900)
    );
}

/// Issue 13, finding 4 (forms): a NUL arrives in a form body as `%00`. A signed
/// notification carrying one is refused as invalid, never a 5xx that CloudPayments
/// would retry.
#[tokio::test]
async fn a_form_notification_with_a_nul_is_refused_not_a_server_error() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let user = UserId::new();
    let (payment_id, _) = bought(&app, user).await;
    let form = format!(
        "TransactionId=556%00&Amount=299.00&Currency=RUB&InvoiceId={payment_id}&AccountId={user}&TestMode=1&Status=Completed&Token=tk%00"
    );
    let (status, answer) = post_notification(
        &app,
        "pay",
        form.as_bytes(),
        "application/x-www-form-urlencoded",
        Some(CP_API_SECRET),
    )
    .await;
    assert!(status < 500, "{status}: {answer}");
    assert_ne!(answer, json!({"code": 0}), "not accepted");
    assert_eq!(app.payment(payment_id).await.status, PaymentStatus::Pending);
}

/// Every background job, one run each (as a `--workers` process would, in order).
async fn run_every_job(app: &TestApp) {
    for job in billing::jobs::all(&app.app().config) {
        job.run_once(app.app()).await.unwrap();
    }
}

#[tokio::test]
async fn a_dashboard_refund_whose_notification_never_came_is_found_at_the_provider() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let user = UserId::new();
    let (payment_id, order) = bought(&app, user).await;
    let t = fake.pay_order(&order, None).await.unwrap().unwrap();
    let tx = t["TransactionId"].as_i64().unwrap();
    assert_eq!(
        app.payment(payment_id).await.status,
        PaymentStatus::Succeeded
    );
    // Support gives back part of it in the merchant dashboard; the notification is lost.
    fake.lose_notifications(true);
    fake.refund_in_dashboard(tx, json!(100.00)).await.unwrap();
    fake.lose_notifications(false);
    assert_eq!(app.payment(payment_id).await.refunded_minor, 0);

    run_every_job(&app).await;
    let payment = app.payment(payment_id).await;
    assert_eq!(payment.status, PaymentStatus::PartiallyRefunded);
    assert_eq!(payment.refunded_minor, 10_000);
    let refunds = app.refunds().await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].initiated_by, "provider");
    assert_eq!(refunds[0].status, RefundStatus::Succeeded);
    let events = app.outbox_types().await;

    // Found again by every later run: recorded once.
    run_every_job(&app).await;
    assert_eq!(app.refunds().await.len(), 1);
    assert_eq!(app.payment(payment_id).await.refunded_minor, 10_000);
    assert_eq!(app.outbox_types().await, events, "no second event");
}

/// Issue 15: CloudPayments' expected test flag was derived from YooKassa's mode,
/// so a live CloudPayments beside a test YooKassa sent every CloudPayments payment
/// to review and recorded it `livemode: false`.
#[tokio::test]
async fn a_live_cloudpayments_beside_a_test_yookassa_keeps_its_own_mode() {
    let app = TestApp::builder()
        .fake_yookassa()
        .live_cloudpayments()
        .start()
        .await;
    let fake = app.cloudpayments();
    let user = UserId::new();
    let (cp_payment, order) = bought(&app, user).await;
    assert!(app.payment(cp_payment).await.livemode, "recorded live");
    fake.pay_order(&order, None).await.unwrap().unwrap();
    let payment = app.payment(cp_payment).await;
    assert_eq!(payment.review_reason, None);
    assert_eq!(payment.status, PaymentStatus::Succeeded);
    assert!(app.subscription_of(user).await.livemode);
    let live_events: Vec<bool> = app
        .sql()
        .await
        .query(
            "SELECT (payload->'data'->>'livemode')::boolean FROM outbox ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        live_events,
        [true, true],
        "payment.succeeded, subscription.activated"
    );

    let (status, body) = app.buy(UserId::new(), MONTH_TARIFF, true, None).await;
    assert_eq!(status, 201, "{body}");
    let yookassa_payment = app.payment(payment_id(&body)).await;
    assert!(!yookassa_payment.livemode, "YooKassa keeps its test mode");

    let (status, ready) = app.get("/readyz", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        ready["modes"],
        json!({"yookassa": "test", "cloudpayments": "live"})
    );
}

/// The other half: a test-mode notification for a live terminal is not applied.
#[tokio::test]
async fn a_test_flag_on_a_live_cloudpayments_terminal_is_refused_at_check() {
    let app = TestApp::builder()
        .fake_yookassa()
        .fake_cloudpayments()
        .config(|c| c.cloudpayments.as_mut().unwrap().mode = billing::config::Mode::Live)
        .start()
        .await;
    let fake = app.cloudpayments();
    let user = UserId::new();
    let (payment_id, order) = bought(&app, user).await;
    // The fake's terminal is a test one: its check is refused (13), so pay anyway.
    let refused = fake.pay_order(&order, None).await.unwrap();
    assert_eq!(
        refused,
        Err(13),
        "check refuses a TestMode disagreeing with the mode"
    );
    assert_eq!(app.payment(payment_id).await.status, PaymentStatus::Pending);
}

/// A subscription an extension moves to a live CloudPayments card renews live:
/// its `livemode` follows the provider its renewals go to.
#[tokio::test]
async fn an_extension_moving_to_a_live_provider_makes_the_subscription_live() {
    let app = TestApp::builder()
        .fake_yookassa()
        .live_cloudpayments()
        .start()
        .await;
    let yookassa = app.yookassa();
    let user = UserId::new();
    let (status, body) = app.buy(user, MONTH_TARIFF, true, None).await;
    assert_eq!(status, 201, "{body}");
    let pid = app.provider_id(payment_id(&body)).await;
    yookassa
        .settle(&pid, billing::providers::sandbox::Outcome::Succeed)
        .unwrap();
    assert_eq!(yookassa.notify(&pid).await.unwrap(), 200);
    assert!(!app.subscription_of(user).await.livemode);

    let (_, order) = bought(&app, user).await;
    app.cloudpayments()
        .pay_order(&order, None)
        .await
        .unwrap()
        .unwrap();
    let sub = app.subscription_of(user).await;
    assert_eq!(sub.pay_system, PaySystem::CloudPayments);
    assert!(sub.livemode, "renewals now go to the live CloudPayments");
}

/// A tariff change paid now goes through the CloudPayments page like a purchase:
/// the subscription's provider takes it, and its `pay` switches the tariff.
#[tokio::test]
async fn a_tariff_change_is_paid_on_the_cloudpayments_page() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let user = UserId::new();
    let (sub, _, _) = subscribed(&app, user).await;
    let (status, body) = app
        .post(
            "/api/v1/subscriptions/change",
            Some(&app.token(user)),
            json!({"tariff_id": YEAR_TARIFF, "when": "now"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let paid = payment_id(&body);
    assert_eq!(app.payment(paid).await.pay_system, PaySystem::CloudPayments);
    let order = fake.order_for_invoice(&paid.to_string()).expect("an order");
    fake.pay_order(order["Id"].as_str().unwrap(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(app.payment(paid).await.status, PaymentStatus::Succeeded);
    let s = app.subscription(sub).await;
    assert_eq!(s.tariff_id.to_string(), YEAR_TARIFF);
    assert_eq!(s.price.minor(), 299_000);
}
