//! renew: N subscriptions with saved cards, all due for renewal at once. Time from
//! starting the service (with its workers) until every one is renewed through the
//! fake provider; the fake's charge count must equal N exactly.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{base, fresh_db, round2, BenchError, Options, Result, Service};
use crate::domain::TariffId;

pub async fn run(opts: &Options) -> Result<Value> {
    let db = fresh_db(&opts.database_url).await?;
    let tariff = super::MONTH_TARIFF.parse::<TariffId>().expect("constant");
    db.execute(include_str!("sql/renew_methods.sql"), &[&(opts.n as i32)])
        .await
        .map_err(BenchError::new)?;
    db.execute(
        include_str!("sql/renew_subscriptions.sql"),
        &[&tariff, &super::PRICE_MINOR],
    )
    .await
    .map_err(BenchError::new)?;
    db.batch_execute("ANALYZE").await.map_err(BenchError::new)?;
    let fake = super::fake().await?;
    let started = Instant::now();
    let service = Service::start(opts, &fake, "renew", true, &[]).await?;
    let took = super::wait_for_count(
        &db,
        include_str!("sql/renewals_succeeded.sql"),
        opts.n,
        started,
        Duration::from_secs(900),
    )
    .await?;
    let rss = service.peak_rss_mib();
    service.stop().await;

    let n = opts.n as i64;
    let charges = fake.sandbox.charges();
    let row = db
        .query_one(include_str!("sql/renew_checks.sql"), &[])
        .await
        .map_err(BenchError::new)?;
    let [renewals, extended, outbox, renewed_events, twice]: [i64; 5] = [
        row.get("renewals"),
        row.get("extended"),
        row.get("outbox"),
        row.get("renewed_events"),
        row.get("twice"),
    ];
    let mut m = base("renew", opts);
    m.insert(
        "seconds".into(),
        json!(took.map(|d| round2(d.as_secs_f64()))),
    );
    m.insert(
        "throughput_per_s".into(),
        json!(took.map(|d| round2(opts.n as f64 / d.as_secs_f64()))),
    );
    m.insert("charges".into(), json!(charges));
    m.insert("renewal_payments".into(), json!(renewals));
    m.insert("renewed".into(), json!(extended));
    m.insert("outbox_rows".into(), json!(outbox));
    m.insert("charged_twice".into(), json!(twice));
    m.insert("max_rss_mib".into(), json!(round2(rss)));
    m.insert(
        "verified".into(),
        json!(
            took.is_some()
                && charges == opts.n as u64
                && renewals == n
                && extended == n
                && outbox == 2 * n
                && renewed_events == n
                && twice == 0
        ),
    );
    Ok(Value::Object(m))
}
