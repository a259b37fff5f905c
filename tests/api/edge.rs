//! What an outsider without a token can do to the edge (issue 13): every label value
//! they can influence comes from a closed set, and every answer is the JSON error
//! shape, whatever bytes they send.

use crate::helpers::*;
use reqwest::header::HeaderValue;
use reqwest::Method;

/// The `http_requests_total` series in a scrape.
fn request_series(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
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
        series.iter().any(|l| l.contains("method=\"other\"")),
        "made-up methods are counted as other: {series:#?}"
    );
    assert!(!after.contains("M49X"), "a made-up method is a label value");
    assert!(!after.contains("nothing-"), "a made-up path is a label value");
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
