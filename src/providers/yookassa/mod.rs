//! YooKassa API v3 client: Basic auth, persisted Idempotence-Key re-sent on
//! retries (network errors, 5xx, 429, 202 with `retry_after`, unreadable answers),
//! bounded timeouts, and exact amounts. The sandbox provider answers the same API.

pub mod webhook;
pub mod wire;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{
    CreatePayment, CreateRefund, Provider, ProviderError, ProviderPayment, ProviderRefund,
    RetryPolicy, METHOD_REFUSED,
};
use crate::config::Secret;
use crate::domain::receipt::Receipt;
use crate::domain::PaySystem;
use crate::domain::PaymentId;

pub struct YooKassa {
    http: reqwest::Client,
    base: String,
    shop_id: String,
    secret: Secret,
    /// Timeouts and re-sends (same key) of a request whose outcome is unknown.
    policy: RetryPolicy,
    /// Where notifications may come from (YooKassa signs nothing).
    allowed_ips: Vec<ipnet::IpNet>,
}

/// One HTTP answer, classified: a JSON value, or an error with the wait the
/// provider asked for (`retry_after`, milliseconds) before a re-send.
type Classified = Result<Value, (ProviderError, Option<Duration>)>;

impl YooKassa {
    pub fn new(base: &str, shop_id: &str, secret: Secret) -> YooKassa {
        let policy = RetryPolicy::DEFAULT;
        let http = policy.client();
        YooKassa {
            http,
            base: base.trim_end_matches('/').to_owned(),
            shop_id: shop_id.to_owned(),
            secret,
            policy,
            allowed_ips: Vec::new(),
        }
    }

    /// The senders whose notifications are accepted (YOOKASSA_WEBHOOK_ALLOWED_IPS);
    /// none until set.
    pub fn with_allowed_ips(mut self, allowed: Vec<ipnet::IpNet>) -> Self {
        self.allowed_ips = allowed;
        self
    }

