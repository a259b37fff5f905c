//! Fuzz targets: every function that reads bytes from outside, each with the
//! properties it must keep, not only "does not panic". One function per target
//! takes the fuzzer's bytes; `fuzz/` runs them under libFuzzer (`cargo +nightly
//! fuzz run <target>`), `tests/fuzz_targets.rs` replays the seed corpus and
//! proptest's bytes through the same functions on stable, so they cannot rot.
//! FUZZING.md has the runs.
//!
//! Plain bytes rarely get past a JSON parser, so the JSON targets are structure
//! aware: the first byte chooses between the bytes as they are and a fixture from
//! `fixtures/` edited by the rest of the input ([`edit_json`]).

use std::net::IpAddr;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::config::Secret;
use crate::domain::PaySystem;
use crate::domain::{duration, Currency, Money};
use crate::http::body::has_nul;
use crate::http::handlers::account::pagination;
use crate::http::webhook_auth::{
    client_ip, sign_content_hmac, sign_ops, verify_content_hmac, verify_ops, OpsRejection,
};
use crate::providers::cloudpayments::{self, CloudPayments, Kind};
use crate::providers::webhook::{restore, Endpoint, Received, Stored, Webhooks};
use crate::providers::yookassa::{wire as yookassa_wire, YooKassa};
use crate::service::idempotency::IdempotencyKey;

/// A target: takes the fuzzer's bytes, panics when a property breaks.
pub type Target = fn(&[u8]);

/// Every target by name, for the replay test and the fuzz crate's list.
pub const TARGETS: &[(&str, Target)] = &[
    ("yookassa_notification", yookassa_notification),
    ("yookassa_answer", yookassa_answer),
    ("cloudpayments_notification", cloudpayments_notification),
    ("cloudpayments_answer", cloudpayments_answer),
    ("cloudpayments_signature", cloudpayments_signature),
    ("standard_webhooks", standard_webhooks),
    ("jwt", jwt),
    ("forwarded_for", forwarded_for),
    ("money", money),
    ("duration", duration),
    ("idempotency_key", idempotency_key),
    ("pagination", pagination_query),
];

/// The fixtures the JSON targets start from (also their seed corpus).
pub const YOOKASSA_FIXTURES: &[&str] = &[
    include_str!("../fixtures/yookassa/payment.succeeded.json"),
    include_str!("../fixtures/yookassa/payment.waiting_for_capture.json"),
    include_str!("../fixtures/yookassa/payment.canceled.insufficient_funds.json"),
    include_str!("../fixtures/yookassa/payment.canceled.expired_on_confirmation.json"),
    include_str!("../fixtures/yookassa/payment.canceled.permission_revoked.json"),
    include_str!("../fixtures/yookassa/refund.succeeded.json"),
    include_str!("../fixtures/yookassa/unknown.payout.succeeded.json"),
];

pub const CLOUDPAYMENTS_FIXTURES: &[&str] = &[
    include_str!("../fixtures/cloudpayments/check.json"),
    include_str!("../fixtures/cloudpayments/pay.json"),
    include_str!("../fixtures/cloudpayments/confirm.json"),
    include_str!("../fixtures/cloudpayments/fail.json"),
    include_str!("../fixtures/cloudpayments/cancel.json"),
    include_str!("../fixtures/cloudpayments/refund.json"),
    include_str!("../fixtures/cloudpayments/recurrent.json"),
];

