pub mod account;
pub mod admin;
pub mod catalog;
pub mod health;
pub mod payments;
pub mod views;
pub mod webhooks;

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use crate::service::idempotency::Keyed;

pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

pub fn ok<T: Serialize>(body: &T) -> Response {
    json(StatusCode::OK, body)
}

/// A use case's answer under an Idempotency-Key: the fresh result with `status`, or
/// the answer the first request stored, as it was.
pub fn keyed<T: Serialize>(status: StatusCode, answer: Keyed<T>) -> Response {
    match answer {
        Keyed::Fresh(body) => json(status, &body),
        Keyed::Replayed(stored) => json(
            StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
            &stored.body,
        ),
    }
}
