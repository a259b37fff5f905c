//! CloudPayments API client. Every call is a POST with a JSON body and HTTP Basic
//! auth (Public ID / API secret), answered `{"Success", "Message", "Model"}`.
//! Mutating calls carry our idempotence key as `X-Request-ID`, re-sent unchanged on
//! network errors, 5xx, 429 and unreadable answers, within bounded timeouts. Only a
//! readable refusal is definite (see `ProviderError`).
//!
//! How our payment rows meet CloudPayments:
//! - A purchase is an **order** (`orders/create`): a payment page, not a payment.
//!   `create_payment` answers `Pending` with an **empty id**, so
//!   `payments.provider_payment_id` stays NULL until the `pay` notification: then
//!   `settle::apply` adopts its `TransactionId` (the id refunds and `payments/get`
//!   need). The order id is never stored, so it cannot collide with transaction ids.
//! - A renewal is a **token charge** (`payments/tokens/charge`): synchronous, its
//!   `TransactionId` is the provider id at once.
//! - `InvoiceId` = our payment id, `AccountId` = our user id, on every call.

pub mod signature;
pub mod webhook;
pub mod wire;

pub use webhook::{CheckCode, Notice};
pub use wire::Kind;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Map, Value};

use super::{
    CreatePayment, CreateRefund, Provider, ProviderError, ProviderPayment, ProviderRefund,
    RetryPolicy, METHOD_REFUSED,
};
use crate::config::Secret;
use crate::domain::receipt::{Receipt, VatCode};
use crate::domain::PaymentId;
use crate::domain::{Money, PaySystem, PaymentStatus, RefundStatus};

pub struct CloudPayments {
    http: reqwest::Client,
    base: String,
    public_id: String,
    secret: Secret,
    /// Timeouts and re-sends (same X-Request-ID) of a request whose outcome is unknown.
    policy: RetryPolicy,
}

/// The envelope every method answers with.
#[derive(Debug)]
struct Answer {
    success: bool,
    message: Option<String>,
    model: Value,
}

impl Answer {
    fn model_fields(&self) -> Option<&Map<String, Value>> {
        self.model.as_object()
    }
}

/// An amount as a JSON number in major units, from its exact decimal text.
/// `JsonData` carrying a 54-FZ receipt: `{"CloudPayments": {"CustomerReceipt":
/// …}}`, PascalCase outside and camelCase inside as CloudPayments' own example
/// writes it. Its codes differ from ours (YooKassa's): see [`vat`].
pub fn receipt_data(r: &Receipt) -> Value {
    let items: Vec<Value> = r
        .items
        .iter()
        .map(|i| {
            json!({
                "label": i.description,
                "price": amount_json(i.amount),
                "quantity": i.quantity,
                "amount": amount_json(Money::new(i.amount.minor() * i64::from(i.quantity), i.amount.currency())),
                "vat": vat(i.vat_code),
                // 4: full payment (tag 1214); 4: a service (tag 1212).
                "method": if i.payment_mode == "full_payment" { 4 } else { 0 },
                "object": if i.payment_subject == "service" { 4 } else { 0 },
            })
        })
        .collect();
    let currency = r
        .items
        .first()
        .map_or(crate::domain::Currency::Rub, |i| i.amount.currency());
    let mut receipt = json!({
        "Items": items,
        "isBso": false,
        "amounts": {
            "electronic": amount_json(Money::new(r.total_minor(), currency)),
            "advancePayment": 0, "credit": 0, "provision": 0,
        },
    });
    if let Some(e) = &r.customer.email {
        receipt["email"] = json!(e.as_str());
    }
    if let Some(p) = &r.customer.phone {
        receipt["phone"] = json!(format!("+{}", p.digits()));
    }
    if let Some(t) = r.tax_system_code {
        // CloudPayments counts the same list from 0.
        receipt["taxationSystem"] = json!(t.code() - 1);
    }
    json!({"CloudPayments": {"CustomerReceipt": receipt}})
}

