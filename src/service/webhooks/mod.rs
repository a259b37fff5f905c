//! Every provider's notifications take one path: authenticate (our ops signature,
//! else the provider's own check) → store in the inbox → process against the
//! provider's truth (`sync`, or the signed body for CloudPayments) → answer the
//! provider in its words. Rows that could not be processed yet (provider or database
//! briefly away) are retried by `jobs::inbox_retry`.

pub mod cloudpayments;
pub mod ops;

use std::time::Duration;

use crate::app::App;
use crate::domain::InboxStatus;
use crate::domain::PaySystem;
use crate::providers::cloudpayments::{CheckCode, Notice};
use crate::providers::webhook::{
    self, Notification, Outcome, ParseError, Rejection, Stored, WebhookReply, WebhookRequest,
};
use crate::service::sync::{self, ProcessError, Processed};
use crate::store::webhook_inbox::{self, NewNotification};
use crate::store::Connect;
use crate::store::StoreError;

use crate::domain::InboxId;
pub use crate::service::sync::REREAD_BUDGET;

/// Why a notification was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The provider of this URL is not configured.
    #[error("{0} is not enabled")]
    NotEnabled(&'static str),
    /// Refused before anything was parsed or stored.
    #[error("rejected: {}", .0.reason())]
    Rejected(Rejection),
    #[error("{0}")]
    Unreadable(ParseError),
    /// Not stored: the provider must deliver it again.
    #[error("notification not stored: {0}")]
    NotStored(StoreError),
    /// A `check` stored but not decided now: CloudPayments asks again.
    #[error("check not decided: {0}")]
    Undecided(StoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Receives one notification from any provider and answers it.
pub async fn receive(app: &App, req: &WebhookRequest<'_>) -> Result<WebhookReply, WebhookError> {
    let system = req.endpoint.pay_system();
    let result = accept(app, system, req).await;
    if let Err(WebhookError::Rejected(r)) = &result {
        metrics::counter!("webhooks_rejected_total", "provider" => system.as_str(), "reason" => r.reason())
            .increment(1);
    }
    result
}

async fn accept(
    app: &App,
    system: PaySystem,
    req: &WebhookRequest<'_>,
) -> Result<WebhookReply, WebhookError> {
    let provider = app
        .providers
        .get(system)
        .ok_or(WebhookError::NotEnabled(match system {
            PaySystem::YooKassa => "YooKassa",
            PaySystem::CloudPayments => "CloudPayments",
        }))?;
    let ops_id = match provider.takes_ops_replays() {
        true => ops::authenticate(app, req).await?,
        false => None,
    };
    if ops_id.is_none() {
        provider.authenticate(req).map_err(|r| {
            tracing::warn!(provider = %system, reason = r.reason(), "notification rejected");
            WebhookError::Rejected(r)
        })?;
    }

    let content_type = req.header("content-type");
    let received = provider
        .parse(req.endpoint, req.body, content_type)
        .map_err(WebhookError::Unreadable)?;
    let new = NewNotification {
        provider: system,
        event: &received.event,
        object_id: &received.object_id,
        ops_webhook_id: ops_id.as_deref(),
        body: req.body,
        content_type,
        source_ip: req.source_ip,
    };
    let stored = async {
        let db = app.db.conn().await?;
        webhook_inbox::insert(&db, &new).await
    };
    let (inbox_id, status) = match stored.await {
        Ok(r) => r,
        // The same webhook-id stored by a concurrent request.
        Err(e) if ops_id.is_some() && e.is_unique_violation() => return Err(ops::replayed()),
        Err(e) => {
            tracing::error!(error = %e, "cannot store notification");
            return Err(WebhookError::NotStored(e));
        }
    };

    if let Notification::CloudPaymentsCheck(n) = &received.notification {
        // The answer is the decision: computed now, from our row, every time.
        return match answer_check(app, inbox_id, n).await {
            Ok(code) => Ok(provider.reply(Outcome::Checked(code))),
            Err(e) => {
                tracing::warn!(error = %e, inbox_id = %inbox_id, "cannot answer check now");
                Err(WebhookError::Undecided(e))
            }
        };
    }
    if status == InboxStatus::Processed {
        return Ok(provider.reply(Outcome::Stored(status)));
    }
    // Stored: whatever happens now, the retry worker has it. Processed from the
    // body parsed above, which is what the row holds.
    let status = match record(
        app,
        inbox_id,
        Box::pin(handle(app, system, received.notification)),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, inbox_id = %inbox_id, "processing deferred to the retry worker");
            InboxStatus::Received
        }
    };
    Ok(provider.reply(Outcome::Stored(status)))
}

