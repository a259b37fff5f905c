//! renew: N subscriptions with saved cards, all due for renewal at once. Time from
//! starting the service (with its workers) until every one is renewed through the
//! fake provider; the fake's charge count must equal N exactly. With `processes`
//! above 1 the work is shared by that many `billing serve --workers-only`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{base, fresh_db, round2, BenchError, Options, Result, Role, Service};
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
    let mut services = Vec::new();
    if opts.processes <= 1 {
        services.push(Service::start(opts, &fake, "renew", Role::All, &[]).await?);
    } else {
        for _ in 0..opts.processes {
            services.push(Service::start(opts, &fake, "renew", Role::Workers, &[]).await?);
        }
    }
    let took = super::wait_for_count(
        &db,
        include_str!("sql/renewals_succeeded.sql"),
        opts.n,
        started,
        Duration::from_secs(900),
    )
    .await?;
    let rss = services
        .iter()
        .map(Service::peak_rss_mib)
        .fold(f64::NAN, f64::max);
    let trips = services
        .iter()
        .map(|s| s.round_trips.as_ref().map(|c| c.count()))
        .sum::<Option<u64>>();
    let mut exited = 0;
    for mut s in services {
        if s.exited().is_some() {
            exited += 1;
        }
        s.stop().await;
    }

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
    m.insert("processes".into(), json!(opts.processes.max(1)));
    m.insert("max_rss_mib".into(), json!(round2(rss)));
    super::round_trip_figures(&mut m, trips, opts.n);
    m.insert(
        "verified".into(),
        json!(
            took.is_some()
                && exited == 0
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