/// Our VAT code (YooKassa's 1..12) as CloudPayments' `vat`: null is "no VAT",
/// 0 is 0 %, then the rate (10, 20, 5, 7, 22) or the calculated one (110, 120,
/// 105, 107, 122).
pub fn vat(code: VatCode) -> Value {
    match code.code() {
        2 => json!(0),
        3 => json!(10),
        4 => json!(20),
        5 => json!(110),
        6 => json!(120),
        7 => json!(5),
        8 => json!(7),
        9 => json!(105),
        10 => json!(107),
        11 => json!(22),
        12 => json!(122),
        _ => Value::Null,
    }
}

pub fn amount_json(m: Money) -> Value {
    serde_json::from_str(&m.value_string()).expect("a decimal is a JSON number")
}

/// A TransactionId is an integer at CloudPayments; send it as one when it is.
/// The most days one refund sweep lists (one `payments/list` call each).
pub const LIST_DAYS: u64 = 35;

fn transaction_json(id: &str) -> Value {
    id.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::String(id.to_owned()))
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl CloudPayments {
    pub fn new(base: &str, public_id: &str, secret: Secret) -> CloudPayments {
        let policy = RetryPolicy::DEFAULT;
        let http = policy.client();
        CloudPayments {
            http,
            base: base.trim_end_matches('/').to_owned(),
            public_id: public_id.to_owned(),
            secret,
            policy,
        }
    }

    /// A shorter wait for one answer (`PROVIDER_TIMEOUT`; the simulator's is short).
    /// Never longer than the default: idempotency-key leases are derived from it.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.policy.timeout = timeout.min(RetryPolicy::DEFAULT.timeout);
        self.http = self.policy.client();
        self
    }

    /// Shorter waits for tests.
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.policy.retries = retries;
        self.policy.backoff = backoff;
        self
    }

    async fn call(
        &self,
        method: &str,
        request_id: Option<&str>,
        body: &Value,
    ) -> Result<Answer, ProviderError> {
        let url = format!("{}/{method}", self.base);
        let mut attempt = 0;
        loop {
            let mut req = self
                .http
                .post(&url)
                .basic_auth(&self.public_id, Some(self.secret.expose()))
                .json(body);
            if let Some(id) = request_id {
                req = req.header("X-Request-ID", id);
            }
            let outcome = match req.send().await {
                Err(e) => Err(ProviderError::Unavailable(format!("{method}: {e}"))),
                Ok(resp) => {
                    let status = resp.status();
                    match resp.text().await {
                        // A body cut off or timed out after the status line: unknown.
                        Err(e) => Err(ProviderError::Unavailable(format!(
                            "{method}: HTTP {status}, body unreadable: {e}"
                        ))),
                        Ok(text) => classify(method, status, &text),
                    }
                }
            };
            match outcome {
                Err(e) if e.is_transient() && attempt < self.policy.retries => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "CloudPayments call failed, retrying with the same X-Request-ID");
                    tokio::time::sleep(self.policy.wait(attempt, None)).await;
                }
                other => return other,
            }
        }
    }

    /// A charge's answer: a transaction (completed or declined), or a refusal.
    fn charge_result(
        req: &CreatePayment,
        answer: Answer,
    ) -> Result<ProviderPayment, ProviderError> {
        let Some(model) = answer
            .model_fields()
            .filter(|m| m.contains_key("TransactionId") || m.contains_key("ReasonCode"))
        else {
            // No transaction was made. A refusal that names the token is about the
            // viewer's card; anything else we cannot pin on the viewer is ours.
            let message = answer.message.unwrap_or_default();
            let code = if message.to_ascii_lowercase().contains("token") {
                METHOD_REFUSED
            } else {
                "charge_refused"
            };
            return Err(ProviderError::Rejected {
                code: code.into(),
                description: message,
            });
        };
        // Fill what a terse answer may leave out from the request we sent.
        let mut fields = model.clone();
        let defaults = [
            ("Amount", amount_json(req.amount)),
            ("Currency", json!(req.amount.currency().code())),
            ("InvoiceId", json!(req.our_id.to_string())),
            ("AccountId", json!(req.user_id.to_string())),
            ("TransactionId", json!("")),
        ];
        for (k, v) in defaults {
            fields.entry(k).or_insert(v);
        }
        let default_status = if answer.success {
            PaymentStatus::Succeeded
        } else {
            PaymentStatus::Canceled
        };
        if wire::text(&fields, "TransactionId").is_none()
            && default_status == PaymentStatus::Canceled
        {
            // A decline without a transaction: keep the idempotence key as its id.
            fields.insert(
                "TransactionId".into(),
                json!(format!("declined:{}", req.idempotence_key)),
            );
        }
        wire::transaction(&fields, Some(default_status)).map_err(ProviderError::unreadable)
    }
}

