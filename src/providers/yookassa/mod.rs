//! YooKassa API v3 client: Basic auth, persisted Idempotence-Key re-sent on
//! retries (network errors, 500, 202 with `retry_after`), bounded timeouts, and
//! exact amounts. The sandbox provider answers the same API.

pub mod wire;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{
    CreatePayment, CreateRefund, Provider, ProviderError, ProviderPayment, ProviderRefund,
};
use crate::config::Secret;
use crate::domain::PaySystem;

pub struct YooKassa {
    http: reqwest::Client,
    base: String,
    shop_id: String,
    secret: Secret,
    /// How many times a request whose outcome is unknown is re-sent (same key).
    retries: u32,
    backoff: Duration,
}

impl YooKassa {
    pub fn new(base: &str, shop_id: &str, secret: Secret) -> YooKassa {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .expect("reqwest client builds");
        YooKassa {
            http,
            base: base.trim_end_matches('/').to_owned(),
            shop_id: shop_id.to_owned(),
            secret,
            retries: 2,
            backoff: Duration::from_millis(200),
        }
    }

    /// Shorter waits for tests and the benchmark.
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
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
                    let text = resp.text().await.unwrap_or_default();
                    let parsed: Option<Value> = serde_json::from_str(&text).ok();
                    match status {
                        StatusCode::OK => parsed.ok_or_else(|| {
                            (
                                ProviderError::Invalid(format!("{path}: body is not JSON")),
                                None,
                            )
                        }),
                        StatusCode::ACCEPTED => {
                            let wait = parsed
                                .as_ref()
                                .and_then(|v| v["retry_after"].as_u64())
                                .map(Duration::from_millis);
                            Err((
                                ProviderError::Unavailable(format!(
                                    "{path}: request accepted, retry later"
                                )),
                                wait,
                            ))
                        }
                        StatusCode::NOT_FOUND => Err((ProviderError::NotFound, None)),
                        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                            let wait = parsed
                                .as_ref()
                                .and_then(|v| v["retry_after"].as_u64())
                                .map(Duration::from_millis);
                            Err((
                                ProviderError::Unavailable(format!("{path}: HTTP {s}")),
                                wait,
                            ))
                        }
                        s => {
                            let v = parsed.unwrap_or(Value::Null);
                            Err((
                                ProviderError::Rejected {
                                    code: v["code"].as_str().unwrap_or(s.as_str()).to_owned(),
                                    description: v["description"].as_str().unwrap_or("").to_owned(),
                                },
                                None,
                            ))
                        }
                    }
                }
            };
            match outcome {
                Ok(v) => return Ok(v),
                Err((e, wait)) if e.is_transient() && attempt < self.retries => {
                    attempt += 1;
                    let wait = wait
                        .unwrap_or(self.backoff * attempt)
                        .min(Duration::from_secs(5));
                    tracing::warn!(error = %e, attempt, "YooKassa call failed, retrying with the same key");
                    tokio::time::sleep(wait).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
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
    body
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
        wire::payment(&v)
    }

    async fn get_payment(&self, provider_id: &str) -> Result<ProviderPayment, ProviderError> {
        if !wire::is_safe_id(provider_id) {
            return Err(ProviderError::NotFound);
        }
        let v = self
            .call(Method::GET, &format!("/payments/{provider_id}"), None, None)
            .await?;
        wire::payment(&v)
    }

    async fn find_payment(
        &self,
        our_id: Uuid,
        created_after: DateTime<Utc>,
    ) -> Result<Option<ProviderPayment>, ProviderError> {
        // YooKassa cannot filter by metadata: walk the list from the creation time.
        let since = created_after.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut cursor: Option<String> = None;
        for _ in 0..20 {
            let mut path = format!("/payments?limit=100&created_at.gte={}", urlencode(&since));
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", urlencode(c)));
            }
            let page = self.call(Method::GET, &path, None, None).await?;
            for item in page["items"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let p = wire::payment(item)?;
                if p.our_id == Some(our_id) {
                    return Ok(Some(p));
                }
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    async fn create_refund(&self, req: &CreateRefund) -> Result<ProviderRefund, ProviderError> {
        let body = json!({
            "payment_id": req.provider_payment_id,
            "amount": {"value": req.amount.value_string(), "currency": req.amount.currency().code()},
            "description": truncate(&req.description, 250),
        });
        let v = self
            .call(
                Method::POST,
                "/refunds",
                Some(&req.idempotence_key),
                Some(&body),
            )
            .await?;
        wire::refund(&v)
    }

    async fn get_refund(&self, provider_id: &str) -> Result<ProviderRefund, ProviderError> {
        if !wire::is_safe_id(provider_id) {
            return Err(ProviderError::NotFound);
        }
        let v = self
            .call(Method::GET, &format!("/refunds/{provider_id}"), None, None)
            .await?;
        wire::refund(&v)
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
