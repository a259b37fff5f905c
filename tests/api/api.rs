//! Black-box tests of the foundation routes against the real PostgreSQL.

use crate::helpers::*;
use billing::domain::UserId;
use serde_json::{json, Value};
use uuid::Uuid;

#[tokio::test]
async fn tariffs_are_listed_cheapest_first_with_money_and_period() {
    let app = TestApp::start().await;
    let (status, body) = app.get("/api/v1/tariffs", None).await;
    assert_eq!(status, 200);
    let list = body.as_array().expect("a bare JSON array");
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["alias"], "month");
    assert_eq!(
        list[0]["price"],
        json!({"value": "299.00", "currency": "RUB"})
    );
    assert_eq!(list[0]["period"], json!({"count": 1, "unit": "month"}));
    assert_eq!(list[2]["price"]["value"], "2990.00");
    let prices: Vec<&str> = list
        .iter()
        .map(|t| t["price"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(prices, ["299.00", "799.00", "2990.00"]);
}

#[tokio::test]
async fn archived_tariffs_are_not_listed() {
    let app = TestApp::start().await;
    app.sql()
        .await
        .execute(
            "UPDATE tariffs SET archived_at = now() WHERE alias = 'quarter'",
            &[],
        )
        .await
        .unwrap();
    let (_, body) = app.get("/api/v1/tariffs", None).await;
    let aliases: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["alias"].as_str().unwrap())
        .collect();
    assert_eq!(aliases, ["month", "year"]);
}

#[tokio::test]
async fn pay_systems_list_only_configured_providers() {
    let app = TestApp::start().await;
    let (status, body) = app.get("/api/v1/pay-systems", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!([{"alias": "yookassa", "name": "YooKassa", "currencies": ["RUB"]}])
    );
}

#[tokio::test]
async fn every_auth_failure_is_401_with_a_json_error() {
    let app = TestApp::start().await;
    let wrong_key = billing::http::auth::Keys::new("another-key").issue(
        billing::domain::UserId::new(),
        false,
        600,
    );
    let expired = app
        .app()
        .keys
        .issue(billing::domain::UserId::new(), false, -120);
    let cases: Vec<Option<String>> = vec![
        None,
        Some("".into()),
        Some("Bearer".into()),
        Some("Basic dXNlcjpwYXNz".into()),
        Some("garbage".into()),
        Some(wrong_key),
        Some(expired),
    ];
    for token in cases {
        for path in ["/api/v1/subscriptions/profile", "/api/v1/payments/profile"] {
            let (status, body) = app.get(path, token.as_deref()).await;
            assert_eq!(status, 401, "{path} with {token:?}");
            assert_eq!(body["code"], "unauthorized");
            assert!(body["detail"].as_str().is_some());
        }
    }
}

