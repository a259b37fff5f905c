//! Data that must not be kept forever: raw notification bodies (personal data)
//! after WEBHOOK_BODY_RETENTION (failed ones after 180 days; hash and outcome stay),
//! and Idempotency-Key rows after their 24 hours. Batched so a backlog never holds
//! long locks.

use crate::app::App;

pub const BATCH: usize = 1000;

pub async fn run_once(app: &App) -> Result<usize, String> {
    let db = app.db.get().await.map_err(|e| e.to_string())?;
    let retention = app.config.webhook_body_retention.as_secs_f64();
    let purged = db
        .execute(
            "UPDATE webhook_inbox SET body = NULL, body_purged_at = now() WHERE id IN ( \
               SELECT id FROM webhook_inbox WHERE body IS NOT NULL AND status <> 'received' AND ( \
                 (status <> 'failed' AND last_received_at < now() - make_interval(secs => $1)) \
                 OR last_received_at < now() - interval '180 days') \
               LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&retention, &(BATCH as i64)],
        )
        .await
        .map_err(|e| e.to_string())?;
    let keys = db
        .execute(
            "DELETE FROM idempotency_keys WHERE (user_id, scope, key) IN ( \
               SELECT user_id, scope, key FROM idempotency_keys WHERE created_at < now() - interval '24 hours' \
               AND (locked_until IS NULL OR locked_until < now()) LIMIT $1 FOR UPDATE SKIP LOCKED)",
            &[&(BATCH as i64)],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((purged + keys) as usize)
}
