//! Cancel and resume: auto-renewal off and on. Access is unchanged either way.
//! And the receipt contact of a live subscription (its renewals' 54-FZ receipts).

use chrono::{Duration as ChronoDuration, Utc};

use crate::app::App;
use crate::domain::UserId;
use crate::events::{self, EventSubject, EventType};
use crate::service::BillingError;
use crate::store::{self, Connect};
use crate::store::{payments, subscriptions, Subscription};

/// The user's live subscription, locked; 404 `no_active_subscription` without one.
pub(crate) async fn lock_live(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: UserId,
) -> Result<Subscription, BillingError> {
    subscriptions::lock_live_for_user(tx, user_id)
        .await?
        .ok_or(BillingError::NoActiveSubscription)
}

/// Turns auto-renewal of the user's live subscription on or off, under its row lock.
/// Repeating the same request changes nothing and publishes nothing.
pub async fn set_auto_renew(
    app: &App,
    user_id: UserId,
    on: bool,
) -> Result<Subscription, BillingError> {
    let mut db = app.db.conn().await?;
    let tx = store::begin(&mut db).await?;
    let sub = lock_live(&tx, user_id).await?;
    if sub.auto_renew == on {
        store::commit(tx).await?;
        return Ok(sub);
    }
    let next_charge_at = if on {
        let usable = match sub.payment_method_id {
            Some(id) => payments::get_method(&tx, id)
                .await?
                .is_some_and(|m| m.usable),
            None => false,
        };
        if !usable {
            return Err(BillingError::NoPaymentMethod);
        }
        let before =
            ChronoDuration::from_std(app.config.renew_before).unwrap_or(ChronoDuration::days(1));
        Some((sub.current_period_end - before).max(Utc::now()))
    } else {
        None
    };
    let sub = subscriptions::set_auto_renew(&tx, sub.id, on, next_charge_at).await?;
    let event = if on {
        EventType::SubscriptionAutoRenewEnabled
    } else {
        EventType::SubscriptionAutoRenewDisabled
    };
    events::record(&tx, event, EventSubject::subscription(&sub)).await?;
    store::commit(tx).await?;
    Ok(sub)
}

/// Where the receipts of the user's live subscription go (`email`, `phone`): the
/// renewals' receipt is rebuilt from its tariff's line for its own price. The way
/// a subscription bought before receipts were switched on gets one. Either field
/// may be given, one is required (400 `contact_required`); each is checked.
pub async fn set_receipt_contact(
    app: &App,
    user_id: UserId,
    req: &ContactRequest,
) -> Result<Subscription, BillingError> {
    let mut db = app.db.conn().await?;
    let tx = store::begin(&mut db).await?;
    let sub = lock_live(&tx, user_id).await?;
    let customer = crate::service::purchase::customer(
        app,
        sub.pay_system,
        req.email.as_deref(),
        req.phone.as_deref(),
    )?
    .ok_or(BillingError::ContactRequired(sub.pay_system))?;
    let tariff = crate::store::tariffs::get(&tx, sub.tariff_id)
        .await?
        .ok_or_else(|| BillingError::internal("subscription without its tariff"))?;
    subscriptions::set_receipt(&tx, sub.id, &tariff.receipt(customer, sub.price)).await?;
    store::commit(tx).await?;
    Ok(sub)
}

/// `POST /api/v1/subscriptions/contact`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactRequest {
    #[serde(default)]
    #[schema(example = "viewer@example.com")]
    pub email: Option<String>,
    #[serde(default)]
    #[schema(example = "+79001234567")]
    pub phone: Option<String>,
}
