//! 54-FZ receipts (issue 15): a shop with receipts on is refused every payment and
//! partial refund without one, so purchases, renewals and refunds carry the
//! receipt the service stored with their row; the fakes check what YooKassa and
//! CloudPayments check.

use crate::helpers::*;
use billing::domain::{PaySystem, PaymentStatus, RefundStatus, SubscriptionStatus, UserId};
use billing::jobs::renewer;
use billing::providers::sandbox::Outcome;
use serde_json::{json, Value};

async fn buy_with(app: &TestApp, system: &str, user: UserId, body: Value) -> (u16, Value) {
    let req = app
        .http
        .post(format!("{}/api/v1/subscriptions/{system}/buy", app.url))
        .header("authorization", app.token(user))
        .json(&body);
    read(req.send().await.unwrap()).await
}

fn receipts_on(systems: &'static [PaySystem]) -> impl FnOnce(&mut billing::config::Config) {
    move |c| c.receipts = systems.to_vec()
}

async fn set_tariff_taxes(app: &TestApp, vat: i64, tax: i64) {
    let (status, body) = app
        .patch(
            &format!("/api/v1/admin/tariffs/{MONTH_TARIFF}"),
            Some(&app.admin_token()),
            json!({"vat_code": vat, "tax_system_code": tax}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["vat_code"].as_i64(), body["tax_system_code"].as_i64()),
        (Some(vat), Some(tax))
    );
}

/// A server with receipts on for YooKassa, and its fake shop requiring them.
async fn yookassa_with_receipts() -> TestApp {
    let app = TestApp::builder()
        .fake_yookassa()
        .config(receipts_on(&[PaySystem::YooKassa]))
        .start()
        .await;
    app.yookassa().require_receipts(true);
    app
}

/// A YooKassa purchase with this contact (`{"email": …}` and/or `{"phone": …}`),
/// paid and notified: its payment id.
async fn paid_with(app: &TestApp, user: UserId, contact: Value) -> billing::domain::PaymentId {
    let mut body = json!({"tariff_id": MONTH_TARIFF, "renew": false});
    body.as_object_mut()
        .unwrap()
        .extend(contact.as_object().unwrap().clone());
    let (status, body) = buy_with(app, "yookassa", user, body).await;
    assert_eq!(status, 201, "{body}");
    let id = payment_id(&body);
    let pid = app.provider_id(id).await;
    app.yookassa().settle(&pid, Outcome::Succeed).unwrap();
    assert_eq!(app.yookassa().notify(&pid).await.unwrap(), 200);
    id
}

#[tokio::test]
async fn a_buy_without_a_contact_while_receipts_are_on_is_refused_naming_the_field() {
    let app = TestApp::builder()
        .fake_yookassa()
        .config(receipts_on(&[PaySystem::YooKassa]))
        .start()
        .await;
    let user = UserId::new();
    let (status, body) = buy_with(
        &app,
        "yookassa",
        user,
        json!({"tariff_id": MONTH_TARIFF, "renew": true}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "contact_required");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("`email` or `phone`"),
        "{body}"
    );
    for (field, value) in [("email", "not-an-address"), ("phone", "12")] {
        let (status, body) = buy_with(
            &app,
            "yookassa",
            user,
            json!({"tariff_id": MONTH_TARIFF, "renew": true, field: value}),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "bad_field");
        assert!(
            body["detail"].as_str().unwrap().starts_with(field),
            "{body}"
        );
    }
    assert!(app.payments().await.is_empty(), "nothing recorded");
    assert_eq!(app.yookassa().creates(), 0, "no provider call");
}

/// The fake shop refuses a payment without a receipt, as YooKassa does once
/// receipts are switched on in its settings: what the service must not do.
#[tokio::test]
async fn a_shop_with_receipts_on_refuses_a_payment_without_one() {
    let app = TestApp::builder().fake_yookassa().start().await;
    app.yookassa().require_receipts(true);
    let (status, body) = app.buy(UserId::new(), MONTH_TARIFF, true, None).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(app.payments().await[0].status, PaymentStatus::Failed);
}

