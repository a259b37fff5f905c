//! ceiling: the database work of one `payment.succeeded` webhook (inbox upsert,
//! inbox read, payment lookup, payment and subscription row locks, tariff read,
//! payment update, subscription insert, paid period, two outbox inserts, inbox
//! finish), through the service's own store functions in one transaction per
//! notification, at the
//! same concurrency and with the same pool size as the service (`--pool-size`). No HTTP, no
//! provider: what PostgreSQL on this machine allows, against which the webhooks
//! scenario's throughput is read.

use serde_json::{json, Value};

use super::{base, fresh_db, notifications, pending_purchases, round2, Options, Result};
use crate::domain::InboxStatus;
use crate::domain::{PaySystem, PaymentStatus};
use crate::events::{self, EventSubject, EventType};
use crate::providers::sandbox::Sandbox;
use crate::store::payments::StatusMove;
use crate::store::subscriptions::NewSubscription;
use crate::store::webhook_inbox::{self, NewNotification};
use crate::store::{self, payments, subscriptions, tariffs, StoreError};

pub async fn run(opts: &Options) -> Result<Value> {
    let db = fresh_db(&opts.database_url).await?;
    let fake = Sandbox::new(super::SHOP_ID, super::SECRET_KEY, true);
    let ids = pending_purchases(&db, &fake, opts.n, 86_400.0).await?;
    let bodies = std::sync::Arc::new(notifications(&fake, &ids));
    let ids = std::sync::Arc::new(ids);
    let pool = crate::db::pool(&opts.database_url, opts.effective_pool_size())
        .map_err(super::BenchError::new)?;
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
    one_tx(pool, body, provider_id)
        .await
        .map_err(|e| e.to_string())
}

/// The statements the service runs for the notification, through the same store
/// functions (so a change there changes what this measures), in one transaction.
async fn one_tx(
    pool: &deadpool_postgres::Pool,
    body: &[u8],
    provider_id: &str,
) -> std::result::Result<(), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let (inbox, _) = webhook_inbox::insert(
        &tx,
        &NewNotification {
            provider: PaySystem::YooKassa,
            event: "payment.succeeded",
            object_id: provider_id,
            ops_webhook_id: None,
            body,
            content_type: Some("application/json"),
            source_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        },
    )
    .await?;
    webhook_inbox::stored(&tx, inbox).await?;
    let payment_id = payments::id_by_provider_id(&tx, PaySystem::YooKassa, provider_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("no payment for {provider_id}")))?;
    let payment = payments::lock(&tx, payment_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("payment vanished".into()))?;
    let now = store::now(&tx).await?;
    let tariff = tariffs::get(&tx, payment.tariff_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("payment without its tariff".into()))?;
    subscriptions::lock_live_for_user(&tx, payment.user_id).await?;
    let moved = payments::move_status(
        &tx,
        payment_id,
        &StatusMove {
            status: PaymentStatus::Succeeded,
            captured_at: Some(now),
            cancellation_party: None,
            cancellation_reason: None,
            payment_method_id: None,
        },
    )
    .await?
    .ok_or_else(|| StoreError::Corrupt("payment did not move".into()))?;
    let end = tariff.period.add_to(now);
    let sub = subscriptions::insert_active(
        &tx,
        &NewSubscription {
            user_id: payment.user_id,
            tariff_id: payment.tariff_id,
            pay_system: PaySystem::YooKassa,
            price: payment.amount,
            period: tariff.period,
            start: now,
            end,
            auto_renew: false,
            payment_method_id: None,
            next_charge_at: None,
            livemode: false,
            receipt: None,
        },
    )
    .await?;
    payments::record_paid_period(&tx, payment_id, now, end).await?;
    payments::link_subscription(&tx, payment_id, sub.id).await?;
    for event in [
        EventType::PaymentSucceeded,
        EventType::SubscriptionActivated,
    ] {
        events::record(&tx, event, EventSubject::payment(&moved, Some(&sub))).await?;
    }
    let outcome = format!("payment {payment_id} → succeeded");
    webhook_inbox::record_outcome(&tx, inbox, InboxStatus::Processed, Some(&outcome), None).await?;
    tx.commit().await?;
    Ok(())
}