/// The fuzzer's bytes, read front to back; reads past the end give zeros.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u64(&mut self) -> u64 {
        let mut n = [0u8; 8];
        for b in &mut n {
            *b = self.byte();
        }
        u64::from_le_bytes(n)
    }

    /// Up to `max` bytes, the count chosen by the input.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = (self.byte() as usize).min(max).min(self.data.len());
        let (taken, rest) = self.data.split_at(n);
        self.data = rest;
        taken
    }

    pub fn text(&mut self, max: usize) -> String {
        String::from_utf8_lossy(self.bytes(max)).into_owned()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Field names the parsers look for, so edits add what matters.
const NAMES: &[&str] = &[
    "event",
    "object",
    "id",
    "status",
    "amount",
    "value",
    "currency",
    "metadata",
    "payment_id",
    "paid",
    "test",
    "recipient",
    "account_id",
    "payment_method",
    "saved",
    "cancellation_details",
    "TransactionId",
    "PaymentTransactionId",
    "InvoiceId",
    "AccountId",
    "Amount",
    "Currency",
    "Status",
    "TestMode",
    "ReasonCode",
    "Token",
    "CardLastFour",
    "Id",
];

/// Texts that mean something to some parser.
const WORDS: &[&str] = &[
    "",
    " ",
    "payment.succeeded",
    "payment.canceled",
    "payment.waiting_for_capture",
    "refund.succeeded",
    "succeeded",
    "canceled",
    "pending",
    "Completed",
    "Declined",
    "Authorized",
    "RUB",
    "USD",
    "XXX",
    "299.00",
    "0.01",
    "-1.00",
    "1e2",
    "1000000000000000000000",
    "00000000-0000-4000-8000-000000000001",
    "true",
    "True",
    "1",
    "\u{0}",
    "\\u0000",
    "2026-11-27T10:00:01.000Z",
];

/// A fixture edited by the input: each edit picks a path and replaces, removes or
/// adds a value. Eight edits at most, so the result stays close to a real body.
pub fn edit_json(base: &str, input: &mut Input<'_>) -> Value {
    let mut value: Value = serde_json::from_str(base).expect("fixtures are JSON");
    let edits = input.byte() % 9;
    for _ in 0..edits {
        edit(&mut value, input, 0);
    }
    value
}

fn edit(value: &mut Value, input: &mut Input<'_>, depth: usize) {
    let choice = input.byte();
    // Go deeper a few times out of four while there is somewhere to go.
    if depth < 6 && !choice.is_multiple_of(4) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                let i = input.byte() as usize % map.len();
                let key = map.keys().nth(i).cloned().expect("in range");
                if choice % 7 == 1 {
                    map.remove(&key);
                    return;
                }
                return edit(map.get_mut(&key).expect("present"), input, depth + 1);
            }
            Value::Array(items) if !items.is_empty() => {
                let i = input.byte() as usize % items.len();
                return edit(&mut items[i], input, depth + 1);
            }
            _ => {}
        }
    }
    if let (Value::Object(map), 1) = (&mut *value, choice % 3) {
        let name = NAMES[input.byte() as usize % NAMES.len()];
        map.insert(name.to_owned(), scalar(input, depth));
        return;
    }
    *value = scalar(input, depth);
}

fn scalar(input: &mut Input<'_>, depth: usize) -> Value {
    match input.byte() % 10 {
        0 => Value::Null,
        1 => Value::Bool(input.byte().is_multiple_of(2)),
        2 => Value::from(input.u64() as i64),
        3 => serde_json::Number::from_f64(f64::from_bits(input.u64()))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        4 => Value::from(input.u64() % 100_000),
        5 | 6 => Value::String(WORDS[input.byte() as usize % WORDS.len()].to_owned()),
        7 => Value::String(input.text(64)),
        8 if depth < 4 => {
            let mut map = Map::new();
            for _ in 0..input.byte() % 3 {
                let name = NAMES[input.byte() as usize % NAMES.len()];
                map.insert(name.to_owned(), scalar(input, depth + 1));
            }
            Value::Object(map)
        }
        _ => Value::Array(
            (0..input.byte() % 3)
                .map(|_| scalar(input, depth + 1))
                .collect(),
        ),
    }
}

/// The body the JSON targets parse: the bytes as sent, or an edited fixture.
fn json_body(input: &mut Input<'_>, fixtures: &[&str]) -> Vec<u8> {
    let mode = input.byte();
    if mode.is_multiple_of(4) {
        return input.rest().to_vec();
    }
    let base = fixtures[input.byte() as usize % fixtures.len()];
    serde_json::to_vec(&edit_json(base, input)).expect("a Value serialises")
}

