//! Request bodies: raw bytes with a hard 64 KiB limit (with or without
//! Content-Length), then exact JSON parsing with a 400 that says what was wrong.

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use warp::Filter;

use super::error::{ApiError, Rejected};

pub const MAX_BODY: usize = 64 * 1024;

/// The raw body, at most 64 KiB; larger is 413 before anything else runs.
pub fn limited() -> impl Filter<Extract = (Bytes,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(|len: Option<u64>| async move {
            match len {
                Some(n) if n > MAX_BODY as u64 => {
                    Err(warp::reject::custom(Rejected(ApiError::too_large())))
                }
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .and_then(collect)
}

async fn collect<S, B>(stream: S) -> Result<Bytes, warp::Rejection>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|e| {
            warp::reject::custom(Rejected(ApiError::bad_request(
                "bad_body",
                format!("cannot read body: {e}"),
            )))
        })?;
        if buf.len() + chunk.remaining() > MAX_BODY {
            return Err(warp::reject::custom(Rejected(ApiError::too_large())));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            buf.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

pub fn json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "bad_json",
            "request body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("bad_json", format!("invalid JSON body: {e}")))
}
