//! A viewer's own subscription and payments.

use std::collections::HashMap;

use uuid::Uuid;
use warp::reply::Response;
use warp::Reply;

use super::ok;
use super::views::{PaymentView, SubscriptionView};
use crate::app::App;
use crate::http::error::ApiError;
use crate::service::subscriptions as subs;
use crate::store::{payments, subscriptions, tariffs, GenericClient, Subscription};

pub async fn subscription_view(
    db: &impl GenericClient,
    sub: &Subscription,
) -> Result<SubscriptionView, ApiError> {
    let tariff = tariffs::get(db, sub.tariff_id)
        .await?
        .ok_or_else(|| ApiError::internal(&"subscription without its tariff"))?;
    let title = match sub.payment_method_id {
        Some(id) => payments::get_method(db, id).await?.map(|m| m.title),
        None => None,
    };
    Ok(SubscriptionView::new(sub, &tariff, title))
}

pub async fn profile(app: App, auth: Option<String>) -> Result<Response, ApiError> {
    let user = app.keys.authenticate(auth.as_deref())?;
    let db = app.db.get().await?;
    let sub = subscriptions::current_for_user(&db, user.id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found("no_subscription", "this user has never had a subscription")
        })?;
    Ok(ok(&subscription_view(&db, &sub).await?))
}

pub async fn cancel(app: App, auth: Option<String>) -> Result<Response, ApiError> {
    let user = app.keys.authenticate(auth.as_deref())?;
    let sub = subs::set_auto_renew(&app, user.id, false).await?;
    let db = app.db.get().await?;
    Ok(ok(&subscription_view(&db, &sub).await?))
}

pub async fn resume(app: App, auth: Option<String>) -> Result<Response, ApiError> {
    let user = app.keys.authenticate(auth.as_deref())?;
    let sub = subs::set_auto_renew(&app, user.id, true).await?;
    let db = app.db.get().await?;
    Ok(ok(&subscription_view(&db, &sub).await?))
}

pub async fn payments_list(
    app: App,
    auth: Option<String>,
    query: String,
) -> Result<Response, ApiError> {
    let user = app.keys.authenticate(auth.as_deref())?;
    let (limit, page) = pagination(&query)?;
    let db = app.db.get().await?;
    let (rows, total) = payments::list_for_user(&db, user.id, limit, (page - 1) * limit).await?;
    let views: Vec<PaymentView> = rows.iter().map(PaymentView::from).collect();
    Ok(warp::reply::with_header(ok(&views), "x-total-count", total.to_string()).into_response())
}

pub async fn payment_get(app: App, id: String, auth: Option<String>) -> Result<Response, ApiError> {
    let user = app.keys.authenticate(auth.as_deref())?;
    let id = parse_uuid(&id, "payment id")?;
    let db = app.db.get().await?;
    let payment = payments::get_for_user(&db, id, user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment_not_found", "no such payment"))?;
    Ok(ok(&PaymentView::from(&payment)))
}

pub fn parse_uuid(text: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::bad_request("bad_uuid", format!("{what} {text:?} is not a UUID")))
}

/// `limit` 1..=100 (default 10), `page` 1-based (default 1); anything else is 400.
pub fn pagination(query: &str) -> Result<(i64, i64), ApiError> {
    let params: HashMap<String, String> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::bad_request("bad_query", format!("malformed query string: {e}")))?;
    let number = |name: &str, default: i64, max: i64| -> Result<i64, ApiError> {
        match params.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "bad_pagination",
                        format!("{name} must be an integer in 1..={max}"),
                    )
                }),
        }
    };
    Ok((number("limit", 10, 100)?, number("page", 1, 1_000_000)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_defaults_and_bounds() {
        assert_eq!(pagination("").unwrap(), (10, 1));
        assert_eq!(pagination("limit=100&page=3").unwrap(), (100, 3));
        for bad in [
            "limit=0",
            "limit=101",
            "page=0",
            "page=-1",
            "limit=ten",
            "page=1.5",
        ] {
            assert!(pagination(bad).is_err(), "{bad}");
        }
    }
}
