//! `billing replay FILE… --url URL [--payment ID]`: sends fixture notifications to a
//! running service, signed the way ops replays are (Standard Webhooks with
//! OPS_WEBHOOK_SECRET, a fresh `webhook-id` each), and prints each answer.
//!
//! The service still re-reads the payment from the provider: a replay re-delivers a
//! notification, it cannot make a payment succeed that the provider has not settled.

use std::path::PathBuf;

use serde_json::Value;
use uuid::Uuid;

use crate::config::Config;
use crate::domain::{PaymentId, UserId};
use crate::http::webhook_auth::sign_ops;

/// Answers whether every notification was accepted (2xx).
pub async fn run(
    config: &Config,
    files: &[PathBuf],
    url: &str,
    payment: Option<&str>,
) -> Result<bool, String> {
    // CloudPayments fixtures (fixtures/cloudpayments/{kind}.json) are signed like
    // CloudPayments signs them; everything else is a YooKassa ops replay.
    let (cloudpayments, yookassa): (Vec<&PathBuf>, Vec<&PathBuf>) = files
        .iter()
        .partition(|f| f.parent().is_some_and(|d| d.ends_with("cloudpayments")));
    let mut all_ok = true;
    if !cloudpayments.is_empty() {
        all_ok &= run_cloudpayments(config, &cloudpayments, url, payment).await?;
    }
    if yookassa.is_empty() {
        return Ok(all_ok);
    }
    let files = yookassa;
    let key = config
        .ops_webhook_secret
        .as_deref()
        .ok_or("OPS_WEBHOOK_SECRET is not set: ops replays cannot be signed")?;
    let provider_id = match payment {
        Some(p) => Some(resolve_payment(config, p).await),
        None => None,
    };
    let http = reqwest::Client::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut body: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
        if body["type"] != "notification" || !body["object"].is_object() {
            return Err(format!("{}: not a YooKassa notification", file.display()));
        }
        if let Some((provider_id, our_id)) = &provider_id {
            if body["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("payment."))
            {
                body["object"]["id"] = Value::String(provider_id.clone());
                if let Some(our) = our_id {
                    body["object"]["metadata"]["payment_id"] = Value::String(our.to_string());
                }
            } else if body["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("refund."))
            {
                body["object"]["payment_id"] = Value::String(provider_id.clone());
            }
        }
        let raw = serde_json::to_vec(&body).expect("serializable");
        let id = format!("replay_{}", Uuid::new_v4().simple());
        let ts = chrono::Utc::now().timestamp();
        let resp = http
            .post(format!("{}/webhooks/yookassa", url.trim_end_matches('/')))
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sign_ops(key, &id, ts, &raw))
            .body(raw)
            .send()
            .await;
        all_ok &= print_answer(file, resp).await;
    }
    Ok(all_ok)
}

/// Sends CloudPayments fixtures to `/webhooks/cloudpayments/{kind}` (the kind is the
/// file name) with `Content-HMAC` from CLOUDPAYMENTS_API_SECRET; `--payment` (our
/// payment id) becomes the `InvoiceId`.
async fn run_cloudpayments(
    config: &Config,
    files: &[&PathBuf],
    url: &str,
    payment: Option<&str>,
) -> Result<bool, String> {
    let secret = config
        .cloudpayments
        .as_ref()
        .map(|c| c.api_secret.expose().to_owned())
        .ok_or("CLOUDPAYMENTS_API_SECRET is not set: CloudPayments fixtures cannot be signed")?;
    // The payment's buyer becomes the AccountId, so a replayed pay matches the row.
    let user = match payment.and_then(|p| p.parse::<PaymentId>().ok()) {
        Some(our) => payment_user(config, our).await,
        None => None,
    };
    let http = reqwest::Client::new();
    let mut all_ok = true;
    for file in files {
        let kind = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut body: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
        if let (Some(p), Some(obj)) = (payment, body.as_object_mut()) {
            if obj.contains_key("InvoiceId") {
                obj.insert("InvoiceId".into(), Value::String(p.to_owned()));
            }
            if let (Some(u), true) = (user, obj.contains_key("AccountId")) {
                obj.insert("AccountId".into(), Value::String(u.to_string()));
            }
        }
        let raw = serde_json::to_vec(&body).expect("serializable");
        let resp = http
            .post(format!(
                "{}/webhooks/cloudpayments/{kind}",
                url.trim_end_matches('/')
            ))
            .header("content-type", "application/json")
            .header(
                "Content-HMAC",
                crate::http::webhook_auth::sign_content_hmac(secret.as_bytes(), &raw),
            )
            .body(raw)
            .send()
            .await;
        all_ok &= print_answer(file, resp).await;
    }
    Ok(all_ok)
}

async fn payment_user(config: &Config, our: PaymentId) -> Option<UserId> {
    let client = connect(config).await?;
    crate::store::payments::get(&client, our)
        .await
        .ok()?
        .map(|p| p.user_id)
}

/// One connection to the service's database, for the lookups replay needs.
async fn connect(config: &Config) -> Option<deadpool_postgres::Object> {
    let pool = crate::db::pool(&config.database_url, 1).ok()?;
    pool.get().await.ok()
}

/// Our payment id → (provider id, our id) through the database; anything else is
/// taken as a provider id.
async fn resolve_payment(config: &Config, given: &str) -> (String, Option<PaymentId>) {
    let Ok(our) = given.parse::<PaymentId>() else {
        return (given.to_owned(), None);
    };
    let found = async {
        let client = connect(config).await?;
        crate::store::payments::get(&client, our)
            .await
            .ok()??
            .provider_payment_id
    }
    .await;
    match found {
        Some(provider) => (provider, Some(our)),
        None => (given.to_owned(), None),
    }
}

/// Prints one answer; true when the service accepted the notification (2xx).
async fn print_answer(file: &std::path::Path, resp: reqwest::Result<reqwest::Response>) -> bool {
    match resp {
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            println!("{} → {} {}", file.display(), status.as_u16(), text);
            status.is_success()
        }
        Err(e) => {
            println!("{} → error: {e}", file.display());
            false
        }
    }
}
