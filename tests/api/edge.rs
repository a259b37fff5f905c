//! What an outsider without a token can do to the edge (issue 13): every label value
//! they can influence comes from a closed set, and every answer is the JSON error
//! shape, whatever bytes they send.

use crate::helpers::*;
use reqwest::header::HeaderValue;
use reqwest::Method;

/// The `http_requests_total` series of unknown methods on unknown routes in a
/// scrape (the recorder is the test binary's, shared with tests running beside
/// this one, so only series they do not make are counted).
fn request_series(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|l| l.starts_with(r#"http_requests_total{method="other",route="unmatched""#))
        .collect()
}

async fn send(app: &TestApp, method: &str, path: &str) -> u16 {
    app.http
        .request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", app.url),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn made_up_methods_and_paths_add_no_metric_series() {
    let app = TestApp::builder().start().await;
    // One round of every kind, so every series that can exist for them exists.
    send(&app, "BREW", "/no/such/path").await;
    send(&app, "GET", "/no/such/path").await;
    app.metrics().await; // the scrape's own series
    let before = app.metrics().await;
    let before = request_series(&before).len();

    for i in 0..50 {
        let method = format!("M{i}{}", "X".repeat(i * 40));
        let status = send(&app, &method, &format!("/api/v1/nothing-{i}")).await;
        assert!((400..500).contains(&status), "{method}: {status}");
        send(&app, "GET", &format!("/made/up/{i}")).await;
    }
    let after = app.metrics().await;
    let series = request_series(&after);
    assert_eq!(series.len(), before, "{series:#?}");
    assert!(
        !series.is_empty(),
        "made-up methods are counted as other: {after}"
    );
    assert!(!after.contains("M49X"), "a made-up method is a label value");
    assert!(
        !after.contains("nothing-"),
        "a made-up path is a label value"
    );
}

#[tokio::test]
async fn a_request_id_that_is_not_text_is_replaced_not_refused() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let bad = HeaderValue::from_bytes(b"abc\xff\xfe").unwrap();
    for (method, path) in [
        (Method::GET, "/healthz"),
        (Method::GET, "/api/v1/tariffs"),
        (Method::POST, "/webhooks/yookassa"),
    ] {
        let resp = app
            .http
            .request(method.clone(), format!("{}{path}", app.url))
            .header("x-request-id", bad.clone())
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(
            uuid::Uuid::parse_str(&rid).is_ok(),
            "{path}: a fresh request id, got {rid}"
        );
        let body = resp.text().await.unwrap();
        if status >= 400 {
            let json: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|_| panic!("{path}: {status} is not JSON: {body}"));
            assert!(json["code"].is_string(), "{path}: {body}");
        }
        assert_ne!(status, 500, "{path}: {body}");
    }
}

#[tokio::test]
async fn text_with_a_nul_is_refused_at_the_edge_and_changes_nothing() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = billing::domain::UserId::new();
    let nul_url = r#"{"tariff_id": "6a1f0c52-8d0e-4c1e-9a57-0a9f1d3b2c01", "renew": false, "return_url": "http://127.0.0.1:8000/\u0000"}"#;
    let admin = app.admin_token();
    let cases = [
        (
            "/api/v1/subscriptions/yookassa/buy".to_owned(),
            app.token(user),
            nul_url.to_owned(),
        ),
        (
            "/api/v1/admin/tariffs".to_owned(),
            admin.clone(),
            r#"{"alias": "x", "name": "A\u0000B", "description": "d", "price": {"value": "1.00", "currency": "RUB"}, "period": {"unit": "month", "count": 1}}"#.to_owned(),
        ),
        (
            format!("/api/v1/admin/payments/{}/refund", uuid::Uuid::new_v4()),
            admin,
            r#"{"reason": "why\u0000"}"#.to_owned(),
        ),
        (
            "/webhooks/yookassa".to_owned(),
            String::new(),
            r#"{"type": "notification", "event": "payment.succeeded\u0000", "object": {"id": "2f\u0000"}}"#.to_owned(),
        ),
    ];
    for (path, token, body) in cases {
        let mut req = app
            .http
            .post(format!("{}{path}", app.url))
            .header("content-type", "application/json")
            .body(body);
        if !token.is_empty() {
            req = req.header("authorization", token);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(status, 400, "{path}: {json}");
        assert_eq!(json["code"], "bad_text", "{path}: {json}");
    }
    assert!(app.payments().await.is_empty());
    assert!(app.inbox().await.is_empty());
    let tariffs = app.get("/api/v1/tariffs", None).await.1;
    assert!(!tariffs.to_string().contains("A\\u0000B"), "{tariffs}");
}

#[tokio::test]
async fn only_an_access_token_that_is_valid_now_opens_the_api() {
    let app = TestApp::builder().start().await;
    let keys = &app.app().keys;
    let now = chrono::Utc::now().timestamp();
    let user = billing::domain::UserId::new().to_string();
    let claims = |extra: serde_json::Value| {
        let mut c = serde_json::json!({"user_id": user, "is_superuser": false, "exp": now + 600});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        keys.sign(&c)
    };
    for (token, why) in [
        (
            claims(serde_json::json!({"type": "refresh"})),
            "a refresh token",
        ),
        (
            claims(serde_json::json!({"type": 1})),
            "a type that is not text",
        ),
        (
            claims(serde_json::json!({"type": "access", "nbf": now + 3600})),
            "not valid for an hour",
        ),
    ] {
        let (status, body) = app.get("/api/v1/payments/profile", Some(&token)).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(body["code"], "unauthorized", "{why}");
    }
    let (_, body) = app
        .get(
            "/api/v1/payments/profile",
            Some(&claims(serde_json::json!({"type": "refresh"}))),
        )
        .await;
    assert!(
        body["detail"].as_str().unwrap().contains("access token"),
        "{body}"
    );
    let (_, body) = app
        .get(
            "/api/v1/payments/profile",
            Some(&keys.issue(billing::domain::UserId::new(), false, -120)),
        )
        .await;
    assert_eq!(
        body["detail"], "the token has expired",
        "in the caller's terms: {body}"
    );

    for extra in [
        serde_json::json!({"type": "access", "nbf": now - 60}),
        serde_json::json!({}),
    ] {
        let (status, body) = app
            .get("/api/v1/payments/profile", Some(&claims(extra.clone())))
            .await;
        assert_eq!(status, 200, "{extra}: {body}");
    }
}

