//! Buying a tariff.

use warp::http::StatusCode;
use warp::reply::Response;

use super::keyed;
use crate::app::App;
use crate::domain::PaySystem;
use crate::http::auth::User;
use crate::http::error::{ApiError, Rejected};
use crate::service::change::{self, ChangeRequest, ChangeResponse, When};
use crate::service::purchase::{self, BuyRequest, BuyResponse, IdempotencyKey};
use crate::service::BillingError;

#[utoipa::path(
    post,
    path = "/api/v1/subscriptions/{pay_system}/buy",
    tag = "subscriptions",
    operation_id = "buySubscription",
    summary = "Buy a tariff: creates a payment and returns the provider's confirmation URL",
    params(
        ("pay_system" = crate::domain::PaySystem, Path),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "Scoped to the user, kept 24 h. The same key with the same body returns the same answer; with another body 422; while the first request is still running 409."),
    ),
    request_body = crate::service::purchase::BuyRequest,
    security(("jwt" = [])),
    responses(
        (status = 201, description = "Payment created; send the viewer to confirmation_url", body = crate::service::purchase::BuyResponse),
        (status = 400, description = "`bad_json`, `bad_body`, `bad_return_url`, `return_url_not_allowed` (not one of RETURN_URL_ALLOWED_ORIGINS), `bad_idempotency_key`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 404, description = "`pay_system_not_found` (unknown or not enabled), `tariff_not_found` (unknown or archived)", body = crate::http::error::ErrorBody),
        (status = 409, description = "`tariff_conflict` (another tariff is active), `renewal_pending` (a renewal is being charged), `request_in_progress` (same Idempotency-Key still running)", body = crate::http::error::ErrorBody),
        (status = 413, description = "`payload_too_large`: request body is over 64 KiB", body = crate::http::error::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the Idempotency-Key was used with another body", body = crate::http::error::ErrorBody),
        (status = 502, description = "`provider_unavailable`: the provider is unreachable (retry; the same key resumes) or refused the payment", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn buy(
    app: App,
    system: PaySystem,
    user: User,
    key: Option<IdempotencyKey>,
    req: BuyRequest,
) -> Result<Response, ApiError> {
    let render = |outcome: &Result<BuyResponse, BillingError>| {
        ApiError::stored(outcome.as_ref(), StatusCode::CREATED)
    };
    Ok(keyed(
        StatusCode::CREATED,
        purchase::buy(&app, user.id, system, req, key, &render).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/subscriptions/change",
    tag = "subscriptions",
    operation_id = "changeTariff",
    summary = "Change the live subscription's tariff, now (pay the difference) or at the period end",
    description = "`period_end`: the next renewal charges the new tariff's price and switches to it; \
        the current tariff withdraws a scheduled change. `now`: a payment of the new tariff's price \
        minus the unused part of what was paid (each paid period prorated by time, rounded up to the \
        kopeck); when it succeeds a new period of the new tariff starts, if it fails nothing changes. \
        Example: monthly 299.00 with 10 of its 30 days left is worth ceil(29900 × 10/30) = 99.67, so \
        the yearly tariff at 2990.00 charges 2890.33.",
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "As for buy: scoped to the user, kept 24 h."),
    ),
    request_body = crate::service::change::ChangeRequest,
    security(("jwt" = [])),
    responses(
        (status = 200, description = "`period_end`: the change is scheduled (or withdrawn)", body = crate::service::change::ChangeResponse),
        (status = 201, description = "`now`: payment created; send the viewer to confirmation_url", body = crate::service::change::ChangeResponse),
        (status = 400, description = "`bad_json`, `bad_body`, `bad_return_url`, `return_url_not_allowed`, `bad_field`, `contact_required`, `bad_idempotency_key`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 404, description = "`no_active_subscription`, `tariff_not_found` (unknown or archived), `pay_system_not_found` (the subscription's provider is not enabled)", body = crate::http::error::ErrorBody),
        (status = 409, description = "`same_tariff` (`now` to the current tariff), `credit_covers_price` (the unused part is worth the new price or more: change at the period end), `currency_differs`, `auto_renew_off` (`period_end` needs auto-renewal), `renewal_pending`, `request_in_progress`", body = crate::http::error::ErrorBody),
        (status = 413, description = "`payload_too_large`: request body is over 64 KiB", body = crate::http::error::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the Idempotency-Key was used with another body", body = crate::http::error::ErrorBody),
        (status = 502, description = "`provider_unavailable`: the provider is unreachable (retry; the same key resumes) or refused the payment", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn change(
    app: App,
    user: User,
    key: Option<IdempotencyKey>,
    req: ChangeRequest,
) -> Result<Response, ApiError> {
    let status = match req.when {
        When::Now => StatusCode::CREATED,
        When::PeriodEnd => StatusCode::OK,
    };
    let render = move |outcome: &Result<ChangeResponse, BillingError>| {
        ApiError::stored(outcome.as_ref(), status)
    };
    Ok(keyed(
        status,
        change::change(&app, user.id, req, key, &render).await?,
    ))
}

/// The `{pay_system}` of a buy path (404 `pay_system_not_found` when unknown).
pub fn pay_system(raw: &str) -> Result<PaySystem, warp::Rejection> {
    raw.parse().map_err(|_| {
        warp::reject::custom(Rejected(ApiError::not_found(
            "pay_system_not_found",
            format!("unknown pay system {raw:?}"),
        )))
    })
}
