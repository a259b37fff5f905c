//! Refunds and the operator's routes.

use crate::helpers::*;
use billing::domain::{PaymentId, RefundId, UserId};
use billing::providers::sandbox::Outcome;
use serde_json::{json, Value};
use uuid::Uuid;

/// A user with an active subscription paid through the fake; answers (user, payment id, provider id).
async fn paid(app: &TestApp) -> (UserId, PaymentId, String) {
    let fake = app.yookassa();
    let user = UserId::new();
    let (status, body) = app.buy(user, MONTH_TARIFF, true, None).await;
    assert_eq!(status, 201, "{body}");
    let id: PaymentId = body["payment_id"].as_str().unwrap().parse().unwrap();
    let pid = app.provider_id(id).await;
    fake.settle(&pid, Outcome::Succeed);
    assert_eq!(fake.notify(&pid).await.unwrap(), 200);
    (user, id, pid)
}

/// One operator for the whole test binary: Idempotency-Keys are scoped to the user.
fn operator(app: &TestApp) -> String {
    static OPERATOR: std::sync::OnceLock<billing::domain::UserId> = std::sync::OnceLock::new();
    app.app().keys.issue(
        *OPERATOR.get_or_init(billing::domain::UserId::new),
        true,
        600,
    )
}

async fn refund(
    app: &TestApp,
    payment: impl std::fmt::Display,
    body: Value,
    key: Option<&str>,
) -> (u16, Value) {
    let mut req = app
        .http
        .post(format!(
            "{}/api/v1/admin/payments/{payment}/refund",
            app.url
        ))
        .header("authorization", operator(app))
        .json(&body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    read(req.send().await.unwrap()).await
}

#[tokio::test]
async fn a_full_refund_revokes_access_and_publishes_events() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (user, id, pid) = paid(&app).await;
    let (status, body) = refund(&app, &id, json!({"reason": "viewer asked"}), None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["amount"],
        json!({"value": "299.00", "currency": "RUB"})
    );
    assert_eq!(body["status"], "succeeded");
    assert_eq!(
        fake.payment(&pid).unwrap()["refunded_amount"]["value"],
        "299.00"
    );

    let (_, payment) = app
        .get(&format!("/api/v1/payments/{id}"), Some(&app.token(user)))
        .await;
    assert_eq!(payment["status"], "refunded");
    assert_eq!(payment["refunded_amount"]["value"], "299.00");
    let (_, sub) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    assert_eq!(sub["status"], "canceled");
    assert_eq!(sub["auto_renew"], false);
    assert_eq!(
        app.outbox_types().await,
        [
            "payment.succeeded",
            "subscription.activated",
            "subscription.canceled",
            "payment.refunded"
        ]
    );
}

#[tokio::test]
async fn partial_refunds_add_up_and_cannot_exceed_the_payment() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (user, id, _) = paid(&app).await;
    let part = |v: &str| json!({"amount": {"value": v, "currency": "RUB"}, "reason": "partial"});
    assert_eq!(refund(&app, &id, part("100.00"), None).await.0, 201);
    assert_eq!(refund(&app, &id, part("150.00"), None).await.0, 201);
    let (status, body) = refund(&app, &id, part("49.01"), None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "refund_exceeds_remaining");
    assert_eq!(
        fake.refunds(),
        2,
        "the provider was not called for the refused one"
    );

    let (_, payment) = app
        .get(&format!("/api/v1/payments/{id}"), Some(&app.token(user)))
        .await;
    assert_eq!(payment["status"], "partially_refunded");
    assert_eq!(payment["refunded_amount"]["value"], "250.00");
    let (_, sub) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    assert_eq!(sub["status"], "active", "partial refunds change no access");

    assert_eq!(
        refund(&app, &id, json!({"reason": "the rest"}), None)
            .await
            .0,
        201
    );
    let (_, payment) = app
        .get(&format!("/api/v1/payments/{id}"), Some(&app.token(user)))
        .await;
    assert_eq!(payment["status"], "refunded");
    let (status, _) = refund(&app, &id, part("0.01"), None).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn a_refund_with_an_idempotency_key_is_made_once() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (_, id, _) = paid(&app).await;
    let body = json!({"amount": {"value": "10.00", "currency": "RUB"}, "reason": "goodwill"});
    let first = refund(&app, &id, body.clone(), Some("r-1")).await;
    let second = refund(&app, &id, body, Some("r-1")).await;
    assert_eq!(first, second);
    assert_eq!(first.0, 201);
    assert_eq!(fake.refunds(), 1);
    assert_eq!(app.refunds().await.len(), 1);
}

