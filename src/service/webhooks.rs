//! The webhook inbox: every authenticated notification is stored first, then
//! processed against the provider's truth. Rows that could not be processed yet
//! (provider or database briefly away) are retried by `jobs::inbox_retry`.

use std::time::Duration;

use uuid::Uuid;

use crate::app::App;
use crate::domain::{Money, PaySystem, RefundStatus};
use crate::providers::cloudpayments::wire::{Kind, Notification};
use crate::providers::ProviderError;
use crate::service::settle::{self, Applied};
use crate::store::Cached as _;
use crate::store::{payments, GenericClient, StoreError};

/// The provider's answer must come within this budget (a degraded provider must
/// not hang the webhook).
pub const REREAD_BUDGET: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxStatus {
    Received,
    Processed,
    Failed,
    Ignored,
}

impl InboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InboxStatus::Received => "received",
            InboxStatus::Processed => "processed",
            InboxStatus::Failed => "failed",
            InboxStatus::Ignored => "ignored",
        }
    }
    fn parse(s: &str) -> InboxStatus {
        match s {
            "processed" => InboxStatus::Processed,
            "failed" => InboxStatus::Failed,
            "ignored" => InboxStatus::Ignored,
            _ => InboxStatus::Received,
        }
    }
}

pub struct Incoming<'a> {
    pub provider: PaySystem,
    pub event: &'a str,
    pub object_id: &'a str,
    pub ops_webhook_id: Option<&'a str>,
    pub body: &'a [u8],
    pub content_type: Option<&'a str>,
    pub source_ip: Option<std::net::IpAddr>,
}

/// Stores (or re-counts) a notification. A repeat of a processed row keeps it
/// processed; anything else is processed again.
pub async fn store(app: &App, n: &Incoming<'_>) -> Result<(Uuid, InboxStatus), StoreError> {
    use sha2::{Digest, Sha256};
    let db = app.db.get().await?;
    let hash = Sha256::digest(n.body).to_vec();
    let ip = n.source_ip.map(|ip| ip.to_string());
    let row = match n.ops_webhook_id {
        None => {
            db.q_one(
                "INSERT INTO webhook_inbox (id, provider, event, object_id, status, body, body_sha256, content_type, \
                 source_ip, next_attempt_at) VALUES ($1, $2, $3, $4, 'received', $5, $6, $7, $8::text::inet, now() + interval '30 seconds') \
                 ON CONFLICT (provider, event, object_id) WHERE ops_webhook_id IS NULL DO UPDATE SET \
                 deliveries = webhook_inbox.deliveries + 1, last_received_at = now(), \
                 body = CASE WHEN webhook_inbox.status = 'processed' THEN webhook_inbox.body ELSE EXCLUDED.body END, \
                 body_sha256 = CASE WHEN webhook_inbox.status = 'processed' THEN webhook_inbox.body_sha256 ELSE EXCLUDED.body_sha256 END, \
                 source_ip = EXCLUDED.source_ip \
                 RETURNING id, status",
                &[&Uuid::new_v4(), &n.provider.as_str(), &n.event, &n.object_id, &n.body, &hash, &n.content_type, &ip],
            )
            .await?
        }
        Some(ops_id) => {
            db.q_one(
                "INSERT INTO webhook_inbox (id, provider, event, object_id, ops_webhook_id, status, body, body_sha256, \
                 content_type, source_ip, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, $5, 'received', $6, $7, $8, $9::text::inet, now() + interval '30 seconds') \
                 RETURNING id, status",
                &[&Uuid::new_v4(), &n.provider.as_str(), &n.event, &n.object_id, &ops_id, &n.body, &hash, &n.content_type, &ip],
            )
            .await?
        }
    };
    Ok((row.get(0), InboxStatus::parse(row.get::<_, &str>(1))))
}

pub async fn ops_id_used(db: &impl GenericClient, ops_id: &str) -> Result<bool, StoreError> {
    Ok(db
        .q_opt(
            "SELECT 1 FROM webhook_inbox WHERE ops_webhook_id = $1",
            &[&ops_id],
        )
        .await?
        .is_some())
}

