//! CloudPayments bodies → our types: API `Model`s and notifications (JSON or
//! form-urlencoded) share field names, so one reader serves both.
//!
//! Amounts are decimals in major units, sent as JSON numbers (or strings in form
//! bodies): they are read from their literal text with `Money::parse`, never through
//! float arithmetic.

use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::domain::{Currency, Money, PaymentStatus};
use crate::providers::{Cancellation, ProviderError, ProviderMethod, ProviderPayment};

fn invalid(what: impl Into<String>) -> ProviderError {
    ProviderError::Invalid(what.into())
}

/// The notification kinds, as the last segment of `/webhooks/cloudpayments/{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Check,
    Pay,
    Fail,
    Confirm,
    Refund,
    Cancel,
    Recurrent,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::Check,
        Kind::Pay,
        Kind::Fail,
        Kind::Confirm,
        Kind::Refund,
        Kind::Cancel,
        Kind::Recurrent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Check => "check",
            Kind::Pay => "pay",
            Kind::Fail => "fail",
            Kind::Confirm => "confirm",
            Kind::Refund => "refund",
            Kind::Cancel => "cancel",
            Kind::Recurrent => "recurrent",
        }
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown CloudPayments notification kind {s:?}"))
    }
}

/// A field as text: strings as they are, numbers by their literal digits, booleans
/// as `true`/`false`; empty strings and nulls are absent.
pub fn text(fields: &Map<String, Value>, name: &str) -> Option<String> {
    match fields.get(name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `Amount` + `Currency`, exactly. serde_json keeps a number's shortest round-trip
/// text (`299.0`, `0.29`), which is the decimal that was sent for two-decimal values.
pub fn money(fields: &Map<String, Value>) -> Result<Money, ProviderError> {
    let currency: Currency = text(fields, "Currency")
        .ok_or_else(|| invalid("Currency is missing"))?
        .parse()
        .map_err(|e| invalid(format!("Currency: {e}")))?;
    let value = text(fields, "Amount").ok_or_else(|| invalid("Amount is missing"))?;
    Money::parse(&value, currency).map_err(|e| invalid(format!("Amount: {e}")))
}

/// `TestMode` arrives as a JSON bool, `1`/`0`, or form text (`1`, `True`).
pub fn test_mode(fields: &Map<String, Value>) -> bool {
    matches!(
        text(fields, "TestMode")
            .map(|t| t.to_ascii_lowercase())
            .as_deref(),
        Some("1" | "true")
    )
}

/// CloudPayments times are UTC without an offset: `2026-11-27 10:00:01` in
/// notifications, `2026-11-27T10:00:01` in `…DateIso` API fields.
fn time(fields: &Map<String, Value>, name: &str) -> Option<DateTime<Utc>> {
    let t = text(fields, name)?;
    if let Ok(with_offset) = DateTime::parse_from_rfc3339(&t) {
        return Some(with_offset.with_timezone(&Utc));
    }
    [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(&t, f).ok())
    .map(|n| n.and_utc())
}

/// A transaction `Status` → ours. `Refunded` is a payment that succeeded and was
/// given back later; refunds are tracked as refunds, not as a payment status here.
pub fn status(s: &str) -> Option<PaymentStatus> {
    match s {
        "Completed" | "Refunded" => Some(PaymentStatus::Succeeded),
        "Authorized" => Some(PaymentStatus::WaitingForCapture),
        "Declined" | "Cancelled" => Some(PaymentStatus::Canceled),
        "AwaitingAuthentication" => Some(PaymentStatus::Pending),
        _ => None,
    }
}

/// CloudPayments decline codes → our (YooKassa-shaped) vocabulary, which decides
/// whether a renewal is retried (`card_expired`, `payment_method_restricted` are hard).
pub fn decline_reason(code: Option<i64>) -> &'static str {
    match code {
        Some(5001) => "call_issuer",
        Some(5014 | 5015) => "invalid_card_number",
        Some(5033 | 5054) => "card_expired",
        Some(5034 | 5059 | 5300) => "fraud_suspected",
        // Lost or stolen cards will never pay again: a hard decline like a restriction.
        Some(5041 | 5043 | 5057 | 5062) => "payment_method_restricted",
        Some(5051) => "insufficient_funds",
        Some(5061) => "payment_method_limit_exceeded",
        Some(5082) => "invalid_csc",
        Some(5091 | 5092) => "issuer_unavailable",
        Some(5206 | 5207) => "3d_secure_failed",
        // 5005, 5006, 5012, 5036, 5065, 5096, 5204 and anything unknown.
        _ => "general_decline",
    }
}

/// A decline, keeping CloudPayments' own code and text in `party` (free text there),
/// so the mapped `reason` stays in the vocabulary the renewal logic understands.
pub fn decline(fields: &Map<String, Value>) -> Cancellation {
    let code = text(fields, "ReasonCode").and_then(|c| c.parse::<i64>().ok());
    let original = text(fields, "Reason").unwrap_or_else(|| "no reason given".into());
    Cancellation {
        party: format!(
            "payment_network (CloudPayments {} {original})",
            code.map(|c| c.to_string()).unwrap_or_else(|| "?".into())
        ),
        reason: decline_reason(code).to_owned(),
    }
}

fn canceled_by_merchant() -> Cancellation {
    Cancellation {
        party: "merchant".into(),
        reason: "canceled_by_merchant".into(),
    }
}

/// A transaction (API `Model` or notification fields). `default_status` applies
/// when the object carries no `Status` (e.g. a `Success:false` charge answer).
pub fn transaction(
    fields: &Map<String, Value>,
    default_status: Option<PaymentStatus>,
) -> Result<ProviderPayment, ProviderError> {
    let id = text(fields, "TransactionId").ok_or_else(|| invalid("TransactionId is missing"))?;
    let status = match text(fields, "Status") {
        Some(s) => status(&s).ok_or_else(|| invalid(format!("Status {s:?}")))?,
        None => default_status.ok_or_else(|| invalid("Status is missing"))?,
    };
    let cancellation = match (status, text(fields, "Status").as_deref()) {
        (PaymentStatus::Canceled, Some("Cancelled")) => Some(canceled_by_merchant()),
        (PaymentStatus::Canceled, _) => Some(decline(fields)),
        _ => None,
    };
    let method = text(fields, "Token").map(|token| ProviderMethod {
        id: token,
        // A CloudPayments token is made to be charged again (payments/tokens/charge).
        saved: true,
        title: match text(fields, "CardLastFour") {
            Some(last4) => format!("Bank card *{last4}"),
            None => "Bank card".into(),
        },
    });
    let captured_at = if status == PaymentStatus::Succeeded {
        time(fields, "ConfirmDateIso")
            .or_else(|| time(fields, "AuthDateIso"))
            .or_else(|| time(fields, "DateTime"))
    } else {
        None
    };
    Ok(ProviderPayment {
        id,
        status,
        amount: money(fields)?,
        our_id: text(fields, "InvoiceId").and_then(|s| Uuid::parse_str(&s).ok()),
        test: test_mode(fields),
        // For CloudPayments this is the payer account: our user id (settle checks it).
        account_id: Some(text(fields, "AccountId").unwrap_or_default()),
        captured_at,
        created_at: time(fields, "CreatedDateIso").or_else(|| time(fields, "DateTime")),
        confirmation_url: None,
        method,
        cancellation,
    })
}

/// A notification: its kind and its fields, from a JSON object or a form body.
#[derive(Debug, Clone)]
pub struct Notification {
    pub kind: Kind,
    pub fields: Map<String, Value>,
}

impl Notification {
    /// Reads the body by its Content-Type (JSON or form-urlencoded); without a usable
    /// Content-Type, a body that starts with `{` is JSON and anything else a form.
    pub fn parse(
        kind: Kind,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Result<Notification, ProviderError> {
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
        let fields = if json {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(invalid("notification is not a JSON object")),
                Err(e) => return Err(invalid(format!("notification is not JSON: {e}"))),
            }
        } else {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|e| invalid(format!("notification is not a form: {e}")))?;
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect()
        };
        Ok(Notification { kind, fields })
    }

    pub fn text(&self, name: &str) -> Option<String> {
        text(&self.fields, name)
    }

    pub fn transaction_id(&self) -> Option<String> {
        self.text("TransactionId")
    }

    pub fn invoice_id(&self) -> Option<String> {
        self.text("InvoiceId")
    }

    /// Our payment id, when `InvoiceId` is one.
    pub fn our_id(&self) -> Option<Uuid> {
        self.invoice_id().and_then(|s| Uuid::parse_str(&s).ok())
    }

    /// Our user id, when `AccountId` is one.
    pub fn user_id(&self) -> Option<Uuid> {
        self.text("AccountId")
            .and_then(|s| Uuid::parse_str(&s).ok())
    }

    pub fn amount(&self) -> Result<Money, ProviderError> {
        money(&self.fields)
    }

    /// The amount in the given currency when the notification names none (refunds).
    pub fn amount_in(&self, currency: Currency) -> Result<Money, ProviderError> {
        match self.text("Currency") {
            Some(_) => self.amount(),
            None => {
                let value = self
                    .text("Amount")
                    .ok_or_else(|| invalid("Amount is missing"))?;
                Money::parse(&value, currency).map_err(|e| invalid(format!("Amount: {e}")))
            }
        }
    }

    pub fn test_mode(&self) -> bool {
        test_mode(&self.fields)
    }

    /// The inbox key: `TransactionId`, else `InvoiceId`, else the subscription `Id`
    /// (`recurrent`), else a hash of the body so unrelated bodies never share a row.
    pub fn object_id(&self, body: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        self.transaction_id()
            .or_else(|| self.invoice_id())
            .or_else(|| self.text("Id"))
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
        if self.kind == Kind::Cancel && self.text("Currency").is_none() {
            fields.insert("Currency".into(), Value::String(currency.code().into()));
        }
        let (status, keep_id) = match self.kind {
            Kind::Pay => (
                match self.text("Status") {
                    // We never ask for two-stage payments; an authorised one grants nothing.
                    Some(s) if s == "Authorized" => PaymentStatus::WaitingForCapture,
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
        fields.insert(
            "Status".into(),
            Value::String(
                match (self.kind, status) {
                    (Kind::Cancel, _) => "Cancelled",
                    (_, PaymentStatus::Canceled) => "Declined",
                    (_, PaymentStatus::WaitingForCapture) => "Authorized",
                    _ => "Completed",
                }
                .into(),
            ),
        );
        // A fail or cancel needs no id (it is dropped below); pay and confirm do.
        if !keep_id && text(&fields, "TransactionId").is_none() {
            fields.insert("TransactionId".into(), Value::String("-".into()));
        }
        let mut p = transaction(&fields, None)?;
        if !keep_id {
            p.id = String::new();
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn amounts_are_read_exactly_from_numbers_and_strings() {
        for (amount, minor) in [
            (json!(299.00), 29_900),
            (json!(0.29), 29),
            (json!(1234.56), 123_456),
            (json!(15), 1_500),
            (json!("299.00"), 29_900),
        ] {
            let m = money(&fields(json!({"Amount": amount, "Currency": "RUB"}))).unwrap();
            assert_eq!(m.minor(), minor, "{amount}");
        }
        assert!(money(&fields(json!({"Amount": 1.001, "Currency": "RUB"}))).is_err());
        assert!(money(&fields(json!({"Amount": 10, "Currency": "XYZ"}))).is_err());
    }

    #[test]
    fn decline_codes_map_to_our_vocabulary_and_keep_the_original() {
        assert_eq!(decline_reason(Some(5051)), "insufficient_funds");
        assert_eq!(decline_reason(Some(5054)), "card_expired");
        assert_eq!(decline_reason(Some(5057)), "payment_method_restricted");
        assert_eq!(decline_reason(Some(5062)), "payment_method_restricted");
        assert_eq!(decline_reason(Some(5036)), "general_decline");
        assert_eq!(decline_reason(Some(5065)), "general_decline");
        assert_eq!(decline_reason(None), "general_decline");
        let c = decline(&fields(
            json!({"ReasonCode": 5051, "Reason": "InsufficientFunds"}),
        ));
        assert_eq!(c.reason, "insufficient_funds");
        assert!(c.party.contains("5051 InsufficientFunds"), "{}", c.party);
    }

    #[test]
    fn a_completed_transaction_reads_as_succeeded_with_its_token() {
        let p = transaction(
            &fields(json!({
                "TransactionId": 504, "Amount": 299.0, "Currency": "RUB", "Status": "Completed",
                "InvoiceId": "00000000-0000-4000-8000-000000000001", "AccountId": "u1",
                "Token": "tk_1", "CardLastFour": "4444", "TestMode": true,
                "ConfirmDateIso": "2026-11-27T10:00:01"
            })),
            None,
        )
        .unwrap();
        assert_eq!(p.id, "504");
        assert_eq!(p.status, PaymentStatus::Succeeded);
        assert_eq!(p.amount.minor(), 29_900);
        assert!(p.test);
        assert_eq!(p.account_id.as_deref(), Some("u1"));
        let m = p.method.unwrap();
        assert_eq!((m.id.as_str(), m.saved), ("tk_1", true));
        assert_eq!(m.title, "Bank card *4444");
        assert_eq!(
            p.captured_at.unwrap().to_rfc3339(),
            "2026-11-27T10:00:01+00:00"
        );
    }

    #[test]
    fn statuses_map_and_unknown_ones_are_refused() {
        assert_eq!(status("Authorized"), Some(PaymentStatus::WaitingForCapture));
        assert_eq!(status("Declined"), Some(PaymentStatus::Canceled));
        assert_eq!(status("Cancelled"), Some(PaymentStatus::Canceled));
        assert_eq!(
            status("AwaitingAuthentication"),
            Some(PaymentStatus::Pending)
        );
        assert_eq!(status("Whatever"), None);
    }

    #[test]
    fn form_and_json_notifications_read_the_same() {
        let form =
            b"TransactionId=77&Amount=299.00&Currency=RUB&InvoiceId=x&TestMode=1&AccountId=a";
        let n = Notification::parse(
            Kind::Pay,
            form,
            Some("application/x-www-form-urlencoded; charset=utf-8"),
        )
        .unwrap();
        let j = Notification::parse(
            Kind::Pay,
            br#"{"TransactionId":77,"Amount":299.00,"Currency":"RUB","InvoiceId":"x","TestMode":true,"AccountId":"a"}"#,
            None,
        )
        .unwrap();
        for n in [n, j] {
            assert_eq!(n.transaction_id().as_deref(), Some("77"));
            assert_eq!(n.amount().unwrap().minor(), 29_900);
            assert!(n.test_mode());
            let p = n.payment(Currency::Rub).unwrap();
            assert_eq!((p.id.as_str(), p.status), ("77", PaymentStatus::Succeeded));
        }
    }

    #[test]
    fn a_fail_notification_is_a_decline_without_an_id_to_adopt() {
        let n = Notification::parse(
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
        let n = Notification::parse(
            Kind::Cancel,
            br#"{"TransactionId":79,"Amount":299.00,"InvoiceId":"x"}"#,
            None,
        )
        .unwrap();
        let p = n.payment(Currency::Rub).unwrap();
        assert_eq!(p.status, PaymentStatus::Canceled);
        assert_eq!(p.amount.minor(), 29_900);
        assert_eq!(p.cancellation.unwrap().reason, "canceled_by_merchant");
        let pay = Notification::parse(Kind::Pay, br#"{"TransactionId":80,"Amount":299.00}"#, None)
            .unwrap();
        assert!(
            pay.payment(Currency::Rub).is_err(),
            "pay must name its currency"
        );
    }

    #[test]
    fn object_ids_fall_back_from_transaction_to_invoice_to_a_hash() {
        let n = Notification::parse(Kind::Check, br#"{"InvoiceId":"inv-1"}"#, None).unwrap();
        assert_eq!(n.object_id(b"x"), "inv-1");
        let n = Notification::parse(Kind::Recurrent, br#"{"Id":"sc_1"}"#, None).unwrap();
        assert_eq!(n.object_id(b"x"), "sc_1");
        let n = Notification::parse(Kind::Recurrent, br#"{}"#, None).unwrap();
        assert!(n.object_id(b"x").starts_with("sha256:"));
    }
}
