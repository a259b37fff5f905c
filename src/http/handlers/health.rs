//! Liveness, readiness and metrics.

use std::time::Duration;

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::json;
use crate::app::App;
use crate::store::Connect;

/// `{"status": "ok"}`: the process is up.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    #[schema(value_type = String, pattern = "^ok$", example = "ok")]
    pub status: &'static str,
}

/// What `/readyz` reports; the counters are null when the database is down.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `up` or `down`.
    #[schema(value_type = String, pattern = "^(up|down)$")]
    pub database: &'static str,
    /// `up` or `down`.
    #[schema(value_type = String, pattern = "^(up|down)$")]
    pub broker: &'static str,
    /// Events not yet published.
    #[schema(required = true)]
    pub outbox_backlog: Option<i64>,
    /// Age of the oldest unpublished event, seconds.
    #[schema(required = true)]
    pub oldest_unsent_s: Option<i64>,
    /// `sandbox`, `test` or `live`.
    #[schema(value_type = String, pattern = "^(sandbox|test|live)$")]
    pub mode: &'static str,
    /// Each configured provider's own mode (`test` or `live`; YooKassa `sandbox`
    /// without credentials): what `livemode` its payments and events carry.
    #[schema(value_type = std::collections::BTreeMap<String, String>, example = json!({"yookassa": "test", "cloudpayments": "live"}))]
    pub modes: std::collections::BTreeMap<&'static str, &'static str>,
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    summary = "Liveness",
    responses(
        (status = 200, description = "The process is up", body = Health),
    )
)]
pub async fn healthz() -> Response {
    json(StatusCode::OK, &Health { status: "ok" })
}

/// 503 only when the database is down; a broker outage is reported, not fatal,
/// because events wait safely in the outbox.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    summary = "Readiness: 503 only when the database is down; a broker outage is reported with 200",
    responses(
        (status = 200, description = "Ready (the broker may be down; events wait in the outbox)", body = Readiness),
        (status = 503, description = "The database is down", body = Readiness),
    )
)]
pub async fn readyz(app: App) -> Response {
    let probe = async {
        let db = app.db.conn().await.ok()?;
        let b = crate::store::outbox::backlog(&db).await.ok()?;
        Some((b.rows, b.oldest_seconds))
    };
    let result = tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten();
    let broker = if app.broker.is_up() { "up" } else { "down" };
    let mode = app.config.mode.as_str();
    let modes: std::collections::BTreeMap<_, _> = app
        .providers
        .configured()
        .map(|p| (p.as_str(), app.config.provider_mode(p).as_str()))
        .collect();
    match result {
        Some((backlog, oldest)) => json(
            StatusCode::OK,
            &Readiness {
                database: "up",
                broker,
                outbox_backlog: Some(backlog),
                oldest_unsent_s: Some(oldest.round() as i64),
                mode,
                modes: modes.clone(),
            },
        ),
        None => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Readiness {
                database: "down",
                broker,
                outbox_backlog: None,
                oldest_unsent_s: None,
                mode,
                modes: modes.clone(),
            },
        ),
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    summary = "Prometheus metrics; labels use route templates, unmatched paths are `unmatched`",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain; version=0.0.4"),
    )
)]
pub async fn metrics() -> Response {
    let text = crate::telemetry::metrics().render();
    warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response()
}
