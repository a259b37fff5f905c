//! The sandbox provider: a YooKassa-compatible fake (same paths, same JSON) and a
//! checkout page with Pay and Decline buttons. Built into the binary and mounted
//! under `/sandbox` in sandbox mode, so `billing serve` completes a purchase with
//! no configuration; tests and the benchmark run it standalone on its own port,
//! with knobs for faults. Its state lives in memory: no real money, no persistence.

pub mod cloudpayments;
mod page;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

/// How a settled payment ends.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeed,
    WaitForCapture,
    Decline(String),
}

#[derive(Default)]
struct State {
    payments: HashMap<String, Value>,
    order: Vec<String>,
    keys: HashMap<String, ([u8; 32], StatusCode, Value)>,
    refunds: HashMap<String, Value>,
    declined_methods: HashMap<String, String>,
    creates: u64,
    charges: u64,
    gets: u64,
    creates_by_key: HashMap<String, u64>,
    // Faults.
    fail_creates: u32,
    lose_create_answers: u32,
    garble_create_answers: u32,
    garble: Option<Garble>,
    refuse_creates: Option<(StatusCode, String, Option<String>)>,
    create_delay: Option<Duration>,
    /// Creates are made at once and answered only after this (past the client's timeout).
    late_create_answers: Option<Duration>,
    get_delay: Option<Duration>,
    down: bool,
    // Refund faults and counters.
    refund_posts: u64,
    cut_refund_answers: bool,
    hold_refunds: bool,
    /// The shop has 54-FZ receipts on: a payment, or a partial refund, without a
    /// `receipt` is refused (400 `invalid_request`, `parameter: receipt`).
    require_receipts: bool,
    /// The receipts received, by payment id and by refund id.
    receipts: HashMap<String, Value>,
}

/// How a garbled answer is broken (the payment itself is created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Garble {
    /// The JSON stops halfway, as when the connection drops after the status line.
    CutOff,
    /// A proxy's HTML page with status 200.
    NotJson,
}

pub struct Sandbox {
    state: Mutex<State>,
    shop_id: String,
    secret: String,
    test: bool,
    /// Base URL of the checkout pages (`http://host:port`); set once bound.
    public_base: Mutex<String>,
    /// Where notifications go (our `/webhooks/yookassa`).
    webhook_url: Mutex<Option<String>>,
    http: reqwest::Client,
}

impl Sandbox {
    pub fn new(shop_id: &str, secret: &str, test: bool) -> Arc<Sandbox> {
        Arc::new(Sandbox {
            state: Mutex::new(State::default()),
            shop_id: shop_id.to_owned(),
            secret: secret.to_owned(),
            test,
            public_base: Mutex::new(String::new()),
            webhook_url: Mutex::new(None),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        })
    }

    pub fn set_public_base(&self, base: &str) {
        *self.public_base.lock().unwrap() = base.trim_end_matches('/').to_owned();
    }

