//! Ops replays: our own channel, not a provider's. A notification signed the
//! Standard Webhooks way with OPS_WEBHOOK_SECRET is taken from anywhere, once per
//! `webhook-id`; it is checked before the provider's own authentication.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::WebhookError;
use crate::app::App;
use crate::providers::webhook::{Rejection, WebhookRequest};
use crate::store::webhook_inbox;
use crate::store::Connect;

/// Any of these makes a request an ops replay, whatever else it carries.
const HEADERS: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];

#[derive(Debug, PartialEq, Eq)]
pub enum OpsRejection {
    Missing,
    Stale,
    BadSignature,
}

/// Standard Webhooks: HMAC-SHA256 over `{id}.{timestamp}.{body}`, any `v1,<b64>`
/// of the space-separated list may match, timestamps within 5 minutes either way.
pub fn verify_ops(
    key: &[u8],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), OpsRejection> {
    let (Some(id), Some(ts), Some(sigs)) = (id, timestamp, signatures) else {
        return Err(OpsRejection::Missing);
    };
    if id.is_empty() || id.len() > 255 {
        return Err(OpsRejection::Missing);
    }
    let ts_num: i64 = ts.trim().parse().map_err(|_| OpsRejection::Stale)?;
    if (now - ts_num).abs() > 300 {
        return Err(OpsRejection::Stale);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let b64 = base64::engine::general_purpose::STANDARD;
    let ok = sigs
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| b64.decode(s).ok())
        .any(|sig| mac.clone().verify_slice(&sig).is_ok());
    if ok {
        Ok(())
    } else {
        Err(OpsRejection::BadSignature)
    }
}

/// Signs like a Standard Webhooks sender (for `billing replay` and tests).
pub fn sign_ops(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

fn rejected(reason: &'static str, detail: impl Into<String>) -> WebhookError {
    WebhookError::Rejected(Rejection::Unauthenticated {
        reason,
        detail: detail.into(),
    })
}

/// A reused `webhook-id` (also what a concurrent insert of the same id means).
pub(super) fn replayed() -> WebhookError {
    rejected("ops_replayed", "webhook-id already used")
}

/// The replay's `webhook-id` once its signature is good and the id unused; `None`
/// when the request carries none of the ops headers (the provider decides then).
pub async fn authenticate(
    app: &App,
    req: &WebhookRequest<'_>,
) -> Result<Option<String>, WebhookError> {
    if !HEADERS.iter().any(|h| req.headers.contains(h)) {
        return Ok(None);
    }
    let Some(key) = app.config.ops_webhook_secret.as_deref() else {
        return Err(rejected("ops_disabled", "ops replays are disabled"));
    };
    let id = req.header("webhook-id");
    verify_ops(
        key,
        id,
        req.header("webhook-timestamp"),
        req.header("webhook-signature"),
        req.body,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|e| {
        rejected(
            "bad_ops_signature",
            format!("ops signature rejected: {e:?}"),
        )
    })?;
    let id = id.expect("verified").to_owned();
    let db = app.db.conn().await?;
    if webhook_inbox::ops_id_used(&db, &id).await? {
        return Err(replayed());
    }
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_signatures_verify_rotate_and_expire() {
        let key = b"0123456789abcdef0123";
        let body = br#"{"a":1}"#;
        let now = 1_800_000_000;
        let good = sign_ops(key, "msg_1", now, body);
        let ts = now.to_string();
        assert_eq!(
            verify_ops(key, Some("msg_1"), Some(&ts), Some(&good), body, now),
            Ok(())
        );
        let rotated = format!("v1,AAAA {good}");
        assert_eq!(
            verify_ops(key, Some("msg_1"), Some(&ts), Some(&rotated), body, now),
            Ok(())
        );
        assert_eq!(
            verify_ops(key, Some("msg_1"), Some(&ts), Some(&good), b"{}", now),
            Err(OpsRejection::BadSignature)
        );
        assert_eq!(
            verify_ops(key, Some("msg_2"), Some(&ts), Some(&good), body, now),
            Err(OpsRejection::BadSignature)
        );
        assert_eq!(
            verify_ops(key, Some("msg_1"), Some(&ts), Some(&good), body, now + 301),
            Err(OpsRejection::Stale)
        );
        assert_eq!(
            verify_ops(key, Some("msg_1"), Some(&ts), Some(&good), body, now - 301),
            Err(OpsRejection::Stale)
        );
        assert_eq!(
            verify_ops(key, None, Some(&ts), Some(&good), body, now),
            Err(OpsRejection::Missing)
        );
    }
}
