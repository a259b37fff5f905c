//! CloudPayments API client. Every call is a POST with a JSON body and HTTP Basic
//! auth (Public ID / API secret), answered `{"Success", "Message", "Model"}`.
//! Mutating calls carry our idempotence key as `X-Request-ID`, re-sent unchanged on
//! network errors and 5xx, within bounded timeouts.
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

pub mod wire;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{
    CreatePayment, CreateRefund, Provider, ProviderError, ProviderPayment, ProviderRefund,
};
use crate::config::Secret;
use crate::domain::{Money, PaySystem, PaymentStatus, RefundStatus};

pub struct CloudPayments {
    http: reqwest::Client,
    base: String,
    public_id: String,
    secret: Secret,
    /// How many times a request whose outcome is unknown is re-sent (same X-Request-ID).
    retries: u32,
    backoff: Duration,
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
pub fn amount_json(m: Money) -> Value {
    serde_json::from_str(&m.value_string()).expect("a decimal is a JSON number")
}

/// A TransactionId is an integer at CloudPayments; send it as one when it is.
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
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .expect("reqwest client builds");
        CloudPayments {
            http,
            base: base.trim_end_matches('/').to_owned(),
            public_id: public_id.to_owned(),
            secret,
            retries: 2,
            backoff: Duration::from_millis(200),
        }
    }

    /// Shorter waits for tests.
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
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
                    let text = resp.text().await.unwrap_or_default();
                    match status {
                        s if s.is_success() => {
                            let v: Value = serde_json::from_str(&text).map_err(|_| {
                                ProviderError::Invalid(format!("{method}: body is not JSON"))
                            })?;
                            Ok(Answer {
                                success: v["Success"].as_bool().unwrap_or(false),
                                message: v["Message"].as_str().map(str::to_owned),
                                model: v["Model"].clone(),
                            })
                        }
                        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                            Err(ProviderError::Unavailable(format!("{method}: HTTP {s}")))
                        }
                        s => Err(ProviderError::Rejected {
                            code: if s == StatusCode::UNAUTHORIZED {
                                "invalid_credentials".into()
                            } else {
                                s.as_str().to_owned()
                            },
                            description: truncate(&text, 200),
                        }),
                    }
                }
            };
            match outcome {
                Err(e) if e.is_transient() && attempt < self.retries => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "CloudPayments call failed, retrying with the same X-Request-ID");
                    tokio::time::sleep(self.backoff * attempt).await;
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
            return Err(ProviderError::Rejected {
                code: "charge_refused".into(),
                description: answer.message.unwrap_or_default(),
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
        wire::transaction(&fields, Some(default_status))
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
            Some(model) => wire::transaction(model, None),
            None => Err(ProviderError::NotFound),
        }
    }

    async fn find_payment(
        &self,
        our_id: Uuid,
        _created_after: DateTime<Utc>,
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
            Some(m) => wire::transaction(m, None).map(Some),
            None => Ok(None),
        }
    }

    async fn create_refund(&self, req: &CreateRefund) -> Result<ProviderRefund, ProviderError> {
        let body = json!({
            "TransactionId": transaction_json(&req.provider_payment_id),
            "Amount": amount_json(req.amount),
        });
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
    fn transaction_ids_are_sent_as_integers() {
        assert_eq!(transaction_json("504"), json!(504));
        assert_eq!(transaction_json("x-1"), json!("x-1"));
    }
}
