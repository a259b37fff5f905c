//! Parsing at the edge: who is calling, the path's id, the Idempotency-Key and the
//! typed JSON body arrive in handlers as values. Filters run in the order a route
//! chains them, so routes put the caller first: a stranger gets 401 before any 400.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use warp::filters::BoxedFilter;
use warp::{Filter, Rejection};

use super::auth::User;
use super::body;
use super::conn::Peer;
use super::error::{ApiError, Rejected};
use crate::app::App;
use crate::service::idempotency::IdempotencyKey;

fn reject(e: impl Into<ApiError>) -> Rejection {
    warp::reject::custom(Rejected(e.into()))
}

/// The caller, from `Authorization` (401 without a valid token).
pub fn user(app: App) -> BoxedFilter<(User,)> {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let app = app.clone();
            async move { app.keys.authenticate(header.as_deref()).map_err(reject) }
        })
        .boxed()
}

/// An operator (401 without a valid token, 403 for a viewer).
#[derive(Debug, Clone, Copy)]
pub struct Superuser(pub User);

pub fn superuser(app: App) -> BoxedFilter<(Superuser,)> {
    user(app)
        .and_then(|user: User| async move {
            if user.is_superuser {
                Ok(Superuser(user))
            } else {
                Err(reject(ApiError::forbidden("superuser only")))
            }
        })
        .boxed()
}

/// The request body as `T`: at most 64 KiB (413), within `deadline` of the head
/// (408), exact JSON (400 `bad_json`).
pub fn json<T: DeserializeOwned + Send + 'static>(deadline: Duration) -> BoxedFilter<(T,)> {
    body::limited(deadline)
        .and_then(|raw: bytes::Bytes| async move { body::json::<T>(&raw).map_err(reject) })
        .boxed()
}

/// The client's address (set by [`super::conn::serve`] on every request).
pub fn peer() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<Peer>().map(|p: Option<Peer>| p.map(|Peer(addr)| addr))
}

/// The optional `Idempotency-Key` (400 `bad_idempotency_key` when malformed).
pub fn idempotency_key() -> BoxedFilter<(Option<IdempotencyKey>,)> {
    warp::header::optional::<String>("idempotency-key")
        .and_then(|raw: Option<String>| async move {
            raw.as_deref()
                .map(IdempotencyKey::parse)
                .transpose()
                .map_err(reject)
        })
        .boxed()
}

/// A path segment parsed into `T` (400 `bad_uuid` for an id, or what `T` says).
pub fn parse<T>(raw: &str, what: &str) -> Result<T, Rejection>
where
    T: FromStr,
{
    raw.parse::<T>().map_err(|_| {
        reject(ApiError::bad_request(
            "bad_uuid",
            format!("{what} {raw:?} is not a UUID"),
        ))
    })
}