fn yookassa_client() -> &'static YooKassa {
    static CLIENT: OnceLock<YooKassa> = OnceLock::new();
    CLIENT.get_or_init(|| YooKassa::new("http://127.0.0.1:9/v3", "1", Secret::new("k")))
}

const CP_SECRET: &str = "fuzz-api-secret";

fn cloudpayments_client() -> &'static CloudPayments {
    static CLIENT: OnceLock<CloudPayments> = OnceLock::new();
    CLIENT.get_or_init(|| CloudPayments::new("http://127.0.0.1:9", "pk", Secret::new(CP_SECRET)))
}

/// What the inbox stores must be storable (non-empty keys, no NUL) and read back
/// as it was read: the retry worker and replays act on the restored notification.
fn check_stored(system: PaySystem, received: &Received, body: &[u8], ct: Option<&str>) {
    let (event, object_id) = (&received.event, &received.object_id);
    assert!(
        !event.contains('\0') && !object_id.contains('\0'),
        "NUL in an inbox key"
    );
    assert!(
        !event.is_empty() && !object_id.is_empty(),
        "an empty inbox key"
    );
    let stored = Stored {
        event,
        object_id,
        body: Some(body),
        content_type: ct,
    };
    let restored = restore(system, &stored).expect("a stored notification reads again");
    assert_eq!(
        format!("{restored:?}"),
        format!("{:?}", received.notification)
    );
}

/// YooKassa's notification body: parsed, stored and restored alike; serialising
/// what was parsed and parsing it again reads the same.
pub fn yookassa_notification(data: &[u8]) {
    let mut input = Input::new(data);
    let body = json_body(&mut input, YOOKASSA_FIXTURES);
    let yk = yookassa_client();
    let Ok(received) = yk.parse(Endpoint::YooKassa, &body, None) else {
        return;
    };
    if has_nul(&body) {
        return; // 400 bad_text at the edge: never parsed (the keys may hold a NUL)
    }
    check_stored(PaySystem::YooKassa, &received, &body, None);
    let value: Value = serde_json::from_slice(&body).expect("parsed once");
    let again = yk
        .parse(
            Endpoint::YooKassa,
            &serde_json::to_vec(&value).expect("serialises"),
            None,
        )
        .expect("what parsed once parses again");
    assert_eq!(again.event, received.event);
    assert_eq!(again.object_id, received.object_id);
}

/// A money amount read from a provider keeps its exact value through our decimal
/// string (what we send back in refunds and captures).
fn check_money(m: Money) {
    assert!(m.minor() > 0, "a provider amount is positive: {m:?}");
    assert_eq!(Money::parse(&m.value_string(), m.currency()), Ok(m));
}

/// YooKassa's API answers (a payment, a refund): whatever they hold, reading them
/// does not panic, and an amount read is exact.
pub fn yookassa_answer(data: &[u8]) {
    let mut input = Input::new(data);
    let body = json_body(&mut input, YOOKASSA_FIXTURES);
    let Ok(mut value) = serde_json::from_slice::<Value>(&body) else {
        return;
    };
    // Answers are the notification's object.
    if let Some(object) = value.get_mut("object") {
        value = object.take();
    }
    if let Ok(p) = yookassa_wire::payment(&value) {
        check_money(p.amount);
        assert!(
            yookassa_wire::is_safe_id(&p.id),
            "{:?} cannot go in a URL",
            p.id
        );
    }
    if let Ok(r) = yookassa_wire::refund(&value) {
        check_money(r.amount);
        assert!(
            yookassa_wire::is_safe_id(&r.id),
            "{:?} cannot go in a URL",
            r.id
        );
    }
    let _ = yookassa_wire::money(&value["amount"]);
}

