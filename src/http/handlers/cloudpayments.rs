//! `POST /webhooks/cloudpayments/{kind}`: verify `Content-HMAC` over the raw body
//! before anything is parsed, store the notification in the inbox, process it, and
//! answer `{"code": 0}` once it is durably stored (a `check` answers its code).

use bytes::Bytes;
use serde_json::json;
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

fn code(code: u8) -> Response {
    reply_json(StatusCode::OK, &json!({"code": code}))
}

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
