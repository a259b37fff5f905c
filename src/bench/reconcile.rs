//! reconcile: N payments settled at the provider whose webhook never comes, all due
//! for a check at once. Time from starting the service (with its workers) until the
//! reconciler has activated every one of them.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{base, fresh_db, pending_purchases, round2, Options, Result, Service};

pub async fn run(opts: &Options) -> Result<Value> {
    let db = fresh_db(&opts.database_url).await?;
    let fake = super::fake().await?;
    // Due now: next_check_at in the past.
    pending_purchases(&db, &fake.sandbox, opts.n, -1.0).await?;
    let started = Instant::now();
    let service = Service::start(opts, &fake, "reconcile", super::Role::All, &[]).await?;
    let took = super::wait_for_count(
        &db,
        include_str!("sql/succeeded.sql"),
        opts.n,
        started,
        Duration::from_secs(600),
    )
    .await?;
    let rss = service.peak_rss_mib();
    let trips = service.round_trips.as_ref().map(|c| c.count());
    service.stop().await;
    let (ok, mut checks) = super::verify_activations(&db, opts.n).await?;
    let seconds = took.map(|d| round2(d.as_secs_f64()));
    let mut m = base("reconcile", opts);
    m.insert("seconds".into(), json!(seconds));
    m.insert(
        "throughput_per_s".into(),
        json!(took.map(|d| round2(opts.n as f64 / d.as_secs_f64()))),
    );
    m.insert("charges".into(), json!(fake.sandbox.charges()));
    m.insert("provider_rereads".into(), json!(fake.sandbox.gets()));
    m.append(checks.as_object_mut().expect("object"));
    m.insert("max_rss_mib".into(), json!(round2(rss)));
    super::round_trip_figures(&mut m, trips, opts.n);
    m.insert(
        "verified".into(),
        json!(ok && took.is_some() && fake.sandbox.charges() == 0),
    );
    Ok(Value::Object(m))
}