/// CloudPayments' notifications, JSON or form, by every kind and Content-Type:
/// stored and restored alike; a form with the same fields as a JSON body reads the same.
pub fn cloudpayments_notification(data: &[u8]) {
    let mut input = Input::new(data);
    let kind = Kind::ALL[input.byte() as usize % Kind::ALL.len()];
    let ct = match input.byte() % 5 {
        0 => Some("application/json"),
        1 => Some("application/x-www-form-urlencoded"),
        2 => None,
        3 => Some("text/plain"),
        _ => Some("application/json; charset=utf-8"),
    };
    let as_form = input.byte().is_multiple_of(3);
    let mut body = json_body(&mut input, CLOUDPAYMENTS_FIXTURES);
    let ct = if as_form {
        // The same fields as a form, when they are all texts or numbers.
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => match form_of(&map) {
                Some(form) => {
                    let from_json = cloudpayments::webhook::Notice::parse(
                        kind,
                        &body,
                        Some("application/json"),
                    );
                    let from_form = cloudpayments::webhook::Notice::parse(
                        kind,
                        form.as_bytes(),
                        Some("application/x-www-form-urlencoded"),
                    );
                    if let (Ok(j), Ok(f)) = (&from_json, &from_form) {
                        assert_eq!(j.fields, f.fields, "form and JSON read differently: {form}");
                    }
                    body = form.into_bytes();
                    Some("application/x-www-form-urlencoded")
                }
                None => ct,
            },
            _ => ct,
        }
    } else {
        ct
    };
    let cp = cloudpayments_client();
    let Ok(received) = cp.parse(Endpoint::CloudPayments(kind), &body, ct) else {
        return;
    };
    if has_nul(&body) {
        return; // 400 bad_text at the edge: never parsed
    }
    check_stored(PaySystem::CloudPayments, &received, &body, ct);
}

/// A JSON object as a form body, if every value has a form spelling.
fn form_of(map: &Map<String, Value>) -> Option<String> {
    let mut pairs = Vec::new();
    for (k, v) in map {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            _ => return None,
        };
        pairs.push((k.clone(), text));
    }
    serde_urlencoded::to_string(&pairs).ok()
}

/// CloudPayments' API answers (`Model` of a transaction).
pub fn cloudpayments_answer(data: &[u8]) {
    let mut input = Input::new(data);
    let status = match input.byte() % 3 {
        0 => None,
        1 => Some(crate::domain::PaymentStatus::Succeeded),
        _ => Some(crate::domain::PaymentStatus::Pending),
    };
    let body = json_body(&mut input, CLOUDPAYMENTS_FIXTURES);
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) else {
        return;
    };
    if let Ok(p) = cloudpayments::wire::transaction(&map, status) {
        check_money(p.amount);
    }
    if let Ok(m) = cloudpayments::wire::money(&map) {
        check_money(m);
    }
}

/// Content-HMAC: the signature of a body verifies over those bytes and no others;
/// any header value is read without panicking.
pub fn cloudpayments_signature(data: &[u8]) {
    let mut input = Input::new(data);
    let secret = input.bytes(64).to_vec();
    let header = input.text(64);
    let flip = input.u64();
    let body = input.rest().to_vec();
    let signature = sign_content_hmac(&secret, &body);
    assert!(verify_content_hmac(&secret, Some(&signature), &body).is_ok());
    if !body.is_empty() {
        let mut other = body.clone();
        let i = (flip % body.len() as u64) as usize;
        other[i] ^= 1 << (flip >> 61);
        assert!(verify_content_hmac(&secret, Some(&signature), &other).is_err());
    }
    let mut longer = body.clone();
    longer.push(b' ');
    assert!(verify_content_hmac(&secret, Some(&signature), &longer).is_err());
    if verify_content_hmac(&secret, Some(&header), &body).is_ok() {
        assert_eq!(header.trim(), signature, "only the signature verifies");
    }
}

