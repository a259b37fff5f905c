//! renew: N subscriptions with saved cards, all due for renewal at once. Time from
//! starting the service (with its workers) until every one is renewed through the
//! fake provider; the fake's charge count must equal N exactly.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use super::{base, count, fresh_db, round2, BenchError, Options, Result, Service};

pub async fn run(opts: &Options) -> Result<Value> {
    let db = fresh_db(&opts.database_url).await?;
    let tariff = Uuid::parse_str(super::MONTH_TARIFF).expect("constant");
    db.execute(
        "INSERT INTO payment_methods (id, user_id, pay_system, provider_method_id, title, livemode) \
         SELECT gen_random_uuid(), gen_random_uuid(), 'yookassa', 'pm-bench-' || i, 'Bank card *4444', false \
         FROM generate_series(1, $1::int) i",
        &[&(opts.n as i32)],
    )
    .await
    .map_err(BenchError::new)?;
    // The period ends in 12 hours; RENEW_BEFORE (1 day) made them due already.
    db.execute(
        "INSERT INTO subscriptions (id, user_id, tariff_id, pay_system, status, price_minor, currency, \
         period_count, period_unit, current_period_start, current_period_end, auto_renew, payment_method_id, \
         next_charge_at, livemode) \
         SELECT gen_random_uuid(), m.user_id, $1, 'yookassa', 'active', $2, 'RUB', 1, 'month', \
                now() - interval '1 month' + interval '12 hours', now() + interval '12 hours', true, m.id, \
                now() - interval '1 second', false FROM payment_methods m",
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
        "SELECT count(*) FROM payments WHERE kind = 'renewal' AND status = 'succeeded'",
        opts.n,
        started,
        Duration::from_secs(900),
    )
    .await?;
    let rss = service.peak_rss_mib();
    service.stop().await;

    let n = opts.n as i64;
    let charges = fake.sandbox.charges();
    let renewals = count(&db, "SELECT count(*) FROM payments WHERE kind = 'renewal'").await?;
    let extended = count(
        &db,
        "SELECT count(*) FROM subscriptions WHERE status = 'active' \
         AND current_period_end > now() + interval '25 days'",
    )
    .await?;
    let outbox = count(&db, "SELECT count(*) FROM outbox").await?;
    let renewed_events = count(
        &db,
        "SELECT count(*) FROM outbox WHERE event_type = 'subscription.renewed'",
    )
    .await?;
    let twice = count(
        &db,
        "SELECT count(*) FROM (SELECT subscription_id FROM payments WHERE kind = 'renewal' \
         GROUP BY 1 HAVING count(*) > 1) d",
    )
    .await?;
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
