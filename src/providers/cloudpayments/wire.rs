//! CloudPayments bodies → our types: API `Model`s and notifications (JSON or
//! form-urlencoded) share field names, so one typed reader, [`Fields`], serves both.
//!
//! Amounts are decimals in major units, sent as JSON numbers (or strings in form
//! bodies): they are read from their literal text with `Money::parse`, never through
//! float arithmetic.

use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::domain::PaymentId;
use crate::domain::{Currency, Money, PaymentStatus, RefundStatus};
use crate::providers::{
    Cancellation, ProviderError, ProviderMethod, ProviderPayment, ProviderRefund,
};

fn invalid(what: impl Into<String>) -> ProviderError {
    ProviderError::Invalid(what.into())
}

/// The notification kinds, as the last segment of `/webhooks/cloudpayments/{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(as = CloudPaymentsKind, rename_all = "lowercase")]
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
    text_of(fields.get(name)?)
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A field as [`text`] reads it.
fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(text_of(&Value::deserialize(d)?))
}

/// The fields of a transaction, as API `Model`s and notifications name them. Every
/// field is read as [`text`] reads it (JSON numbers and booleans by their literal
/// text, form values as sent, empty ones absent), so a form body and a JSON body
/// read the same. Fields not listed are stored with the notification and not read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = CloudPaymentsNotification)]
pub struct Fields {
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<i64>)]
    pub transaction_id: Option<String>,
    /// A refund's: the transaction it gives money back from.
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<i64>)]
    pub payment_transaction_id: Option<String>,
    /// Our payment id.
    #[serde(default, deserialize_with = "lenient")]
    pub invoice_id: Option<String>,
    /// Our user id.
    #[serde(default, deserialize_with = "lenient")]
    pub account_id: Option<String>,
    /// A subscription's id (`recurrent`).
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    /// Major units (`299.00`): a JSON number, or its text in a form body; read from
    /// its literal digits, never as a float.
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<f64>)]
    pub amount: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub status: Option<String>,
    /// A JSON boolean, `1`/`0`, or form text (`1`, `True`).
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<bool>)]
    pub test_mode: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<i64>)]
    pub reason_code: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub reason: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub token: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub card_last_four: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub confirm_date_iso: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub auth_date_iso: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub date_time: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub created_date_iso: Option<String>,
}

impl Fields {
    /// The typed fields of a JSON object (never fails: every field is lenient).
    pub fn from_map(fields: &Map<String, Value>) -> Fields {
        Fields::deserialize(&Value::Object(fields.clone())).unwrap_or_default()
    }

    /// `Amount` + `Currency`, exactly. serde_json keeps a number's shortest
    /// round-trip text (`299.0`, `0.29`), which is the decimal that was sent for
    /// two-decimal values.
    pub fn money(&self) -> Result<Money, ProviderError> {
        let currency: Currency = self
            .currency
            .as_deref()
            .ok_or_else(|| invalid("Currency is missing"))?
            .parse()
            .map_err(|e| invalid(format!("Currency: {e}")))?;
        let value = self
            .amount
            .as_deref()
            .ok_or_else(|| invalid("Amount is missing"))?;
        Money::parse(value, currency).map_err(|e| invalid(format!("Amount: {e}")))
    }

    /// `TestMode` arrives as a JSON bool, `1`/`0`, or form text (`1`, `True`).
    pub fn test_mode(&self) -> bool {
        matches!(
            self.test_mode
                .as_deref()
                .map(|t| t.to_ascii_lowercase())
                .as_deref(),
            Some("1" | "true")
        )
    }

    /// A decline, keeping CloudPayments' own code and text in `party` (free text
    /// there), so the mapped `reason` stays in the vocabulary the renewal logic
    /// understands.
    pub fn decline(&self) -> Cancellation {
        let code = self
            .reason_code
            .as_deref()
            .and_then(|c| c.parse::<i64>().ok());
        let original = self
            .reason
            .clone()
            .unwrap_or_else(|| "no reason given".into());
        Cancellation {
            party: format!(
                "payment_network (CloudPayments {} {original})",
                code.map(|c| c.to_string()).unwrap_or_else(|| "?".into())
            ),
            reason: decline_reason(code).to_owned(),
        }
    }