/// Reads one answer. A 2xx must be the `{"Success", "Message", "Model"}` envelope; a
/// 4xx is a definite refusal only with a JSON body; a 5xx, 429, or anything we
/// cannot read leaves the outcome unknown.
fn classify(method: &str, status: StatusCode, text: &str) -> Result<Answer, ProviderError> {
    let parsed: Option<Value> = serde_json::from_str::<Value>(text)
        .ok()
        .filter(Value::is_object);
    let unknown = |why: String| Err(ProviderError::Unavailable(format!("{method}: {why}")));
    match status {
        s if s.is_success() => match parsed.filter(|v| v["Success"].is_boolean()) {
            Some(v) => Ok(Answer {
                success: v["Success"].as_bool().unwrap_or(false),
                message: v["Message"].as_str().map(str::to_owned),
                model: v["Model"].clone(),
            }),
            None => unknown(format!("HTTP {s} with an unreadable body")),
        },
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
            unknown(format!("HTTP {s}"))
        }
        s if s.is_client_error() => match parsed {
            Some(v) => Err(ProviderError::Rejected {
                code: match s {
                    StatusCode::UNAUTHORIZED => "invalid_credentials".into(),
                    StatusCode::FORBIDDEN => "forbidden".into(),
                    other => other.as_str().to_owned(),
                },
                description: truncate(v["Message"].as_str().unwrap_or(text), 200),
            }),
            None => unknown(format!("HTTP {s} without a readable error")),
        },
        s => unknown(format!("unexpected HTTP {s}")),
    }
}

#[async_trait]
impl Provider for CloudPayments {
    fn pay_system(&self) -> PaySystem {
        PaySystem::CloudPayments
    }

    async fn create_payment(&self, req: &CreatePayment) -> Result<ProviderPayment, ProviderError> {
        let common = |body: &mut Value| {
            body["Amount"] = amount_json(req.amount);
            body["Currency"] = json!(req.amount.currency().code());
            body["Description"] = json!(truncate(&req.description, 200));
            body["InvoiceId"] = json!(req.our_id.to_string());
            body["AccountId"] = json!(req.user_id.to_string());
            if let Some(r) = &req.receipt {
                body["JsonData"] = receipt_data(r);
            }
        };
        if let Some(token) = &req.saved_method_id {
            // A renewal: no viewer present, settled synchronously.
            let mut body = json!({"Token": token});
            common(&mut body);
            let answer = self
                .call("payments/tokens/charge", Some(&req.idempotence_key), &body)
                .await?;
            return Self::charge_result(req, answer);
        }
        let mut body = json!({});
        common(&mut body);
        let answer = self
            .call("orders/create", Some(&req.idempotence_key), &body)
            .await?;
        let url = answer.model["Url"].as_str().filter(|_| answer.success);
        let Some(url) = url else {
            return Err(ProviderError::Rejected {
                code: "order_refused".into(),
                description: answer.message.unwrap_or_default(),
            });
        };
        Ok(ProviderPayment {
            // Not a payment yet: the `pay` notification's TransactionId becomes the id.
            id: String::new(),
            status: PaymentStatus::Pending,
            amount: req.amount,
            our_id: Some(req.our_id),
            test: false,
            account_id: Some(req.user_id.to_string()),
            captured_at: None,
            created_at: None,
            confirmation_url: Some(url.to_owned()),
            checkout_id: answer.model["Id"].as_str().map(str::to_owned),
            method: None,
            cancellation: None,
        })
    }

