//! A viewer's own subscription and payments.

use std::collections::HashMap;

use warp::reply::Response;
use warp::Reply;

use super::ok;
use super::views::{PaymentView, SubscriptionView};
use crate::app::App;
use crate::domain::PaymentId;
use crate::http::auth::User;
use crate::http::error::ApiError;
use crate::service::subscriptions as subs;
use crate::store::Connect;
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

#[utoipa::path(
    get,
    path = "/api/v1/subscriptions/profile",
    tag = "subscriptions",
    operation_id = "getSubscription",
    summary = "The current (or most recent) subscription",
    security(("jwt" = [])),
    responses(
        (status = 200, description = "The subscription", body = crate::http::handlers::views::SubscriptionView),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 404, description = "`no_subscription`: this user has never had a subscription", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn profile(app: App, user: User) -> Result<Response, ApiError> {
    let db = app.db.conn().await?;
    let sub = subscriptions::current_for_user(&db, user.id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found("no_subscription", "this user has never had a subscription")
        })?;
    Ok(ok(&subscription_view(&db, &sub).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/subscriptions/cancel",
    tag = "subscriptions",
    operation_id = "cancelSubscription",
    summary = "Turn auto-renewal off; status stays active and access lasts to the period end",
    security(("jwt" = [])),
    responses(
        (status = 200, description = "The subscription (repeating the request changes nothing)", body = crate::http::handlers::views::SubscriptionView),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 404, description = "`no_active_subscription`: no active or past_due subscription", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn cancel(app: App, user: User) -> Result<Response, ApiError> {
    let sub = subs::set_auto_renew(&app, user.id, false).await?;
    let db = app.db.conn().await?;
    Ok(ok(&subscription_view(&db, &sub).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/subscriptions/resume",
    tag = "subscriptions",
    operation_id = "resumeSubscription",
    summary = "Turn auto-renewal back on (needs a usable saved payment method)",
    security(("jwt" = [])),
    responses(
        (status = 200, description = "The subscription (repeating the request changes nothing)", body = crate::http::handlers::views::SubscriptionView),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 404, description = "`no_active_subscription`: no active or past_due subscription", body = crate::http::error::ErrorBody),
        (status = 409, description = "`no_payment_method`: no saved, usable payment method", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn resume(app: App, user: User) -> Result<Response, ApiError> {
    let sub = subs::set_auto_renew(&app, user.id, true).await?;
    let db = app.db.conn().await?;
    Ok(ok(&subscription_view(&db, &sub).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/subscriptions/contact",
    tag = "subscriptions",
    operation_id = "setReceiptContact",
    summary = "Where the live subscription's 54-FZ receipts go (its renewals')",
    request_body = crate::service::subscriptions::ContactRequest,
    security(("jwt" = [])),
    responses(
        (status = 200, description = "The subscription; its renewals' receipts go to this contact", body = crate::http::handlers::views::SubscriptionView),
        (status = 400, description = "`bad_json`, `bad_body`, `bad_field` (email or phone malformed), `contact_required` (neither given)", body = crate::http::error::ErrorBody),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 404, description = "`no_active_subscription`: no active or past_due subscription", body = crate::http::error::ErrorBody),
        (status = 413, description = "`payload_too_large`: request body is over 64 KiB", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn contact(
    app: App,
    user: User,
    req: crate::service::subscriptions::ContactRequest,
) -> Result<Response, ApiError> {
    let sub = subs::set_receipt_contact(&app, user.id, &req).await?;
    let db = app.db.conn().await?;
    Ok(ok(&subscription_view(&db, &sub).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/payments/profile",
    tag = "payments",
    operation_id = "listPayments",
    summary = "The user's payments, newest first",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Page size, 1..=100, default 10; anything else is 400"),
        ("page" = Option<i64>, Query, minimum = 1, maximum = 1000000, description = "1-based page number, default 1; anything else is 400"),
    ),
    security(("jwt" = [])),
    responses(
        (status = 200, description = "Bare JSON array of payments", body = [crate::http::handlers::views::PaymentView], headers(("x-total-count" = i64, description = "Payments of this user in all pages"))),
        (status = 400, description = "`bad_query`, `bad_pagination`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn payments_list(app: App, user: User, query: String) -> Result<Response, ApiError> {
    let (limit, page) = pagination(&query)?;
    let db = app.db.conn().await?;
    let (rows, total) = payments::list_for_user(&db, user.id, limit, (page - 1) * limit).await?;
    let views: Vec<PaymentView> = rows.iter().map(PaymentView::from).collect();
    Ok(warp::reply::with_header(ok(&views), "x-total-count", total.to_string()).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/payments/{id}",
    tag = "payments",
    operation_id = "getPayment",
    summary = "One payment of this user",
    params(
        ("id" = PaymentId, Path, description = "Payment id"),
    ),
    security(("jwt" = [])),
    responses(
        (status = 200, description = "The payment", body = crate::http::handlers::views::PaymentView),
        (status = 400, description = "`bad_uuid`: id is not a UUID", body = crate::http::error::ErrorBody),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 404, description = "`payment_not_found`: no such payment (or another user's)", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn payment_get(app: App, id: PaymentId, user: User) -> Result<Response, ApiError> {
    let db = app.db.conn().await?;
    let payment = payments::get_for_user(&db, id, user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment_not_found", "no such payment"))?;
    Ok(ok(&PaymentView::from(&payment)))
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