    pub fn set_webhook_url(&self, url: &str) {
        *self.webhook_url.lock().unwrap() = Some(url.to_owned());
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ----- knobs and counters for tests and the benchmark -----

    /// Create calls that created something (a repeated key is not counted twice).
    pub fn creates(&self) -> u64 {
        self.st().creates
    }
    /// Charges of a saved method (renewals).
    pub fn charges(&self) -> u64 {
        self.st().charges
    }
    pub fn gets(&self) -> u64 {
        self.st().gets
    }
    /// How many POST /payments arrived with this key (repeats included).
    pub fn requests_with_key(&self, key: &str) -> u64 {
        self.st().creates_by_key.get(key).copied().unwrap_or(0)
    }
    /// The next `n` creates answer 500 without creating anything.
    pub fn fail_creates(&self, n: u32) {
        self.st().fail_creates = n;
    }
    /// The next `n` creates create the payment but answer 500 (outcome unknown to the caller).
    pub fn lose_create_answers(&self, n: u32) {
        self.st().lose_create_answers = n;
    }
    /// The next `n` creates that answer 200 (a repeated key included) create as usual but
    /// answer a broken body: the caller cannot tell what happened.
    pub fn garble_create_answers(&self, n: u32, how: Garble) {
        let mut st = self.st();
        st.garble_create_answers = n;
        st.garble = Some(how);
    }
    /// Until called with None, every create is refused with this HTTP status and error
    /// `code` (and `parameter`), creating nothing: e.g. 401 `invalid_credentials` after
    /// a key rotation, 403 `forbidden`, 400 `invalid_request` for `payment_method_id`.
    pub fn refuse_creates(&self, refusal: Option<(u16, &str, Option<&str>)>) {
        self.st().refuse_creates = refusal.map(|(status, code, parameter)| {
            (
                StatusCode::from_u16(status).expect("an HTTP status"),
                code.to_owned(),
                parameter.map(str::to_owned),
            )
        });
    }
    /// Forgets every idempotence key, as YooKassa does after 24 h: a re-sent key then
    /// creates a new payment.
    pub fn expire_keys(&self) {
        self.st().keys.clear();
    }
    /// Every create waits this long before it is handled (a slow provider).
    pub fn set_create_delay(&self, delay: Option<Duration>) {
        self.st().create_delay = delay;
    }
    /// Makes every create at once and answers it only after `delay` (None: at once):
    /// a client that stops waiting first does not know the payment exists.
    pub fn set_late_create_answers(&self, delay: Option<Duration>) {
        self.st().late_create_answers = delay;
    }
    /// Every GET waits this long first (a degraded provider).
    pub fn set_get_delay(&self, delay: Option<Duration>) {
        self.st().get_delay = delay;
    }
    /// Every call answers 503.
    pub fn set_down(&self, down: bool) {
        self.st().down = down;
    }
    /// Charges of this saved method are declined with `reason`.
    pub fn decline_method(&self, method_id: &str, reason: &str) {
        self.st()
            .declined_methods
            .insert(method_id.to_owned(), reason.to_owned());
    }
    /// POST /refunds calls that passed the gate (repeats with the same key included).
    /// Receipts on (or off) in the fake shop's settings.
    pub fn require_receipts(&self, on: bool) {
        self.st().require_receipts = on;
    }

    /// The receipt sent with this payment's (or refund's) create, as it arrived.
    pub fn receipt_of(&self, id: &str) -> Option<Value> {
        self.st().receipts.get(id).cloned()
    }

    pub fn refund_requests(&self) -> u64 {
        self.st().refund_posts
    }
    /// While on, a refund is recorded but its 200 answer is cut off (unreadable JSON).
    pub fn cut_refund_answers(&self, on: bool) {
        self.st().cut_refund_answers = on;
    }
    /// While on, new refunds stay `pending` until `settle_refund`.
    pub fn hold_refunds(&self, on: bool) {
        self.st().hold_refunds = on;
    }
    /// Moves a held refund to `succeeded` or `canceled` (giving the amount back), without notifying.
    pub fn settle_refund(&self, id: &str, status: &str) {
        let mut st = self.st();
        let Some(refund) = st.refunds.get_mut(id) else {
            return;
        };
        refund["status"] = json!(status);
        let (payment_id, amount) = (refund["payment_id"].clone(), refund["amount"].clone());
        if status == "canceled" {
            let minor = |v: &Value| {
                crate::providers::yookassa::wire::money(v)
                    .map(|m| m.minor())
                    .unwrap_or(0)
            };
            if let Some(p) = st.payments.get_mut(payment_id.as_str().unwrap_or_default()) {
                let left = minor(&p["refunded_amount"]) - minor(&amount);
                p["refunded_amount"]["value"] = json!(crate::domain::money::format_minor(left));
            }
        }
    }
    /// Moves every time recorded here back by `by`, as the simulator moves the
    /// service's clock forward. A day or more forgets every idempotence key, as
    /// YooKassa keeps them 24 h.
    pub fn warp(&self, by: chrono::Duration) {
        let back = |v: Option<&mut Value>| {
            let Some(v) = v else { return };
            if let Some(t) = v
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            {
                *v = json!(
                    (t.with_timezone(&Utc) - by).to_rfc3339_opts(SecondsFormat::Millis, true)
                );
            }
        };
        let mut st = self.st();
        for p in st.payments.values_mut() {
            back(p.get_mut("created_at"));
            back(p.get_mut("captured_at"));
        }
        for r in st.refunds.values_mut() {
            back(r.get_mut("created_at"));
        }
        if by >= chrono::Duration::hours(24) {
            st.keys.clear();
        }
    }
    pub fn payment(&self, id: &str) -> Option<Value> {
        self.st().payments.get(id).cloned()
    }
    pub fn refund_object(&self, id: &str) -> Option<Value> {
        self.st().refunds.get(id).cloned()
    }
    pub fn refunds(&self) -> usize {
        self.st().refunds.len()
    }
    /// The ids of every refund made here (e.g. one whose answer was lost on the way).
    pub fn refund_ids(&self) -> Vec<String> {
        self.st().refunds.keys().cloned().collect()
    }
    pub fn payments(&self) -> Vec<Value> {
        let st = self.st();
        st.order
            .iter()
            .filter_map(|id| st.payments.get(id).cloned())
            .collect()
    }
    /// Overwrites a field of a payment (e.g. a tampered amount).
    pub fn patch(&self, id: &str, field: &str, value: Value) {
        if let Some(p) = self.st().payments.get_mut(id) {
            p[field] = value;
        }
    }

    /// Records a pending payment as if created with this id (the benchmark mirrors
    /// rows it inserted in bulk, without N create calls). Counts as no create.
    pub fn insert_pending(&self, id: &str, amount: Value, metadata: Value) {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let currency = amount["currency"].clone();
        let payment = json!({
            "id": id, "status": "pending", "paid": false, "amount": amount,
            "recipient": {"account_id": self.shop_id, "gateway_id": "100001"},
            "created_at": now, "test": self.test, "refundable": false,
            "refunded_amount": {"value": "0.00", "currency": currency},
            "metadata": metadata,
        });
        let mut st = self.st();
        st.order.push(id.to_owned());
        st.payments.insert(id.to_owned(), payment);
    }

    /// Moves a payment to its final (or capture) state without notifying anyone.
    pub fn settle(&self, id: &str, outcome: Outcome) -> Option<Value> {
        let mut st = self.st();
        let p = st.payments.get_mut(id)?;
        apply_outcome(p, &outcome);
        Some(p.clone())
    }

    /// Sends a notification about the payment's current state to the webhook, as
    /// YooKassa would. Answers the webhook's HTTP status.
    pub async fn notify(&self, id: &str) -> Result<u16, String> {
        let payment = self.payment(id).ok_or("no such payment")?;
        let event = format!(
            "payment.{}",
            payment["status"].as_str().unwrap_or("pending")
        );
        self.notify_raw(&event, payment).await
    }

    pub async fn notify_raw(&self, event: &str, object: Value) -> Result<u16, String> {
        let url = self
            .webhook_url
            .lock()
            .unwrap()
            .clone()
            .ok_or("no webhook URL")?;
        let body = json!({"type": "notification", "event": event, "object": object});
        let resp = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(resp.status().as_u16())
    }

    // ----- the API -----

    fn authorized(&self, header: Option<&str>) -> bool {
        use base64::Engine;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.shop_id, self.secret))
        );
        header.is_some_and(|h| {
            subtle::ConstantTimeEq::ct_eq(h.as_bytes(), expected.as_bytes()).into()
        })
    }

    fn create(&self, key: Option<String>, body: &[u8]) -> (StatusCode, Value) {
        let Some(key) = key.filter(|k| !k.is_empty() && k.len() <= 64) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Idempotence-Key header is required",
            );
        };
        let hash: [u8; 32] = Sha256::digest(body).into();
        let mut st = self.st();
        *st.creates_by_key.entry(key.clone()).or_default() += 1;
        if let Some((status, code, parameter)) = &st.refuse_creates {
            let (status, mut body) = error(*status, code, "sandbox: injected refusal");
            if let Some(p) = parameter {
                body["parameter"] = json!(p);
            }
            return (status, body);
        }
        if let Some((h, status, resp)) = st.keys.get(&key) {
            if *h != hash {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Idempotence key duplicated",
                );
            }
            return (*status, resp.clone());
        }
        if st.fail_creates > 0 {
            st.fail_creates -= 1;
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_server_error",
                "sandbox: injected failure",
            );
        }
        let Ok(req) = serde_json::from_slice::<Value>(body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "body is not JSON",
            );
        };
        if req["amount"]["value"].as_str().is_none() || req["amount"]["currency"].as_str().is_none()
        {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "amount is required",
            );
        }
        if let Err(why) = check_receipt(&req["receipt"], &req["amount"], st.require_receipts) {
            let (status, mut body) = error(StatusCode::BAD_REQUEST, "invalid_request", &why);
            body["parameter"] = json!("receipt");
            return (status, body);
        }
        let id = format!(
            "{}-000f-5000-9000-{}",
            &Uuid::new_v4().simple().to_string()[..8],
            &Uuid::new_v4().simple().to_string()[..12]
        );
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut payment = json!({
            "id": id,
            "status": "pending",
            "paid": false,
            "amount": req["amount"],
            "description": req["description"],
            "recipient": {"account_id": self.shop_id, "gateway_id": "100001"},
            "created_at": now,
            "test": self.test,
            "refundable": false,
            "refunded_amount": {"value": "0.00", "currency": req["amount"]["currency"]},
            "metadata": req["metadata"],
        });
        if let Some(method_id) = req["payment_method_id"].as_str() {
            // A charge with no viewer present (renewal): settled at once.
            st.charges += 1;
            payment["payment_method"] = card(method_id, true);
            let outcome = match st.declined_methods.get(method_id) {
                Some(reason) => Outcome::Decline(reason.clone()),
                None => Outcome::Succeed,
            };
            apply_outcome(&mut payment, &outcome);
        } else {
            let base = self.public_base.lock().unwrap().clone();
            payment["confirmation"] = json!({
                "type": "redirect",
                "return_url": req["confirmation"]["return_url"],
                "confirmation_url": format!("{base}/sandbox/checkout/{id}"),
            });
            payment["save_payment_method"] =
                json!(req["save_payment_method"].as_bool().unwrap_or(false));
        }
        if !req["receipt"].is_null() {
            payment["receipt_registration"] = json!("succeeded");
            st.receipts.insert(id.clone(), req["receipt"].clone());
        }
        st.creates += 1;
        st.order.push(id.clone());
        st.payments.insert(id, payment.clone());
        st.keys.insert(key, (hash, StatusCode::OK, payment.clone()));
        if st.lose_create_answers > 0 {
            st.lose_create_answers -= 1;
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_server_error",
                "sandbox: answer lost",
            );
        }
        (StatusCode::OK, public(&payment))
    }

    fn list(&self, query: &HashMap<String, String>) -> Value {
        let st = self.st();
        let since = query.get("created_at.gte").cloned().unwrap_or_default();
        let until = query.get("created_at.lte").cloned();
        // Newest first, as YooKassa lists. Times share one format, so text order is time order.
        let matching: Vec<&String> = st
            .order
            .iter()
            .rev()
            .filter(|id| {
                let at = st.payments[*id]["created_at"].as_str().unwrap_or("");
                at >= since.as_str() && until.as_deref().is_none_or(|u| at <= u)
            })
            .collect();
        list_page(query, matching, |id| public(&st.payments[id]))
    }

    /// `GET /refunds?payment_id=…&created_at.gte=…&created_at.lte=…` (each filter
    /// optional): the refunds, oldest first, paged like the payments list.
    fn list_refunds(&self, query: &HashMap<String, String>) -> Value {
        let st = self.st();
        let payment = query.get("payment_id").cloned().unwrap_or_default();
        let since = query.get("created_at.gte").cloned().unwrap_or_default();
        let until = query.get("created_at.lte").cloned();
        let mut matching: Vec<&Value> = st
            .refunds
            .values()
            .filter(|r| payment.is_empty() || r["payment_id"] == payment.as_str())
            .filter(|r| {
                let at = r["created_at"].as_str().unwrap_or("");
                at >= since.as_str() && until.as_deref().is_none_or(|u| at <= u)
            })
            .collect();
        matching.sort_by_key(|r| (r["created_at"].as_str(), r["id"].as_str()));
        list_page(query, matching, Value::clone)
    }

    fn refund(&self, key: Option<String>, body: &[u8]) -> (StatusCode, Value) {
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Idempotence-Key header is required",
            );
        };
        let hash: [u8; 32] = Sha256::digest(body).into();
        let mut st = self.st();
        st.refund_posts += 1;
        let refund_key = format!("refund:{key}");
        if let Some((h, status, resp)) = st.keys.get(&refund_key) {
            return if *h == hash {
                (*status, resp.clone())
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Idempotence key duplicated",
                )
            };
        }
        let Ok(req) = serde_json::from_slice::<Value>(body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "body is not JSON",
            );
        };
        let refund = match make_refund(&mut st, &req) {
            Ok(refund) => refund,
            Err(refused) => return refused,
        };
        st.keys
            .insert(refund_key, (hash, StatusCode::OK, refund.clone()));
        (StatusCode::OK, refund)
    }

    /// A refund made in the merchant dashboard: recorded as `succeeded` with no
    /// notification (send one with `notify_raw("refund.succeeded", …)`, or let it be
    /// lost). Refused, like the API, over what is left of the payment.
    pub fn refund_in_dashboard(&self, payment_id: &str, value: &str) -> Result<Value, String> {
        let mut st = self.st();
        let held = std::mem::replace(&mut st.hold_refunds, false);
        let made = make_refund(
            &mut st,
            &json!({"payment_id": payment_id, "amount": {"value": value, "currency": "RUB"},
                    "description": "dashboard"}),
        );
        st.hold_refunds = held;
        made.map_err(|(status, body)| format!("{status}: {body}"))
    }

    /// Whether this (status) answer to a create is to be garbled; counts it down.
    fn take_garble(&self, status: StatusCode) -> Option<Garble> {
        let mut st = self.st();
        if status != StatusCode::OK || st.garble_create_answers == 0 {
            return None;
        }
        st.garble_create_answers -= 1;
        st.garble
    }

    /// The API and checkout routes, under `/sandbox`.
    pub fn routes(self: &Arc<Self>) -> BoxedFilter<(Response,)> {
        let me = self.clone();
        let with = move || {
            let me = me.clone();
            warp::any().map(move || me.clone())
        };
        let api = warp::path!("sandbox" / "yookassa" / "v3" / ..);
        let gate = with()
            .and(warp::header::optional::<String>("authorization"))
            .and_then(|sb: Arc<Sandbox>, auth: Option<String>| async move {
                if sb.st().down {
                    return Err(warp::reject::custom(Gate(error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "internal_server_error",
                        "sandbox is down",
                    ))));
                }
                if !sb.authorized(auth.as_deref()) {
                    return Err(warp::reject::custom(Gate(error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_credentials",
                        "bad shop id or secret key",
                    ))));
                }
                Ok(sb)
            });

        let create = api
            .and(warp::path!("payments"))
            .and(warp::post())
            .and(gate.clone())
            .and(warp::header::optional::<String>("idempotence-key"))
            .and(warp::body::bytes())
            .then(|sb: Arc<Sandbox>, key, body: bytes::Bytes| async move {
                let delay = sb.st().create_delay;
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                let answer = sb.create(key, &body);
                let late = sb.st().late_create_answers;
                if let Some(d) = late {
                    tokio::time::sleep(d).await;
                }
                match sb.take_garble(answer.0) {
                    Some(how) => garbled(how, &answer.1),
                    None => reply(answer),
                }
            });
        let list = api
            .and(warp::path!("payments"))
            .and(warp::get())
            .and(gate.clone())
            .and(warp::query::<HashMap<String, String>>())
            .map(|sb: Arc<Sandbox>, q: HashMap<String, String>| {
                reply((StatusCode::OK, sb.list(&q)))
            });
        let get = api
            .and(warp::path!("payments" / String))
            .and(warp::get())
            .and(gate.clone())
            .then(|id: String, sb: Arc<Sandbox>| async move {
                let delay = {
                    let mut st = sb.st();
                    st.gets += 1;
                    st.get_delay
                };
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                match sb.payment(&id) {
                    Some(p) => reply((StatusCode::OK, public(&p))),
                    None => reply(error(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        "payment not found",
                    )),
                }
            });
        let create_refund = api
            .and(warp::path!("refunds"))
            .and(warp::post())
            .and(gate.clone())
            .and(warp::header::optional::<String>("idempotence-key"))
            .and(warp::body::bytes())
            .map(|sb: Arc<Sandbox>, key, body: bytes::Bytes| {
                let answer = sb.refund(key, &body);
                if sb.st().cut_refund_answers && answer.0 == StatusCode::OK {
                    garbled(Garble::CutOff, &answer.1)
                } else {
                    reply(answer)
                }
            });
        let list_refunds = api
            .and(warp::path!("refunds"))
            .and(warp::get())
            .and(gate.clone())
            .and(warp::query::<HashMap<String, String>>())
            .map(|sb: Arc<Sandbox>, q: HashMap<String, String>| {
                reply((StatusCode::OK, sb.list_refunds(&q)))
            });
        let get_refund = api
            .and(warp::path!("refunds" / String))
            .and(warp::get())
            .and(gate)
            .map(
                |id: String, sb: Arc<Sandbox>| match sb.st().refunds.get(&id) {
                    Some(r) => reply((StatusCode::OK, r.clone())),
                    None => reply(error(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        "refund not found",
                    )),
                },
            );

        let pages = page::routes(self.clone());
        create
            .or(list)
            .unify()
            .or(get)
            .unify()
            .or(create_refund)
            .unify()
            .or(list_refunds)
            .unify()
            .or(get_refund)
            .unify()
            .or(pages)
            .unify()
            .recover(|r: warp::Rejection| async move {
                match r.find::<Gate>() {
                    Some(Gate((status, body))) => Ok(reply((*status, body.clone()))),
                    None => Err(r),
                }
            })
            .unify()
            .boxed()
    }

    /// Runs the sandbox alone on `addr` (tests, benchmark). Answers the bound address.
    pub async fn spawn(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        self.set_public_base(&format!("http://{bound}"));
        let routes = self.routes();
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        Ok(bound)
    }
}