#[tokio::test]
async fn bearer_and_raw_tokens_both_work() {
    let app = TestApp::start().await;
    let user = UserId::new();
    let token = app.token(user);
    for header in [token.clone(), format!("Bearer {token}")] {
        let (status, _) = app.get("/api/v1/payments/profile", Some(&header)).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn a_user_who_never_subscribed_gets_404_from_profile() {
    let app = TestApp::start().await;
    let (status, body) = app
        .get(
            "/api/v1/subscriptions/profile",
            Some(&app.token(UserId::new())),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "no_subscription");
}

#[tokio::test]
async fn profile_shows_the_subscription_with_its_method_title() {
    let app = TestApp::start().await;
    let user = UserId::new();
    let sub = app.seed_subscription(user, true, true).await;
    let (status, body) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], json!(sub));
    assert_eq!(body["status"], "active");
    assert_eq!(body["tariff"]["alias"], "month");
    assert_eq!(body["auto_renew"], true);
    assert_eq!(body["payment_method"], "Bank card *4444");
    assert!(body["next_charge_at"].is_string());
    assert!(body["current_period_end"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn cancel_turns_auto_renew_off_once_and_records_one_event() {
    let app = TestApp::start().await;
    let user = UserId::new();
    app.seed_subscription(user, true, true).await;
    let token = app.token(user);
    for _ in 0..2 {
        let (status, body) = app
            .post("/api/v1/subscriptions/cancel", Some(&token), json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "active", "access lasts to the period end");
        assert_eq!(body["auto_renew"], false);
        assert!(body["next_charge_at"].is_null());
    }
    assert_eq!(
        app.outbox_types().await,
        ["subscription.auto_renew_disabled"]
    );
}

#[tokio::test]
async fn resume_needs_a_saved_method_and_turns_renewal_back_on() {
    let app = TestApp::start().await;

    let without = UserId::new();
    app.seed_subscription(without, false, false).await;
    let (status, body) = app
        .post(
            "/api/v1/subscriptions/resume",
            Some(&app.token(without)),
            json!({}),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "no_payment_method");

    let with = UserId::new();
    app.seed_subscription(with, false, true).await;
    let (status, body) = app
        .post(
            "/api/v1/subscriptions/resume",
            Some(&app.token(with)),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["auto_renew"], true);
    assert!(body["next_charge_at"].is_string());
    assert_eq!(
        app.outbox_types().await,
        ["subscription.auto_renew_enabled"]
    );
}

#[tokio::test]
async fn a_method_marked_unusable_cannot_resume() {
    let app = TestApp::start().await;
    let db = app.sql().await;
    let user = UserId::new();
    app.seed_subscription(user, false, true).await;
    db.execute(
        "UPDATE payment_methods SET usable = false WHERE user_id = $1",
        &[&user],
    )
    .await
    .unwrap();
    let (status, _) = app
        .post(
            "/api/v1/subscriptions/resume",
            Some(&app.token(user)),
            json!({}),
        )
        .await;
    assert_eq!(status, 409);
    assert!(app.outbox_types().await.is_empty());
}

#[tokio::test]
async fn cancel_and_resume_without_a_live_subscription_are_404() {
    let app = TestApp::start().await;
    let token = app.token(UserId::new());
    for path in [
        "/api/v1/subscriptions/cancel",
        "/api/v1/subscriptions/resume",
    ] {
        let (status, body) = app.post(path, Some(&token), json!({})).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["code"], "no_active_subscription");
    }
}

async fn seed_payments(db: &tokio_postgres::Client, user: UserId, n: i32) {
    let tariff = Uuid::parse_str(MONTH_TARIFF).unwrap();
    for i in 0..n {
        db.execute(
            "INSERT INTO payments (id, user_id, tariff_id, pay_system, kind, status, amount_minor, currency, renew, \
             description, provider_idempotence_key, livemode, created_at) \
             VALUES ($1, $2, $3, 'yookassa', 'purchase', 'succeeded', 29900, 'RUB', false, 'Monthly', $4, false, \
             now() - make_interval(mins => $5))",
            &[&Uuid::new_v4(), &user, &tariff, &Uuid::new_v4().to_string(), &(n - i)],
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn payments_are_paged_newest_first_with_a_total_count() {
    let app = TestApp::start().await;
    let user = UserId::new();
    seed_payments(&app.sql().await, user, 12).await;
    let other = UserId::new();
    seed_payments(&app.sql().await, other, 3).await;

    let resp = app
        .http
        .get(format!(
            "{}/api/v1/payments/profile?limit=5&page=3",
            app.url
        ))
        .header("authorization", app.token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-total-count"], "12");
    let (status, body) = read(resp).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().unwrap().len(), 2);

    let (_, first) = app
        .get("/api/v1/payments/profile", Some(&app.token(user)))
        .await;
    let first = first.as_array().unwrap();
    assert_eq!(first.len(), 10, "default limit");
    let times: Vec<&str> = first
        .iter()
        .map(|p| p["created_at"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    assert_eq!(
        first[0]["amount"],
        json!({"value": "299.00", "currency": "RUB"})
    );

    let resp = app
        .http
        .get(format!("{}/api/v1/payments/profile?page=9", app.url))
        .header("authorization", app.token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["x-total-count"],
        "12",
        "past the last page the count stays"
    );
    assert_eq!(read(resp).await.1, json!([]));
}

#[tokio::test]
async fn bad_pagination_is_400() {
    let app = TestApp::start().await;
    let token = app.token(UserId::new());
    for q in [
        "limit=0",
        "limit=101",
        "page=0",
        "page=-1",
        "limit=x",
        "page=%ZZ",
    ] {
        let (status, body) = app
            .get(&format!("/api/v1/payments/profile?{q}"), Some(&token))
            .await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body["code"].is_string());
    }
}

#[tokio::test]
async fn a_payment_is_visible_only_to_its_owner() {
    let app = TestApp::start().await;
    let db = app.sql().await;
    let owner = UserId::new();
    seed_payments(&db, owner, 1).await;
    let id = app.payments().await[0].id;

    let (status, body) = app
        .get(&format!("/api/v1/payments/{id}"), Some(&app.token(owner)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], json!(id));
    assert_eq!(body["status"], "succeeded");

    let (status, _) = app
        .get(
            &format!("/api/v1/payments/{id}"),
            Some(&app.token(UserId::new())),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = app
        .get("/api/v1/payments/not-a-uuid", Some(&app.token(owner)))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "bad_uuid");
}

#[tokio::test]
async fn unknown_routes_are_json_404_and_wrong_methods_are_not_500() {
    let app = TestApp::start().await;
    let (status, body) = app.get("/api/v1/nothing-here", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found");
    let resp = app
        .http
        .delete(format!("{}/api/v1/tariffs", app.url))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
}

#[tokio::test]
async fn a_body_over_64_kib_is_413_with_or_without_content_length() {
    let app = TestApp::start().await;
    let token = app.token(UserId::new());
    let big = "x".repeat(70 * 1024);
    let resp = app
        .http
        .post(format!("{}/api/v1/subscriptions/cancel", app.url))
        .header("authorization", &token)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let (_, body) = read(resp).await;
    assert_eq!(body["code"], "payload_too_large");
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = TestApp::start().await;
    let resp = app
        .http
        .get(format!("{}/healthz", app.url))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let resp = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"].len(), 36);
}

#[tokio::test]
async fn readyz_reports_database_broker_and_backlog() {
    let app = TestApp::start().await;
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, 200, "a broker outage is not fatal: {body}");
    assert_eq!(body["database"], "up");
    assert_eq!(body["broker"], "down");
    assert_eq!(body["outbox_backlog"], 0);
    assert_eq!(body["mode"], "sandbox");
    let (status, body) = app.get("/healthz", None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
}

#[tokio::test]
async fn readyz_is_503_when_the_database_is_gone() {
    let app = TestApp::start().await;
    let admin = {
        let (c, conn) = tokio_postgres::connect(ADMIN_URL, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    };
    admin
        .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", app.db.name))
        .await
        .unwrap();
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["database"], "down");
    let (status, body) = app.get("/api/v1/tariffs", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "database_unavailable");
}

#[tokio::test]
async fn metrics_use_route_templates_never_raw_ids() {
    let app = TestApp::start().await;
    let token = app.token(UserId::new());
    let id = Uuid::new_v4();
    app.get(&format!("/api/v1/payments/{id}"), Some(&token))
        .await;
    app.get("/no/such/path/12345", None).await;
    let text = app.metrics().await;
    assert!(text.contains(r#"route="/api/v1/payments/{id}""#), "{text}");
    assert!(text.contains(r#"route="unmatched""#));
    assert!(text.contains("http_request_duration_seconds_bucket"));
    assert!(!text.contains(&id.to_string()));
    // The recorder is process-wide, so every test's samples are in this text, and a
    // sample value (a duration sum such as 0.0123456) may hold these digits: look
    // at the series (name and labels), not the values.
    let leaked = text
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .any(|(series, _value)| series.contains("12345"));
    assert!(!leaked, "{text}");
}

#[tokio::test]
async fn openapi_lists_exactly_the_routes_the_service_answers() {
    let app = TestApp::start().await;
    let (status, spec) = app.get("/api/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if method != "parameters" {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut routes: Vec<(String, String)> = billing::http::routes::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routes.sort();
    assert_eq!(documented, routes);
    // And every documented route is really served (answers something other than "no such route").
    for (method, path) in &routes {
        let concrete = path
            .replace("{id}", &Uuid::new_v4().to_string())
            .replace("{pay_system}", "yookassa");
        let resp = app
            .http
            .request(method.parse().unwrap(), format!("{}{concrete}", app.url))
            .body("{}")
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_ne!(body["detail"], "no such route", "{method} {path}");
    }
}
