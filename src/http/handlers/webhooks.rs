//! `POST /webhooks/yookassa` and `POST /webhooks/cloudpayments/{kind}`: one handler
//! for every provider. It resolves the sender's address, hands the raw request to
//! `service::webhooks::receive`, and turns the provider's reply into a response;
//! authenticating and reading the body are the providers' business.

use std::net::SocketAddr;

use bytes::Bytes;
use serde::Serialize;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;

use super::json as reply_json;
use crate::app::App;
use crate::domain::InboxStatus;
use crate::http::error::ApiError;
use crate::http::webhook_auth;
use crate::providers::cloudpayments::Kind;
use crate::providers::webhook::{Endpoint, Headers, ReplyBody, WebhookReply, WebhookRequest};
use crate::service::webhooks;

/// What became of an accepted notification: `processed`, `ignored`, `failed`, or
/// `received` (queued for the retry worker).
#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookAck {
    pub status: InboxStatus,
}

/// CloudPayments' answer: 0 accepts; a `check` may refuse with 10..=13.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CodeAnswer {
    #[schema(minimum = 0, maximum = 13, example = 0)]
    pub code: u8,
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
    request_body = crate::providers::yookassa::webhook::Wire,
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
    receive(app, Endpoint::YooKassa, peer, &headers, &raw).await
}

/// `POST /webhooks/cloudpayments/{kind}`: verify `Content-HMAC` over the raw body
/// before anything is parsed, store, process, and answer `{"code": 0}` once durably
/// stored (a `check` answers its code).
#[utoipa::path(
    post,
    path = "/webhooks/cloudpayments/{kind}",
    tag = "webhooks",
    operation_id = "cloudpaymentsWebhook",
    summary = "CloudPayments notifications",
    description = "One URL per notification kind, as configured in the CloudPayments merchant account. `Content-HMAC` (base64 HMAC-SHA256 of the raw body with the API secret) is verified before anything is parsed. The body is JSON or form-urlencoded (by Content-Type). The notification is stored in the inbox and applied only when InvoiceId, AccountId, Amount, Currency and TestMode match our payment. Every kind answers `{\"code\": 0}` once stored; `check` answers 10 (unknown invoice), 11 (wrong AccountId), 12 (wrong amount or currency), 13 (already paid or wrong mode) or 0; `recurrent` is recorded and ignored.",
    params(
        ("kind" = crate::providers::cloudpayments::wire::Kind, Path, description = "Notification kind"),
    ),
    request_body(content((crate::providers::cloudpayments::wire::Fields = "application/x-www-form-urlencoded"), (crate::providers::cloudpayments::wire::Fields = "application/json"))),
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
pub async fn cloudpayments(
    app: App,
    kind: String,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    let kind: Kind = kind
        .parse()
        .map_err(|e: String| ApiError::not_found("unknown_notification_kind", e))?;
    receive(app, Endpoint::CloudPayments(kind), peer, &headers, &raw).await
}

/// The one handler behind both URLs.
async fn receive(
    app: App,
    endpoint: Endpoint,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    raw: &[u8],
) -> Result<Response, ApiError> {
    let source_ip = webhook_auth::client_ip(
        peer.map(|p| p.ip()),
        webhook_auth::forwarded_for(headers).as_deref(),
        &app.config.trusted_proxies,
    );
    let headers = lookup(headers);
    let req = WebhookRequest {
        endpoint,
        source_ip,
        headers: &headers,
        body: raw,
    };
    Ok(respond(webhooks::receive(&app, &req).await?))
}

/// The first value of each header, as text when it is visible ASCII.
fn lookup(map: &HeaderMap) -> Headers {
    let mut headers = Headers::default();
    for name in map.keys() {
        headers.add(name.as_str(), map.get(name).and_then(|v| v.to_str().ok()));
    }
    headers
}

fn respond(reply: WebhookReply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    match reply.body {
        ReplyBody::Ack(status_text) => reply_json(
            status,
            &WebhookAck {
                status: status_text,
            },
        ),
        ReplyBody::Code(code) => reply_json(status, &CodeAnswer { code }),
    }
}
