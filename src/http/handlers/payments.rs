//! Buying a tariff.

use warp::http::StatusCode;
use warp::reply::Response;

use super::keyed;
use crate::app::App;
use crate::domain::PaySystem;
use crate::http::auth::User;
use crate::http::error::{ApiError, Rejected};
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

/// The `{pay_system}` of a buy path (404 `pay_system_not_found` when unknown).
pub fn pay_system(raw: &str) -> Result<PaySystem, warp::Rejection> {
    raw.parse().map_err(|_| {
        warp::reject::custom(Rejected(ApiError::not_found(
            "pay_system_not_found",
            format!("unknown pay system {raw:?}"),
        )))
    })
}
