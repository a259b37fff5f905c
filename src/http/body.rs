//! Request bodies: raw bytes with a hard 64 KiB limit (with or without
//! Content-Length), then exact JSON parsing with a 400 that says what was wrong.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use warp::Filter;

use super::error::{ApiError, Rejected};

pub const MAX_BODY: usize = 64 * 1024;

/// The raw body, at most 64 KiB; larger is 413 before anything else runs. A body
/// not complete `deadline` after the head is 408 `body_timeout` (a client that
/// trickles it, or stops, must not hold the connection). A body
/// carrying a NUL character is 400 `bad_text`: PostgreSQL cannot store it in text or
/// jsonb, so it would otherwise fail later as a 500 (or a 503 to a provider, which
/// would retry it for a day).
pub fn limited(
    deadline: Duration,
) -> impl Filter<Extract = (Bytes,), Error = warp::Rejection> + Clone {
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
        .and_then(move |stream| async move {
            match tokio::time::timeout(deadline, collect(stream)).await {
                Ok(collected) => collected,
                Err(_) => Err(warp::reject::custom(Rejected(ApiError::body_timeout(
                    deadline,
                )))),
            }
        })
        .and_then(|raw: Bytes| async move {
            if has_nul(&raw) {
                Err(warp::reject::custom(Rejected(ApiError::bad_request(
                    "bad_text",
                    "the body contains a NUL character (\\u0000), which no field accepts",
                ))))
            } else {
                Ok(raw)
            }
        })
}

/// A NUL byte, or a JSON escape of one (`\u0000`, not preceded by an escaping
/// backslash; `\\u0000` is the text `\u0000`).
pub fn has_nul(raw: &[u8]) -> bool {
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            0 => return true,
            b'\\' if raw[i + 1..].starts_with(b"u0000") => return true,
            // Any other escape: the escaped character is not a backslash to look at.
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    false
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
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request("bad_json", json_error(&e)))
}

/// A body's JSON error in the caller's terms: where the syntax broke, or what a
/// field should have been, never the name of a Rust type (`struct BuyRequest`).
pub fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ),
        Category::Data => format!("invalid JSON body: {}", without_type_names(&e.to_string())),
    }
}

/// `expected struct BuyRequest` → `expected a JSON object`.
fn without_type_names(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("struct ") {
        out.push_str(&rest[..i]);
        out.push_str("a JSON object");
        rest = rest[i + "struct ".len()..]
            .trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::has_nul;

    #[test]
    fn a_nul_is_found_raw_or_escaped_but_not_in_escaped_text() {
        assert!(has_nul(br#"{"a": "x\u0000y"}"#));
        assert!(has_nul(b"a\0b"));
        assert!(
            !has_nul(br#"{"a": "x\\u0000y"}"#),
            "an escaped backslash, then text"
        );
        assert!(
            has_nul(br#"{"a": "\\\u0000"}"#),
            "an escaped backslash, then a NUL"
        );
        assert!(!has_nul(br#"{"a": "\u0001 %00"}"#));
        assert!(!has_nul(br"trailing backslash \"));
    }

    #[test]
    fn json_errors_name_no_rust_types() {
        let e = serde_json::from_str::<std::collections::BTreeMap<String, u8>>("[1]")
            .map(|_| ())
            .unwrap_err();
        let text = super::json_error(&e);
        assert!(!text.contains("BTreeMap"), "{text}");
        assert_eq!(
            super::without_type_names("invalid type: sequence, expected struct BuyRequest"),
            "invalid type: sequence, expected a JSON object"
        );
        let syntax = serde_json::from_str::<Vec<u8>>("[1,").unwrap_err();
        assert!(super::json_error(&syntax).starts_with("the body is not valid JSON"));
    }
}
