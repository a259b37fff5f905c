//! Sending (or re-sending) a payment's create to its provider, shared by the
//! renewer and the reconciler. The request is rebuilt from the committed row, so a
//! retry sends the same body with the same key and the provider answers the
//! original payment instead of charging again.

use uuid::Uuid;

use crate::app::App;
use crate::domain::PaymentStatus;
use crate::providers::{CreatePayment, ProviderError};
use crate::service::settle;
use crate::store::Cached as _;
use crate::store::{payments, GenericClient, Payment, PaymentKind};

/// What the provider said to a create.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    /// It answered; the payment now has a provider id and is in this status.
    Answered(PaymentStatus),
    /// Outcome unknown (network, 5xx, 202): retry later with the same key.
    Unknown(String),
    /// A definite refusal (4xx): nothing was created; the payment is failed locally.
    Refused(String),
}

/// The create request for a committed payment row: identical on every retry.
pub async fn request_for(
    app: &App,
    db: &impl GenericClient,
    payment: &Payment,
) -> Result<CreatePayment, String> {
    let saved_method_id = match payment.kind {
        PaymentKind::Purchase => None,
        PaymentKind::Renewal => {
            let method_id = payment
                .payment_method_id
                .ok_or_else(|| format!("renewal {} has no payment method", payment.id))?;
            let method = payments::get_method(db, method_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("payment method {method_id} vanished"))?;
            Some(method.provider_method_id)
        }
    };
    let return_url = match payment.kind {
        PaymentKind::Purchase => payment
            .return_url
            .clone()
            .or_else(|| app.config.yookassa.return_url.clone()),
        PaymentKind::Renewal => None,
    };
    Ok(CreatePayment {
        our_id: payment.id,
        user_id: payment.user_id,
        amount: payment.amount,
        description: payment.description.clone(),
        idempotence_key: payment.provider_idempotence_key.clone(),
        return_url,
        save_method: payment.renew,
        saved_method_id,
    })
}

/// Sends the create for `payment` (no lock is held across the call) and records the
/// answer: the provider id, and through `settle::apply` any non-pending state.
pub async fn send(app: &App, payment: &Payment) -> Result<Sent, String> {
    let provider = app
        .providers
        .get(payment.pay_system)
        .cloned()
        .ok_or_else(|| format!("{} is not configured", payment.pay_system))?;
    let req = {
        let db = app.db.get().await.map_err(|e| e.to_string())?;
        request_for(app, &db, payment).await?
    };
    match provider.create_payment(&req).await {
        Ok(pp) => {
            record_provider_id(app, payment.id, &pp.id, pp.confirmation_url.as_deref()).await?;
            if pp.status != PaymentStatus::Pending {
                settle::apply(app, payment.id, &pp)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(Sent::Answered(pp.status))
        }
        Err(ProviderError::Unavailable(cause)) => {
            tracing::warn!(payment_id = %payment.id, error = %cause, "create outcome unknown; will re-send with the same key");
            Ok(Sent::Unknown(cause))
        }
        Err(e) => {
            let db = app.db.get().await.map_err(|e| e.to_string())?;
            db.exec(
                "UPDATE payments SET status = 'failed', next_check_at = NULL, lease_until = NULL, updated_at = now() \
                 WHERE id = $1 AND status = 'pending' AND provider_payment_id IS NULL",
                &[&payment.id],
            )
            .await
            .map_err(|e| e.to_string())?;
            settle::alert(
                "create_refused",
                &format!("provider refused the create: {e}"),
                payment.id,
            );
            Ok(Sent::Refused(e.to_string()))
        }
    }
}

async fn record_provider_id(
    app: &App,
    payment_id: Uuid,
    provider_id: &str,
    confirmation_url: Option<&str>,
) -> Result<(), String> {
    let db = app.db.get().await.map_err(|e| e.to_string())?;
    db.exec(
        "UPDATE payments SET provider_payment_id = COALESCE(provider_payment_id, NULLIF($2, '')), \
         confirmation_url = COALESCE(confirmation_url, $3), updated_at = now() WHERE id = $1",
        &[&payment_id, &provider_id, &confirmation_url],
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}
