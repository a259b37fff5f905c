//! Liveness, readiness and metrics.

use std::time::Duration;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::json;
use crate::app::App;

pub async fn healthz() -> Response {
    json(StatusCode::OK, &json!({"status": "ok"}))
}

/// 503 only when the database is down; a broker outage is reported, not fatal,
/// because events wait safely in the outbox.
pub async fn readyz(app: App) -> Response {
    let probe = async {
        let db = app.db.get().await.ok()?;
        let row = db
            .query_one(
                "SELECT count(*) AS backlog, \
                 COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest \
                 FROM outbox WHERE sent_at IS NULL",
                &[],
            )
            .await
            .ok()?;
        Some((row.get::<_, i64>("backlog"), row.get::<_, f64>("oldest")))
    };
    let result = tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten();
    let broker = if app.broker.is_up() { "up" } else { "down" };
    let mode = app.config.mode.as_str();
    match result {
        Some((backlog, oldest)) => json(
            StatusCode::OK,
            &json!({"database": "up", "broker": broker, "outbox_backlog": backlog,
                    "oldest_unsent_s": oldest.round() as i64, "mode": mode}),
        ),
        None => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"database": "down", "broker": broker, "outbox_backlog": null,
                    "oldest_unsent_s": null, "mode": mode}),
        ),
    }
}

pub async fn metrics() -> Response {
    let text = crate::telemetry::metrics().render();
    warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response()
}
