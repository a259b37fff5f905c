//! YooKassa notifications: `{"type": "notification", "event": …, "object": {…}}`,
//! unsigned, so authenticated by the sender's address. Only the event and the
//! object's id are read: the object is re-read from the API before anything is applied.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use super::YooKassa;
use crate::domain::InboxStatus;
use crate::domain::PaymentStatus;
use crate::providers::webhook::{
    Endpoint, Notification, Outcome, ParseError, Received, Rejection, ReplyBody, Stored,
    WebhookReply, WebhookRequest, Webhooks,
};

/// A YooKassa notification, `{"type": "notification", "event": …, "object": {…}}`.
/// Only the event and the object's id are read: the notification is unsigned, so the
/// object is re-read from the YooKassa API and nothing else in the body is trusted.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = YooKassaNotification)]
pub struct Wire {
    /// Handled: payment.waiting_for_capture, payment.succeeded, payment.canceled,
    /// refund.succeeded. Others are answered 200 and ignored.
    #[schema(example = "payment.succeeded", min_length = 1, max_length = 100)]
    event: String,
    object: WireObject,
}

/// The payment or refund the event is about, as it was when the event was sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = YooKassaObject)]
pub struct WireObject {
    /// The provider's payment (or refund) id.
    #[schema(min_length = 1, max_length = 100)]
    id: String,
}

pub fn allowed(ip: Option<IpAddr>, allow: &[IpNet]) -> bool {
    ip.is_some_and(|ip| allow.iter().any(|n| n.contains(&ip)))
}

/// The event and object id a stored notification was keyed by say all there is.
pub fn restore(stored: &Stored<'_>) -> Notification {
    read(stored.event, stored.object_id)
}

fn read(event: &str, object_id: &str) -> Notification {
    let payment = |claimed| Notification::PaymentChanged {
        provider_id: object_id.to_owned(),
        claimed,
    };
    match event {
        "payment.waiting_for_capture" => payment(PaymentStatus::WaitingForCapture),
        "payment.succeeded" => payment(PaymentStatus::Succeeded),
        "payment.canceled" => payment(PaymentStatus::Canceled),
        "refund.succeeded" => Notification::RefundChanged {
            provider_id: object_id.to_owned(),
        },
        other => Notification::Ignored(format!("event {other} is not handled")),
    }
}

fn usable(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100
}

impl Webhooks for YooKassa {
    fn takes_ops_replays(&self) -> bool {
        true
    }

    fn authenticate(&self, req: &WebhookRequest<'_>) -> Result<(), Rejection> {
        if allowed(req.source_ip, &self.allowed_ips) {
            return Ok(());
        }
        tracing::warn!(ip = ?req.source_ip, "webhook from a disallowed address");
        Err(Rejection::Forbidden {
            reason: "ip_not_allowed",
            detail: "sender is not allowed".into(),
        })
    }

    fn parse(
        &self,
        _: Endpoint,
        body: &[u8],
        _content_type: Option<&str>,
    ) -> Result<Received, ParseError> {
        if body.is_empty() {
            return Err(ParseError::NotJson(
                "request body is empty; send a JSON object".into(),
            ));
        }
        // JSON first, so a syntax error is `bad_json` wherever it is.
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ParseError::NotJson(format!("invalid JSON body: {e}")))?;
        let Some(wire) = Wire::deserialize(&value)
            .ok()
            .filter(|w| usable(&w.event) && usable(&w.object.id))
        else {
            return Err(ParseError::Invalid(
                "expected {\"event\": …, \"object\": {\"id\": …}}".into(),
            ));
        };
        Ok(Received {
            notification: read(&wire.event, &wire.object.id),
            event: wire.event,
            object_id: wire.object.id,
        })
    }

    /// `{"status": …}`: any 200 stops YooKassa's retries.
    fn reply(&self, outcome: Outcome) -> WebhookReply {
        let status = match outcome {
            Outcome::Stored(status) => status,
            // YooKassa has no checks; a decided one is processed.
            Outcome::Checked(_) => InboxStatus::Processed,
        };
        WebhookReply {
            status: 200,
            body: ReplyBody::Ack(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn yookassa() -> YooKassa {
        YooKassa::new("http://127.0.0.1:9", "shop", Secret::new("s"))
    }

    #[test]
    fn only_allow_listed_senders_are_taken() {
        let nets = crate::config::parse_cidrs("185.71.76.0/27").unwrap();
        assert!(allowed(Some("185.71.76.1".parse().unwrap()), &nets));
        assert!(!allowed(Some("8.8.8.8".parse().unwrap()), &nets));
        assert!(!allowed(None, &nets));
    }

    #[test]
    fn only_the_event_and_the_object_id_are_read() {
        let yk = yookassa();
        let r = yk
            .parse(
                Endpoint::YooKassa,
                br#"{"type":"notification","event":"payment.succeeded","object":{"id":"p-1","status":"pending"}}"#,
                None,
            )
            .unwrap();
        assert_eq!(
            (r.event.as_str(), r.object_id.as_str()),
            ("payment.succeeded", "p-1")
        );
        assert!(matches!(
            r.notification,
            Notification::PaymentChanged {
                claimed: PaymentStatus::Succeeded,
                ..
            }
        ));
        let other = yk
            .parse(
                Endpoint::YooKassa,
                br#"{"event":"payout.succeeded","object":{"id":"x"}}"#,
                None,
            )
            .unwrap();
        assert!(matches!(other.notification, Notification::Ignored(_)));
    }

    #[test]
    fn a_body_that_is_not_json_differs_from_one_without_the_fields() {
        let yk = yookassa();
        let parse = |b: &[u8]| yk.parse(Endpoint::YooKassa, b, None).unwrap_err();
        assert!(matches!(parse(b""), ParseError::NotJson(_)));
        assert!(matches!(parse(b"{\"event\": 5, "), ParseError::NotJson(_)));
        assert!(matches!(
            parse(br#"{"event": 5, "object": {"id": "x"}}"#),
            ParseError::Invalid(_)
        ));
        assert!(matches!(
            parse(br#"{"event": "", "object": {"id": "x"}}"#),
            ParseError::Invalid(_)
        ));
        assert!(matches!(parse(br#"[1]"#), ParseError::Invalid(_)));
    }
}