/// Records a refund of `req` (`payment_id`, `amount`, `description`) if the payment
/// has that much left; answers it, or the error YooKassa would answer.
fn make_refund(st: &mut State, req: &Value) -> Result<Value, (StatusCode, Value)> {
    let payment_id = req["payment_id"].as_str().unwrap_or_default().to_owned();
    let Some(payment) = st.payments.get_mut(&payment_id) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "payment not found",
        ));
    };
    if payment["status"] != "succeeded" {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "payment is not succeeded",
        ));
    }
    let to_minor = |v: &Value| {
        crate::providers::yookassa::wire::money(v)
            .map(|m| m.minor())
            .unwrap_or(0)
    };
    let amount = to_minor(&req["amount"]);
    let total = to_minor(&payment["amount"]);
    // A whole payment given back needs no receipt (YooKassa makes it from the
    // payment's); a partial refund describes what goes back.
    let partial = amount != total;
    if let Err(why) = check_receipt(
        &req["receipt"],
        &req["amount"],
        st.require_receipts && partial,
    ) {
        let (status, mut body) = error(StatusCode::BAD_REQUEST, "invalid_request", &why);
        body["parameter"] = json!("receipt");
        return Err((status, body));
    }
    let payment = st.payments.get_mut(&payment_id).expect("looked up above");
    let refunded = to_minor(&payment["refunded_amount"]);
    if amount <= 0 || refunded + amount > total {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refund amount exceeds the payment",
        ));
    }
    let currency = payment["amount"]["currency"].clone();
    payment["refunded_amount"] = json!({"value": crate::domain::money::format_minor(refunded + amount), "currency": currency});
    let id = format!(
        "{}-0015-5000-a000-{}",
        &Uuid::new_v4().simple().to_string()[..8],
        &Uuid::new_v4().simple().to_string()[..12]
    );
    let status = if st.hold_refunds {
        "pending"
    } else {
        "succeeded"
    };
    let refund = json!({
        "id": id, "payment_id": payment_id, "status": status,
        "created_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "amount": req["amount"], "description": req["description"],
    });
    if !req["receipt"].is_null() {
        st.receipts.insert(id.clone(), req["receipt"].clone());
    }
    st.refunds.insert(id, refund.clone());
    Ok(refund)
}

