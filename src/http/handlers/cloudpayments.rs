//! `POST /webhooks/cloudpayments/{kind}`: verify `Content-HMAC` over the raw body
//! before anything is parsed, store the notification in the inbox, process it, and
//! answer `{"code": 0}` once it is durably stored (a `check` answers its code).

use bytes::Bytes;
use serde::Serialize;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;

use super::json as reply_json;
use crate::app::App;
use crate::domain::PaySystem;
use crate::http::error::ApiError;
use crate::http::webhook_auth;
use crate::providers::cloudpayments::wire::{Kind, Notification};
use crate::service::webhooks::{self, InboxStatus, Incoming};

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// CloudPayments' answer: 0 accepts; a `check` may refuse with 10..=13.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CodeAnswer {
    #[schema(minimum = 0, maximum = 13, example = 0)]
    pub code: u8,
}

fn code(code: u8) -> Response {
    reply_json(StatusCode::OK, &CodeAnswer { code })
}

#[utoipa::path(
    post,
    path = "/webhooks/cloudpayments/{kind}",
    tag = "webhooks",
    operation_id = "cloudpaymentsWebhook",
    summary = "CloudPayments notifications",
    description = "One URL per notification kind, as configured in the CloudPayments merchant account. `Content-HMAC` (base64 HMAC-SHA256 of the raw body with the API secret) is verified before anything is parsed. The body is JSON or form-urlencoded (by Content-Type). The notification is stored in the inbox and applied only when InvoiceId, AccountId, Amount, Currency and TestMode match our payment. Every kind answers `{\"code\": 0}` once stored; `check` answers 10 (unknown invoice), 11 (wrong AccountId), 12 (wrong amount or currency), 13 (already paid or wrong mode) or 0; `recurrent` is recorded and ignored.",
    params(
        ("kind" = crate::http::openapi::schemas::NotificationKind, Path, description = "Notification kind"),
    ),
    request_body(content((crate::http::openapi::schemas::CloudPaymentsNotification = "application/x-www-form-urlencoded"), (crate::http::openapi::schemas::CloudPaymentsNotification = "application/json"))),
    security(("contentHmac" = [])),
    responses(
        (status = 200, description = "Stored (and processed, or queued for retry). `check` answers its decision code; every other kind answers 0.", body = CodeAnswer),
        (status = 400, description = "`bad_notification`: the body does not parse as this kind", body = crate::http::error::ErrorBody),
        (status = 401, description = "`unauthorized`: Content-HMAC missing or not matching the body; nothing is stored", body = crate::http::error::ErrorBody),
        (status = 404, description = "`unknown_notification_kind`, or `pay_system_not_found` (CloudPayments is not configured)", body = crate::http::error::ErrorBody),
        (status = 413, description = "`payload_too_large`: request body is over 64 KiB", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the notification could not be stored (or a check could not be decided); CloudPayments will retry", body = crate::http::error::ErrorBody),
    )
)]
pub async fn notification(
    app: App,
    kind: String,
    peer: Option<std::net::SocketAddr>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    let kind: Kind = kind
        .parse()
        .map_err(|e: String| ApiError::not_found("unknown_notification_kind", e))?;
    let Some(cp) = app.config.cloudpayments.as_ref() else {
        return Err(ApiError::not_found(
            "pay_system_not_found",
            "CloudPayments is not enabled",
        ));
    };
    if let Err(why) = webhook_auth::verify_content_hmac(
        cp.api_secret.expose().as_bytes(),
        header(&headers, "content-hmac"),
        &raw,
    ) {
        metrics::counter!("webhooks_rejected_total", "provider" => "cloudpayments", "reason" => why.reason())
            .increment(1);
        tracing::warn!(
            kind = kind.as_str(),
            reason = why.reason(),
            "CloudPayments notification rejected"
        );
        return Err(ApiError::unauthorized(
            "Content-HMAC is missing or does not match the body",
        ));
    }

    let content_type = header(&headers, "content-type");
    let n = Notification::parse(kind, &raw, content_type)
        .map_err(|e| ApiError::bad_request("bad_notification", e.to_string()))?;
    let object_id = n.object_id(&raw);
    let incoming = Incoming {
        provider: PaySystem::CloudPayments,
        event: kind.as_str(),
        object_id: &object_id,
        ops_webhook_id: None,
        body: &raw,
        content_type,
        source_ip: crate::http::peer(peer),
    };
    let (inbox_id, status) = match webhooks::store(&app, &incoming).await {
        Ok(r) => r,
        // Not stored: 503 so CloudPayments delivers it again.
        Err(e) => {
            tracing::error!(error = %e, "cannot store notification");
            return Err(ApiError::database_unavailable());
        }
    };

    if kind == Kind::Check {
        // The answer is the decision: computed now, from our row, every time.
        return match webhooks::answer_check(&app, inbox_id, &n).await {
            Ok(c) => Ok(code(c.code())),
            Err(e) => {
                tracing::warn!(error = %e, inbox_id = %inbox_id, "cannot answer check now");
                Err(ApiError::database_unavailable())
            }
        };
    }
    if status == InboxStatus::Processed {
        return Ok(code(0));
    }
    // Stored: whatever happens now, the retry worker has it.
    if let Err(e) = webhooks::process_and_record(&app, inbox_id).await {
        tracing::warn!(error = %e, inbox_id = %inbox_id, "processing deferred to the retry worker");
    }
    Ok(code(0))
}
