//! Buying a tariff and receiving provider notifications.

use std::net::SocketAddr;

use bytes::Bytes;
use serde::Serialize;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;

use super::json as reply_json;
use super::keyed;
use crate::app::App;
use crate::domain::PaySystem;
use crate::http::error::ApiError;
use crate::http::{body, webhook_auth};
use crate::service::purchase::{self, BuyRequest, BuyResponse, IdempotencyKey};
use crate::service::webhooks::{self, InboxStatus, Incoming};
use crate::service::BillingError;

#[utoipa::path(
    post,
    path = "/api/v1/subscriptions/{pay_system}/buy",
    tag = "subscriptions",
    operation_id = "buySubscription",
    summary = "Buy a tariff: creates a payment and returns the provider's confirmation URL",
    params(
        ("pay_system" = crate::domain::PaySystem, Path),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "Scoped to the user, kept 24 h. The same key with the same body returns the same answer; with another body 422; while the first request is still running 409."),
    ),
    request_body = crate::service::purchase::BuyRequest,
    security(("jwt" = [])),
    responses(
        (status = 201, description = "Payment created; send the viewer to confirmation_url", body = crate::service::purchase::BuyResponse),
        (status = 400, description = "`bad_json`, `bad_body`, `bad_return_url`, `return_url_not_allowed` (not one of RETURN_URL_ALLOWED_ORIGINS), `bad_idempotency_key`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 404, description = "`pay_system_not_found` (unknown or not enabled), `tariff_not_found` (unknown or archived)", body = crate::http::error::ErrorBody),
        (status = 409, description = "`tariff_conflict` (another tariff is active), `renewal_pending` (a renewal is being charged), `request_in_progress` (same Idempotency-Key still running)", body = crate::http::error::ErrorBody),
        (status = 413, description = "`payload_too_large`: request body is over 64 KiB", body = crate::http::error::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the Idempotency-Key was used with another body", body = crate::http::error::ErrorBody),
        (status = 502, description = "`provider_unavailable`: the provider is unreachable (retry; the same key resumes) or refused the payment", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn buy(
    app: App,
    pay_system: String,
    auth: Option<String>,
    key: Option<String>,
    raw: Bytes,
) -> Result<Response, ApiError> {
    let user = app.keys.authenticate(auth.as_deref())?;
    let system: PaySystem = pay_system.parse().map_err(|_| {
        ApiError::not_found(
            "pay_system_not_found",
            format!("unknown pay system {pay_system:?}"),
        )
    })?;
    let key = key.as_deref().map(IdempotencyKey::parse).transpose()?;
    let req: BuyRequest = body::json(&raw)?;
    let render = |outcome: &Result<BuyResponse, BillingError>| {
        ApiError::stored(outcome.as_ref(), StatusCode::CREATED)
    };
    Ok(keyed(
        StatusCode::CREATED,
        purchase::buy(&app, user.id, system, req, key, &render).await?,
    ))
}

/// What became of an accepted notification: `processed`, `ignored`, `failed`, or
/// `received` (queued for the retry worker).
#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookAck {
    #[schema(value_type = crate::http::openapi::InboxState)]
    pub status: &'static str,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn rejected(reason: &'static str, status: StatusCode, detail: &str) -> ApiError {
    metrics::counter!("webhooks_rejected_total", "provider" => "yookassa", "reason" => reason)
        .increment(1);
    let code = if status == StatusCode::FORBIDDEN {
        "forbidden"
    } else {
        "unauthorized"
    };
    ApiError::new(status, code, detail.to_owned())
}

/// `POST /webhooks/yookassa`: authenticate (IP or ops signature) before parsing,
/// store, process against the provider's truth, answer 200 once stored.
#[utoipa::path(
    post,
    path = "/webhooks/yookassa",
    tag = "webhooks",
    operation_id = "yookassaWebhook",
    summary = "YooKassa notifications",
    description = "Accepted from YooKassa's published IP ranges (YOOKASSA_WEBHOOK_ALLOWED_IPS), or from anywhere when signed for an ops replay (Standard Webhooks with OPS_WEBHOOK_SECRET). The notification is stored in the inbox, the object is re-read from the YooKassa API, and only the provider's answer is applied.",
    params(
        ("webhook-id" = Option<String>, Header, description = "Ops replay: unique message id (a reused id is 401)"),
        ("webhook-timestamp" = Option<i64>, Header, description = "Ops replay: unix seconds, within 5 minutes of now"),
        ("webhook-signature" = Option<String>, Header, description = "Ops replay: space-separated `v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}`"),
    ),
    request_body = crate::http::openapi::schemas::YooKassaNotification,
    security((), ("opsSignature" = [])),
    responses(
        (status = 200, description = "Accepted: stored and processed, queued for retry, a repeat, or recorded as ignored (unknown event or payment). Only 200 stops YooKassa's retries.", body = WebhookAck),
        (status = 400, description = "`bad_json`, `bad_notification`: not `{\"event\": …, \"object\": {\"id\": …}}`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`unauthorized`: ops signature headers present but the signature is bad, stale (> 5 min), its webhook-id was already used, or ops replays are disabled", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: source IP not in the allow-list and no ops signature", body = crate::http::error::ErrorBody),
        (status = 413, description = "`payload_too_large`: request body is over 64 KiB", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the notification could not be stored; the provider will retry", body = crate::http::error::ErrorBody),
    )
)]
pub async fn yookassa(
    app: App,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    let ops_headers = ["webhook-id", "webhook-timestamp", "webhook-signature"];
    let ops_id = if ops_headers.iter().any(|h| headers.contains_key(*h)) {
        let Some(key) = app.config.ops_webhook_secret.as_deref() else {
            return Err(rejected(
                "ops_disabled",
                StatusCode::UNAUTHORIZED,
                "ops replays are disabled",
            ));
        };
        let id = header(&headers, "webhook-id");
        webhook_auth::verify_ops(
            key,
            id,
            header(&headers, "webhook-timestamp"),
            header(&headers, "webhook-signature"),
            &raw,
            chrono::Utc::now().timestamp(),
        )
        .map_err(|e| {
            rejected(
                "bad_ops_signature",
                StatusCode::UNAUTHORIZED,
                &format!("ops signature rejected: {e:?}"),
            )
        })?;
        let id = id.expect("verified").to_owned();
        let db = app.db.get().await?;
        if webhooks::ops_id_used(&db, &id).await? {
            return Err(rejected(
                "ops_replayed",
                StatusCode::UNAUTHORIZED,
                "webhook-id already used",
            ));
        }
        Some(id)
    } else {
        None
    };
    let ip = webhook_auth::client_ip(
        peer.map(|p| p.ip()),
        webhook_auth::forwarded_for(&headers).as_deref(),
        &app.config.trusted_proxies,
    );
    if ops_id.is_none() && !webhook_auth::allowed(ip, &app.config.yookassa.allowed_ips) {
        tracing::warn!(ip = ?ip, "webhook from a disallowed address");
        return Err(rejected(
            "ip_not_allowed",
            StatusCode::FORBIDDEN,
            "sender is not allowed",
        ));
    }

    let parsed: serde_json::Value = body::json(&raw)?;
    let event = parsed["event"]
        .as_str()
        .filter(|e| !e.is_empty() && e.len() <= 100);
    let object_id = parsed["object"]["id"]
        .as_str()
        .filter(|i| !i.is_empty() && i.len() <= 100);
    let (Some(event), Some(object_id)) = (event, object_id) else {
        return Err(ApiError::bad_request(
            "bad_notification",
            "expected {\"event\": …, \"object\": {\"id\": …}}",
        ));
    };

    let incoming = Incoming {
        provider: PaySystem::YooKassa,
        event,
        object_id,
        ops_webhook_id: ops_id.as_deref(),
        body: &raw,
        content_type: header(&headers, "content-type"),
        source_ip: ip,
    };
    let (inbox_id, status) = match webhooks::store(&app, &incoming).await {
        Ok(r) => r,
        Err(e) if e.is_unique_violation() => {
            return Err(rejected(
                "ops_replayed",
                StatusCode::UNAUTHORIZED,
                "webhook-id already used",
            ))
        }
        // Not stored: 503 so the provider delivers it again.
        Err(e) => {
            tracing::error!(error = %e, "cannot store notification");
            return Err(ApiError::database_unavailable());
        }
    };
    if status == InboxStatus::Processed {
        return Ok(reply_json(
            StatusCode::OK,
            &WebhookAck {
                status: "processed",
            },
        ));
    }
    // Stored: whatever happens now, the retry worker has it.
    let status = match webhooks::process_and_record(&app, inbox_id).await {
        Ok(s) => s.as_str(),
        Err(e) => {
            tracing::warn!(error = %e, inbox_id = %inbox_id, "processing deferred to the retry worker");
            "received"
        }
    };
    Ok(reply_json(StatusCode::OK, &WebhookAck { status }))
}
