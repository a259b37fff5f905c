//! YooKassa JSON → our types. Amounts are parsed exactly from their strings
//! (a float like `154.0` has been seen in the wild and is accepted, exactly).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::PaymentId;
use crate::domain::{Currency, Money, PaymentStatus, RefundStatus};
use crate::providers::{
    Cancellation, ProviderError, ProviderMethod, ProviderPayment, ProviderRefund,
};

fn invalid(what: &str) -> ProviderError {
    ProviderError::Invalid(what.to_owned())
}

/// Provider ids go into URL paths: accept only what YooKassa issues.
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn money(v: &Value) -> Result<Money, ProviderError> {
    let currency: Currency = v["currency"]
        .as_str()
        .ok_or_else(|| invalid("amount.currency"))?
        .parse()
        .map_err(|_| invalid("amount.currency"))?;
    let text = match &v["value"] {
        Value::String(s) => s.clone(),
        // serde_json keeps the literal digits of a number (arbitrary_precision is not
        // needed for two decimals): format it back without going through f64 math.
        Value::Number(n) => n.to_string(),
        _ => return Err(invalid("amount.value")),
    };
    Money::parse(&text, currency).map_err(|e| ProviderError::Invalid(format!("amount: {e}")))
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

pub fn payment(v: &Value) -> Result<ProviderPayment, ProviderError> {
    // An id we could not put in a URL makes the answer unreadable: stored, the
    // payment could never be re-read.
    let id = v["id"]
        .as_str()
        .filter(|id| is_safe_id(id))
        .ok_or_else(|| invalid("payment.id"))?
        .to_owned();
    let status = match v["status"].as_str() {
        Some("pending") => PaymentStatus::Pending,
        Some("waiting_for_capture") => PaymentStatus::WaitingForCapture,
        Some("succeeded") => PaymentStatus::Succeeded,
        Some("canceled") => PaymentStatus::Canceled,
        other => return Err(ProviderError::Invalid(format!("payment.status {other:?}"))),
    };
    let method = v
        .get("payment_method")
        .filter(|m| m.is_object())
        .map(|m| ProviderMethod {
            id: m["id"].as_str().unwrap_or_default().to_owned(),
            saved: m["saved"].as_bool().unwrap_or(false),
            title: m["title"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| {
                    m["card"]["last4"]
                        .as_str()
                        .map(|l| format!("Bank card *{l}"))
                })
                .unwrap_or_else(|| m["type"].as_str().unwrap_or("payment method").to_owned()),
        });
    let cancellation = v
        .get("cancellation_details")
        .filter(|c| c.is_object())
        .map(|c| Cancellation {
            party: c["party"].as_str().unwrap_or("unknown").to_owned(),
            reason: c["reason"].as_str().unwrap_or("unknown").to_owned(),
        });
    Ok(ProviderPayment {
        id,
        status,
        amount: money(&v["amount"])?,
        our_id: v["metadata"]["payment_id"]
            .as_str()
            .and_then(|s| s.parse::<PaymentId>().ok()),
        test: v["test"].as_bool().unwrap_or(false),
        account_id: v["recipient"]["account_id"].as_str().map(str::to_owned),
        captured_at: time(&v["captured_at"]),
        created_at: time(&v["created_at"]),
        confirmation_url: v["confirmation"]["confirmation_url"]
            .as_str()
            .map(str::to_owned),
        // The confirmation page belongs to the payment: nothing else to void.
        checkout_id: None,
        method,
        cancellation,
    })
}

pub fn refund(v: &Value) -> Result<ProviderRefund, ProviderError> {
    let status = match v["status"].as_str() {
        Some("pending") => RefundStatus::Pending,
        Some("succeeded") => RefundStatus::Succeeded,
        Some("canceled") => RefundStatus::Canceled,
        other => return Err(ProviderError::Invalid(format!("refund.status {other:?}"))),
    };
    Ok(ProviderRefund {
        id: v["id"]
            .as_str()
            .filter(|id| is_safe_id(id))
            .ok_or_else(|| invalid("refund.id"))?
            .to_owned(),
        payment_id: v["payment_id"]
            .as_str()
            .ok_or_else(|| invalid("refund.payment_id"))?
            .to_owned(),
        status,
        amount: money(&v["amount"])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_succeeded_payment() {
        let v = json!({
            "id": "2d9e-1", "status": "succeeded", "paid": true,
            "amount": {"value": "299.00", "currency": "RUB"},
            "income_amount": {"value": "288.54", "currency": "RUB"},
            "recipient": {"account_id": "100500", "gateway_id": "1"},
            "payment_method": {"type": "bank_card", "id": "pm-1", "saved": true, "title": "Bank card *4444",
                               "card": {"last4": "4444"}},
            "captured_at": "2026-11-27T10:00:01.123Z", "created_at": "2026-11-27T09:59:00.000Z",
            "test": true, "metadata": {"payment_id": "00000000-0000-4000-8000-000000000001"}
        });
        let p = payment(&v).unwrap();
        assert_eq!(p.status, PaymentStatus::Succeeded);
        assert_eq!(p.amount.minor(), 29_900, "the price, not income_amount");
        assert_eq!(p.account_id.as_deref(), Some("100500"));
        assert!(p.test);
        assert_eq!(p.method.unwrap().title, "Bank card *4444");
        assert!(p.captured_at.is_some());
        assert_eq!(
            p.our_id.unwrap().to_string(),
            "00000000-0000-4000-8000-000000000001"
        );
    }

    #[test]
    fn a_float_amount_is_read_exactly() {
        let m = money(&json!({"value": 154.0, "currency": "RUB"})).unwrap();
        assert_eq!(m.minor(), 15_400);
        let m = money(&json!({"value": 0.29, "currency": "RUB"})).unwrap();
        assert_eq!(m.minor(), 29);
    }

    #[test]
    fn unknown_statuses_and_cancellation_parties_are_handled() {
        assert!(payment(&json!({"id": "x", "status": "cancelled", "amount": {"value": "1.00", "currency": "RUB"}})).is_err());
        let p = payment(
            &json!({"id": "x", "status": "canceled", "amount": {"value": "1.00", "currency": "RUB"},
            "cancellation_details": {"party": "yandex_checkout", "reason": "insufficient_funds"}}),
        )
        .unwrap();
        assert_eq!(p.cancellation.unwrap().party, "yandex_checkout");
    }

    #[test]
    fn ids_that_could_escape_a_path_are_refused() {
        assert!(is_safe_id("2d9e5a6f-000f-5000-8000-1c36bb1c6a4d"));
        assert!(!is_safe_id("../refunds"));
        assert!(!is_safe_id("a?b"));
        assert!(!is_safe_id(""));
    }
}
