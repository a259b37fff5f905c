//! reads: GET /healthz (the ceiling: the same server's cheapest answer), then GET
//! /api/v1/tariffs, then GET /api/v1/payments/profile for users with 50 payments
//! each, N requests of each at concurrency C; each read is also given as a share
//! of the ceiling (`tariffs_vs_healthz`, `profile_vs_healthz`).

use std::sync::Arc;

use serde_json::{json, Value};

use super::{base, fresh_db, round2, BenchError, Options, Result, Service};
use crate::domain::{TariffId, UserId};

pub const PAYMENTS_PER_USER: i64 = 50;
/// `payments/profile?limit=`: the whole history of a user in one page.
pub const PAGE: usize = 50;

fn total_of(r: &reqwest::Response) -> Option<i64> {
    r.headers()
        .get("x-total-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

pub async fn run(opts: &Options) -> Result<Value> {
    let db = fresh_db(&opts.database_url).await?;
    let users_n = (opts.n / 10).clamp(1, 1000);
    let tariff = super::MONTH_TARIFF.parse::<TariffId>().expect("constant");
    let users: Vec<UserId> = db
        .query(include_str!("sql/reads_users.sql"), &[&(users_n as i32)])
        .await
        .map_err(BenchError::new)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    db.execute(
        include_str!("sql/reads_payments.sql"),
        &[
            &users,
            &tariff,
            &super::PRICE_MINOR,
            &(PAYMENTS_PER_USER as i32),
        ],
    )
    .await
    .map_err(BenchError::new)?;
    db.batch_execute("ANALYZE").await.map_err(BenchError::new)?;

    let fake = super::fake().await?;
    let service = Service::start(opts, &fake, "reads", super::Role::Api, &[]).await?;
    let http = super::http_client(opts.concurrency)?;

    // The ceiling: the cheapest answer of the same server, through the same client.
    let url = format!("{}/healthz", service.url);
    let client = http.clone();
    let healthz = super::drive(opts.n, opts.concurrency, move |_| {
        let http = client.clone();
        let url = url.clone();
        async move {
            match http.get(&url).send().await {
                Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                _ => false,
            }
        }
    })
    .await;

    // Every answer must be the list read once here (three tariffs), byte for byte:
    // the load generator does no more per request than for the ceiling.
    let url = format!("{}/api/v1/tariffs", service.url);
    let expected = http
        .get(&url)
        .send()
        .await
        .map_err(BenchError::new)?
        .bytes()
        .await
        .map_err(BenchError::new)?;
    let three = serde_json::from_slice::<Value>(&expected)
        .is_ok_and(|v| v.as_array().is_some_and(|a| a.len() == 3));
    let client = http.clone();
    let tariffs = super::drive(opts.n, opts.concurrency, move |_| {
        let http = client.clone();
        let url = url.clone();
        let expected = expected.clone();
        async move {
            match http.get(&url).send().await {
                Ok(r) if r.status() == 200 => r.bytes().await.is_ok_and(|b| b == expected),
                _ => false,
            }
        }
    })
    .await;

    // Each user's page is read and checked once (50 payments, `X-Total-Count: 50`);
    // under load every answer must be that page byte for byte, as for tariffs.
    let keys = crate::http::auth::Keys::new(super::JWT_KEY);
    let tokens: Vec<String> = users.iter().map(|u| keys.issue(*u, false, 3600)).collect();
    let url = format!(
        "{}/api/v1/payments/profile?limit={PAGE}&page=1",
        service.url
    );
    let mut pages = Vec::with_capacity(tokens.len());
    let mut pages_ok = true;
    for token in &tokens {
        let r = http
            .get(&url)
            .header("authorization", token)
            .send()
            .await
            .map_err(BenchError::new)?;
        pages_ok &= total_of(&r) == Some(PAYMENTS_PER_USER);
        let body = r.bytes().await.map_err(BenchError::new)?;
        pages_ok &= serde_json::from_slice::<Value>(&body)
            .is_ok_and(|v| v.as_array().is_some_and(|a| a.len() == PAGE));
        pages.push(body);
    }
    let pages = Arc::new(pages);
    let tokens = Arc::new(tokens);
    let profile = super::drive(opts.n, opts.concurrency, move |i| {
        let http = http.clone();
        let url = url.clone();
        let tokens = tokens.clone();
        let pages = pages.clone();
        async move {
            let user = i % tokens.len();
            match http
                .get(&url)
                .header("authorization", &tokens[user])
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => {
                    total_of(&r) == Some(PAYMENTS_PER_USER)
                        && r.bytes().await.is_ok_and(|b| b == pages[user])
                }
                _ => false,
            }
        }
    })
    .await;
    let rss = service.peak_rss_mib();
    service.stop().await;

    let mut m = base("reads", opts);
    m.append(&mut tariffs.figures(""));
    m.append(&mut profile.figures("profile_"));
    m.append(&mut healthz.figures("healthz_"));
    let ratio = |load: &super::Load| round2(load.per_s() / healthz.per_s().max(f64::MIN_POSITIVE));
    m.insert("tariffs_vs_healthz".into(), json!(ratio(&tariffs)));
    m.insert("profile_vs_healthz".into(), json!(ratio(&profile)));
    m.insert("users".into(), json!(users_n));
    m.insert("payments_per_user".into(), json!(PAYMENTS_PER_USER));
    m.insert("profile_page".into(), json!(PAGE));
    m.insert("max_rss_mib".into(), json!(round2(rss)));
    m.insert(
        "verified".into(),
        json!(
            three
                && pages_ok
                && tariffs.failures == 0
                && profile.failures == 0
                && healthz.failures == 0
        ),
    );
    Ok(Value::Object(m))
}
