//! Re-processes inbox rows that could not be processed when they arrived
//! (provider slow or down, database blip). Rows are claimed with SKIP LOCKED and a
//! short lease, so replicas share the work without processing a row twice at once.

use uuid::Uuid;

use crate::app::App;
use crate::service::webhooks;

pub const BATCH: usize = 50;

pub async fn run_once(app: &App) -> Result<usize, String> {
    let ids: Vec<Uuid> = crate::jobs::claim(
        app,
        "UPDATE webhook_inbox SET next_attempt_at = now() + interval '60 seconds' WHERE id IN ( \
               SELECT id FROM webhook_inbox WHERE status = 'received' AND next_attempt_at <= now() \
               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id",
        &[&(BATCH as i64)],
    )
    .await?;
    for id in &ids {
        if let Err(e) = webhooks::process_and_record(app, *id).await {
            tracing::warn!(inbox_id = %id, error = %e, "inbox retry could not record its outcome");
        }
    }
    Ok(ids.len())
}
