//! ceiling: the database work of one `payment.succeeded` webhook (inbox upsert,
//! inbox read, payment lookup, payment and subscription row locks, tariff read,
//! payment update, subscription insert, two outbox inserts, inbox finish), issued
//! directly through tokio-postgres in one transaction per notification, at the
//! same concurrency and with the same pool size as the service. No HTTP, no
//! provider: what PostgreSQL on this machine allows, against which the webhooks
//! scenario's throughput is read.

use serde_json::{json, Value};
use uuid::Uuid;

use super::{base, fresh_db, notifications, pending_purchases, round2, Options, Result};
use crate::providers::sandbox::Sandbox;
use crate::store::{payments, subscriptions};

/// The service's pool size (server.rs), so both sides get the same connections.
pub const POOL: usize = 32;

pub async fn run(opts: &Options) -> Result<Value> {
    let db = fresh_db(&opts.database_url).await?;
    let fake = Sandbox::new(super::SHOP_ID, super::SECRET_KEY, true);
    let ids = pending_purchases(&db, &fake, opts.n, 86_400.0).await?;
    let bodies = std::sync::Arc::new(notifications(&fake, &ids));
    let ids = std::sync::Arc::new(ids);
    let pool = crate::db::pool(&opts.database_url, POOL).map_err(super::BenchError::new)?;
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let load = {
        let errors = errors.clone();
        super::drive(opts.n, opts.concurrency, move |i| {
            let pool = pool.clone();
            let bodies = bodies.clone();
            let ids = ids.clone();
            let errors = errors.clone();
            async move {
                match one(&pool, &bodies[i], &ids[i]).await {
                    Ok(()) => true,
                    Err(e) => {
                        errors.lock().unwrap().push(e);
                        false
                    }
                }
            }
        })
        .await
    };
    let (ok, mut checks) = super::verify_activations(&db, opts.n).await?;
    let mut m = base("ceiling", opts);
    m.insert("ceiling_per_s".into(), json!(round2(load.per_s())));
    m.insert("throughput_per_s".into(), json!(round2(load.per_s())));
    m.insert("seconds".into(), json!(round2(load.elapsed.as_secs_f64())));
    m.insert("failures".into(), json!(load.failures));
    if let Some(first) = errors.lock().unwrap().first() {
        m.insert("first_error".into(), json!(first));
    }
    m.append(checks.as_object_mut().expect("object"));
    m.insert("verified".into(), json!(ok && load.failures == 0));
    Ok(Value::Object(m))
}

