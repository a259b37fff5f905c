//! CloudPayments notifications: one URL per kind, signed with `Content-HMAC`, the
//! body JSON or form-urlencoded. The signed body is the provider's word; a `check`
//! is answered with a code that decides whether the viewer may pay.

use serde_json::{Map, Value};

use super::signature::verify_content_hmac;
use super::wire::{Fields, Kind};
use super::CloudPayments;
use crate::domain::{Currency, Money, PaymentStatus};
use crate::domain::{PaymentId, UserId};
use crate::providers::webhook::{
    Endpoint, Notification, Outcome, ParseError, Received, Rejection, ReplyBody, Stored,
    Unreadable, WebhookReply, WebhookRequest, Webhooks,
};
use crate::providers::{ProviderError, ProviderPayment};

fn invalid(what: impl Into<String>) -> ProviderError {
    ProviderError::Invalid(what.into())
}

/// What a CloudPayments `check` answers: 0 lets the viewer pay, anything else
/// refuses before money moves (providers.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckCode {
    Accept = 0,
    UnknownInvoice = 10,
    WrongAccount = 11,
    WrongAmount = 12,
    Rejected = 13,
}

impl CheckCode {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A notification: its kind (the URL's last segment) and its fields.
#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: Kind,
    pub fields: Fields,
}

impl Notice {
    /// Reads the body by its Content-Type (JSON or form-urlencoded); without a usable
    /// Content-Type, a body that starts with `{` is JSON and anything else a form.
    pub fn parse(
        kind: Kind,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Result<Notice, ProviderError> {
        let ct = content_type.unwrap_or("").to_ascii_lowercase();
        let json = if ct.starts_with("application/json") {
            true
        } else if ct.starts_with("application/x-www-form-urlencoded") {
            false
        } else {
            body.iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'{')
        };
        // Through a map first: a repeated field keeps its last value, as it always did.
        let fields: Map<String, Value> = if json {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(invalid("notification is not a JSON object")),
                Err(e) => return Err(invalid(format!("notification is not JSON: {e}"))),
            }
        } else {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|e| invalid(format!("notification is not a form: {e}")))?;
            // `%00` decodes to a NUL, which no text column stores (the JSON form is
            // refused at the edge already).
            if pairs
                .iter()
                .any(|(k, v)| k.contains('\0') || v.contains('\0'))
            {
                return Err(invalid("a form field contains a NUL character"));
            }
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect()
        };
        Ok(Notice {
            kind,
            fields: Fields::from_map(&fields),
        })
    }

    pub fn transaction_id(&self) -> Option<&str> {
        self.fields.transaction_id.as_deref()
    }

    /// A refund's: the payment transaction it gives money back from.
    pub fn payment_transaction_id(&self) -> Option<&str> {
        self.fields.payment_transaction_id.as_deref()
    }

    /// Our payment id, when `InvoiceId` is one.
    pub fn our_id(&self) -> Option<PaymentId> {
        self.fields
            .invoice_id
            .as_deref()
            .and_then(|s| s.parse().ok())
    }

    /// Our user id, when `AccountId` is one.
    pub fn user_id(&self) -> Option<UserId> {
        self.fields
            .account_id
            .as_deref()
            .and_then(|s| s.parse().ok())
    }

    pub fn amount(&self) -> Result<Money, ProviderError> {
        self.fields.money()
    }

    /// The amount in the given currency when the notification names none (refunds).
    pub fn amount_in(&self, currency: Currency) -> Result<Money, ProviderError> {
        match self.fields.currency {
            Some(_) => self.amount(),
            None => {
                let value = self
                    .fields
                    .amount
                    .as_deref()
                    .ok_or_else(|| invalid("Amount is missing"))?;
                Money::parse(value, currency).map_err(|e| invalid(format!("Amount: {e}")))
            }
        }
    }

    pub fn test_mode(&self) -> bool {
        self.fields.test_mode()
    }

    /// The inbox key: `TransactionId`, else `InvoiceId`, else the subscription `Id`
    /// (`recurrent`), else a hash of the body so unrelated bodies never share a row.
    pub fn object_id(&self, body: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        self.fields
            .transaction_id
            .clone()
            .or_else(|| self.fields.invoice_id.clone())
            .or_else(|| self.fields.id.clone())
            .filter(|id| id.len() <= 100)
            .unwrap_or_else(|| {
                let hash = Sha256::digest(body);
                format!(
                    "sha256:{}",
                    hash.iter()
                        .take(16)
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                )
            })
    }

    /// The payment this notification reports, for `pay`, `confirm`, `fail` and `cancel`.
    ///
    /// A `fail` or `cancel` carries no id (`id` is empty): settle adopts a provider id
    /// only from a non-empty one, so a declined attempt's TransactionId never becomes
    /// the payment's — the viewer may pay on the same order page again, and the
    /// successful transaction is the one refunds must name.
    ///
    /// `cancel` notifications carry no `Currency`: `currency` (the payment row's) is
    /// used then, and only then.
    pub fn payment(&self, currency: Currency) -> Result<ProviderPayment, ProviderError> {
        let mut fields = self.fields.clone();
        if self.kind == Kind::Cancel && fields.currency.is_none() {
            fields.currency = Some(currency.code().into());
        }
        let (status, keep_id) = match self.kind {
            Kind::Pay => (
                match fields.status.as_deref() {
                    // We never ask for two-stage payments; an authorised one grants nothing.
                    Some("Authorized") => PaymentStatus::WaitingForCapture,
                    _ => PaymentStatus::Succeeded,
                },
                true,
            ),
            Kind::Confirm => (PaymentStatus::Succeeded, true),
            Kind::Fail | Kind::Cancel => (PaymentStatus::Canceled, false),
            other => {
                return Err(invalid(format!(
                    "{} does not report a payment",
                    other.as_str()
                )))
            }
        };
        // The kind decides the status, not a `Status` field in the body.
        fields.status = Some(
            match (self.kind, status) {
                (Kind::Cancel, _) => "Cancelled",
                (_, PaymentStatus::Canceled) => "Declined",
                (_, PaymentStatus::WaitingForCapture) => "Authorized",
                _ => "Completed",
            }
            .into(),
        );
        // A fail or cancel needs no id (it is dropped below); pay and confirm do.
        if !keep_id && fields.transaction_id.is_none() {
            fields.transaction_id = Some("-".into());
        }
        let mut p = fields.payment(None)?;
        if !keep_id {
            p.id = String::new();
        }
        Ok(p)
    }

    /// What it says, in our words.
    pub fn into_notification(self) -> Notification {
        match self.kind {
            Kind::Check => Notification::CloudPaymentsCheck(self),
            Kind::Pay | Kind::Confirm | Kind::Fail | Kind::Cancel => {
                Notification::CloudPaymentsPayment(self)
            }
            Kind::Refund => Notification::CloudPaymentsRefund(self),
            Kind::Recurrent => Notification::Ignored(
                "recurrent: CloudPayments-managed subscriptions are not used".into(),
            ),
        }
    }
}

