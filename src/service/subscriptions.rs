//! Cancel and resume: auto-renewal off and on. Access is unchanged either way.

use chrono::{Duration as ChronoDuration, Utc};

use crate::app::App;
use crate::domain::UserId;
use crate::events::{self, EventSubject, EventType};
use crate::service::BillingError;
use crate::store::{self, Connect};
use crate::store::{payments, subscriptions, Subscription};

/// Turns auto-renewal of the user's live subscription on or off, under its row lock.
/// Repeating the same request changes nothing and publishes nothing.
pub async fn set_auto_renew(
    app: &App,
    user_id: UserId,
    on: bool,
) -> Result<Subscription, BillingError> {
    let mut db = app.db.conn().await?;
    let tx = store::begin(&mut db).await?;
    let sub = subscriptions::lock_live_for_user(&tx, user_id)
        .await?
        .ok_or(BillingError::NoActiveSubscription)?;
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