/// What YooKassa checks of a `receipt` (the field facts in docs/providers.md): a
/// customer to send it to, 1..100 lines each with a description of 1..128
/// characters, a quantity, an amount, a VAT code 1..12, a payment subject and
/// mode; the lines add up to the amount charged. Absent: refused when required.
fn check_receipt(receipt: &Value, amount: &Value, required: bool) -> Result<(), String> {
    if receipt.is_null() {
        return if required {
            Err("Receipt is missing or illegal".into())
        } else {
            Ok(())
        };
    }
    let customer = &receipt["customer"];
    if customer["email"].as_str().is_none() && customer["phone"].as_str().is_none() {
        return Err("receipt.customer needs an email or a phone".into());
    }
    if let Some(phone) = customer["phone"].as_str() {
        if phone.is_empty() || !phone.bytes().all(|b| b.is_ascii_digit()) {
            return Err("receipt.customer.phone must be E.164 digits".into());
        }
    }
    let Some(items) = receipt["items"]
        .as_array()
        .filter(|i| !i.is_empty() && i.len() <= 100)
    else {
        return Err("receipt.items must hold 1..100 items".into());
    };
    let money = |v: &Value| crate::providers::yookassa::wire::money(v).map(|m| m.minor());
    let mut total = 0i64;
    for item in items {
        let description = item["description"].as_str().unwrap_or("");
        if description.is_empty() || description.chars().count() > 128 {
            return Err("receipt.items.description must be 1..128 characters".into());
        }
        let quantity: i64 = match &item["quantity"] {
            Value::String(q) => q
                .trim_end_matches(".00")
                .parse()
                .map_err(|_| "receipt.items.quantity")?,
            Value::Number(n) => n.as_i64().ok_or("receipt.items.quantity")?,
            _ => return Err("receipt.items.quantity is required".into()),
        };
        let line = money(&item["amount"]).map_err(|_| "receipt.items.amount")?;
        if !item["vat_code"]
            .as_u64()
            .is_some_and(|c| (1..=12).contains(&c))
        {
            return Err("receipt.items.vat_code must be 1..12".into());
        }
        for field in ["payment_subject", "payment_mode"] {
            if item[field].as_str().is_none() {
                return Err(format!("receipt.items.{field} is required"));
            }
        }
        total += line * quantity;
    }
    if let Some(code) = receipt.get("tax_system_code") {
        if !code.as_u64().is_some_and(|c| (1..=6).contains(&c)) {
            return Err("receipt.tax_system_code must be 1..6".into());
        }
    }
    if money(amount).ok() != Some(total) {
        return Err("the receipt's items do not add up to the amount".into());
    }
    Ok(())
}

