//! webhooks: N pending payments (settled at the fake), then N `payment.succeeded`
//! notifications over real HTTP at concurrency C. The service re-reads each payment
//! from the fake over HTTP before it settles it. The ceiling is measured first, in
//! the same run, on its own fresh database.

use serde_json::{json, Value};

use super::{base, fresh_db, notifications, pending_purchases, round2, Options, Result, Service};

pub async fn run(opts: &Options) -> Result<Value> {
    let ceiling = super::ceiling::run(opts).await?;
    let ceiling_per_s = ceiling["ceiling_per_s"].as_f64().unwrap_or(f64::NAN);
    let mut pgbench = super::pgbench::ceiling(opts).await?;

    let db = fresh_db(&opts.database_url).await?;
    let fake = super::fake().await?;
    let ids = pending_purchases(&db, &fake.sandbox, opts.n, 86_400.0).await?;
    let bodies = std::sync::Arc::new(notifications(&fake.sandbox, &ids));
    let service = Service::start(opts, &fake, "webhooks", super::Role::Api, &[]).await?;
    let http = super::http_client(opts.concurrency)?;
    let url = format!("{}/webhooks/yookassa", service.url);
    let trips_before = service.round_trips.as_ref().map(|c| c.count());
    let load = super::drive(opts.n, opts.concurrency, move |i| {
        let http = http.clone();
        let url = url.clone();
        let bodies = bodies.clone();
        async move {
            match http
                .post(&url)
                .header("content-type", "application/json")
                .body(bodies[i].clone())
                .send()
                .await
            {
                Ok(r) => r.status() == 200,
                Err(_) => false,
            }
        }
    })
    .await;
    let trips = service
        .round_trips
        .as_ref()
        .zip(trips_before)
        .map(|(c, before)| c.count() - before);
    let rss = service.peak_rss_mib();
    service.stop().await;

    let (ok, mut checks) = super::verify_activations(&db, opts.n).await?;
    let processed = super::count(&db, include_str!("sql/processed_notifications.sql")).await?;
    let rereads = fake.sandbox.gets();
    let mut m = base("webhooks", opts);
    m.append(&mut load.figures(""));
    m.insert("ceiling_per_s".into(), json!(ceiling_per_s));
    m.insert(
        "ratio".into(),
        json!(round2(load.per_s() / ceiling_per_s * 100.0) / 100.0),
    );
    if let Some(tps) = pgbench.get("pgbench_tps").and_then(Value::as_f64) {
        m.insert("ratio_pgbench".into(), json!(round2(load.per_s() / tps)));
    }
    m.append(&mut pgbench);
    super::round_trip_figures(&mut m, trips, opts.n);
    m.insert("seconds".into(), json!(round2(load.elapsed.as_secs_f64())));
    m.append(checks.as_object_mut().expect("object"));
    m.insert("inbox_processed".into(), json!(processed));
    m.insert("provider_rereads".into(), json!(rereads));
    m.insert("max_rss_mib".into(), json!(round2(rss)));
    m.insert("ceiling_verified".into(), ceiling["verified"].clone());
    m.insert(
        "verified".into(),
        json!(
            ok && load.failures == 0
                && processed == opts.n as i64
                && rereads >= opts.n as u64
                && ceiling["verified"] == json!(true)
        ),
    );
    Ok(Value::Object(m))
}