#[tokio::test]
async fn a_purchase_and_its_renewals_carry_the_receipt_with_the_tariffs_taxes() {
    let app = yookassa_with_receipts().await;
    let fake = app.yookassa();
    set_tariff_taxes(&app, 4, 2).await;
    let user = UserId::new();
    let (status, body) = buy_with(
        &app,
        "yookassa",
        user,
        json!({"tariff_id": MONTH_TARIFF, "renew": true, "email": "viewer@example.com", "phone": "+7 (900) 123-45-67"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let payment = app.payment(payment_id(&body)).await;
    let pid = payment.provider_payment_id.clone().unwrap();
    let sent = fake.receipt_of(&pid).expect("a receipt with the create");
    assert_eq!(
        sent,
        json!({
            "customer": {"email": "viewer@example.com", "phone": "79001234567"},
            "items": [{"description": "Subscription: Monthly", "quantity": "1.00",
                       "amount": {"value": "299.00", "currency": "RUB"}, "vat_code": 4,
                       "payment_subject": "service", "payment_mode": "full_payment"}],
            "tax_system_code": 2,
        })
    );
    let stored = payment.receipt.expect("stored with the payment");
    assert_eq!(stored.items[0].vat_code.code(), 4);
    fake.settle(&pid, Outcome::Succeed).unwrap();
    assert_eq!(fake.notify(&pid).await.unwrap(), 200);
    let sub = app.subscription_of(user).await;
    assert_eq!(sub.status, SubscriptionStatus::Active);

    // VAT goes up before the renewal: the renewal's receipt has today's rate.
    set_tariff_taxes(&app, 11, 2).await;
    app.make_due(sub.id).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let renewal = app.renewals(sub.id).await.pop().unwrap();
    assert_eq!(renewal.status, PaymentStatus::Succeeded, "{renewal:?}");
    let sent = fake
        .receipt_of(renewal.provider_payment_id.as_deref().unwrap())
        .expect("a receipt with the renewal");
    assert_eq!(sent["customer"]["email"], "viewer@example.com");
    assert_eq!(sent["items"][0]["vat_code"], 11);
    assert_eq!(sent["items"][0]["amount"]["value"], "299.00");

    let account = app.admin_account(user).await;
    let receipts = account["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 2, "{account}");
    assert_eq!(receipts[0]["payment_id"], renewal.id.to_string());
    assert_eq!(receipts[0]["receipt"]["items"][0]["vat_code"], 11);
    assert_eq!(receipts[1]["receipt"]["customer"]["phone"], "79001234567");
}

#[tokio::test]
async fn refunds_carry_a_refund_receipt_and_a_whole_refund_leaves_it_to_yookassa() {
    let app = yookassa_with_receipts().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let id = paid_with(&app, user, json!({"email": "viewer@example.com"})).await;

    let refund = |amount: Option<&str>| {
        let body = match amount {
            Some(v) => json!({"amount": {"value": v, "currency": "RUB"}, "reason": "asked"}),
            None => json!({"reason": "asked"}),
        };
        let app = &app;
        async move {
            app.post(
                &format!("/api/v1/admin/payments/{id}/refund"),
                Some(&app.admin_token()),
                body,
            )
            .await
        }
    };
    let (status, first) = refund(Some("100.00")).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["status"], "succeeded");
    let first_id = app.refunds().await[0].id;
    let sent = fake
        .receipt_of(&app.provider_refund_id(first_id).await.unwrap())
        .expect("a partial refund carries its receipt");
    assert_eq!(sent["items"][0]["amount"]["value"], "100.00");
    assert_eq!(sent["customer"]["email"], "viewer@example.com");
    let (status, rest) = refund(None).await;
    assert_eq!(status, 201, "{rest}");
    assert_eq!(app.payment(id).await.status, PaymentStatus::Refunded);
    assert!(app
        .refunds()
        .await
        .iter()
        .all(|r| r.status == RefundStatus::Succeeded));

    let account = app.admin_account(user).await;
    let amounts: Vec<&str> = account["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["refund_id"].is_null())
        .map(|r| {
            r["receipt"]["items"][0]["amount"]["value"]
                .as_str()
                .unwrap()
        })
        .collect();
    let mut amounts = amounts;
    amounts.sort();
    assert_eq!(amounts, ["100.00", "199.00"], "{account}");
}

/// A refund of the whole payment at once sends no receipt: YooKassa makes the
/// return receipt from the payment's own, and the docs say not to send one.
#[tokio::test]
async fn a_whole_refund_sends_no_receipt_to_yookassa() {
    let app = yookassa_with_receipts().await;
    let fake = app.yookassa();
    let id = paid_with(&app, UserId::new(), json!({"phone": "79001234567"})).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/admin/payments/{id}/refund"),
            Some(&app.admin_token()),
            json!({"reason": "asked"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let refund = app.refunds().await.pop().unwrap();
    assert_eq!(refund.status, RefundStatus::Succeeded);
    assert_eq!(
        fake.receipt_of(&app.provider_refund_id(refund.id).await.unwrap()),
        None
    );
}

#[tokio::test]
async fn cloudpayments_orders_charges_and_refunds_carry_the_customer_receipt() {
    let app = TestApp::builder()
        .fake_cloudpayments()
        .config(receipts_on(&[PaySystem::CloudPayments]))
        .start()
        .await;
    let fake = app.cloudpayments();
    set_tariff_taxes(&app, 1, 2).await;
    let user = UserId::new();
    let (status, body) = buy_with(
        &app,
        "cloudpayments",
        user,
        json!({"tariff_id": MONTH_TARIFF, "renew": true, "phone": "+7 900 123-45-67"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = payment_id(&body);
    let order = fake.order_for_invoice(&id.to_string()).unwrap();
    assert_eq!(
        order["JsonData"],
        json!({"CloudPayments": {"CustomerReceipt": {
            "Items": [{"label": "Subscription: Monthly", "price": 299.0, "quantity": 1, "amount": 299.0,
                       "vat": null, "method": 4, "object": 4}],
            "isBso": false,
            "amounts": {"electronic": 299.0, "advancePayment": 0, "credit": 0, "provision": 0},
            "phone": "+79001234567",
            "taxationSystem": 1,
        }}})
    );
    let paid = fake
        .pay_order(order["Id"].as_str().unwrap(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(app.payment(id).await.status, PaymentStatus::Succeeded);

    let sub = app.subscription_of(user).await;
    app.make_due(sub.id).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let charge = fake
        .transactions()
        .into_iter()
        .find(|t| t["Token"] == paid["Token"] && t["TransactionId"] != paid["TransactionId"])
        .expect("the renewal's charge");
    assert_eq!(
        charge["JsonData"]["CloudPayments"]["CustomerReceipt"]["phone"],
        "+79001234567"
    );

    let (status, body) = app
        .post(
            &format!("/api/v1/admin/payments/{id}/refund"),
            Some(&app.admin_token()),
            json!({"amount": {"value": "100.00", "currency": "RUB"}, "reason": "asked"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let refund = fake
        .transactions()
        .into_iter()
        .find(|t| t["OperationType"] == "Refund")
        .unwrap();
    let receipt = &refund["JsonData"]["CloudPayments"]["CustomerReceipt"];
    assert_eq!(receipt["Items"][0]["amount"], 100.0);
    assert_eq!(receipt["amounts"]["electronic"], 100.0);
}

#[tokio::test]
async fn tariff_taxes_are_validated() {
    let app = TestApp::builder().start().await;
    for body in [
        json!({"vat_code": 0}),
        json!({"vat_code": 13}),
        json!({"tax_system_code": 7}),
        json!({"tax_system_code": -1}),
    ] {
        let (status, answer) = app
            .patch(
                &format!("/api/v1/admin/tariffs/{MONTH_TARIFF}"),
                Some(&app.admin_token()),
                body.clone(),
            )
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["code"], "bad_field", "{body}");
    }
    let (status, created) = app
        .post(
            "/api/v1/admin/tariffs",
            Some(&app.admin_token()),
            json!({"alias": "week", "name": "Weekly", "price": {"value": "99.00", "currency": "RUB"},
                   "period": {"count": 7, "unit": "day"}, "vat_code": 12}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["vat_code"], 12);
    assert_eq!(created["tax_system_code"], Value::Null);
    let (status, patched) = app
        .patch(
            &format!("/api/v1/admin/tariffs/{MONTH_TARIFF}"),
            Some(&app.admin_token()),
            json!({"tax_system_code": 2}),
        )
        .await;
    assert_eq!(
        (status, &patched["tax_system_code"]),
        (200, &json!(2)),
        "{patched}"
    );
    let (status, patched) = app
        .patch(
            &format!("/api/v1/admin/tariffs/{MONTH_TARIFF}"),
            Some(&app.admin_token()),
            json!({"tax_system_code": null}),
        )
        .await;
    assert_eq!(
        (status, &patched["tax_system_code"]),
        (200, &Value::Null),
        "{patched}"
    );
    let (_, public) = app.get("/api/v1/tariffs", None).await;
    assert!(
        public
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("vat_code").is_none()),
        "the public list stays as it was: {public}"
    );
}

/// A subscription bought while receipts were off has no receipt for its
/// renewals, which a shop with receipts on refuses; the viewer (or the frontend
/// on their behalf) gives a contact and the next renewal carries a receipt.
#[tokio::test]
async fn a_subscription_bought_before_receipts_gets_a_contact_for_its_renewals() {
    let app = yookassa_with_receipts().await;
    let fake = app.yookassa();
    let (sub, _) = app.due().await;
    let user = app.subscription(sub).await.user_id;
    let contact = |body: Value| {
        let app = &app;
        async move {
            app.post(
                "/api/v1/subscriptions/contact",
                Some(&app.token(user)),
                body,
            )
            .await
        }
    };
    let (status, body) = contact(json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("contact_required")),
        "{body}"
    );
    let (status, body) = contact(json!({"email": "nope"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_field")),
        "{body}"
    );
    let (status, body) = app
        .post(
            "/api/v1/subscriptions/contact",
            Some(&app.token(UserId::new())),
            json!({"email": "viewer@example.com"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("no_active_subscription"))
    );

    let (status, body) = contact(json!({"email": "viewer@example.com"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], sub.to_string());
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let renewal = app.renewals(sub).await.pop().unwrap();
    assert_eq!(renewal.status, PaymentStatus::Succeeded, "{renewal:?}");
    let sent = fake
        .receipt_of(renewal.provider_payment_id.as_deref().unwrap())
        .unwrap();
    assert_eq!(sent["customer"]["email"], "viewer@example.com");
    assert_eq!(sent["items"][0]["amount"]["value"], "299.00");
}