#[derive(Debug)]
struct Gate((StatusCode, Value));
impl warp::reject::Reject for Gate {}

fn reply((status, body): (StatusCode, Value)) -> Response {
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

fn garbled(how: Garble, body: &Value) -> Response {
    let text = match how {
        Garble::CutOff => {
            let full = body.to_string();
            full.chars().take(full.chars().count() / 2).collect()
        }
        Garble::NotJson => "<html><body>502 Bad Gateway</body></html>".to_owned(),
    };
    warp::reply::with_header(text, "content-type", "application/json").into_response()
}

fn error(status: StatusCode, code: &str, description: &str) -> (StatusCode, Value) {
    (
        status,
        json!({"type": "error", "id": Uuid::new_v4(), "code": code, "description": description}),
    )
}

/// What the API shows (internal helper fields removed).
fn public(p: &Value) -> Value {
    let mut p = p.clone();
    if let Some(o) = p.as_object_mut() {
        o.remove("save_payment_method");
    }
    p
}

fn card(method_id: &str, saved: bool) -> Value {
    json!({
        "type": "bank_card", "id": method_id, "saved": saved, "title": "Bank card *4444",
        "card": {"first6": "555555", "last4": "4444", "expiry_month": "12", "expiry_year": "2030",
                 "card_type": "MasterCard", "issuer_country": "RU"}
    })
}

fn apply_outcome(p: &mut Value, outcome: &Outcome) {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    if p["payment_method"].is_null() {
        let saved = p["save_payment_method"].as_bool().unwrap_or(false);
        p["payment_method"] = card(&format!("pm-{}", Uuid::new_v4()), saved);
    }
    match outcome {
        Outcome::Succeed => {
            p["status"] = json!("succeeded");
            p["paid"] = json!(true);
            p["captured_at"] = json!(now);
            p["refundable"] = json!(true);
            p["income_amount"] = p["amount"].clone();
        }
        Outcome::WaitForCapture => {
            p["status"] = json!("waiting_for_capture");
            p["paid"] = json!(true);
            p["expires_at"] = json!((Utc::now() + chrono::Duration::days(7))
                .to_rfc3339_opts(SecondsFormat::Millis, true));
        }
        Outcome::Decline(reason) => {
            p["status"] = json!("canceled");
            p["paid"] = json!(false);
            let party = if reason == "expired_on_confirmation" {
                "yoo_money"
            } else {
                "payment_network"
            };
            p["cancellation_details"] = json!({"party": party, "reason": reason});
            // A declined card is not saved.
            p["payment_method"]["saved"] = json!(false);
        }
    }
}

/// One page of a YooKassa list: `limit` (10 by default, 1 to 100) items from the
/// `cursor` (an offset here), and the cursor of the next page if there is one.
/// Only the page's items are rendered.
fn list_page<T>(
    query: &HashMap<String, String>,
    all: Vec<T>,
    render: impl Fn(T) -> Value,
) -> Value {
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let start: usize = query
        .get("cursor")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let next = (start + limit < all.len()).then(|| (start + limit).to_string());
    let items: Vec<Value> = all
        .into_iter()
        .skip(start)
        .take(limit)
        .map(render)
        .collect();
    json!({"type": "list", "items": items, "next_cursor": next})
}
