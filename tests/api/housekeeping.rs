//! Retention: raw notification bodies and Idempotency-Key rows are not kept forever.

use std::time::Duration;

use crate::helpers::*;
use billing::domain::{InboxId, UserId};
use billing::providers::sandbox::Outcome;

/// Per notification: (object id, body gone, purge recorded, outcome kept or failed,
/// hash kept). In SQL: no store type carries the body's hash.
async fn body_state(app: &TestApp) -> Vec<(String, bool, bool, bool, bool)> {
    app.sql()
        .await
        .query(
            "SELECT object_id, body IS NULL, body_purged_at IS NOT NULL, \
             outcome IS NOT NULL OR status = 'failed', length(body_sha256) > 0 \
             FROM webhook_inbox ORDER BY object_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

#[tokio::test]
async fn old_bodies_are_purged_keeping_hash_and_outcome_and_failed_ones_stay_longer() {
    let app = TestApp::builder()
        .fake_yookassa()
        .config(|c| c.webhook_body_retention = Duration::from_secs(86_400))
        .start()
        .await;
    let fake = app.yookassa();
    let user = UserId::new();
    let (_, body) = app.buy(user, MONTH_TARIFF, false, Some("key-1")).await;
    let pid = app.provider_id(payment_id(&body)).await;
    fake.settle(&pid, Outcome::Succeed);
    fake.notify(&pid).await.unwrap();
    let db = app.sql().await;
    // A second notification of the same age that failed, and a recent one.
    db.execute(
        "INSERT INTO webhook_inbox (id, provider, event, object_id, status, body, body_sha256) \
         VALUES ($1, 'yookassa', 'payment.canceled', 'x1', 'failed', 'b', 'h'), \
                ($2, 'yookassa', 'payment.canceled', 'x2', 'processed', 'b', 'h')",
        &[&InboxId::new(), &InboxId::new()],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE webhook_inbox SET last_received_at = now() - interval '2 days' WHERE object_id IN ($1, 'x1')",
        &[&pid],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours'",
        &[],
    )
    .await
    .unwrap();

    let n = billing::jobs::housekeeping::run_once(app.app())
        .await
        .unwrap();
    assert_eq!(n, 2, "one body purged, one key deleted");
    let state = body_state(&app).await;
    assert!(
        state.contains(&(pid.clone(), true, true, true, true)),
        "{state:?}"
    );
    assert!(
        state.contains(&("x1".into(), false, false, true, true)),
        "failed bodies are kept 180 days: {state:?}"
    );
    assert!(
        state.contains(&("x2".into(), false, false, false, true)),
        "recent bodies stay: {state:?}"
    );
    assert_eq!(app.idempotency_keys().await, 0);
    assert_eq!(
        billing::jobs::housekeeping::run_once(app.app())
            .await
            .unwrap(),
        0
    );
}