/// A stored notification: its kind is the row's event, its fields the stored body.
pub fn restore(stored: &Stored<'_>) -> Result<Notification, Unreadable> {
    let Ok(kind) = stored.event.parse::<Kind>() else {
        return Ok(Notification::Ignored(format!(
            "event {} is not handled",
            stored.event
        )));
    };
    let body = stored.body.ok_or(Unreadable::Purged)?;
    Ok(Notice::parse(kind, body, stored.content_type)?.into_notification())
}

impl Webhooks for CloudPayments {
    fn authenticate(&self, req: &WebhookRequest<'_>) -> Result<(), Rejection> {
        verify_content_hmac(
            self.secret.expose().as_bytes(),
            req.header("content-hmac"),
            req.body,
        )
        .map_err(|why| Rejection::Unauthenticated {
            reason: why.reason(),
            detail: "Content-HMAC is missing or does not match the body".into(),
        })
    }

    fn parse(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Result<Received, ParseError> {
        let Endpoint::CloudPayments(kind) = endpoint else {
            return Err(ParseError::Invalid("not a CloudPayments URL".into()));
        };
        let notice = Notice::parse(kind, body, content_type)
            .map_err(|e| ParseError::Invalid(e.to_string()))?;
        Ok(Received {
            event: kind.as_str().to_owned(),
            object_id: notice.object_id(body),
            notification: notice.into_notification(),
        })
    }

    /// Every kind answers `{"code": 0}` once stored; a `check` its decision.
    fn reply(&self, outcome: Outcome) -> WebhookReply {
        let code = match outcome {
            Outcome::Stored(_) => 0,
            Outcome::Checked(c) => c.code(),
        };
        WebhookReply {
            status: 200,
            body: ReplyBody::Code(code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_and_json_notifications_read_the_same() {
        let form =
            b"TransactionId=77&Amount=299.00&Currency=RUB&InvoiceId=x&TestMode=1&AccountId=a";
        let n = Notice::parse(
            Kind::Pay,
            form,
            Some("application/x-www-form-urlencoded; charset=utf-8"),
        )
        .unwrap();
        let j = Notice::parse(
            Kind::Pay,
            br#"{"TransactionId":77,"Amount":299.00,"Currency":"RUB","InvoiceId":"x","TestMode":true,"AccountId":"a"}"#,
            None,
        )
        .unwrap();
        for n in [n, j] {
            assert_eq!(n.transaction_id(), Some("77"));
            assert_eq!(n.amount().unwrap().minor(), 29_900);
            assert!(n.test_mode());
            let p = n.payment(Currency::Rub).unwrap();
            assert_eq!((p.id.as_str(), p.status), ("77", PaymentStatus::Succeeded));
        }
    }

    #[test]
    fn a_repeated_field_keeps_its_last_value() {
        let n = Notice::parse(Kind::Pay, b"Amount=1.00&Amount=299.00&Currency=RUB", None).unwrap();
        assert_eq!(n.amount().unwrap().minor(), 29_900);
        let j = Notice::parse(
            Kind::Pay,
            br#"{"Amount":1,"Amount":"299.00","Currency":"RUB"}"#,
            None,
        )
        .unwrap();
        assert_eq!(j.amount().unwrap().minor(), 29_900);
    }

    #[test]
    fn a_fail_notification_is_a_decline_without_an_id_to_adopt() {
        let n = Notice::parse(
            Kind::Fail,
            br#"{"TransactionId":78,"Amount":299,"Currency":"RUB","ReasonCode":5054,"Reason":"ExpiredCard"}"#,
            Some("application/json"),
        )
        .unwrap();
        let p = n.payment(Currency::Rub).unwrap();
        assert_eq!(p.status, PaymentStatus::Canceled);
        assert_eq!(p.id, "");
        assert_eq!(p.cancellation.unwrap().reason, "card_expired");
    }

    #[test]
    fn a_cancel_without_currency_takes_the_payments() {
        let n = Notice::parse(
            Kind::Cancel,
            br#"{"TransactionId":79,"Amount":299.00,"InvoiceId":"x"}"#,
            None,
        )
        .unwrap();
        let p = n.payment(Currency::Rub).unwrap();
        assert_eq!(p.status, PaymentStatus::Canceled);
        assert_eq!(p.amount.minor(), 29_900);
        assert_eq!(p.cancellation.unwrap().reason, "canceled_by_merchant");
        let pay =
            Notice::parse(Kind::Pay, br#"{"TransactionId":80,"Amount":299.00}"#, None).unwrap();
        assert!(
            pay.payment(Currency::Rub).is_err(),
            "pay must name its currency"
        );
    }

    #[test]
    fn object_ids_fall_back_from_transaction_to_invoice_to_a_hash() {
        let n = Notice::parse(Kind::Check, br#"{"InvoiceId":"inv-1"}"#, None).unwrap();
        assert_eq!(n.object_id(b"x"), "inv-1");
        let n = Notice::parse(Kind::Recurrent, br#"{"Id":"sc_1"}"#, None).unwrap();
        assert_eq!(n.object_id(b"x"), "sc_1");
        let n = Notice::parse(Kind::Recurrent, br#"{}"#, None).unwrap();
        assert!(n.object_id(b"x").starts_with("sha256:"));
    }

    #[test]
    fn a_stored_row_of_an_unknown_kind_is_ignored_and_a_purged_one_unreadable() {
        let stored = |event, body| Stored {
            event,
            object_id: "1",
            body,
            content_type: None,
        };
        assert!(matches!(
            restore(&stored("whatever", None)),
            Ok(Notification::Ignored(why)) if why == "event whatever is not handled"
        ));
        assert!(matches!(
            restore(&stored("pay", None)),
            Err(Unreadable::Purged)
        ));
        assert!(matches!(
            restore(&stored("refund", Some(br#"{"TransactionId":5}"#))),
            Ok(Notification::CloudPaymentsRefund(_))
        ));
    }
}
