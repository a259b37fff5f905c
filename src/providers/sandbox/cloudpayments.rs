//! An in-memory CloudPayments fake: the API methods the adapter calls (Basic auth,
//! `X-Request-ID` idempotency, `{"Success","Message","Model"}` answers) and a
//! checkout page whose Pay and Decline buttons send **signed** `check` and then
//! `pay`/`fail` notifications (Content-HMAC with the API secret) to the service, as
//! CloudPayments would. Tests run it standalone with `spawn`; knobs and counters
//! mirror the YooKassa fake. Token charges settle synchronously and notify nobody.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Map, Value};
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::http::webhook_auth::sign_content_hmac;
use crate::providers::cloudpayments::wire;

#[derive(Default)]
struct State {
    orders: HashMap<String, Value>,
    /// Payments and refunds, by TransactionId, in creation order.
    transactions: Vec<Value>,
    next_id: i64,
    /// (method, X-Request-ID) → the first answer.
    answers: HashMap<(String, String), Value>,
    requests_by_key: HashMap<String, u64>,
    declined_tokens: HashMap<String, i64>,
    /// Tokens CloudPayments refuses outright (no transaction): the message it answers.
    refused_tokens: HashMap<String, String>,
    orders_created: u64,
    charges: u64,
    refunds: u64,
    fail_requests: u32,
}

pub struct CloudPaymentsSandbox {
    state: Mutex<State>,
    public_id: String,
    secret: String,
    test: bool,
    public_base: Mutex<String>,
    /// Our `/webhooks/cloudpayments` (the kind is appended).
    webhook_base: Mutex<Option<String>>,
    form_notifications: AtomicBool,
    /// Notifications are "lost": nothing is sent (the reconciler's case).
    lose_notifications: AtomicBool,
    http: reqwest::Client,
}

fn ok(model: Value) -> Value {
    json!({"Success": true, "Message": null, "Model": model})
}

fn refused(message: &str, model: Value) -> Value {
    json!({"Success": false, "Message": message, "Model": model})
}

fn now_iso() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Decline texts CloudPayments uses for the codes the tests exercise.
fn reason_text(code: i64) -> &'static str {
    match code {
        5051 => "InsufficientFunds",
        5054 => "ExpiredCard",
        5057 => "TransactionNotPermitted",
        5062 => "RestrictedCard2",
        5206 => "AuthenticationFailed",
        _ => "DoNotHonor",
    }
}