/// Standard Webhooks headers (ops replays): a signature verifies only over its id,
/// timestamp and exact body; a stale timestamp is refused; any header is read.
pub fn standard_webhooks(data: &[u8]) {
    let mut input = Input::new(data);
    let key = input.bytes(64).to_vec();
    let id = input.text(80);
    let ts_text = input.text(24);
    let sigs = input.text(200);
    let skew = (input.u64() % 1000) as i64 - 500;
    let body = input.rest().to_vec();
    let now = 1_800_000_000;
    let _ = verify_ops(&key, Some(&id), Some(&ts_text), Some(&sigs), &body, now);
    if id.is_empty() || id.len() > 255 {
        return;
    }
    let ts = now + skew;
    let ts_s = ts.to_string();
    let signature = sign_ops(&key, &id, ts, &body);
    let verdict = verify_ops(&key, Some(&id), Some(&ts_s), Some(&signature), &body, now);
    if skew.abs() > 300 {
        assert_eq!(verdict, Err(OpsRejection::Stale));
        return;
    }
    assert_eq!(verdict, Ok(()));
    let mut other = body.clone();
    other.push(b'\n');
    assert_eq!(
        verify_ops(&key, Some(&id), Some(&ts_s), Some(&signature), &other, now),
        Err(OpsRejection::BadSignature)
    );
    let listed = format!("{sigs} {signature}");
    assert_eq!(
        verify_ops(&key, Some(&id), Some(&ts_s), Some(&listed), &body, now),
        Ok(()),
        "any signature of the list may match"
    );
}

fn keys() -> &'static crate::http::auth::Keys {
    static KEYS: OnceLock<crate::http::auth::Keys> = OnceLock::new();
    KEYS.get_or_init(|| crate::http::auth::Keys::new("fuzz-jwt-secret"))
}

/// The JWT header and claims: any Authorization value is a 401 or a user; a token
/// we signed opens the API only when it is an access token, unexpired, already
/// valid and names a user by UUID.
pub fn jwt(data: &[u8]) {
    let mut input = Input::new(data);
    let keys = keys();
    if input.byte().is_multiple_of(3) {
        let raw = String::from_utf8_lossy(input.rest()).into_owned();
        if let Err(e) = keys.authenticate(Some(&raw)) {
            assert_eq!(e.status.as_u16(), 401);
        }
        return;
    }
    let now = chrono::Utc::now().timestamp();
    let base = format!(
        r#"{{"user_id": "00000000-0000-4000-8000-0000000000aa", "is_superuser": false,
            "exp": {}, "nbf": {}, "type": "access"}}"#,
        now + 3600,
        now - 60
    );
    let claims = edit_json(&base, &mut input);
    let token = keys.sign(&claims);
    let Ok(user) = keys.authenticate(Some(&format!("Bearer {token}"))) else {
        return;
    };
    assert!(
        matches!(claims.get("type"), None | Some(Value::Null)) || claims["type"] == "access",
        "a {} token opened the API",
        claims["type"]
    );
    let exp = claims["exp"].as_f64().expect("exp is required");
    assert!(exp + 30.0 >= now as f64, "an expired token opened the API");
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64) {
        assert!(
            nbf - 30.0 <= now as f64,
            "a token not valid yet opened the API"
        );
    }
    // Any spelling of a UUID (hyphenated, simple, braced) names the same user.
    let named = claims["user_id"]
        .as_str()
        .map(str::parse::<crate::domain::UserId>);
    assert!(
        matches!(named, Some(Ok(id)) if id == user.id),
        "{} is not {}",
        claims["user_id"],
        user.id
    );
}

/// `X-Forwarded-For` over any number of lines: the client is the peer unless the
/// peer is a trusted proxy, and is always the peer or an address the header lists.
pub fn forwarded_for(data: &[u8]) {
    let mut input = Input::new(data);
    let peer = ip_from(&mut input);
    let trusted: Vec<ipnet::IpNet> = (0..input.byte() % 3)
        .filter_map(|_| ipnet::IpNet::new(ip_from(&mut input), input.byte() % 129).ok())
        .map(|n| n.trunc())
        .collect();
    let mut headers = warp::http::HeaderMap::new();
    for _ in 0..input.byte() % 4 {
        let line = input.bytes(120).to_vec();
        if let Ok(v) = warp::http::HeaderValue::from_bytes(&line) {
            headers.append("x-forwarded-for", v);
        }
    }
    let joined = crate::http::webhook_auth::forwarded_for(&headers);
    let client = client_ip(Some(peer), joined.as_deref(), &trusted).expect("a peer gives a client");
    let peer = peer.to_canonical();
    if !trusted.iter().any(|n| n.contains(&peer)) {
        assert_eq!(client, peer, "an untrusted peer's header was believed");
    }
    if client != peer {
        let listed = joined
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter_map(|e| e.trim().parse::<IpAddr>().ok())
            .any(|ip| ip.to_canonical() == client);
        assert!(listed, "{client} is neither the peer nor listed");
    }
}