#[derive(Debug)]
pub enum Processed {
    /// Applied (or confirmed) the provider's state; repeats answer at once.
    Done(String),
    /// Nothing of ours, or the provider's state does not (yet) match the event.
    Ignored(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Retry later: provider or database briefly unavailable, or our row not visible yet.
    #[error("transient: {0}")]
    Transient(String),
    /// Will not get better by retrying.
    #[error("{0}")]
    Permanent(String),
}

impl From<StoreError> for ProcessError {
    fn from(e: StoreError) -> Self {
        // A lost race is retried with the inbox backoff like an outage; `finish` fails
        // the row only after a day.
        if e.is_transient() {
            ProcessError::Transient(e.to_string())
        } else {
            ProcessError::Permanent(e.to_string())
        }
    }
}

impl From<tokio_postgres::Error> for ProcessError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::from(e).into()
    }
}

impl From<deadpool_postgres::PoolError> for ProcessError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::from(e).into()
    }
}

fn configured(
    app: &App,
    system: PaySystem,
) -> Result<std::sync::Arc<dyn crate::providers::Provider>, ProcessError> {
    app.providers
        .get(system)
        .cloned()
        .ok_or_else(|| ProcessError::Permanent(format!("{system} is not configured")))
}

/// A provider read within the re-read budget; `None` when the provider does not know it.
async fn reread<T>(
    call: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<Option<T>, ProcessError> {
    match tokio::time::timeout(REREAD_BUDGET, call).await {
        Err(_) => Err(ProcessError::Transient("provider re-read timed out".into())),
        Ok(Err(ProviderError::NotFound)) => Ok(None),
        Ok(r) => r.map(Some).map_err(provider_error),
    }
}

fn provider_error(e: ProviderError) -> ProcessError {
    match e {
        ProviderError::Unavailable(m) => ProcessError::Transient(m),
        other => ProcessError::Permanent(other.to_string()),
    }
}

/// Processes one inbox row and records the outcome on it.
pub async fn process_and_record(app: &App, inbox_id: Uuid) -> Result<InboxStatus, StoreError> {
    let result = match tokio::time::timeout(
        REREAD_BUDGET + Duration::from_secs(1),
        process(app, inbox_id),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(ProcessError::Transient("processing budget exceeded".into())),
    };
    finish(app, inbox_id, result).await
}

async fn process(app: &App, inbox_id: Uuid) -> Result<Processed, ProcessError> {
    let (provider, event, object_id, body, content_type) = {
        let db = app.db.get().await?;
        let row = db
            .q_one(
                "SELECT provider, event, object_id, body, content_type FROM webhook_inbox WHERE id = $1",
                &[&inbox_id],
            )
            .await?;
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, Option<Vec<u8>>>(3),
            row.get::<_, Option<String>>(4),
        )
    };
    let system: PaySystem = provider.parse().map_err(ProcessError::Permanent)?;
    match (system, event.as_str()) {
        (
            PaySystem::YooKassa,
            "payment.waiting_for_capture" | "payment.succeeded" | "payment.canceled",
        ) => {
            reconcile_payment(
                app,
                system,
                &object_id,
                Some(event.trim_start_matches("payment.")),
            )
            .await
        }
        (PaySystem::YooKassa, "refund.succeeded") => {
            refund_notification(app, system, &object_id).await
        }
        // CloudPayments signs its notifications (Content-HMAC, checked before storing):
        // the body is the provider's word, compared field by field with our row.
        (PaySystem::CloudPayments, kind) => {
            let Ok(kind) = kind.parse::<Kind>() else {
                return Ok(Processed::Ignored(format!("event {kind} is not handled")));
            };
            let body = body.ok_or_else(|| {
                ProcessError::Permanent("the notification body was purged".into())
            })?;
            let n = Notification::parse(kind, &body, content_type.as_deref())
                .map_err(|e| ProcessError::Permanent(e.to_string()))?;
            cloudpayments_notification(app, &n).await
        }
        (_, other) => Ok(Processed::Ignored(format!("event {other} is not handled"))),
    }
}

