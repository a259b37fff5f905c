//! Re-processes inbox rows that could not be processed when they arrived
//! (provider slow or down, database blip). Rows are claimed with SKIP LOCKED and a
//! short lease, so replicas share the work without processing a row twice at once.

use uuid::Uuid;

use crate::app::App;
use crate::service::webhooks;
use crate::store::webhook_inbox;

pub const BATCH: usize = 50;

pub async fn run_once(app: &App) -> Result<usize, String> {
    let ids: Vec<Uuid> = {
        let db = app.db.get().await.map_err(|e| e.to_string())?;
        webhook_inbox::claim_due(&db, BATCH as i64)
            .await
            .map_err(|e| e.to_string())?
    };
    for id in &ids {
        if let Err(e) = webhooks::process_and_record(app, *id).await {
            tracing::warn!(inbox_id = %id, error = %e, "inbox retry could not record its outcome");
        }
    }
    Ok(ids.len())
}