    async fn get_payment(&self, provider_id: &str) -> Result<ProviderPayment, ProviderError> {
        if provider_id.is_empty() || provider_id.len() > 64 {
            return Err(ProviderError::NotFound);
        }
        let answer = self
            .call(
                "payments/get",
                None,
                &json!({"TransactionId": transaction_json(provider_id)}),
            )
            .await?;
        // A declined transaction comes back with Success:false and its Model.
        match answer
            .model_fields()
            .filter(|m| m.contains_key("TransactionId"))
        {
            Some(model) => wire::transaction(model, None).map_err(ProviderError::unreadable),
            None => Err(ProviderError::NotFound),
        }
    }

    /// `payments/find` searches by InvoiceId alone: the window is not needed.
    async fn find_payment(
        &self,
        our_id: PaymentId,
        _from: DateTime<Utc>,
        _to: DateTime<Utc>,
    ) -> Result<Option<ProviderPayment>, ProviderError> {
        let answer = self
            .call(
                "payments/find",
                None,
                &json!({"InvoiceId": our_id.to_string()}),
            )
            .await?;
        // Usually one Model (the latest transaction); accept a list and prefer the
        // completed one. A refund transaction says nothing about the payment's state.
        let candidates: Vec<&Map<String, Value>> = match &answer.model {
            Value::Array(items) => items.iter().filter_map(Value::as_object).collect(),
            Value::Object(m) => vec![m],
            _ => Vec::new(),
        };
        let payments: Vec<&Map<String, Value>> = candidates
            .into_iter()
            .filter(|m| m.contains_key("TransactionId"))
            .filter(|m| wire::text(m, "OperationType").is_none_or(|t| t != "Refund"))
            .collect();
        let chosen = payments
            .iter()
            .find(|m| wire::text(m, "Status").as_deref() == Some("Completed"))
            .or_else(|| payments.last());
        match chosen {
            Some(m) => wire::transaction(m, None)
                .map(Some)
                .map_err(ProviderError::unreadable),
            None => Ok(None),
        }
    }

    async fn create_refund(&self, req: &CreateRefund) -> Result<ProviderRefund, ProviderError> {
        let mut body = json!({
            "TransactionId": transaction_json(&req.provider_payment_id),
            "Amount": amount_json(req.amount),
        });
        if let Some(r) = &req.receipt {
            body["JsonData"] = receipt_data(r);
        }
        let answer = self
            .call("payments/refund", Some(&req.idempotence_key), &body)
            .await?;
        if !answer.success {
            return Err(ProviderError::Rejected {
                code: "refund_refused".into(),
                description: answer.message.unwrap_or_default(),
            });
        }
        // Synchronous: Success means the money is on its way back.
        let id = answer
            .model_fields()
            .and_then(|m| wire::text(m, "TransactionId"))
            .unwrap_or_else(|| format!("refund:{}", req.idempotence_key));
        Ok(ProviderRefund {
            id,
            payment_id: req.provider_payment_id.clone(),
            status: RefundStatus::Succeeded,
            amount: req.amount,
        })
    }

    /// CloudPayments has no refund lookup: `payments/refund` answers synchronously
    /// and `refund` notifications are signed (Content-HMAC) and applied from their
    /// body, so nothing here needs to re-read a refund.
    async fn get_refund(&self, _provider_id: &str) -> Result<ProviderRefund, ProviderError> {
        Err(ProviderError::NotFound)
    }