/// Re-reads a payment from the provider and moves ours to its state. `expected` is the
/// status the notification claims; when the provider disagrees, the row is left
/// re-processable so a forged or early notification never blocks the genuine one.
pub async fn reconcile_payment(
    app: &App,
    system: PaySystem,
    provider_payment_id: &str,
    expected: Option<&str>,
) -> Result<Processed, ProcessError> {
    let provider = configured(app, system)?;
    let Some(pp) = reread(provider.get_payment(provider_payment_id)).await? else {
        return Ok(Processed::Ignored("unknown at the provider".into()));
    };
    let payment_id = {
        let db = app.db.get().await?;
        let by_provider = db
            .q_opt(
                "SELECT id FROM payments WHERE pay_system = $1 AND provider_payment_id = $2",
                &[&system.as_str(), &pp.id],
            )
            .await?;
        match (by_provider, pp.our_id) {
            (Some(r), _) => r.get::<_, Uuid>(0),
            (None, Some(our)) => match db
                .q_opt(
                    "SELECT id FROM payments WHERE id = $1 AND pay_system = $2",
                    &[&our, &system.as_str()],
                )
                .await?
            {
                Some(r) => r.get(0),
                // Carries our id but is not visible yet: retry, never ignore.
                None => {
                    return Err(ProcessError::Transient(format!(
                        "payment {our} not found yet"
                    )))
                }
            },
            (None, None) => {
                metrics::counter!("webhooks_unknown_payment_total", "provider" => system.as_str())
                    .increment(1);
                return Ok(Processed::Ignored("unknown payment".into()));
            }
        }
    };
    let applied = settle::apply(app, payment_id, &pp).await?;
    let matches = expected.is_none_or(|e| e == pp.status.as_str());
    Ok(match applied {
        Applied::NeedsReview(why) => Processed::Ignored(format!("needs review: {why}")),
        Applied::Moved(s) if matches => Processed::Done(format!("payment {payment_id} → {s}")),
        Applied::Unchanged if matches => {
            Processed::Done(format!("payment {payment_id} already {}", pp.status))
        }
        other => Processed::Ignored(format!("provider says {} ({other:?})", pp.status)),
    })
}

async fn refund_notification(
    app: &App,
    system: PaySystem,
    refund_id: &str,
) -> Result<Processed, ProcessError> {
    let provider = configured(app, system)?;
    let Some(pr) = reread(provider.get_refund(refund_id)).await? else {
        return Ok(Processed::Ignored("refund unknown at the provider".into()));
    };
    let ours = {
        let db = app.db.get().await?;
        let known = db
            .q_opt(
                "SELECT id FROM refunds WHERE pay_system = $1 AND provider_refund_id = $2",
                &[&system.as_str(), &pr.id],
            )
            .await?;
        match known {
            Some(r) => r.get::<_, Uuid>(0),
            None => {
                // Made in the provider's dashboard (or our answer was lost): record it.
                let payment = db
                    .q_opt(
                        "SELECT id, currency FROM payments WHERE pay_system = $1 AND provider_payment_id = $2",
                        &[&system.as_str(), &pr.payment_id],
                    )
                    .await?;
                let Some(payment) = payment else {
                    return Ok(Processed::Ignored("refund of an unknown payment".into()));
                };
                match refund_with_lost_answer(&db, payment.get(0), pr.amount.minor()).await? {
                    Some(id) => id,
                    None => {
                        record_provider_refund(&db, system, payment.get(0), pr.amount, &pr.id)
                            .await?
                    }
                }
            }
        }
    };
    if pr.status == RefundStatus::Pending {
        return Ok(Processed::Ignored(
            "refund still pending at the provider".into(),
        ));
    }
    crate::service::refunds::record_result(app, ours, &pr.id, pr.status)
        .await
        .map_err(|e| ProcessError::Transient(e.to_string()))?;
    Ok(Processed::Done(format!("refund {ours} → {}", pr.status)))
}

