//! The one mapping from errors to HTTP answers: `{"code", "detail"}`.
//! A 4xx says what was wrong; a 5xx logs the cause and returns an opaque body.

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use crate::service::idempotency::StoredAnswer;
use crate::service::BillingError;
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
}

/// Every error answer: a stable code to branch on and words to show.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    /// Stable snake_case error code.
    #[schema(example = "payment_not_found")]
    pub code: &'a str,
    /// Human-readable explanation.
    pub detail: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
        }
    }
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is over 64 KiB",
        )
    }
    pub fn body_timeout(deadline: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s of its headers",
                deadline.as_secs_f64()
            ),
        )
    }
    pub fn bad_gateway(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "provider_unavailable", detail)
    }
    pub fn database_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable, retry later",
        )
    }
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }
}

impl From<&StoreError> for ApiError {
    fn from(e: &StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::database_unavailable()
        } else {
            ApiError::internal(e)
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from(&e)
    }
}

/// The one place a business outcome becomes a status code and an error code.
impl From<&BillingError> for ApiError {
    fn from(e: &BillingError) -> Self {
        use BillingError as B;
        let detail = e.to_string();
        match e {
            B::Store(e) => e.into(),
            B::BadIdempotencyKey => ApiError::bad_request("bad_idempotency_key", detail),
            B::BadReturnUrl(_) => ApiError::bad_request("bad_return_url", detail),
            B::BadField(_) => ApiError::bad_request("bad_field", detail),
            B::ContactRequired(_) => ApiError::bad_request("contact_required", detail),
            B::ReturnUrlNotAllowed(_) => ApiError::bad_request("return_url_not_allowed", detail),
            B::BadRefundReason => ApiError::bad_request("bad_reason", detail),
            B::CurrencyMismatch => ApiError::bad_request("currency_mismatch", detail),
            B::PaySystemNotEnabled(_) => ApiError::not_found("pay_system_not_found", detail),
            B::TariffNotFound => ApiError::not_found("tariff_not_found", detail),
            B::UnknownTariff => ApiError::not_found("tariff_not_found", detail),
            B::PaymentNotFound => ApiError::not_found("payment_not_found", detail),
            B::NoActiveSubscription => ApiError::not_found("no_active_subscription", detail),
            B::RefundNotFound(_) => ApiError::not_found("refund_not_found", detail),
            B::TariffConflict => ApiError::conflict("tariff_conflict", detail),
            B::RenewalPending => ApiError::conflict("renewal_pending", detail),
            B::SameTariff => ApiError::conflict("same_tariff", detail),
            B::ChangeCurrency => ApiError::conflict("currency_differs", detail),
            B::CreditCoversPrice(_) => ApiError::conflict("credit_covers_price", detail),
            B::AutoRenewOff => ApiError::conflict("auto_renew_off", detail),
            B::NoPaymentMethod => ApiError::conflict("no_payment_method", detail),
            B::PaymentNotRefundable(_) => ApiError::conflict("payment_not_refundable", detail),
            B::RefundExceedsRemaining(_) => ApiError::conflict("refund_exceeds_remaining", detail),
            B::AliasTaken(_) => ApiError::conflict("alias_taken", detail),
            B::TariffImmutable => ApiError::conflict("tariff_immutable", detail),
            B::NotUnderReview => ApiError::conflict("not_under_review", detail),
            B::IdempotencyKeyReused => ApiError::unprocessable("idempotency_key_reused", detail),
            B::RequestInProgress => ApiError::conflict("request_in_progress", detail),
            B::ProviderUnavailable(_) | B::PaymentRefused => ApiError::bad_gateway(detail),
            B::RefundRefused(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "provider_rejected", detail)
            }
            // The provider's words are for our logs, not for the caller.
            B::Provider(_) | B::PaymentNotYetPaid(_) => {
                tracing::warn!(error = %e, "provider error");
                ApiError::bad_gateway("the payment provider is unavailable; retry later")
            }
            B::Internal(what) => ApiError::internal(what),
        }
    }
}

impl From<BillingError> for ApiError {
    fn from(e: BillingError) -> Self {
        ApiError::from(&e)
    }
}

impl ApiError {
    /// The answer stored with an Idempotency-Key: what this outcome answers now.
    pub fn stored<T: Serialize>(
        outcome: Result<T, &BillingError>,
        created: StatusCode,
    ) -> StoredAnswer {
        match outcome {
            Ok(body) => StoredAnswer {
                status: created.as_u16(),
                body: serde_json::to_value(&body).expect("serializable"),
            },
            Err(e) => {
                let e = ApiError::from(e);
                StoredAnswer {
                    status: e.status.as_u16(),
                    body: serde_json::json!({"code": e.code, "detail": e.detail}),
                }
            }
        }
    }
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            detail: &self.detail,
        };
        warp::reply::with_status(warp::reply::json(&body), self.status).into_response()
    }
}

/// Rejections we raise ourselves before a handler runs (body limits).
#[derive(Debug)]
pub struct Rejected(pub ApiError);
impl warp::reject::Reject for Rejected {}

/// Turns every rejection into our JSON error. Handlers return responses, so what
/// reaches here is "no route matched" or a malformed request warp caught first.
pub async fn recover(rejection: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    let error = if let Some(Rejected(e)) = rejection.find() {
        e.clone()
    } else if rejection.is_not_found() {
        ApiError::not_found("not_found", "no such route")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::too_large()
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::bad_request("invalid_header", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::bad_request("invalid_query", e.to_string())
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send JSON",
        )
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        ApiError::bad_request("bad_request", format!("{rejection:?}"))
    };
    Ok(error.into_response())
}

/// Handlers return `Result<Response, ApiError>`; this flattens it.
pub fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| e.into_response())
}

impl From<crate::service::webhooks::WebhookError> for ApiError {
    fn from(e: crate::service::webhooks::WebhookError) -> Self {
        use crate::providers::webhook::{ParseError, Rejection};
        use crate::service::webhooks::WebhookError;
        match e {
            WebhookError::NotEnabled(_) => {
                ApiError::not_found("pay_system_not_found", e.to_string())
            }
            WebhookError::Rejected(Rejection::Unauthenticated { detail, .. }) => {
                ApiError::unauthorized(detail)
            }
            WebhookError::Rejected(Rejection::Forbidden { detail, .. }) => {
                ApiError::forbidden(detail)
            }
            WebhookError::Unreadable(ParseError::NotJson(detail)) => {
                ApiError::bad_request("bad_json", detail)
            }
            WebhookError::Unreadable(ParseError::Invalid(detail)) => {
                ApiError::bad_request("bad_notification", detail)
            }
            // Already logged: the provider delivers (or asks) again.
            WebhookError::NotStored(_) | WebhookError::Undecided(_) => {
                ApiError::database_unavailable()
            }
            WebhookError::Store(e) => e.into(),
        }
    }
}
