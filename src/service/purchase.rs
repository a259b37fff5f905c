//! Buying a tariff: the payment row and its provider idempotence key are committed
//! before the provider is called, so a crash or a retry re-sends the same key and
//! the provider never creates two payments for one purchase.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use warp::http::StatusCode;

use crate::app::App;
use crate::domain::{Money, PaySystem, PaymentStatus};
use crate::http::error::ApiError;
use crate::providers::{CreatePayment, ProviderError};
pub use crate::service::idempotency::IdempotencyKey;
use crate::service::idempotency::{self, Claim, Scope};
use crate::store::{payments, subscriptions, tariffs, Payment};

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuyRequest {
    pub tariff_id: Uuid,
    /// Save the payment method and renew automatically.
    pub renew: bool,
    /// Where the viewer returns after paying; must be one of RETURN_URL_ALLOWED_ORIGINS (else 400).
    #[serde(default)]
    pub return_url: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuyResponse {
    pub payment_id: Uuid,
    pub status: PaymentStatus,
    /// Send the viewer here to pay.
    #[schema(required = true)]
    pub confirmation_url: Option<String>,
    pub amount: Money,
}

pub fn check_return_url(app: &App, url: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(raw) = url else { return Ok(None) };
    let parsed = url::Url::parse(raw).map_err(|_| {
        ApiError::bad_request("bad_return_url", "return_url is not an absolute URL")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::bad_request(
            "bad_return_url",
            "return_url must be http(s)",
        ));
    }
    let origin = parsed.origin().ascii_serialization();
    if !app.config.allowed_return_origins().contains(&origin) {
        return Err(ApiError::bad_request(
            "return_url_not_allowed",
            format!("return_url origin {origin} is not allowed"),
        ));
    }
    Ok(Some(raw.to_owned()))
}

enum Start {
    /// A stored answer for this key: return it as it was.
    Replay(StatusCode, Value),
    /// A payment to create (new) or to resume (a crashed request with the same key).
    Create(Box<Payment>),
}

pub async fn buy(
    app: &App,
    user_id: Uuid,
    system: PaySystem,
    req: BuyRequest,
    key: Option<IdempotencyKey>,
) -> Result<(StatusCode, Value), ApiError> {
    let provider = app.providers.get(system).cloned().ok_or_else(|| {
        ApiError::not_found("pay_system_not_found", format!("{system} is not enabled"))
    })?;
    let return_url = check_return_url(app, req.return_url.as_deref())?;
    let hash = idempotency::request_hash(&[
        system.as_str().as_bytes(),
        &serde_json::to_vec(&req).expect("serializable"),
    ]);
    let scope = key.as_ref().map(|key| Scope {
        user_id,
        scope: "buy",
        key,
    });

    let start = begin(
        app,
        user_id,
        system,
        &req,
        return_url,
        scope.as_ref(),
        &hash,
    )
    .await?;
    let payment = match start {
        Start::Replay(status, body) => return Ok((status, body)),
        Start::Create(p) => *p,
    };

    let create = CreatePayment {
        our_id: payment.id,
        user_id,
        amount: payment.amount,
        description: payment.description.clone(),
        idempotence_key: payment.provider_idempotence_key.clone(),
        return_url: payment
            .return_url
            .clone()
            .or_else(|| app.config.yookassa.return_url.clone()),
        save_method: payment.renew,
        saved_method_id: None,
    };
    let result = provider.create_payment(&create).await;
    let answer = match result {
        Ok(pp) => {
            // An empty id (a CloudPayments order) leaves the column NULL for settle to fill.
            app.db.get().await?.execute(
                "UPDATE payments SET provider_payment_id = COALESCE(provider_payment_id, NULLIF($2, '')), \
                 confirmation_url = $3, updated_at = now() WHERE id = $1",
                &[&payment.id, &pp.id, &pp.confirmation_url],
            )
            .await?;
            // settle takes its own connection: none is held here meanwhile.
            if pp.status != PaymentStatus::Pending {
                crate::service::settle::apply(app, payment.id, &pp).await?;
            }
            let current = payments::get(&app.db.get().await?, payment.id)
                .await?
                .unwrap_or(payment.clone());
            let body = BuyResponse {
                payment_id: current.id,
                status: current.status,
                confirmation_url: pp.confirmation_url.clone(),
                amount: current.amount,
            };
            (
                StatusCode::CREATED,
                serde_json::to_value(body).expect("serializable"),
            )
        }
        Err(ProviderError::Unavailable(cause)) => {
            // The outcome is unknown: the payment stays pending without a provider id
            // and the reconciler resumes it with the same key. The key is released so a
            // client retry with it resumes too.
            tracing::warn!(payment_id = %payment.id, error = %cause, "provider unavailable during create");
            if let Some(s) = &scope {
                idempotency::release(&app.db.get().await?, s).await?;
            }
            return Err(ApiError::bad_gateway(
                "the payment provider is unavailable; retry later",
            ));
        }
        Err(e) => {
            tracing::error!(payment_id = %payment.id, error = %e, "provider refused the create");
            app.db.get().await?.execute(
                "UPDATE payments SET status = 'failed', updated_at = now() WHERE id = $1 AND status = 'pending'",
                &[&payment.id],
            )
            .await?;
            let err = ApiError::bad_gateway("the payment provider refused the payment");
            (
                err.status,
                serde_json::json!({"code": err.code, "detail": err.detail}),
            )
        }
    };
    if let Some(s) = &scope {
        idempotency::complete(&app.db.get().await?, s, answer.0, &answer.1).await?;
    }
    Ok(answer)
}

/// Claims the idempotency key (if any), checks the rules, and commits the payment row.
async fn begin(
    app: &App,
    user_id: Uuid,
    system: PaySystem,
    req: &BuyRequest,
    return_url: Option<String>,
    scope: Option<&Scope<'_>>,
    hash: &[u8],
) -> Result<Start, ApiError> {
    let mut db = app.db.get().await?;
    let tx = db.transaction().await?;
    if let Some(s) = scope {
        match idempotency::claim(&tx, s, hash).await? {
            Claim::New => {}
            Claim::Replay(status, body) => return Ok(Start::Replay(status, body)),
            Claim::Resume(payment_id) => {
                // The earlier request recorded its payment and then stopped: resume it.
                let payment = payments::get(&tx, payment_id)
                    .await?
                    .ok_or_else(|| ApiError::internal(&"lost payment"))?;
                tx.commit().await?;
                return Ok(Start::Create(Box::new(payment)));
            }
        }
    }

    let tariff = tariffs::get(&tx, req.tariff_id)
        .await?
        .filter(|t| t.archived_at.is_none())
        .ok_or_else(|| ApiError::not_found("tariff_not_found", "no such tariff on sale"))?;
    if let Some(live) = subscriptions::lock_live_for_user(&tx, user_id).await? {
        if live.tariff_id != tariff.id {
            return Err(ApiError::conflict(
                "tariff_conflict",
                "another tariff is active; cancel it and wait for it to end, or buy the same tariff to extend it",
            ));
        }
        let renewing: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM payments WHERE subscription_id = $1 AND kind = 'renewal' \
                 AND status IN ('pending', 'waiting_for_capture') AND review_reason IS NULL)",
                &[&live.id],
            )
            .await?
            .get(0);
        if renewing {
            return Err(ApiError::conflict(
                "renewal_pending",
                "a renewal of this subscription is being charged",
            ));
        }
    }

    let id = Uuid::new_v4();
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO payments (id, user_id, tariff_id, pay_system, kind, status, amount_minor, currency, renew, \
                 return_url, description, provider_idempotence_key, livemode, next_check_at) \
                 VALUES ($1, $2, $3, $4, 'purchase', 'pending', $5, $6, $7, $8, $9, $10, $11, now() + make_interval(secs => $12)) \
                 RETURNING {}",
                payments::COLS
            ),
            &[
                &id,
                &user_id,
                &tariff.id,
                &system.as_str(),
                &tariff.price.minor(),
                &tariff.price.currency().code(),
                &req.renew,
                &return_url,
                &format!("Subscription: {}", tariff.name),
                &Uuid::new_v4().to_string(),
                &app.config.mode.livemode(),
                &app.config.reconcile_after.as_secs_f64(),
            ],
        )
        .await?;
    if let Some(s) = scope {
        idempotency::attach(&tx, s, id).await?;
    }
    tx.commit().await?;
    Ok(Start::Create(Box::new(Payment::from_row(&row)?)))
}
