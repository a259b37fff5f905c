//! "Sync this payment (or refund) from the provider": re-read it within a budget and
//! move ours to the provider's state. Webhooks, the reconciler and replays call it.

use std::time::Duration;

use crate::app::App;
use crate::domain::PaymentId;
use crate::domain::RefundId;
use crate::domain::{Money, PaySystem, PaymentStatus, RefundStatus};
use crate::providers::{Provider, ProviderError, ProviderRefund};
use crate::service::settle::{self, Applied};
use crate::store::Connect;
use crate::store::{payments, refunds, GenericClient, StoreError};

/// The provider's answer must come within this budget (a degraded provider must
/// not hang the webhook).
pub const REREAD_BUDGET: Duration = Duration::from_secs(5);

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

fn configured(app: &App, system: PaySystem) -> Result<std::sync::Arc<dyn Provider>, ProcessError> {
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

/// Re-reads a payment from the provider and moves ours to its state. `claimed` is
/// the status a notification says it reached; when the provider disagrees, the row
/// is left re-processable so a forged or early notification never blocks the
/// genuine one.
pub async fn payment(
    app: &App,
    system: PaySystem,
    provider_payment_id: &str,
    claimed: Option<PaymentStatus>,
) -> Result<Processed, ProcessError> {
    let provider = configured(app, system)?;
    let Some(pp) = reread(provider.get_payment(provider_payment_id)).await? else {
        return Ok(Processed::Ignored("unknown at the provider".into()));
    };
    // The usual case, our row found by the provider's id, reads what settling needs
    // in the same statement.
    let (payment_id, applied) = {
        let db = app.db.conn().await?;
        match payments::snapshot_by_provider_id(&db, system, &pp.id).await? {
            Some(snap) => {
                drop(db);
                (
                    snap.payment.id,
                    Box::pin(settle::settle(app, &snap, &pp)).await?,
                )
            }
            None => {
                let id = match pp.our_id {
                    Some(our) => match payments::id_at_provider(&db, our, system).await? {
                        Some(id) => id,
                        // Carries our id but is not visible yet: retry, never ignore.
                        None => {
                            return Err(ProcessError::Transient(format!(
                                "payment {our} not found yet"
                            )))
                        }
                    },
                    None => {
                        metrics::counter!("webhooks_unknown_payment_total", "provider" => system.as_str())
                            .increment(1);
                        return Ok(Processed::Ignored("unknown payment".into()));
                    }
                };
                drop(db);
                (id, Box::pin(settle::apply(app, id, &pp)).await?)
            }
        }
    };
    let matches = claimed.is_none_or(|c| c == pp.status);
    Ok(match applied {
        Applied::NeedsReview(why) => Processed::Ignored(format!("needs review: {why}")),
        Applied::Moved(s) if matches => Processed::Done(format!("payment {payment_id} → {s}")),
        Applied::Unchanged if matches => {
            Processed::Done(format!("payment {payment_id} already {}", pp.status))
        }
        other => Processed::Ignored(format!("provider says {} ({other:?})", pp.status)),
    })
}

/// Re-reads a refund from the provider and records its result on ours (recording
/// one made at the provider first).
pub async fn refund(
    app: &App,
    system: PaySystem,
    provider_refund_id: &str,
) -> Result<Processed, ProcessError> {
    let provider = configured(app, system)?;
    let Some(pr) = reread(provider.get_refund(provider_refund_id)).await? else {
        return Ok(Processed::Ignored("refund unknown at the provider".into()));
    };
    apply_refund(app, system, &pr).await
}

/// A refund as the provider answered it (re-read or listed), recorded on ours: the
/// row that holds its id, else our pending refund it answers, else a new row for
/// one made at the provider.
pub async fn apply_refund(
    app: &App,
    system: PaySystem,
    pr: &ProviderRefund,
) -> Result<Processed, ProcessError> {
    let ours = {
        let db = app.db.conn().await?;
        match refunds::id_by_provider_id(&db, system, &pr.id).await? {
            Some(id) => id,
            None => {
                // Made in the provider's dashboard (or our answer was lost): record it.
                let Some(payment) =
                    payments::id_by_provider_id(&db, system, &pr.payment_id).await?
                else {
                    return Ok(Processed::Ignored("refund of an unknown payment".into()));
                };
                adopt_refund(&db, system, payment, pr.amount, &pr.id).await?
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

/// A provider refund we have no row for: our pending refund of this payment and
/// amount whose provider answer never came (that one, not a second refund), or else
/// one made at the provider (its dashboard), recorded as initiated by the provider
/// and pending until `refunds::record_result` applies it.
pub(crate) async fn adopt_refund(
    db: &impl GenericClient,
    system: PaySystem,
    payment_id: PaymentId,
    amount: Money,
    provider_refund_id: &str,
) -> Result<RefundId, ProcessError> {
    if let Some(id) = refunds::pending_without_provider_id(db, payment_id, amount.minor()).await? {
        return Ok(id);
    }
    match refunds::insert_made_at_provider(db, system, payment_id, amount, provider_refund_id)
        .await?
    {
        Some(id) => Ok(id),
        // A concurrent delivery recorded it first.
        None => refunds::id_by_provider_id(db, system, provider_refund_id)
            .await?
            .ok_or_else(|| ProcessError::Transient("refund row not visible yet".into())),
    }
}