    /// The transaction as a payment. `default_status` applies when the object
    /// carries no `Status` (e.g. a `Success:false` charge answer).
    pub fn payment(
        &self,
        default_status: Option<PaymentStatus>,
    ) -> Result<ProviderPayment, ProviderError> {
        let id = self
            .transaction_id
            .clone()
            .ok_or_else(|| invalid("TransactionId is missing"))?;
        let status = match self.status.as_deref() {
            Some(s) => status(s).ok_or_else(|| invalid(format!("Status {s:?}")))?,
            None => default_status.ok_or_else(|| invalid("Status is missing"))?,
        };
        let cancellation = match (status, self.status.as_deref()) {
            (PaymentStatus::Canceled, Some("Cancelled")) => Some(canceled_by_merchant()),
            (PaymentStatus::Canceled, _) => Some(self.decline()),
            _ => None,
        };
        let method = self.token.clone().map(|token| ProviderMethod {
            id: token,
            // A CloudPayments token is made to be charged again (payments/tokens/charge).
            saved: true,
            title: match &self.card_last_four {
                Some(last4) => format!("Bank card *{last4}"),
                None => "Bank card".into(),
            },
        });
        let captured_at = if status == PaymentStatus::Succeeded {
            time(&self.confirm_date_iso)
                .or_else(|| time(&self.auth_date_iso))
                .or_else(|| time(&self.date_time))
        } else {
            None
        };
        Ok(ProviderPayment {
            id,
            status,
            amount: self.money()?,
            our_id: self
                .invoice_id
                .as_deref()
                .and_then(|s| s.parse::<PaymentId>().ok()),
            test: self.test_mode(),
            // For CloudPayments this is the payer account: our user id (settle checks it).
            account_id: Some(self.account_id.clone().unwrap_or_default()),
            captured_at,
            created_at: time(&self.created_date_iso).or_else(|| time(&self.date_time)),
            confirmation_url: None,
            checkout_id: None,
            method,
            cancellation,
        })
    }
}

/// `Amount` + `Currency`, exactly (see [`Fields::money`]).
pub fn money(fields: &Map<String, Value>) -> Result<Money, ProviderError> {
    Fields::from_map(fields).money()
}

/// CloudPayments times are UTC without an offset: `2026-11-27 10:00:01` in
/// notifications, `2026-11-27T10:00:01` in `…DateIso` API fields.
fn time(text: &Option<String>) -> Option<DateTime<Utc>> {
    let t = text.as_deref()?;
    if let Ok(with_offset) = DateTime::parse_from_rfc3339(t) {
        return Some(with_offset.with_timezone(&Utc));
    }
    [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
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

fn canceled_by_merchant() -> Cancellation {
    Cancellation {
        party: "merchant".into(),
        reason: "canceled_by_merchant".into(),
    }
}

/// A transaction (API `Model`); see [`Fields::payment`].
pub fn transaction(
    fields: &Map<String, Value>,
    default_status: Option<PaymentStatus>,
) -> Result<ProviderPayment, ProviderError> {
    Fields::from_map(fields).payment(default_status)
}

/// A `Refund` operation of `payments/list`: its own `TransactionId`, the refunded
/// payment's `PaymentTransactionId`, `Amount` and `Currency`. Listed operations are
/// done (`Completed`, the only status a refund operation has).
pub fn listed_refund(fields: &Map<String, Value>) -> Result<ProviderRefund, ProviderError> {
    let id = |name: &str| {
        text(fields, name)
            .filter(|t| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| ProviderError::Invalid(format!("refund operation without {name}")))
    };
    Ok(ProviderRefund {
        id: id("TransactionId")?,
        payment_id: id("PaymentTransactionId")?,
        status: RefundStatus::Succeeded,
        amount: money(fields)?,
    })
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
    fn a_listed_refund_names_itself_and_its_payment_by_number() {
        let r = listed_refund(&fields(json!({
            "TransactionId": 905, "PaymentTransactionId": "504", "Amount": 100.00,
            "Currency": "RUB", "OperationType": "Refund", "Status": "Completed"
        })))
        .unwrap();
        assert_eq!((r.id.as_str(), r.payment_id.as_str()), ("905", "504"));
        assert_eq!(r.amount.minor(), 10_000);
        assert_eq!(r.status, RefundStatus::Succeeded);
        for broken in [
            json!({"PaymentTransactionId": 504, "Amount": 1, "Currency": "RUB"}),
            json!({"TransactionId": 905, "PaymentTransactionId": "../504", "Amount": 1, "Currency": "RUB"}),
            json!({"TransactionId": 905, "PaymentTransactionId": 504, "Amount": 1.001, "Currency": "RUB"}),
        ] {
            assert!(listed_refund(&fields(broken.clone())).is_err(), "{broken}");
        }
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
        let c = Fields::from_map(&fields(
            json!({"ReasonCode": 5051, "Reason": "InsufficientFunds"}),
        ))
        .decline();
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
}