impl CloudPaymentsSandbox {
    pub fn new(public_id: &str, secret: &str, test: bool) -> Arc<CloudPaymentsSandbox> {
        Arc::new(CloudPaymentsSandbox {
            state: Mutex::new(State {
                next_id: 1_000_000,
                ..State::default()
            }),
            public_id: public_id.to_owned(),
            secret: secret.to_owned(),
            test,
            public_base: Mutex::new(String::new()),
            webhook_base: Mutex::new(None),
            form_notifications: AtomicBool::new(false),
            lose_notifications: AtomicBool::new(false),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        })
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_public_base(&self, base: &str) {
        *self.public_base.lock().unwrap() = base.trim_end_matches('/').to_owned();
    }

    /// Where notifications go: our `…/webhooks/cloudpayments` (without the kind).
    pub fn set_webhook_url(&self, url: &str) {
        *self.webhook_base.lock().unwrap() = Some(url.trim_end_matches('/').to_owned());
    }

    /// Send notifications form-urlencoded (CloudPayments' default) instead of JSON.
    pub fn set_form_notifications(&self, form: bool) {
        self.form_notifications.store(form, Ordering::Relaxed);
    }

    // ----- knobs and counters -----

    /// Orders created (a repeated X-Request-ID is not counted twice).
    pub fn orders_created(&self) -> u64 {
        self.st().orders_created
    }
    /// Token charges made (renewals); repeats of one X-Request-ID count once.
    pub fn charges(&self) -> u64 {
        self.st().charges
    }
    pub fn refunds(&self) -> u64 {
        self.st().refunds
    }
    /// How many requests arrived with this X-Request-ID (repeats included).
    pub fn requests_with_key(&self, key: &str) -> u64 {
        self.st().requests_by_key.get(key).copied().unwrap_or(0)
    }
    /// Charges of this token are declined with this CloudPayments code (5051, 5054…).
    pub fn decline_token(&self, token: &str, code: i64) {
        self.st().declined_tokens.insert(token.to_owned(), code);
    }
    /// Charges of this token are refused before any transaction (`Success:false`, no
    /// Model), with this message: a token CloudPayments no longer accepts.
    pub fn refuse_token(&self, token: &str, message: &str) {
        self.st()
            .refused_tokens
            .insert(token.to_owned(), message.to_owned());
    }
    /// From now on notifications are lost on the way (answered as accepted, never sent).
    pub fn lose_notifications(&self, lose: bool) {
        self.lose_notifications.store(lose, Ordering::Relaxed);
    }

    /// The next `n` API calls answer HTTP 500 without doing anything.
    pub fn fail_requests(&self, n: u32) {
        self.st().fail_requests = n;
    }
    pub fn order(&self, id: &str) -> Option<Value> {
        self.st().orders.get(id).cloned()
    }
    /// The order made for our payment (InvoiceId).
    pub fn order_for_invoice(&self, invoice: &str) -> Option<Value> {
        self.st()
            .orders
            .values()
            .find(|o| o["InvoiceId"] == invoice)
            .cloned()
    }
    pub fn transaction(&self, id: i64) -> Option<Value> {
        self.st()
            .transactions
            .iter()
            .find(|t| t["TransactionId"] == id)
            .cloned()
    }
    pub fn transactions(&self) -> Vec<Value> {
        self.st().transactions.clone()
    }

    // ----- notifications -----

    /// The body CloudPayments would send for a transaction.
    fn notification_body(&self, t: &Value, extra: &[(&str, Value)]) -> Map<String, Value> {
        let mut n = Map::new();
        for key in [
            "TransactionId",
            "Amount",
            "Currency",
            "InvoiceId",
            "AccountId",
            "SubscriptionId",
            "Token",
            "CardFirstSix",
            "CardLastFour",
            "CardType",
            "CardExpDate",
            "Status",
            "OperationType",
            "Reason",
            "ReasonCode",
            "Email",
            "Name",
            "IpAddress",
            "Description",
        ] {
            if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                n.insert(key.into(), v.clone());
            }
        }
        n.insert("PaymentAmount".into(), t["Amount"].clone());
        n.insert("PaymentCurrency".into(), t["Currency"].clone());
        n.insert("TestMode".into(), json!(self.test));
        n.insert(
            "DateTime".into(),
            json!(Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()),
        );
        for (k, v) in extra {
            n.insert((*k).into(), v.clone());
        }
        n
    }

    /// The notification CloudPayments sends for a transaction of [`Self::pay_order`]
    /// (tests re-send it).
    pub fn notification_fields(&self, t: &Value) -> Map<String, Value> {
        self.notification_body(t, &[])
    }