/// Our pending refund of this payment and amount whose provider answer never came:
/// a notification of the refund it made is that one, not a second refund.
async fn refund_with_lost_answer(
    db: &impl GenericClient,
    payment_id: Uuid,
    amount_minor: i64,
) -> Result<Option<Uuid>, ProcessError> {
    Ok(db
        .query_opt(
            "SELECT id FROM refunds WHERE payment_id = $1 AND status = 'pending' \
             AND provider_refund_id IS NULL AND amount_minor = $2 ORDER BY created_at LIMIT 1",
            &[&payment_id, &amount_minor],
        )
        .await?
        .map(|r| r.get(0)))
}

/// A refund made at the provider (its dashboard), or one whose answer we lost:
/// recorded as initiated by the provider, pending until `record_result` applies it.
async fn record_provider_refund(
    db: &impl GenericClient,
    system: PaySystem,
    payment_id: Uuid,
    amount: Money,
    provider_refund_id: &str,
) -> Result<Uuid, ProcessError> {
    let inserted = db
        .query_opt(
            "INSERT INTO refunds (id, payment_id, pay_system, amount_minor, currency, status, reason, \
             initiated_by, provider_idempotence_key, provider_refund_id) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 'made at the provider', 'provider', $6, $7) \
             ON CONFLICT DO NOTHING RETURNING id",
            &[&Uuid::new_v4(), &payment_id, &system.as_str(), &amount.minor(),
              &amount.currency().code(), &format!("external:{provider_refund_id}"), &provider_refund_id],
        )
        .await?;
    match inserted {
        Some(r) => Ok(r.get(0)),
        // A concurrent delivery recorded it first.
        None => db
            .query_opt(
                "SELECT id FROM refunds WHERE pay_system = $1 AND provider_refund_id = $2",
                &[&system.as_str(), &provider_refund_id],
            )
            .await?
            .map(|r| r.get(0))
            .ok_or_else(|| ProcessError::Transient("refund row not visible yet".into())),
    }
}

/// What a CloudPayments `check` answers: 0 lets the viewer pay, anything else
/// refuses before money moves (providers.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckCode {
    Accept = 0,
    UnknownInvoice = 10,
    WrongAccount = 11,
    WrongAmount = 12,
    Rejected = 13,
}