fn ip_from(input: &mut Input<'_>) -> IpAddr {
    if input.byte().is_multiple_of(2) {
        IpAddr::from((input.u64() as u32).to_be_bytes())
    } else {
        let hi = input.u64() as u128;
        IpAddr::from(((hi << 64) | input.u64() as u128).to_be_bytes())
    }
}

/// Money: one strict grammar; what parses formats back to a decimal that parses to
/// the same amount; every amount in range formats and parses back exactly.
pub fn money(data: &[u8]) {
    let mut input = Input::new(data);
    let currency = Currency::ALL[input.byte() as usize % Currency::ALL.len()];
    let minor = (input.u64() % 100_000_000_000_000) as i64 + 1;
    let m = Money::new(minor, currency);
    assert_eq!(Money::parse(&m.value_string(), currency), Ok(m));
    let text = String::from_utf8_lossy(input.rest()).into_owned();
    if let Ok(m) = Money::parse(&text, currency) {
        assert!(m.minor() > 0);
        assert!(
            text.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
            "{text:?} is not the money grammar"
        );
        assert_eq!(Money::parse(&m.value_string(), currency), Ok(m));
    }
}

/// Durations as operators write them: never a panic, and `N<unit>` is exactly N
/// units when that is at most [`duration::LONGEST`], an error otherwise (never a
/// number wrapped around).
pub fn duration(data: &[u8]) {
    let mut input = Input::new(data);
    let n = input.u64() >> (input.byte() % 64);
    let (unit, ms_per) = [
        ("ms", 1u128),
        ("s", 1_000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
    ][input.byte() as usize % 5];
    let ms = n as u128 * ms_per;
    match duration::parse(&format!("{n}{unit}")) {
        Ok(d) => assert_eq!(d.as_millis(), ms),
        Err(_) => assert!(ms > duration::LONGEST.as_millis(), "{n}{unit} refused"),
    }
    let text = String::from_utf8_lossy(input.rest()).into_owned();
    if let Ok(d) = duration::parse(&text) {
        assert!(d <= duration::LONGEST);
    }
    let _ = duration::parse_list(&text);
}

/// The Idempotency-Key: 1 to 255 visible ASCII characters or spaces, exactly.
pub fn idempotency_key(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let valid =
        !text.is_empty() && text.len() <= 255 && text.bytes().all(|b| (0x20..0x7f).contains(&b));
    assert_eq!(IdempotencyKey::parse(&text).is_ok(), valid, "{text:?}");
}

/// The pagination query: 400 or a limit in 1..=100 and a page in 1..=1 000 000;
/// a well-formed `limit=N&page=P` is read as written.
pub fn pagination_query(data: &[u8]) {
    let mut input = Input::new(data);
    let limit = input.byte() as i64 % 120;
    let page = input.u64() as i64 % 1_100_000;
    let query = format!("limit={limit}&page={page}");
    match pagination(&query) {
        Ok(got) => assert_eq!(got, (limit, page)),
        Err(_) => assert!(!(1..=100).contains(&limit) || !(1..=1_000_000).contains(&page)),
    }
    let raw = String::from_utf8_lossy(input.rest()).into_owned();
    if let Ok((limit, page)) = pagination(&raw) {
        assert!((1..=100).contains(&limit) && (1..=1_000_000).contains(&page));
    }
}