#[tokio::test]
async fn a_duplicate_refund_notification_changes_nothing() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (_, id, _) = paid(&app).await;
    let (_, body) = refund(
        &app,
        &id,
        json!({"amount": {"value": "99.00", "currency": "RUB"}, "reason": "x"}),
        None,
    )
    .await;
    let refund_id: RefundId = body["id"].as_str().unwrap().parse().unwrap();
    let provider_refund = app.provider_refund_id(refund_id).await.unwrap();
    let object = fake.refund_object(&provider_refund).unwrap();
    for _ in 0..3 {
        assert_eq!(
            fake.notify_raw("refund.succeeded", object.clone())
                .await
                .unwrap(),
            200
        );
    }
    let types = app.outbox_types().await;
    assert_eq!(count(&types, "payment.refunded"), 1, "{types:?}");
    assert_eq!(app.payment(id).await.refunded_minor, 9900);
}

#[tokio::test]
async fn a_refund_made_in_the_providers_dashboard_is_recorded_and_applied() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (user, id, pid) = paid(&app).await;
    // The operator refunds in YooKassa's dashboard: the provider's API, not ours.
    let resp = reqwest::Client::new()
        .post(format!("{}/refunds", fake_api(&app).await))
        .basic_auth(YOOKASSA_SHOP_ID, Some(YOOKASSA_SECRET_KEY))
        .header("idempotence-key", "dashboard-1")
        .json(&json!({"payment_id": pid, "amount": {"value": "299.00", "currency": "RUB"}}))
        .send()
        .await
        .unwrap();
    let object: Value = resp.json().await.unwrap();
    assert_eq!(
        fake.notify_raw("refund.succeeded", object).await.unwrap(),
        200
    );
    let by_provider = app
        .refunds()
        .await
        .into_iter()
        .filter(|r| r.initiated_by == "provider")
        .count();
    assert_eq!(by_provider, 1);
    let (_, payment) = app
        .get(&format!("/api/v1/payments/{id}"), Some(&app.token(user)))
        .await;
    assert_eq!(payment["status"], "refunded");
    let (_, sub) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    assert_eq!(sub["status"], "canceled");
}

async fn fake_api(app: &TestApp) -> String {
    app.app().config.yookassa.api_url.clone().unwrap()
}