    /// Signs and sends a notification; answers (HTTP status, `code` of the answer).
    pub async fn notify(
        &self,
        kind: &str,
        fields: &Map<String, Value>,
    ) -> Result<(u16, i64), String> {
        if self.lose_notifications.load(Ordering::Relaxed) {
            return Ok((200, 0));
        }
        let base = self
            .webhook_base
            .lock()
            .unwrap()
            .clone()
            .ok_or("no webhook URL")?;
        let form = self.form_notifications.load(Ordering::Relaxed);
        let (body, content_type) = if form {
            let pairs: Vec<(String, String)> = fields
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect();
            (
                serde_urlencoded::to_string(pairs)
                    .expect("form")
                    .into_bytes(),
                "application/x-www-form-urlencoded",
            )
        } else {
            (
                serde_json::to_vec(fields).expect("json"),
                "application/json",
            )
        };
        let resp = self
            .http
            .post(format!("{base}/{kind}"))
            .header("content-type", content_type)
            .header(
                "Content-HMAC",
                sign_content_hmac(self.secret.as_bytes(), &body),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        Ok((status, answer["code"].as_i64().unwrap_or(-1)))
    }

    /// What the checkout page does: `check`, then a transaction that is completed
    /// (or declined with `decline_code`), then `pay` (or `fail`). Answers the
    /// transaction, or the `check` code that refused it.
    pub async fn pay_order(
        &self,
        order_id: &str,
        decline_code: Option<i64>,
    ) -> Result<Result<Value, i64>, String> {
        let order = self.order(order_id).ok_or("no such order")?;
        if order["Status"] == "Canceled" {
            return Err("the order was canceled".into());
        }
        let id = {
            let mut st = self.st();
            st.next_id += 1;
            st.next_id
        };
        let mut t = json!({
            "TransactionId": id,
            "Amount": order["Amount"],
            "Currency": order["Currency"],
            "InvoiceId": order["InvoiceId"],
            "AccountId": order["AccountId"],
            "Description": order["Description"],
            "Email": "viewer@example.com",
            "Name": "IVAN PETROV",
            "IpAddress": "127.0.0.1",
            "CardFirstSix": "555555",
            "CardLastFour": "4444",
            "CardType": "MasterCard",
            "CardExpDate": "12/30",
            "OperationType": "Payment",
            "TestMode": self.test,
            "CreatedDateIso": now_iso(),
        });
        let check = self.notification_body(&t, &[]);
        let (_, code) = self.notify("check", &check).await?;
        if code != 0 {
            return Ok(Err(code));
        }
        let kind = match decline_code {
            None => {
                t["Status"] = json!("Completed");
                t["Token"] = json!(format!("tk_{}", Uuid::new_v4().simple()));
                t["ConfirmDateIso"] = json!(now_iso());
                "pay"
            }
            Some(code) => {
                t["Status"] = json!("Declined");
                t["ReasonCode"] = json!(code);
                t["Reason"] = json!(reason_text(code));
                "fail"
            }
        };
        {
            let mut st = self.st();
            // Voided while the viewer was on the page: no money moves.
            if st
                .orders
                .get(order_id)
                .is_some_and(|o| o["Status"] == "Canceled")
            {
                return Err("the order was canceled".into());
            }
            st.transactions.push(t.clone());
            if kind == "pay" {
                if let Some(o) = st.orders.get_mut(order_id) {
                    o["Status"] = json!("Paid");
                }
            }
        }
        let body = self.notification_body(&t, &[]);
        self.notify(kind, &body).await?;
        Ok(Ok(t))
    }

    /// A refund made in the merchant dashboard: recorded here and notified (signed).
    pub async fn refund_in_dashboard(
        &self,
        transaction_id: i64,
        amount: Value,
    ) -> Result<(u16, i64), String> {
        let (refund, payment) = {
            let mut st = self.st();
            let payment = st
                .transactions
                .iter()
                .find(|t| t["TransactionId"] == transaction_id)
                .cloned()
                .ok_or("no such transaction")?;
            // The dashboard, like the API, refunds no more than what is left.
            if over_what_is_left(&st.transactions, &payment, &amount)? {
                return Err("refund amount exceeds what is left of the payment".into());
            }
            st.next_id += 1;
            let refund = json!({
                "TransactionId": st.next_id, "PaymentTransactionId": transaction_id,
                "Amount": amount, "Currency": payment["Currency"], "InvoiceId": payment["InvoiceId"],
                "AccountId": payment["AccountId"], "OperationType": "Refund", "Status": "Completed",
                "TestMode": self.test, "CreatedDateIso": now_iso(),
            });
            st.refunds += 1;
            st.transactions.push(refund.clone());
            (refund, payment)
        };
        let _ = payment;
        let body =
            self.notification_body(&refund, &[("PaymentTransactionId", json!(transaction_id))]);
        self.notify("refund", &body).await
    }

    // ----- the API -----

    fn authorized(&self, header: Option<&str>) -> bool {
        use base64::Engine;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.public_id, self.secret))
        );
        header.is_some_and(|h| {
            subtle::ConstantTimeEq::ct_eq(h.as_bytes(), expected.as_bytes()).into()
        })
    }

    fn api(
        &self,
        method: &str,
        auth: Option<&str>,
        request_id: Option<String>,
        body: &[u8],
    ) -> (StatusCode, Value) {
        {
            let mut st = self.st();
            if let Some(key) = &request_id {
                *st.requests_by_key.entry(key.clone()).or_default() += 1;
            }
            if st.fail_requests > 0 {
                st.fail_requests -= 1;
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    refused("sandbox: injected failure", Value::Null),
                );
            }
        }
        if !self.authorized(auth) {
            return (
                StatusCode::UNAUTHORIZED,
                refused("Authentication failed", Value::Null),
            );
        }
        let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
            return (
                StatusCode::OK,
                refused("body is not a JSON object", Value::Null),
            );
        };
        let mutating = matches!(
            method,
            "orders/create" | "payments/tokens/charge" | "payments/refund"
        );
        let key = request_id
            .filter(|_| mutating)
            .map(|k| (method.to_owned(), k));
        if let Some(k) = &key {
            if let Some(first) = self.st().answers.get(k) {
                return (StatusCode::OK, first.clone());
            }
        }
        let answer = match method {
            "orders/create" => self.create_order(&req),
            "payments/tokens/charge" => self.charge(&req),
            "payments/get" => self.get(&req),
            "payments/find" => self.find(&req),
            "payments/list" => self.list(&req),
            "payments/refund" => self.refund(&req),
            "orders/cancel" => self.cancel_order(&req),
            other => {
                return (
                    StatusCode::NOT_FOUND,
                    refused(&format!("no method {other}"), Value::Null),
                )
            }
        };
        if let Some(k) = key {
            self.st().answers.insert(k, answer.clone());
        }
        (StatusCode::OK, answer)
    }

    fn create_order(&self, req: &Map<String, Value>) -> Value {
        if let Err(e) = wire::money(req) {
            return refused(&e.to_string(), Value::Null);
        }
        let id = Uuid::new_v4().simple().to_string()[..16].to_owned();
        let base = self.public_base.lock().unwrap().clone();
        let url = format!("{base}/sandbox/cloudpayments/checkout/{id}");
        let order = json!({
            "Id": id, "Number": 1, "Amount": req["Amount"], "Currency": req["Currency"],
            "Description": req.get("Description"), "InvoiceId": req.get("InvoiceId"),
            "AccountId": req.get("AccountId"), "Url": url, "Status": "Created",
            "CreatedDateIso": now_iso(), "JsonData": req.get("JsonData"),
        });
        let mut st = self.st();
        st.orders_created += 1;
        st.orders.insert(id, order.clone());
        ok(order)
    }

    /// Voids an unpaid order (again is fine); a paid one cannot be.
    fn cancel_order(&self, req: &Map<String, Value>) -> Value {
        let id = wire::text(req, "Id").unwrap_or_default();
        let mut st = self.st();
        let Some(order) = st.orders.get_mut(&id) else {
            return refused("Order not found", Value::Null);
        };
        if order["Status"] == "Paid" {
            return refused("Order is paid", Value::Null);
        }
        order["Status"] = json!("Canceled");
        ok(Value::Null)
    }

    fn charge(&self, req: &Map<String, Value>) -> Value {
        if let Err(e) = wire::money(req) {
            return refused(&e.to_string(), Value::Null);
        }
        let Some(token) = wire::text(req, "Token") else {
            return refused("Token is required", Value::Null);
        };
        let mut st = self.st();
        if let Some(message) = st.refused_tokens.get(&token) {
            return refused(message, Value::Null);
        }
        st.charges += 1;
        st.next_id += 1;
        let mut t = json!({
            "TransactionId": st.next_id, "Amount": req["Amount"], "Currency": req["Currency"],
            "InvoiceId": req.get("InvoiceId"), "AccountId": req.get("AccountId"),
            "Description": req.get("Description"), "Token": token, "CardFirstSix": "555555",
            "CardLastFour": "4444", "CardType": "MasterCard", "OperationType": "Payment",
            "TestMode": self.test, "CreatedDateIso": now_iso(), "JsonData": req.get("JsonData"),
        });
        let declined = st.declined_tokens.get(&token).copied();
        match declined {
            None => {
                t["Status"] = json!("Completed");
                t["ConfirmDateIso"] = json!(now_iso());
                st.transactions.push(t.clone());
                ok(t)
            }
            Some(code) => {
                t["Status"] = json!("Declined");
                t["ReasonCode"] = json!(code);
                t["Reason"] = json!(reason_text(code));
                st.transactions.push(t.clone());
                refused(reason_text(code), t)
            }
        }
    }

    fn get(&self, req: &Map<String, Value>) -> Value {
        let id = wire::text(req, "TransactionId").unwrap_or_default();
        let st = self.st();
        match st.transactions.iter().find(|t| {
            wire::text(t.as_object().expect("object"), "TransactionId").as_deref() == Some(&id)
        }) {
            Some(t) if t["Status"] == "Declined" => {
                refused(t["Reason"].as_str().unwrap_or(""), t.clone())
            }
            Some(t) => ok(t.clone()),
            None => refused("Not found", Value::Null),
        }
    }

    fn find(&self, req: &Map<String, Value>) -> Value {
        let invoice = wire::text(req, "InvoiceId").unwrap_or_default();
        let st = self.st();
        match st
            .transactions
            .iter()
            .rev()
            .find(|t| t["InvoiceId"] == invoice.as_str() && t["OperationType"] == "Payment")
        {
            Some(t) => ok(t.clone()),
            None => refused("Not found", Value::Null),
        }
    }

    /// `payments/list {Date, TimeZone}`: the operations created that day, payments
    /// and refunds, oldest first. Only `UTC` is kept here.
    fn list(&self, req: &Map<String, Value>) -> Value {
        let day = wire::text(req, "Date").unwrap_or_default();
        if chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").is_err() {
            return refused("Date is invalid", Value::Null);
        }
        if wire::text(req, "TimeZone").as_deref() != Some("UTC") {
            return refused("TimeZone is not supported here", Value::Null);
        }
        let st = self.st();
        let of_day: Vec<Value> = st
            .transactions
            .iter()
            .filter(|t| {
                t["CreatedDateIso"]
                    .as_str()
                    .is_some_and(|at| at.starts_with(&day))
            })
            .cloned()
            .collect();
        ok(Value::Array(of_day))
    }

    fn refund(&self, req: &Map<String, Value>) -> Value {
        let id = wire::text(req, "TransactionId").unwrap_or_default();
        let mut st = self.st();
        let Some(idx) = st.transactions.iter().position(|t| {
            wire::text(t.as_object().expect("object"), "TransactionId").as_deref() == Some(&id)
        }) else {
            return refused("Transaction not found", Value::Null);
        };
        let payment = st.transactions[idx].clone();
        if payment["Status"] != "Completed" || payment["OperationType"] != "Payment" {
            return refused("Transaction cannot be refunded", Value::Null);
        }
        match over_what_is_left(&st.transactions, &payment, &req["Amount"]) {
            Err(_) => return refused("Amount is invalid", Value::Null),
            Ok(true) => return refused("Refund amount exceeds the payment", Value::Null),
            Ok(false) => {}
        }
        st.next_id += 1;
        st.refunds += 1;
        let refund = json!({
            "TransactionId": st.next_id, "PaymentTransactionId": payment["TransactionId"],
            "Amount": req["Amount"], "Currency": payment["Currency"], "InvoiceId": payment["InvoiceId"],
            "AccountId": payment["AccountId"], "OperationType": "Refund", "Status": "Completed",
            "TestMode": self.test, "CreatedDateIso": now_iso(), "JsonData": req.get("JsonData"),
        });
        st.transactions.push(refund);
        ok(json!({"TransactionId": st.next_id}))
    }

    // ----- routes -----

    /// The API under `/sandbox/cloudpayments/…` and the checkout page.
    pub fn routes(self: &Arc<Self>) -> BoxedFilter<(Response,)> {
        let me = self.clone();
        let api = warp::path!("sandbox" / "cloudpayments" / ..)
            .and(warp::post())
            .and(warp::path::tail())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::header::optional::<String>("x-request-id"))
            .and(warp::body::content_length_limit(64 * 1024))
            .and(warp::body::bytes())
            .and_then(
                move |tail: warp::path::Tail,
                      auth: Option<String>,
                      rid: Option<String>,
                      body: bytes::Bytes| {
                    let me = me.clone();
                    async move {
                        let method = tail.as_str().trim_end_matches('/').to_owned();
                        if method.starts_with("checkout/") {
                            return Err(warp::reject::not_found());
                        }
                        let (status, v) = me.api(&method, auth.as_deref(), rid, &body);
                        Ok::<_, warp::Rejection>(
                            warp::reply::with_status(warp::reply::json(&v), status).into_response(),
                        )
                    }
                },
            );

        let me = self.clone();
        let show = warp::path!("sandbox" / "cloudpayments" / "checkout" / String)
            .and(warp::get())
            .map(move |id: String| {
                let Some(o) = me.order(&id) else {
                    return page(StatusCode::NOT_FOUND, "<h1>No such order</h1>".into());
                };
                let amount = format!("{} {}", o["Amount"], o["Currency"].as_str().unwrap_or(""));
                let form = if o["Status"] == "Created" {
                    format!(
                        "<form method=post action=\"/sandbox/cloudpayments/checkout/{id}\">\
                         <p><label>Card <select name=card>\
                         <option value=4444>5555 5555 5555 4444 (pays)</option>\
                         <option value=0002>4000 0000 0000 0002 (declined: 5051 insufficient funds)</option>\
                         </select></label></p>\
                         <button name=action value=pay>Pay</button><button name=action value=decline>Decline</button></form>",
                        id = escape(&id)
                    )
                } else {
                    "<p>This order is already paid.</p>".to_owned()
                };
                page(
                    StatusCode::OK,
                    format!(
                        "<h1>Pay {amount}</h1><p>{desc}</p>{form}",
                        amount = escape(&amount),
                        desc = escape(o["Description"].as_str().unwrap_or("")),
                    ),
                )
            });

        let me = self.clone();
        let submit = warp::path!("sandbox" / "cloudpayments" / "checkout" / String)
            .and(warp::post())
            .and(warp::body::content_length_limit(4096))
            .and(warp::body::form::<HashMap<String, String>>())
            .then(move |id: String, form: HashMap<String, String>| {
                let me = me.clone();
                async move {
                    match me.order(&id) {
                        None => {
                            return page(StatusCode::NOT_FOUND, "<h1>No such order</h1>".into())
                        }
                        Some(o) if o["Status"] != "Created" => {
                            return page(
                                StatusCode::CONFLICT,
                                "<h1>This order is already paid</h1>".into(),
                            )
                        }
                        Some(_) => {}
                    }
                    let decline = match (
                        form.get("action").map(String::as_str),
                        form.get("card").map(String::as_str),
                    ) {
                        (Some("pay"), Some("0002")) => Some(5051),
                        (Some("pay"), _) => None,
                        _ => Some(5206),
                    };
                    match me.pay_order(&id, decline).await {
                        Ok(Ok(t)) if t["Status"] == "Completed" => page(
                            StatusCode::OK,
                            "<h1>Paid</h1><p>The shop has been notified.</p>".into(),
                        ),
                        Ok(Ok(t)) => page(
                            StatusCode::OK,
                            format!(
                                "<h1>Declined</h1><p>{}</p>",
                                escape(t["Reason"].as_str().unwrap_or(""))
                            ),
                        ),
                        Ok(Err(code)) => page(
                            StatusCode::OK,
                            format!(
                                "<h1>Refused by the shop</h1><p>check answered code {code}</p>"
                            ),
                        ),
                        Err(e) => page(
                            StatusCode::BAD_GATEWAY,
                            format!("<h1>Error</h1><p>{}</p>", escape(&e)),
                        ),
                    }
                }
            });

        show.or(submit).unify().or(api).unify().boxed()
    }

    /// Runs the fake alone on `addr` (tests). Answers the bound address; the API base
    /// URL is `http://{addr}/sandbox/cloudpayments`.
    pub async fn spawn(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        self.set_public_base(&format!("http://{bound}"));
        let routes = self.routes();
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        Ok(bound)
    }
}

/// Whether refunding `amount` of the payment transaction would give back more than
/// what is left of it after every refund so far, through the API or the dashboard.
fn over_what_is_left(
    transactions: &[Value],
    payment: &Value,
    amount: &Value,
) -> Result<bool, String> {
    let minor = |amount: &Value| {
        let mut fields = Map::new();
        fields.insert("Amount".into(), amount.clone());
        fields.insert("Currency".into(), payment["Currency"].clone());
        wire::money(&fields)
            .map(|m| m.minor())
            .map_err(|e| e.to_string())
    };
    let refunded: i64 = transactions
        .iter()
        .filter(|t| {
            t["OperationType"] == "Refund" && t["PaymentTransactionId"] == payment["TransactionId"]
        })
        .filter_map(|t| minor(&t["Amount"]).ok())
        .sum();
    Ok(refunded + minor(amount)? > minor(&payment["Amount"])?)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(status: StatusCode, body: String) -> Response {
    warp::reply::with_status(
        warp::reply::html(format!(
            "<!doctype html><html><head><meta charset=utf-8><title>CloudPayments sandbox</title></head>\
             <body><p>SANDBOX (CloudPayments): no real money moves.</p>{body}</body></html>"
        )),
        status,
    )
    .into_response()
}