#[tokio::test]
async fn money_has_one_strict_grammar() {
    let app = TestApp::builder().start().await;
    let admin = app.admin_token();
    for (i, value) in ["+1.00", " 1.00", "1.00 ", "1 000", "1_000", "1e2"]
        .iter()
        .enumerate()
    {
        let (status, body) = app
            .post(
                "/api/v1/admin/tariffs",
                Some(&admin),
                serde_json::json!({"alias": format!("t{i}"), "name": "T",
                    "price": {"value": value, "currency": "RUB"}, "period": {"count": 7, "unit": "day"}}),
            )
            .await;
        assert_eq!(status, 400, "{value:?}: {body}");
    }
    let (status, body) = app
        .post(
            "/api/v1/admin/tariffs",
            Some(&admin),
            serde_json::json!({"alias": "ok", "name": "T",
                "price": {"value": "1.00", "currency": "RUB"}, "period": {"count": 7, "unit": "day"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn the_return_url_sent_to_the_provider_is_the_one_that_was_checked() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = billing::domain::UserId::new();
    let buy = |url: String| {
        let app = &app;
        async move {
            app.post(
                "/api/v1/subscriptions/yookassa/buy",
                Some(&app.token(user)),
                serde_json::json!({"tariff_id": MONTH_TARIFF, "renew": false, "return_url": url}),
            )
            .await
        }
    };
    // Refused, creating nothing: line breaks, and longer than YooKassa takes.
    for url in [
        "https://cinema.example/return\r\nSet-Cookie: x=1".to_owned(),
        format!("https://cinema.example/{}", "a".repeat(60_000)),
    ] {
        let (status, body) = buy(url).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "bad_return_url", "{body}");
    }
    assert!(fake.payments().is_empty());

    // A backslash before `@` is a path to the URL parser (so the origin check
    // passes) but a user-info separator to some readers: the parsed form goes out.
    let (status, body) = buy(r"https://cinema.example\@evil.example/".to_owned()).await;
    assert_eq!(status, 201, "{body}");
    let sent = fake.payments()[0]["confirmation"]["return_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sent, "https://cinema.example/@evil.example/");
}

#[tokio::test]
async fn a_tariff_description_is_capped_on_change_as_on_create() {
    let app = TestApp::builder().start().await;
    let admin = app.admin_token();
    let long = "d".repeat(2001);
    let (status, body) = app
        .post(
            "/api/v1/admin/tariffs",
            Some(&admin),
            serde_json::json!({"alias": "week", "name": "Weekly", "description": long,
                "price": {"value": "99.00", "currency": "RUB"}, "period": {"count": 7, "unit": "day"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let resp = app
        .http
        .patch(format!("{}/api/v1/admin/tariffs/{MONTH_TARIFF}", app.url))
        .header("authorization", &admin)
        .json(&serde_json::json!({"description": long}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "bad_field");
    let (_, tariffs) = app.get("/api/v1/tariffs", None).await;
    assert!(!tariffs.to_string().contains(&long), "nothing changed");
}

#[tokio::test]
async fn a_cloudpayments_card_token_is_never_shown_in_the_admin_inbox() {
    let app = TestApp::builder().fake_cloudpayments().start().await;
    let fake = app.cloudpayments();
    let user = billing::domain::UserId::new();
    let (status, body) = app
        .post(
            "/api/v1/subscriptions/cloudpayments/buy",
            Some(&app.token(user)),
            serde_json::json!({"tariff_id": MONTH_TARIFF, "renew": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let order = fake
        .order_for_invoice(body["payment_id"].as_str().unwrap())
        .unwrap();
    let paid = fake
        .pay_order(order["Id"].as_str().unwrap(), None)
        .await
        .unwrap()
        .unwrap();
    let token = paid["Token"].as_str().unwrap().to_owned();
    let (status, list) = app
        .get(
            "/api/v1/admin/webhooks?provider=cloudpayments",
            Some(&app.admin_token()),
        )
        .await;
    assert_eq!(status, 200, "{list}");
    assert!(!list.as_array().unwrap().is_empty());
    assert!(!list.to_string().contains(&token), "{list}");
}

#[tokio::test]
async fn errors_say_what_was_wrong_in_the_callers_terms() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = billing::domain::UserId::new();
    let (status, body) = app
        .post(
            "/api/v1/subscriptions/yookassa/buy",
            Some(&app.token(user)),
            serde_json::json!([]),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        !detail.contains("struct") && !detail.contains("BuyRequest"),
        "{detail}"
    );
    assert!(detail.contains("JSON object"), "{detail}");

    // A token whose header names the `none` algorithm.
    use base64::Engine;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(serde_json::json!({"user_id": user.to_string(), "exp": 4_000_000_000u64}))
    );
    let (status, body) = app.get("/api/v1/payments/profile", Some(&none)).await;
    assert_eq!(status, 401, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        !detail.contains("variant") && !detail.contains("expected one of"),
        "{detail}"
    );
}