    /// No refund lookup either: a refund whose answer was lost is learnt from its
    /// `refund` notification, or by an operator.
    async fn list_refunds(
        &self,
        _provider_payment_id: &str,
    ) -> Result<Option<Vec<ProviderRefund>>, ProviderError> {
        Ok(None)
    }

    /// `payments/list {Date, TimeZone}` for each UTC day the window touches: the
    /// day's operations, of which the `Refund` ones (`PaymentTransactionId` names the
    /// payment). The window is cut to [`LIST_DAYS`] days, the newest.
    async fn refunds_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Option<Vec<ProviderRefund>>, ProviderError> {
        let last = to.date_naive();
        let first = from
            .date_naive()
            .max(last - chrono::Days::new(LIST_DAYS - 1));
        let mut found = Vec::new();
        for day in first.iter_days().take_while(|d| *d <= last) {
            let answer = self
                .call(
                    "payments/list",
                    None,
                    &json!({"Date": day.format("%Y-%m-%d").to_string(), "TimeZone": "UTC"}),
                )
                .await?;
            let Value::Array(items) = &answer.model else {
                return Err(ProviderError::Unavailable(format!(
                    "payments/list {day}: no list of operations ({})",
                    answer.message.unwrap_or_default()
                )));
            };
            for item in items {
                let Some(fields) = item.as_object() else {
                    return Err(ProviderError::Unavailable(format!(
                        "payments/list {day}: an operation that is not an object"
                    )));
                };
                if wire::text(fields, "OperationType").as_deref() == Some("Refund") {
                    found.push(wire::listed_refund(fields).map_err(ProviderError::unreadable)?);
                }
            }
        }
        Ok(Some(found))
    }

    /// `orders/cancel {Id}`: an order stays payable until canceled, so a purchase we
    /// give up on is voided first. A refusal (the order was paid meanwhile, say) is
    /// definite: the purchase is then not given up.
    async fn void_checkout(&self, checkout_id: &str) -> Result<(), ProviderError> {
        let answer = self
            .call("orders/cancel", None, &json!({"Id": checkout_id}))
            .await?;
        if answer.success {
            Ok(())
        } else {
            Err(ProviderError::Rejected {
                code: "order_not_canceled".into(),
                description: answer.message.unwrap_or_default(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;

    #[test]
    fn amounts_go_out_as_exact_json_numbers() {
        assert_eq!(
            amount_json(Money::new(29_900, Currency::Rub)).to_string(),
            "299.0"
        );
        assert_eq!(
            amount_json(Money::new(29, Currency::Rub)).to_string(),
            "0.29"
        );
        assert_eq!(
            amount_json(Money::new(123_456, Currency::Rub)).to_string(),
            "1234.56"
        );
    }

    #[test]
    fn only_a_readable_refusal_is_definite() {
        let ok = classify(
            "m",
            StatusCode::OK,
            r#"{"Success":false,"Message":"x","Model":null}"#,
        );
        assert!(matches!(ok, Ok(Answer { success: false, .. })));
        for (status, body) in [
            (200, r#"{"Success":tr"#),
            (200, "<html></html>"),
            (200, r#"{"Model":{}}"#),
            (500, r#"{"Success":false}"#),
            (429, ""),
            (401, ""),
        ] {
            let r = classify("m", StatusCode::from_u16(status).unwrap(), body);
            assert!(
                matches!(r, Err(ProviderError::Unavailable(_))),
                "{status} {body}"
            );
        }
        let r = classify(
            "m",
            StatusCode::UNAUTHORIZED,
            r#"{"Success":false,"Message":"Authentication failed"}"#,
        );
        assert!(
            matches!(r, Err(ProviderError::Rejected { code, .. }) if code == "invalid_credentials")
        );
    }

    #[test]
    fn transaction_ids_are_sent_as_integers() {
        assert_eq!(transaction_json("504"), json!(504));
        assert_eq!(transaction_json("x-1"), json!("x-1"));
    }
}