impl CheckCode {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Decides a `check`: the invoice must be one of our CloudPayments payments, paid by
/// its buyer, for its amount and currency. A payment that is already paid (or under
/// review), or a test flag that disagrees with our mode, is refused (13) so the
/// viewer is not charged twice or in the wrong mode.
pub async fn check_code(app: &App, n: &Notification) -> Result<CheckCode, StoreError> {
    let Some(our) = n.our_id() else {
        return Ok(CheckCode::UnknownInvoice);
    };
    let db = app.db.get().await?;
    let Some(payment) = payments::get(&db, our)
        .await?
        .filter(|p| p.pay_system == PaySystem::CloudPayments)
    else {
        return Ok(CheckCode::UnknownInvoice);
    };
    if n.user_id() != Some(payment.user_id) {
        return Ok(CheckCode::WrongAccount);
    }
    if n.amount().ok() != Some(payment.amount) {
        return Ok(CheckCode::WrongAmount);
    }
    if payment.status.is_paid()
        || payment.review_reason.is_some()
        || n.test_mode() == app.config.mode.livemode()
    {
        return Ok(CheckCode::Rejected);
    }
    Ok(CheckCode::Accept)
}

/// Answers a stored `check` and records the answer on its inbox row.
pub async fn answer_check(
    app: &App,
    inbox_id: Uuid,
    n: &Notification,
) -> Result<CheckCode, StoreError> {
    let code = check_code(app, n).await?;
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

async fn cloudpayments_notification(
    app: &App,
    n: &Notification,
) -> Result<Processed, ProcessError> {
    match n.kind {
        Kind::Check => Ok(Processed::Done(format!(
            "check answered code {}",
            check_code(app, n).await?.code()
        ))),
        Kind::Pay | Kind::Confirm | Kind::Fail | Kind::Cancel => {
            cloudpayments_payment(app, n).await
        }
        Kind::Refund => cloudpayments_refund(app, n).await,
        Kind::Recurrent => Ok(Processed::Ignored(
            "recurrent: CloudPayments-managed subscriptions are not used".into(),
        )),
    }
}

/// `pay`/`confirm` (succeeded), `fail` (declined), `cancel` (voided): matched by
/// TransactionId, else by InvoiceId, then moved by `settle::apply`, which refuses
/// (needs_review, nothing granted) an InvoiceId, AccountId, amount, currency or
/// TestMode that disagrees with our row.
async fn cloudpayments_payment(app: &App, n: &Notification) -> Result<Processed, ProcessError> {
    let system = PaySystem::CloudPayments;
    let transaction = n.transaction_id();
    let payment = {
        let db = app.db.get().await?;
        let by_transaction = match &transaction {
            Some(t) => db
                .query_opt(
                    "SELECT id FROM payments WHERE pay_system = $1 AND provider_payment_id = $2",
                    &[&system.as_str(), t],
                )
                .await?
                .map(|r| r.get::<_, Uuid>(0)),
            None => None,
        };
        match (by_transaction, n.our_id()) {
            (Some(id), _) => payments::get(&db, id)
                .await?
                .ok_or_else(|| ProcessError::Transient(format!("payment {id} vanished")))?,
            (None, Some(our)) => match payments::get(&db, our).await? {
                // A second paid transaction for an invoice already paid is alerted and
                // refunded by `settle::apply` (duplicate_charge).
                Some(p) if p.pay_system == system => p,
                Some(_) => {
                    return Ok(Processed::Ignored(
                        "InvoiceId names a payment of another provider".into(),
                    ))
                }
                // Carries our id but is not visible yet: retry, never ignore.
                None => {
                    return Err(ProcessError::Transient(format!(
                        "payment {our} not found yet"
                    )))
                }
            },
            (None, None) => {
                metrics::counter!("webhooks_unknown_payment_total", "provider" => system.as_str())
                    .increment(1);
                return Ok(Processed::Ignored("unknown payment".into()));
            }
        }
    };
    let payment_id = payment.id;
    let pp = match n.payment(payment.amount.currency()) {
        Ok(pp) => pp,
        Err(e) => {
            // Signed, names our payment, but unreadable (e.g. a currency we do not sell in).
            let why = format!("unreadable CloudPayments {}: {e}", n.kind.as_str());
            settle::needs_review(app, payment_id, &why).await?;
            return Ok(Processed::Ignored(format!("needs review: {why}")));
        }
    };
    Ok(match settle::apply(app, payment_id, &pp).await? {
        Applied::NeedsReview(why) => Processed::Ignored(format!("needs review: {why}")),
        Applied::Moved(s) => Processed::Done(format!("payment {payment_id} → {s}")),
        Applied::Unchanged => Processed::Done(format!(
            "payment {payment_id} unchanged by {} ({})",
            n.kind.as_str(),
            pp.status
        )),
    })
}

/// `refund`: its TransactionId is the refund transaction. One we started is matched
/// by provider_refund_id (or, if our answer was lost, as the pending refund of the
/// same payment and amount); any other is recorded as made at the provider. Both
/// are applied by `refunds::record_result`.
async fn cloudpayments_refund(app: &App, n: &Notification) -> Result<Processed, ProcessError> {
    let system = PaySystem::CloudPayments;
    let refund_id = n
        .transaction_id()
        .ok_or_else(|| ProcessError::Permanent("refund without TransactionId".into()))?;
    let ours = {
        let db = app.db.get().await?;
        let known = db
            .query_opt(
                "SELECT id FROM refunds WHERE pay_system = $1 AND provider_refund_id = $2",
                &[&system.as_str(), &refund_id],
            )
            .await?;
        match known {
            Some(r) => r.get::<_, Uuid>(0),
            None => {
                let by_transaction = match n.text("PaymentTransactionId") {
                    Some(t) => db
                        .query_opt(
                            "SELECT id FROM payments WHERE pay_system = $1 AND provider_payment_id = $2",
                            &[&system.as_str(), &t],
                        )
                        .await?
                        .map(|r| r.get::<_, Uuid>(0)),
                    None => None,
                };
                let payment_id = by_transaction.or(n.our_id());
                let payment = match payment_id {
                    Some(id) => payments::get(&db, id).await?,
                    None => None,
                };
                let payment = match (payment, payment_id) {
                    (Some(p), _) if p.pay_system != system => {
                        return Ok(Processed::Ignored(
                            "InvoiceId names a payment of another provider".into(),
                        ))
                    }
                    (Some(p), _) if p.status.is_paid() => p,
                    // Ours, but its pay has not been applied yet (lost, late or out of
                    // order): keep the refund and retry; CloudPayments will not re-send it.
                    (Some(p), _) => {
                        return Err(ProcessError::Transient(format!(
                            "refund of payment {} before its success ({})",
                            p.id, p.status
                        )))
                    }
                    (None, Some(id)) => {
                        return Err(ProcessError::Transient(format!(
                            "refund names payment {id}, not found yet"
                        )))
                    }
                    (None, None) => {
                        return Ok(Processed::Ignored("refund of an unknown payment".into()))
                    }
                };
                let amount = n
                    .amount_in(payment.amount.currency())
                    .map_err(|e| ProcessError::Permanent(e.to_string()))?;
                match refund_with_lost_answer(&db, payment.id, amount.minor()).await? {
                    Some(id) => id,
                    None => {
                        record_provider_refund(&db, system, payment.id, amount, &refund_id).await?
                    }
                }
            }
        }
    };
    crate::service::refunds::record_result(app, ours, &refund_id, RefundStatus::Succeeded)
        .await
        .map_err(|e| ProcessError::Transient(e.to_string()))?;
    Ok(Processed::Done(format!("refund {ours} → succeeded")))
}

/// Records the outcome: processed/ignored, or another attempt later (5 s doubling
/// to 5 min), or failed (and alerted) after 24 hours.
pub async fn finish(
    app: &App,
    inbox_id: Uuid,
    result: Result<Processed, ProcessError>,
) -> Result<InboxStatus, StoreError> {
    let db = app.db.get().await?;
    let (status, outcome, error): (InboxStatus, Option<String>, Option<String>) = match result {
        Ok(Processed::Done(o)) => (InboxStatus::Processed, Some(o), None),
        Ok(Processed::Ignored(o)) => (InboxStatus::Ignored, Some(o), None),
        Err(ProcessError::Transient(e)) => (InboxStatus::Received, None, Some(e)),
        Err(ProcessError::Permanent(e)) => (InboxStatus::Failed, None, Some(e)),
    };
    let row = db
        .q_one(
            "UPDATE webhook_inbox SET attempts = attempts + 1, outcome = COALESCE($3, outcome), last_error = $4, \
             status = CASE WHEN $2 = 'received' AND received_at < now() - interval '24 hours' THEN 'failed' ELSE $2 END, \
             processed_at = CASE WHEN $2 IN ('processed', 'ignored') THEN now() ELSE processed_at END, \
             next_attempt_at = CASE WHEN $2 = 'received' \
                 THEN now() + LEAST(interval '5 seconds' * power(2, LEAST(attempts, 10)), interval '5 minutes') END \
             WHERE id = $1 RETURNING status, provider",
            &[&inbox_id, &status.as_str(), &outcome, &error],
        )
        .await?;
    let final_status = InboxStatus::parse(row.get::<_, &str>(0));
    let provider: String = row.get(1);
    metrics::counter!("webhooks_processed_total", "provider" => provider, "status" => final_status.as_str()).increment(1);
    if final_status == InboxStatus::Failed {
        settle::alert(
            "webhook_failed",
            &format!(
                "webhook could not be processed: {}",
                error.unwrap_or_default()
            ),
            inbox_id,
        );
    }
    Ok(final_status)
}