    /// A shorter wait for one answer (`PROVIDER_TIMEOUT`; the simulator's is short).
    /// Never longer than the default: idempotency-key leases are derived from it.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.policy.timeout = timeout.min(RetryPolicy::DEFAULT.timeout);
        self.http = self.policy.client();
        self
    }

    /// Shorter waits for tests and the benchmark.
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.policy.retries = retries;
        self.policy.backoff = backoff;
        self
    }

    /// `GET /refunds?limit=100&{filter}`, page by page to the end; `what` names the
    /// list in the error when it never ends. An unreadable refund is an error.
    async fn all_refunds(
        &self,
        filter: &str,
        what: &str,
    ) -> Result<Vec<ProviderRefund>, ProviderError> {
        let mut found = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let (items, next) = self
                .list_page(&format!("/refunds?limit=100&{filter}"), cursor.as_deref())
                .await?;
            for item in &items {
                found.push(wire::refund(item).map_err(ProviderError::unreadable)?);
            }
            match next {
                Some(c) => cursor = Some(c),
                None => return Ok(found),
            }
        }
        Err(ProviderError::Unavailable(format!(
            "more than {MAX_LIST_PAGES} pages of {what}"
        )))
    }

    /// One page of a list (`GET path[&cursor=…]`): its items and the next cursor.
    async fn list_page(
        &self,
        path: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), ProviderError> {
        let path = match cursor {
            Some(c) => format!("{path}&cursor={}", urlencode(c)),
            None => path.to_owned(),
        };
        let mut page = self.call(Method::GET, &path, None, None).await?;
        let Some(Value::Array(items)) = page.get_mut("items").map(Value::take) else {
            return Err(ProviderError::Unavailable(format!(
                "{path}: a list without items"
            )));
        };
        Ok((items, page["next_cursor"].as_str().map(str::to_owned)))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        let mut attempt = 0;
        loop {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .basic_auth(&self.shop_id, Some(self.secret.expose()));
            if let Some(k) = key {
                req = req.header("Idempotence-Key", k);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let outcome = match req.send().await {
                Err(e) => Err((ProviderError::Unavailable(format!("{path}: {e}")), None)),
                Ok(resp) => {
                    let status = resp.status();
                    match resp.text().await {
                        // A body cut off or timed out after the status line: unknown.
                        Err(e) => Err((
                            ProviderError::Unavailable(format!(
                                "{path}: HTTP {status}, body unreadable: {e}"
                            )),
                            None,
                        )),
                        Ok(text) => classify(path, status, &text),
                    }
                }
            };
            match outcome {
                Ok(v) => return Ok(v),
                Err((e, wait)) if e.is_transient() && attempt < self.policy.retries => {
                    attempt += 1;
                    let wait = self.policy.wait(attempt, wait);
                    tracing::warn!(error = %e, attempt, "YooKassa call failed, retrying with the same key");
                    tokio::time::sleep(wait).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

/// Reads one answer. Only a 4xx whose body is a YooKassa error is a definite
/// refusal; a 2xx that is not a JSON object, a 202, 429, 5xx, or a 4xx we cannot
/// read leave the outcome unknown (the same key is re-sent or the payment looked up).
pub fn classify(path: &str, status: StatusCode, text: &str) -> Classified {
    let parsed: Option<Value> = serde_json::from_str::<Value>(text)
        .ok()
        .filter(Value::is_object);
    let retry_after = parsed
        .as_ref()
        .and_then(|v| v["retry_after"].as_u64())
        .map(Duration::from_millis);
    let unknown = |why: String| {
        Err((
            ProviderError::Unavailable(format!("{path}: {why}")),
            retry_after,
        ))
    };
    match status {
        StatusCode::ACCEPTED => unknown("request accepted, retry later".into()),
        s if s.is_success() => match parsed {
            Some(v) => Ok(v),
            None => unknown(format!("HTTP {s} with an unreadable body")),
        },
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
            unknown(format!("HTTP {s}"))
        }
        s if s.is_client_error() => {
            let Some(v) = parsed.filter(|v| v["code"].is_string()) else {
                return unknown(format!("HTTP {s} without a readable error"));
            };
            if s == StatusCode::NOT_FOUND {
                return Err((ProviderError::NotFound, None));
            }
            let code = v["code"].as_str().unwrap_or_default();
            let description = v["description"].as_str().unwrap_or_default();
            let parameter = v["parameter"].as_str();
            // The saved method is unknown, revoked or not allowed for this charge: about
            // the viewer, not about us (YooKassa names the parameter it refused).
            let (code, description) = match parameter {
                Some("payment_method_id") => (
                    METHOD_REFUSED.to_owned(),
                    format!("{code} (payment_method_id): {description}"),
                ),
                Some(p) => (code.to_owned(), format!("{description} ({p})")),
                None => (code.to_owned(), description.to_owned()),
            };
            Err((ProviderError::Rejected { code, description }, None))
        }
        s => unknown(format!("unexpected HTTP {s}")),
    }
}

/// The JSON body of a create. Deterministic from the payment row, so a retry with the
/// same key sends the same body (a changed body with a reused key is an error there).
pub fn create_body(req: &CreatePayment) -> Value {
    let mut body = json!({
        "amount": {"value": req.amount.value_string(), "currency": req.amount.currency().code()},
        "capture": true,
        "description": truncate(&req.description, 128),
        "metadata": {"payment_id": req.our_id.to_string(), "user_id": req.user_id.to_string()},
    });
    match &req.saved_method_id {
        Some(method) => body["payment_method_id"] = json!(method),
        None => {
            body["confirmation"] = json!({"type": "redirect", "return_url": req.return_url});
            if req.save_method {
                body["save_payment_method"] = json!(true);
            }
        }
    }
    if let Some(r) = &req.receipt {
        body["receipt"] = receipt_json(r);
    }
    body
}

/// A receipt as YooKassa takes it (`receipt` of a payment or a refund): the
/// customer under `customer` (not the deprecated top-level `email`/`phone`),
/// quantity as a decimal string, VAT and tax codes as they are (ours are YooKassa's).
pub fn receipt_json(r: &Receipt) -> Value {
    let mut customer = json!({});
    if let Some(e) = &r.customer.email {
        customer["email"] = json!(e.as_str());
    }
    if let Some(p) = &r.customer.phone {
        customer["phone"] = json!(p.digits());
    }
    let items: Vec<Value> = r
        .items
        .iter()
        .map(|i| {
            json!({
                "description": i.description,
                "quantity": format!("{}.00", i.quantity),
                "amount": {"value": i.amount.value_string(), "currency": i.amount.currency().code()},
                "vat_code": i.vat_code.code(),
                "payment_subject": i.payment_subject,
                "payment_mode": i.payment_mode,
            })
        })
        .collect();
    let mut receipt = json!({"customer": customer, "items": items});
    if let Some(t) = r.tax_system_code {
        receipt["tax_system_code"] = json!(t.code());
    }
    receipt
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[async_trait]
impl Provider for YooKassa {
    fn pay_system(&self) -> PaySystem {
        PaySystem::YooKassa
    }

    async fn create_payment(&self, req: &CreatePayment) -> Result<ProviderPayment, ProviderError> {
        let v = self
            .call(
                Method::POST,
                "/payments",
                Some(&req.idempotence_key),
                Some(&create_body(req)),
            )
            .await?;
        wire::payment(&v).map_err(ProviderError::unreadable)
    }

    async fn get_payment(&self, provider_id: &str) -> Result<ProviderPayment, ProviderError> {
        if !wire::is_safe_id(provider_id) {
            return Err(ProviderError::NotFound);
        }
        let v = self
            .call(Method::GET, &format!("/payments/{provider_id}"), None, None)
            .await?;
        wire::payment(&v).map_err(ProviderError::unreadable)
    }

    async fn find_payment(
        &self,
        our_id: PaymentId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Option<ProviderPayment>, ProviderError> {
        // YooKassa cannot filter by metadata: walk the window, page by page, to its end
        // (newest first). A bounded window keeps that finite; stopping early would
        // answer "not found" for a payment that exists, and a new key charges twice.
        let window = created_between(from, to);
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let (items, next) = self
                .list_page(&format!("/payments?limit=100&{window}"), cursor.as_deref())
                .await?;
            for item in &items {
                let names_us = item["metadata"]["payment_id"].as_str() == Some(&our_id.to_string());
                match wire::payment(item) {
                    Ok(p) if p.our_id == Some(our_id) => return Ok(Some(p)),
                    Ok(_) => {}
                    // Ours but unreadable: we cannot say it is not there.
                    Err(e) if names_us => return Err(e.unreadable()),
                    Err(e) => {
                        tracing::warn!(payment = %item["id"], error = %e, "skipping an unreadable payment in the list");
                    }
                }
            }
            match next {
                Some(c) => cursor = Some(c),
                None => return Ok(None),
            }
        }
        // Not exhausted: say so rather than "not found".
        Err(ProviderError::Unavailable(format!(
            "more than {MAX_LIST_PAGES} pages of payments in the look-up window"
        )))
    }

    async fn create_refund(&self, req: &CreateRefund) -> Result<ProviderRefund, ProviderError> {
        let mut body = json!({
            "payment_id": req.provider_payment_id,
            "amount": {"value": req.amount.value_string(), "currency": req.amount.currency().code()},
            "description": truncate(&req.description, 250),
        });
        // A whole payment given back: YooKassa builds the refund receipt from the
        // payment's own and takes none; a partial refund describes what goes back.
        if let Some(r) = req.receipt.as_ref().filter(|_| !req.whole_payment) {
            body["receipt"] = receipt_json(r);
        }
        let v = self
            .call(
                Method::POST,
                "/refunds",
                Some(&req.idempotence_key),
                Some(&body),
            )
            .await?;
        wire::refund(&v).map_err(ProviderError::unreadable)
    }

    async fn get_refund(&self, provider_id: &str) -> Result<ProviderRefund, ProviderError> {
        if !wire::is_safe_id(provider_id) {
            return Err(ProviderError::NotFound);
        }
        let v = self
            .call(Method::GET, &format!("/refunds/{provider_id}"), None, None)
            .await?;
        wire::refund(&v).map_err(ProviderError::unreadable)
    }

    /// `GET /refunds?payment_id=…`, page by page to the end.
    async fn list_refunds(
        &self,
        provider_payment_id: &str,
    ) -> Result<Option<Vec<ProviderRefund>>, ProviderError> {
        if !wire::is_safe_id(provider_payment_id) {
            return Err(ProviderError::NotFound);
        }
        self.all_refunds(
            &format!("payment_id={provider_payment_id}"),
            &format!("refunds of {provider_payment_id}"),
        )
        .await
        .map(Some)
    }

    /// `GET /refunds?created_at.gte=…&created_at.lte=…`, page by page to the end.
    async fn refunds_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Option<Vec<ProviderRefund>>, ProviderError> {
        self.all_refunds(&created_between(from, to), "refunds in the sweep window")
            .await
            .map(Some)
    }
}

/// A safety stop for a window that never ends (a provider bug): 100 000 payments.
const MAX_LIST_PAGES: u32 = 1000;

/// The list filter of objects created from `from` to `to`, both included.
fn created_between(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    format!(
        "created_at.gte={}&created_at.lte={}",
        urlencode(&from.to_rfc3339_opts(SecondsFormat::Millis, true)),
        urlencode(&to.to_rfc3339_opts(SecondsFormat::Millis, true)),
    )
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(r: Classified) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err((ProviderError::Rejected { code, .. }, _)) => format!("rejected:{code}"),
            Err((ProviderError::NotFound, _)) => "not_found".into(),
            Err((ProviderError::Unavailable(_), _)) => "unknown".into(),
            Err((ProviderError::Invalid(_), _)) => "invalid".into(),
        }
    }

    #[test]
    fn only_a_parsed_4xx_error_is_definite() {
        let err = |code: &str| {
            format!(r#"{{"type":"error","id":"1","code":"{code}","description":"d"}}"#)
        };
        let cases = [
            (200, r#"{"id":"p","status":"pending"}"#.to_owned(), "ok"),
            (200, r#"{"id":"p","sta"#.to_owned(), "unknown"),
            (200, "<html>502</html>".to_owned(), "unknown"),
            (200, String::new(), "unknown"),
            (202, r#"{"type":"error","code":"request_accepted","retry_after":1800}"#.to_owned(), "unknown"),
            (429, err("too_many_requests"), "unknown"),
            (500, err("internal_server_error"), "unknown"),
            (502, "<html>bad gateway</html>".to_owned(), "unknown"),
            (401, err("invalid_credentials"), "rejected:invalid_credentials"),
            (403, err("forbidden"), "rejected:forbidden"),
            (401, "<html>401</html>".to_owned(), "unknown"),
            (400, String::new(), "unknown"),
            (404, err("not_found"), "not_found"),
            (404, "Not Found".to_owned(), "unknown"),
            (
                400,
                r#"{"type":"error","code":"invalid_request","parameter":"payment_method_id","description":"d"}"#.to_owned(),
                "rejected:payment_method_refused",
            ),
            (
                400,
                r#"{"type":"error","code":"invalid_request","parameter":"Idempotence-Key","description":"d"}"#.to_owned(),
                "rejected:invalid_request",
            ),
        ];
        for (status, body, expected) in cases {
            let got = kind(classify(
                "/payments",
                StatusCode::from_u16(status).unwrap(),
                &body,
            ));
            assert_eq!(got, expected, "HTTP {status} {body:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let r = classify(
            "/payments",
            StatusCode::ACCEPTED,
            r#"{"type":"error","code":"request_accepted","retry_after":1800}"#,
        );
        assert_eq!(r.unwrap_err().1, Some(Duration::from_millis(1800)));
    }
}