async fn one(
    pool: &deadpool_postgres::Pool,
    body: &[u8],
    provider_id: &str,
) -> std::result::Result<(), String> {
    use sha2::{Digest, Sha256};
    let e = |e: tokio_postgres::Error| e.to_string();
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(e)?;
    let hash = Sha256::digest(body).to_vec();

    let st = tx
        .prepare_cached(
            "INSERT INTO webhook_inbox (id, provider, event, object_id, status, body, body_sha256, content_type, \
             source_ip, next_attempt_at) VALUES ($1, $2, $3, $4, 'received', $5, $6, $7, $8::text::inet, now() + interval '30 seconds') \
             ON CONFLICT (provider, event, object_id) WHERE ops_webhook_id IS NULL DO UPDATE SET \
             deliveries = webhook_inbox.deliveries + 1, last_received_at = now(), \
             body = CASE WHEN webhook_inbox.status = 'processed' THEN webhook_inbox.body ELSE EXCLUDED.body END, \
             body_sha256 = CASE WHEN webhook_inbox.status = 'processed' THEN webhook_inbox.body_sha256 ELSE EXCLUDED.body_sha256 END, \
             source_ip = EXCLUDED.source_ip RETURNING id, status",
        )
        .await
        .map_err(e)?;
    let ct = Some("application/json");
    let ip = Some("127.0.0.1".to_owned());
    let inbox: Uuid = tx
        .query_one(
            &st,
            &[
                &Uuid::new_v4(),
                &"yookassa",
                &"payment.succeeded",
                &provider_id,
                &body,
                &hash,
                &ct,
                &ip,
            ],
        )
        .await
        .map_err(e)?
        .get(0);
    let st = tx
        .prepare_cached("SELECT provider, event, object_id FROM webhook_inbox WHERE id = $1")
        .await
        .map_err(e)?;
    tx.query_one(&st, &[&inbox]).await.map_err(e)?;
    let st = tx
        .prepare_cached(
            "SELECT id FROM payments WHERE pay_system = $1 AND provider_payment_id = $2",
        )
        .await
        .map_err(e)?;
    let payment_id: Uuid = tx
        .query_one(&st, &[&"yookassa", &provider_id])
        .await
        .map_err(e)?
        .get(0);
    let st = tx
        .prepare_cached(&format!(
            "SELECT {} FROM payments WHERE id = $1 FOR UPDATE",
            payments::COLS
        ))
        .await
        .map_err(e)?;
    let row = tx.query_one(&st, &[&payment_id]).await.map_err(e)?;
    let payment = crate::store::Payment::from_row(&row).map_err(|e| e.to_string())?;
    let st = tx.prepare_cached("SELECT now()").await.map_err(e)?;
    let now: chrono::DateTime<chrono::Utc> = tx.query_one(&st, &[]).await.map_err(e)?.get(0);
    let st = tx
        .prepare_cached(
            "SELECT id, alias, name, description, price_minor, currency, period_count, period_unit, archived_at \
             FROM tariffs WHERE id = $1",
        )
        .await
        .map_err(e)?;
    tx.query_one(&st, &[&payment.tariff_id]).await.map_err(e)?;
    let st = tx
        .prepare_cached(&format!(
            "SELECT {} FROM subscriptions WHERE user_id = $1 AND status IN ('active','past_due') FOR UPDATE",
            subscriptions::COLS
        ))
        .await
        .map_err(e)?;
    tx.query_opt(&st, &[&payment.user_id]).await.map_err(e)?;
    let allowed = vec!["pending", "waiting_for_capture", "failed", "canceled"];
    let st = tx
        .prepare_cached(&format!(
            "UPDATE payments SET status = $2, captured_at = COALESCE($3, captured_at), \
             cancellation_party = COALESCE($4, cancellation_party), \
             cancellation_reason = COALESCE($5, cancellation_reason), \
             payment_method_id = COALESCE(payment_method_id, $6), next_check_at = NULL, \
             lease_until = NULL, updated_at = now() \
             WHERE id = $1 AND status = ANY($7) RETURNING {}",
            payments::COLS
        ))
        .await
        .map_err(e)?;
    let none: Option<&str> = None;
    let no_method: Option<Uuid> = None;
    tx.query_one(
        &st,
        &[
            &payment_id,
            &"succeeded",
            &Some(now),
            &none,
            &none,
            &no_method,
            &allowed,
        ],
    )
    .await
    .map_err(e)?;
    let end = now + chrono::Duration::days(30);
    let no_next: Option<chrono::DateTime<chrono::Utc>> = None;
    let st = tx
        .prepare_cached(&format!(
            "INSERT INTO subscriptions (id, user_id, tariff_id, pay_system, status, price_minor, currency, \
             period_count, period_unit, current_period_start, current_period_end, auto_renew, \
             payment_method_id, next_charge_at, livemode) \
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING {}",
            subscriptions::COLS
        ))
        .await
        .map_err(e)?;
    let sub_id = Uuid::new_v4();
    tx.query_one(
        &st,
        &[
            &sub_id,
            &payment.user_id,
            &payment.tariff_id,
            &"yookassa",
            &super::PRICE_MINOR,
            &"RUB",
            &1i32,
            &"month",
            &now,
            &end,
            &false,
            &no_method,
            &no_next,
            &false,
        ],
    )
    .await
    .map_err(e)?;
    let st = tx
        .prepare_cached("UPDATE payments SET subscription_id = $2 WHERE id = $1")
        .await
        .map_err(e)?;
    tx.execute(&st, &[&payment_id, &sub_id]).await.map_err(e)?;
    let st = tx
        .prepare_cached(
            "INSERT INTO outbox (event_id, event_type, payload, occurred_at) \
             VALUES ($1, $2, jsonb_set($3::jsonb, '{data,seq}', to_jsonb(nextval('event_seq'))), \
                     ($3::jsonb ->> 'occurred_at')::timestamptz)",
        )
        .await
        .map_err(e)?;
    for event in ["payment.succeeded", "subscription.activated"] {
        let id = Uuid::new_v4();
        let payload = json!({
            "id": id, "type": event, "occurred_at": now.to_rfc3339(), "version": 1,
            "data": {"user_id": payment.user_id, "subscription_id": sub_id, "status": "succeeded",
                     "livemode": false, "seq": 0, "payment_id": payment_id,
                     "amount": {"value": super::PRICE, "currency": "RUB"}, "provider": "yookassa",
                     "tariff_id": payment.tariff_id, "current_period_end": end.to_rfc3339(), "auto_renew": false},
        });
        tx.execute(&st, &[&id, &event, &payload]).await.map_err(e)?;
    }
    let st = tx
        .prepare_cached(
            "UPDATE webhook_inbox SET attempts = attempts + 1, outcome = COALESCE($3, outcome), last_error = $4, \
             status = CASE WHEN $2 = 'received' AND received_at < now() - interval '24 hours' THEN 'failed' ELSE $2 END, \
             processed_at = CASE WHEN $2 IN ('processed', 'ignored') THEN now() ELSE processed_at END, \
             next_attempt_at = CASE WHEN $2 = 'received' \
                 THEN now() + LEAST(interval '5 seconds' * power(2, LEAST(attempts, 10)), interval '5 minutes') END \
             WHERE id = $1 RETURNING status, provider",
        )
        .await
        .map_err(e)?;
    let outcome = Some(format!("payment {payment_id} → succeeded"));
    let no_error: Option<String> = None;
    tx.query_one(&st, &[&inbox, &"processed", &outcome, &no_error])
        .await
        .map_err(e)?;
    tx.commit().await.map_err(e)
}