/// Processes one inbox row and records the outcome on it.
pub async fn process_and_record(app: &App, inbox_id: InboxId) -> Result<InboxStatus, StoreError> {
    record(app, inbox_id, process(app, inbox_id)).await
}

/// Runs `processing` within the budget and records its outcome on the inbox row.
async fn record(
    app: &App,
    inbox_id: InboxId,
    processing: impl std::future::Future<Output = Result<Processed, ProcessError>>,
) -> Result<InboxStatus, StoreError> {
    let result =
        match tokio::time::timeout(REREAD_BUDGET + Duration::from_secs(1), processing).await {
            Ok(r) => r,
            Err(_) => Err(ProcessError::Transient("processing budget exceeded".into())),
        };
    finish(app, inbox_id, result).await
}

async fn process(app: &App, inbox_id: InboxId) -> Result<Processed, ProcessError> {
    let row = {
        let db = app.db.conn().await?;
        webhook_inbox::stored(&db, inbox_id).await?
    };
    let system: PaySystem = row.provider.parse().map_err(ProcessError::Permanent)?;
    let stored = Stored {
        event: &row.event,
        object_id: &row.object_id,
        body: row.body.as_deref(),
        content_type: row.content_type.as_deref(),
    };
    let notification =
        webhook::restore(system, &stored).map_err(|e| ProcessError::Permanent(e.to_string()))?;
    Box::pin(handle(app, system, notification)).await
}

/// Applies one notification against the provider's truth.
async fn handle(
    app: &App,
    system: PaySystem,
    notification: Notification,
) -> Result<Processed, ProcessError> {
    match notification {
        Notification::PaymentChanged {
            provider_id,
            claimed,
        } => sync::payment(app, system, &provider_id, Some(claimed)).await,
        Notification::RefundChanged { provider_id } => {
            sync::refund(app, system, &provider_id).await
        }
        Notification::CloudPaymentsCheck(n) => Ok(Processed::Done(format!(
            "check answered code {}",
            cloudpayments::check_code(app, &n).await?.code()
        ))),
        Notification::CloudPaymentsPayment(n) => cloudpayments::payment(app, &n).await,
        Notification::CloudPaymentsRefund(n) => cloudpayments::refund(app, &n).await,
        Notification::Ignored(why) => Ok(Processed::Ignored(why)),
    }
}

/// Answers a stored `check` and records the answer on its inbox row.
pub async fn answer_check(
    app: &App,
    inbox_id: InboxId,
    n: &Notice,
) -> Result<CheckCode, StoreError> {
    let code = cloudpayments::check_code(app, n).await?;
    finish(
        app,
        inbox_id,
        Ok(Processed::Done(format!(
            "check answered code {}",
            code.code()
        ))),
    )
    .await?;
    Ok(code)
}

/// Records the outcome: processed/ignored, or another attempt later (5 s doubling
/// to 5 min), or failed (and alerted) after 24 hours.
pub async fn finish(
    app: &App,
    inbox_id: InboxId,
    result: Result<Processed, ProcessError>,
) -> Result<InboxStatus, StoreError> {
    let db = app.db.conn().await?;
    let (status, outcome, error) = match result {
        Ok(Processed::Done(o)) => (InboxStatus::Processed, Some(o), None),
        Ok(Processed::Ignored(o)) => (InboxStatus::Ignored, Some(o), None),
        Err(ProcessError::Transient(e)) => (InboxStatus::Received, None, Some(e)),
        Err(ProcessError::Permanent(e)) => (InboxStatus::Failed, None, Some(e)),
    };
    let (final_status, provider) =
        webhook_inbox::record_outcome(&db, inbox_id, status, outcome.as_deref(), error.as_deref())
            .await?;
    metrics::counter!("webhooks_processed_total", "provider" => provider, "status" => final_status.as_str()).increment(1);
    if final_status == InboxStatus::Failed {
        // An alert about a notification, not a payment: it names the inbox row.
        crate::service::alerts::raise(
            app,
            "webhook_failed",
            &format!(
                "webhook could not be processed: {}",
                error.unwrap_or_default()
            ),
            crate::service::alerts::Subject::Webhook(inbox_id),
        );
    }
    Ok(final_status)
}