#[tokio::test]
async fn refunds_of_unpaid_or_unknown_payments_are_refused() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let (_, body) = app.buy(UserId::new(), MONTH_TARIFF, false, None).await;
    let pending = body["payment_id"].as_str().unwrap();
    let (status, body) = refund(&app, pending, json!({"reason": "x"}), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("payment_not_refundable"))
    );
    let (status, _) = refund(
        &app,
        &Uuid::new_v4().to_string(),
        json!({"reason": "x"}),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = refund(&app, "nope", json!({"reason": "x"}), None).await;
    assert_eq!(status, 400);
    let (status, _) = refund(&app, pending, json!({"reason": ""}), None).await;
    assert_eq!(status, 400);
    let (status, _) = refund(
        &app,
        pending,
        json!({"reason": "x", "amount": {"value": "-1", "currency": "RUB"}}),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(app.refunds().await.len(), 0);
}

#[tokio::test]
async fn admin_routes_need_a_superuser() {
    let app = TestApp::start().await;
    let viewer = app.token(UserId::new());
    let id = Uuid::new_v4();
    let routes = [
        ("GET", "/api/v1/admin/tariffs".to_owned()),
        ("POST", "/api/v1/admin/tariffs".to_owned()),
        ("PATCH", format!("/api/v1/admin/tariffs/{id}")),
        ("POST", format!("/api/v1/admin/payments/{id}/refund")),
        ("GET", format!("/api/v1/admin/users/{id}")),
        ("GET", "/api/v1/admin/webhooks".to_owned()),
        ("POST", format!("/api/v1/admin/webhooks/{id}/replay")),
    ];
    for (method, path) in routes {
        let send = |token: Option<&str>| {
            let mut req = app
                .http
                .request(method.parse().unwrap(), format!("{}{path}", app.url))
                .json(&json!({}));
            if let Some(t) = token {
                req = req.header("authorization", t.to_owned());
            }
            req.send()
        };
        assert_eq!(send(None).await.unwrap().status(), 401, "{method} {path}");
        assert_eq!(
            send(Some(&viewer)).await.unwrap().status(),
            403,
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn tariff_changes_show_in_the_public_catalogue() {
    let app = TestApp::start().await;
    let admin = app.admin_token();
    let (status, created) = app
        .post(
            "/api/v1/admin/tariffs",
            Some(&admin),
            json!({"alias": "week", "name": "Weekly", "price": {"value": "99.00", "currency": "RUB"},
                   "period": {"count": 7, "unit": "day"}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (_, list) = app.get("/api/v1/tariffs", None).await;
    assert_eq!(list[0]["alias"], "week", "cheapest first");

    let (status, _) = app
        .post(
            "/api/v1/admin/tariffs",
            Some(&admin),
            json!({"alias": "week", "name": "Again",
            "price": {"value": "1.00", "currency": "RUB"}, "period": {"count": 1, "unit": "day"}}),
        )
        .await;
    assert_eq!(status, 409, "aliases are unique");

    let id = created["id"].as_str().unwrap();
    let patch = |body: Value| {
        app.http
            .patch(format!("{}/api/v1/admin/tariffs/{id}", app.url))
            .header("authorization", &admin)
            .json(&body)
            .send()
    };
    let (status, body) = read(
        patch(json!({"price": {"value": "1.00", "currency": "RUB"}}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("tariff_immutable"))
    );
    let (status, _) = read(
        patch(json!({"name": "Week pass", "archived": true}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (_, list) = app.get("/api/v1/tariffs", None).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t["alias"] != "week"),
        "archived is not sold"
    );
    let (status, _) = app.buy(UserId::new(), id, false, None).await;
    assert_eq!(status, 404, "an archived tariff cannot be bought");

    for bad in [
        json!({"alias": "Bad Alias", "name": "x", "price": {"value": "1.00", "currency": "RUB"}, "period": {"count": 1, "unit": "day"}}),
        json!({"alias": "ok", "name": "x", "price": {"value": "0", "currency": "RUB"}, "period": {"count": 1, "unit": "day"}}),
        json!({"alias": "ok", "name": "x", "price": {"value": "1.00", "currency": "XXX"}, "period": {"count": 1, "unit": "day"}}),
        json!({"alias": "ok", "name": "x", "price": {"value": "1.00", "currency": "RUB"}, "period": {"count": 0, "unit": "day"}}),
        json!({"alias": "ok", "name": "x", "price": {"value": "1.00", "currency": "RUB"}, "period": {"count": 1, "unit": "week"}}),
    ] {
        let (status, body) = app
            .post("/api/v1/admin/tariffs", Some(&admin), bad.clone())
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn support_sees_one_viewers_account() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let (user, id, _) = paid(&app).await;
    refund(
        &app,
        &id,
        json!({"amount": {"value": "1.00", "currency": "RUB"}, "reason": "sorry"}),
        None,
    )
    .await;
    let (status, body) = app
        .get(
            &format!("/api/v1/admin/users/{user}"),
            Some(&app.admin_token()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subscription"]["status"], "active");
    assert_eq!(body["payments"].as_array().unwrap().len(), 1);
    assert_eq!(body["refunds"][0]["reason"], "sorry");
    assert_eq!(body["payment_methods"][0]["title"], "Bank card *4444");
    assert!(
        body["payment_methods"][0]
            .get("provider_method_id")
            .is_none(),
        "the card token is not shown"
    );
}

#[tokio::test]
async fn the_inbox_is_listed_redacted_and_replay_is_idempotent() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let (user, _, pid) = paid(&app).await;
    let admin = app.admin_token();
    let (status, list) = app
        .get(
            "/api/v1/admin/webhooks?status=processed&provider=yookassa",
            Some(&admin),
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["object_id"], pid);
    assert_eq!(rows[0]["body"]["object"]["description"], "[redacted]");
    assert_eq!(rows[0]["body"]["object"]["amount"]["value"], "299.00");

    let (status, _) = app
        .get("/api/v1/admin/webhooks?status=lost", Some(&admin))
        .await;
    assert_eq!(status, 400);
    let (_, none) = app
        .get(
            "/api/v1/admin/webhooks?provider=cloudpayments",
            Some(&admin),
        )
        .await;
    assert_eq!(none, json!([]));

    let inbox_id = rows[0]["id"].as_str().unwrap();
    for _ in 0..2 {
        let (status, row) = app
            .post(
                &format!("/api/v1/admin/webhooks/{inbox_id}/replay"),
                Some(&admin),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{row}");
        assert_eq!(row["status"], "processed");
    }
    assert_eq!(
        app.outbox_types().await,
        ["payment.succeeded", "subscription.activated"]
    );
    let (_, sub) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    assert_eq!(sub["status"], "active");
    let (status, _) = app
        .post(
            &format!("/api/v1/admin/webhooks/{}/replay", Uuid::new_v4()),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(status, 404);
}

/// The aliases of a tariff list answer.
fn aliases(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|t| t["alias"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Each replica answers the tariff list from its own copy. A change made through
/// replica A, or by hand in SQL, reaches replica B's copy by PostgreSQL's NOTIFY,
/// not by the copy ageing out: its TTL here is an hour.
#[tokio::test]
async fn a_tariff_change_made_on_one_replica_is_served_by_another_without_waiting_for_the_ttl() {
    let ttl = std::time::Duration::from_secs(3600);
    let app = TestApp::builder()
        .config(move |c| c.tariff_cache_ttl = ttl)
        .start()
        .await;
    let b = app
        .start_replica(
            |_| {},
            billing::server::ServeOptions {
                api: true,
                workers: false,
            },
        )
        .await;
    let list_on_b = || async {
        let resp = app
            .http
            .get(format!("{}/api/v1/tariffs", b.url()))
            .send()
            .await
            .unwrap();
        read(resp).await.1
    };
    let before = aliases(&list_on_b().await);
    assert!(!before.contains(&"week".to_owned()), "{before:?}");
    assert_eq!(aliases(&list_on_b().await), before, "B holds its copy");

    let (status, created) = app
        .post(
            "/api/v1/admin/tariffs",
            Some(&app.admin_token()),
            json!({"alias": "week", "name": "Weekly", "price": {"value": "99.00", "currency": "RUB"},
                   "period": {"count": 7, "unit": "day"}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let patience = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while aliases(&list_on_b().await).first().map(String::as_str) != Some("week") {
        assert!(
            tokio::time::Instant::now() < patience,
            "replica B still serves {:?}",
            aliases(&list_on_b().await)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // By hand in SQL: the trigger tells every replica just the same.
    app.sql()
        .await
        .execute(
            "UPDATE tariffs SET archived_at = now() WHERE alias = 'week'",
            &[],
        )
        .await
        .unwrap();
    while aliases(&list_on_b().await).contains(&"week".to_owned()) {
        assert!(
            tokio::time::Instant::now() < patience,
            "replica B still lists the archived tariff"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    b.stop().await;
}
