//! The operations a seed draws, and how each is done to the world. Every choice
//! comes from the seed's [`Rng`], so one seed is one schedule.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::check::{self, minor_units, Violation};
use super::rng::Rng;
use super::world::{rows, World, RETURN_URL};
use super::SimResult;
use crate::domain::{PaySystem, UserId};
use crate::providers::sandbox::{Garble, Outcome};

const TARIFFS: [&str; 3] = [
    "6a1f0c52-8d0e-4c1e-9a57-0a9f1d3b2c01",
    "6a1f0c52-8d0e-4c1e-9a57-0a9f1d3b2c03",
    "6a1f0c52-8d0e-4c1e-9a57-0a9f1d3b2c12",
];

/// The kinds of step, with their weights.
const KINDS: [(&str, u64); 17] = [
    ("buy", 18),
    ("checkout", 18),
    ("deliver", 12),
    ("forge", 3),
    ("provider_fault", 8),
    ("decline_method", 4),
    ("operator_refund", 6),
    ("dashboard_refund", 2),
    ("cancel", 4),
    ("resume", 3),
    ("warp", 8),
    ("kill", 3),
    ("terminate_backends", 2),
    ("broker", 3),
    ("other_provider", 2),
    ("repeat_buy", 3),
    ("idle", 3),
];

/// Faults with an end: opened, then closed after some steps or once the jobs have
/// acted on a passage of time (a fault window).
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// YooKassa refuses every create: 401 (our credentials).
    Refused401,
    /// YooKassa refuses every create: 403 (autopayments not enabled for the shop).
    Refused403,
    /// YooKassa makes every payment and its answer is cut off mid-body.
    CutOff,
    /// YooKassa makes every payment and answers with an HTML page.
    NotJson,
    /// YooKassa makes every payment and answers 500.
    Lost,
    /// YooKassa does not answer at all.
    Down,
    /// YooKassa makes every payment and answers after the service stopped waiting
    /// (its `PROVIDER_TIMEOUT`).
    Late,
    /// CloudPayments answers 500 to every call.
    CloudPaymentsFailing,
    /// YooKassa makes refunds and cuts their answers off.
    CutRefunds,
    /// YooKassa leaves new refunds pending.
    HoldRefunds,
    /// CloudPayments' notifications are lost.
    LoseCpNotifications,
}

/// The faults a passage of time may happen under.
const WINDOWS: [Fault; 8] = [
    Fault::Refused401,
    Fault::Refused403,
    Fault::CutOff,
    Fault::NotJson,
    Fault::Lost,
    Fault::Down,
    Fault::Late,
    Fault::CloudPaymentsFailing,
];

/// Many more calls than one window makes.
const ALL_CALLS: u32 = 1_000_000;

fn open(world: &World, f: Fault) {
    let fake = &world.yookassa.sandbox;
    match f {
        Fault::Refused401 => fake.refuse_creates(Some((401, "invalid_credentials", None))),
        Fault::Refused403 => fake.refuse_creates(Some((403, "forbidden", None))),
        Fault::CutOff => fake.garble_create_answers(ALL_CALLS, Garble::CutOff),
        Fault::NotJson => fake.garble_create_answers(ALL_CALLS, Garble::NotJson),
        Fault::Lost => fake.lose_create_answers(ALL_CALLS),
        Fault::Down => fake.set_down(true),
        Fault::Late => fake.set_late_create_answers(Some(super::world::LATE_ANSWER)),
        Fault::CloudPaymentsFailing => world.cloudpayments.fail_requests(ALL_CALLS),
        Fault::CutRefunds => fake.cut_refund_answers(true),
        Fault::HoldRefunds => fake.hold_refunds(true),
        Fault::LoseCpNotifications => world.cloudpayments.lose_notifications(true),
    }
}

fn close(world: &World, f: Fault) {
    let fake = &world.yookassa.sandbox;
    match f {
        Fault::Refused401 | Fault::Refused403 => fake.refuse_creates(None),
        Fault::CutOff | Fault::NotJson => fake.garble_create_answers(0, Garble::CutOff),
        Fault::Lost => fake.lose_create_answers(0),
        Fault::Down => fake.set_down(false),
        Fault::Late => fake.set_late_create_answers(None),
        Fault::CloudPaymentsFailing => world.cloudpayments.fail_requests(0),
        Fault::CutRefunds => fake.cut_refund_answers(false),
        Fault::HoldRefunds => fake.hold_refunds(false),
        Fault::LoseCpNotifications => world.cloudpayments.lose_notifications(false),
    }
}

/// A checkout the viewer has not acted on yet.
struct Checkout {
    provider: PaySystem,
    payment: String,
}

/// What the schedule knows of its world (never the database's truth: that is for
/// the checks).
pub struct Schedule {
    pub rng: Rng,
    users: Vec<UserId>,
    checkouts: Vec<Checkout>,
    /// YooKassa payments with a notification still to be delivered (late, out of order).
    deliveries: Vec<String>,
    timed: Vec<(usize, Fault)>,
    /// The last buy, for a repeat with the same Idempotency-Key.
    last_buy: Option<(UserId, PaySystem, Value, Option<String>)>,
    pub log: Vec<String>,
    pub counts: BTreeMap<String, u64>,
    /// Violations a step saw (checks that hold only at certain moments).
    pub found: Vec<Violation>,
}

impl Schedule {
    pub fn new(seed: u64) -> Schedule {
        let mut rng = Rng::new(seed);
        let users = (0..rng.range(2, 5))
            .map(|_| UserId::from_uuid(rng.uuid()))
            .collect();
        Schedule {
            rng,
            users,
            checkouts: Vec::new(),
            deliveries: Vec::new(),
            timed: Vec::new(),
            last_buy: None,
            log: Vec::new(),
            counts: BTreeMap::new(),
            found: Vec::new(),
        }
    }

    fn note(&mut self, kind: &str, what: String) {
        *self.counts.entry(kind.to_owned()).or_default() += 1;
        self.log.push(what);
    }

    /// Draws and does step `step`.
    /// `quiet`: after time passes, how long the jobs get to act on it (with the
    /// faults of the moment still on) before the next step.
    pub async fn step(&mut self, world: &mut World, step: usize, quiet: Duration) -> SimResult<()> {
        self.undo_due(world, step);
        let weights: Vec<u64> = KINDS.iter().map(|(_, w)| *w).collect();
        let kind = KINDS[self.rng.weighted(&weights)].0;
        let replica = self.rng.below(world.replicas() as u64) as usize;
        let url = world.url(replica);
        match kind {
            "buy" | "other_provider" => {
                let provider = if kind == "other_provider" || self.rng.chance(30) {
                    PaySystem::CloudPayments
                } else {
                    PaySystem::YooKassa
                };
                let user = *self.rng.pick(&self.users).expect("users");
                let tariff = *self.rng.pick(&TARIFFS).expect("tariffs");
                let renew = self.rng.chance(70);
                let key = self
                    .rng
                    .chance(50)
                    .then(|| format!("sim-{}", self.rng.uuid().simple()));
                let body = json!({"tariff_id": tariff, "renew": renew, "return_url": RETURN_URL});
                let answer = buy(world, &url, user, provider, &body, key.as_deref()).await;
                self.note(
                    kind,
                    format!("{step}: {user} buys {tariff} at {provider} (renew {renew}, key {key:?}) → {answer}"),
                );
                if let Some(payment) = answer["payment_id"].as_str() {
                    self.checkouts.push(Checkout {
                        provider,
                        payment: payment.to_owned(),
                    });
                }
                self.last_buy = Some((user, provider, body, key));
            }
            "repeat_buy" => {
                let Some((user, provider, body, key)) = self.last_buy.clone() else {
                    return self.idle(step);
                };
                let answer = buy(world, &url, user, provider, &body, key.as_deref()).await;
                if let Some(payment) = answer["payment_id"].as_str() {
                    if !self.checkouts.iter().any(|c| c.payment == payment) {
                        self.checkouts.push(Checkout {
                            provider,
                            payment: payment.to_owned(),
                        });
                    }
                }
                self.note(
                    kind,
                    format!("{step}: {user} repeats the last buy (key {key:?}) → {answer}"),
                );
            }
            "checkout" => {
                if self.checkouts.is_empty() {
                    return self.idle(step);
                }
                let i = self.rng.below(self.checkouts.len() as u64) as usize;
                let c = self.checkouts.swap_remove(i);
                let choice = self.rng.weighted(&[60, 20, 20]);
                let what = 'what: {
                    match (c.provider, choice) {
                        (_, 2) => "abandons".to_owned(),
                        (PaySystem::YooKassa, _) => {
                            let Some(id) = yookassa_id(world, &c.payment) else {
                                break 'what "is not at YooKassa".to_owned();
                            };
                            let outcome = if choice == 0 {
                                Outcome::Succeed
                            } else {
                                Outcome::Decline("insufficient_funds".into())
                            };
                            world.yookassa.sandbox.settle(&id, outcome);
                            let copies = self.rng.weighted(&[15, 45, 25, 15]);
                            let mut now = 0;
                            for _ in 0..copies {
                                if self.rng.chance(50) {
                                    let _ = world.yookassa.sandbox.notify(&id).await;
                                    now += 1;
                                } else {
                                    self.deliveries.push(id.clone());
                                }
                            }
                            format!(
                                "{} at YooKassa ({id}); {copies} notification(s), {now} now",
                                if choice == 0 { "pays" } else { "is declined" }
                            )
                        }
                        (_, _) => {
                            let order = world
                                .cloudpayments
                                .order_for_invoice(&c.payment)
                                .and_then(|o| o["Id"].as_str().map(str::to_owned));
                            let Some(order) = order else {
                                break 'what "is not at CloudPayments".to_owned();
                            };
                            let decline = (choice == 1).then_some(5051);
                            let r = world.cloudpayments.pay_order(&order, decline).await;
                            format!(
                                "{} at CloudPayments (order {order}): {:?}",
                                if choice == 0 { "pays" } else { "is declined" },
                                r.map(|r| r.map(|t| t["TransactionId"].clone()))
                            )
                        }
                    }
                };
                self.note(kind, format!("{step}: checkout of {}: {what}", c.payment));
            }
            "deliver" => {
                if self.deliveries.is_empty() {
                    return self.idle(step);
                }
                let n = self.rng.range(1, self.deliveries.len() as u64) as usize;
                let mut sent = Vec::new();
                for _ in 0..n {
                    let i = self.rng.below(self.deliveries.len() as u64) as usize;
                    let id = self.deliveries.swap_remove(i);
                    let status = world.yookassa.sandbox.notify(&id).await;
                    sent.push(format!("{id}: {status:?}"));
                }
                self.note(kind, format!("{step}: late notifications {sent:?}"));
            }
            "forge" => {
                // A notification claiming success for a payment the provider has not
                // confirmed, from an allowed address: the service must re-read it.
                let pending: Vec<Value> = world
                    .yookassa
                    .sandbox
                    .payments()
                    .into_iter()
                    .filter(|p| p["status"] == "pending")
                    .collect();
                let object = match self.rng.pick(&pending) {
                    Some(p) => {
                        let mut p = p.clone();
                        p["status"] = json!("succeeded");
                        p["paid"] = json!(true);
                        p
                    }
                    None => json!({"id": format!("{}", self.rng.uuid()), "status": "succeeded"}),
                };
                let status = world
                    .yookassa
                    .sandbox
                    .notify_raw("payment.succeeded", object.clone())
                    .await;
                let cp = world
                    .http
                    .post(format!("{url}/webhooks/cloudpayments/pay"))
                    .header("Content-HMAC", "Zm9yZ2Vk")
                    .json(&json!({"TransactionId": 1, "Amount": 299.0, "Currency": "RUB", "InvoiceId": object["metadata"]["payment_id"]}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                self.note(kind, format!("{step}: forged success for {} → {status:?}; forged CloudPayments pay → {cp:?}", object["id"]));
            }
            "provider_fault" => {
                let fake = &world.yookassa.sandbox;
                let n = self.rng.range(1, 3) as u32;
                let until = step + self.rng.range(1, 4) as usize;
                let what = match self.rng.below(10) {
                    0 => {
                        fake.fail_creates(n);
                        format!("YooKassa: next {n} creates answer 500")
                    }
                    1 => {
                        fake.lose_create_answers(n);
                        format!("YooKassa: next {n} create answers lost")
                    }
                    2 => {
                        fake.garble_create_answers(n, Garble::CutOff);
                        format!("YooKassa: next {n} create answers cut off")
                    }
                    3 => {
                        fake.garble_create_answers(n, Garble::NotJson);
                        format!("YooKassa: next {n} create answers are an HTML page")
                    }
                    4 => {
                        self.open_until(world, Fault::Refused401, until);
                        format!("YooKassa: creates refused 401 until step {until}")
                    }
                    5 => {
                        self.open_until(world, Fault::Down, until);
                        format!("YooKassa: down until step {until}")
                    }
                    6 => {
                        self.open_until(world, Fault::CutRefunds, until);
                        format!("YooKassa: refund answers cut off until step {until}")
                    }
                    7 => {
                        self.open_until(world, Fault::HoldRefunds, until);
                        format!("YooKassa: refunds held pending until step {until}")
                    }
                    8 => {
                        self.open_until(world, Fault::Late, until);
                        format!("YooKassa: creates made, answered after the timeout, until step {until}")
                    }
                    _ => {
                        world.cloudpayments.fail_requests(n);
                        if self.rng.chance(50) {
                            self.open_until(world, Fault::LoseCpNotifications, until);
                        }
                        format!("CloudPayments: next {n} calls answer 500 (notifications maybe lost until {until})")
                    }
                };
                self.note(kind, format!("{step}: {what}"));
            }
            "decline_method" => {
                let methods = rows(&world.db, include_str!("sql/methods.sql"), &[]).await?;
                let Some(m) = self.rng.pick(&methods).cloned() else {
                    return self.idle(step);
                };
                let id = m["provider_method_id"].as_str().unwrap_or_default();
                let hard = self.rng.chance(30);
                if m["pay_system"] == "yookassa" {
                    let reason = if hard {
                        "card_expired"
                    } else {
                        "insufficient_funds"
                    };
                    world.yookassa.sandbox.decline_method(id, reason);
                } else {
                    world
                        .cloudpayments
                        .decline_token(id, if hard { 5054 } else { 5051 });
                }
                self.note(
                    kind,
                    format!(
                        "{step}: saved method {id} at {} now declines (hard {hard})",
                        m["pay_system"]
                    ),
                );
            }
            "operator_refund" => {
                let payments = rows(&world.db, include_str!("sql/refundable.sql"), &[]).await?;
                let Some(p) = self.rng.pick(&payments).cloned() else {
                    return self.idle(step);
                };
                let left = p["left_minor"].as_i64().unwrap_or(0);
                let amount = match self.rng.below(3) {
                    0 => None,
                    1 => Some(self.rng.range(1, left.max(1) as u64) as i64),
                    _ => Some(left + 100),
                };
                let mut body = json!({"reason": "sim"});
                if let Some(a) = amount {
                    body["amount"] =
                        json!({"value": crate::domain::money::format_minor(a), "currency": "RUB"});
                }
                let id = p["id"].as_str().unwrap_or_default();
                let token = world.keys.issue(UserId::new(), true, 3600);
                let mut req = world
                    .http
                    .post(format!("{url}/api/v1/admin/payments/{id}/refund"))
                    .header("authorization", token)
                    .json(&body);
                if self.rng.chance(50) {
                    req = req.header(
                        "Idempotency-Key",
                        format!("sim-{}", self.rng.uuid().simple()),
                    );
                }
                let answer = answer(req.send().await).await;
                self.note(
                    kind,
                    format!("{step}: operator refunds {amount:?} of {id} (left {left}) → {answer}"),
                );
            }
            "dashboard_refund" => {
                let paid = rows(&world.db, include_str!("sql/cp_transactions.sql"), &[]).await?;
                let Some(p) = self.rng.pick(&paid).cloned() else {
                    return self.idle(step);
                };
                let tid: i64 = p["provider_payment_id"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                // What is left at CloudPayments: it refunds no more than that.
                let paid = world
                    .cloudpayments
                    .transaction(tid)
                    .map(|t| minor_units(&t["Amount"]))
                    .unwrap_or(0);
                let refunded: i64 = world
                    .cloudpayments
                    .transactions()
                    .iter()
                    .filter(|t| t["OperationType"] == "Refund" && t["PaymentTransactionId"] == tid)
                    .map(|t| minor_units(&t["Amount"]))
                    .sum();
                if paid - refunded <= 0 {
                    return self.idle(step);
                }
                let amount = json!((paid - refunded) as f64 / 100.0);
                let r = world.cloudpayments.refund_in_dashboard(tid, amount).await;
                self.note(
                    kind,
                    format!("{step}: CloudPayments dashboard refund of transaction {tid} → {r:?}"),
                );
            }
            "cancel" | "resume" => {
                let user = *self.rng.pick(&self.users).expect("users");
                let token = world.keys.issue(user, false, 3600);
                let r = world
                    .http
                    .post(format!("{url}/api/v1/subscriptions/{kind}"))
                    .header("authorization", token)
                    .send()
                    .await;
                let answer = answer(r).await;
                self.note(kind, format!("{step}: {user} {kind}s → {answer}"));
            }
            "warp" => {
                // Sometimes time passes up to the next renewal (just past it, or
                // past it plus more than the longest wait the contract allows), so
                // that renewals meet the faults of the moment often.
                let next = match self.rng.below(3) {
                    0 => world.next_renewal().await?,
                    _ => None,
                };
                let by = match next {
                    Some(due) => {
                        due + Duration::from_secs(
                            *self.rng.pick(&[3600u64, 11 * 24 * 3600]).expect("choices"),
                        )
                    }
                    None => Duration::from_secs(
                        3600 * *self
                            .rng
                            .pick(&[1u64, 6, 20, 26, 72, 24 * 7, 24 * 31])
                            .expect("choices"),
                    ),
                };
                // A fault window: the jobs act on the new time under a fault that
                // ends when they are done (a provider refusing, unreadable or down
                // exactly while the renewals are charged).
                let window = self.rng.chance(35).then(|| {
                    let w = *self.rng.pick(&WINDOWS).expect("windows");
                    open(world, w);
                    w
                });
                world.warp(by).await?;
                // YooKassa cancels a checkout left unpaid for an hour (and says so,
                // when its notification gets through).
                let mut expired = 0;
                let (yookassa, rest): (Vec<_>, Vec<_>) = self
                    .checkouts
                    .drain(..)
                    .partition(|c| c.provider == PaySystem::YooKassa);
                self.checkouts = rest;
                for c in yookassa {
                    if let Some(id) = yookassa_id(world, &c.payment) {
                        world
                            .yookassa
                            .sandbox
                            .settle(&id, Outcome::Decline("expired_on_confirmation".into()));
                        expired += 1;
                        if self.rng.chance(50) {
                            self.deliveries.push(id);
                        }
                    }
                }
                // The jobs act on the new time, under the faults of the moment.
                let settled = world.wait_quiet(quiet).await?;
                if let Some(w) = window {
                    close(world, w);
                }
                let hours = by.as_secs_f64() / 3600.0;
                let to = if next.is_some() {
                    " (past the next renewal)"
                } else {
                    ""
                };
                let under = window.map(|w| format!(", under {w:?}")).unwrap_or_default();
                self.note(kind, format!("{step}: time passes: {hours:.1} h{to}{under} ({expired} unpaid YooKassa checkouts expire)"));
                // Once the jobs have acted on the new time, nobody keeps access past
                // the longest wait the contract allows (rule 8), faults or not.
                if settled {
                    self.found.extend(check::overdue(world).await?);
                }
            }
            "kill" => {
                world.kill(replica).await;
                tokio::time::sleep(Duration::from_millis(self.rng.range(0, 300))).await;
                world.start_replica(replica).await?;
                self.note(
                    kind,
                    format!("{step}: kill -9 of replica {replica}, restarted"),
                );
            }
            "terminate_backends" => {
                let n = world.terminate_backends().await?;
                world.reconnect().await?;
                self.note(kind, format!("{step}: {n} PostgreSQL backends terminated"));
            }
            "broker" => {
                if world.proxy.is_up() {
                    world.proxy.cut();
                    self.note(kind, format!("{step}: broker cut off"));
                } else {
                    world.proxy.restore();
                    self.note(kind, format!("{step}: broker restored"));
                }
            }
            _ => return self.idle(step),
        }
        Ok(())
    }

    fn idle(&mut self, step: usize) -> SimResult<()> {
        self.note("idle", format!("{step}: nothing to do"));
        Ok(())
    }

    fn open_until(&mut self, world: &World, f: Fault, until: usize) {
        open(world, f);
        self.timed.push((until, f));
    }

    fn undo_due(&mut self, world: &World, step: usize) {
        let (due, keep): (Vec<_>, Vec<_>) = self.timed.drain(..).partition(|(at, _)| *at <= step);
        self.timed = keep;
        for (_, t) in due {
            close(world, t);
        }
    }

    /// Every fault ends and the providers turn honest: held refunds complete,
    /// checkouts nobody finished expire at the provider (without a notification).
    pub fn end_faults(&mut self, world: &World) {
        for (_, t) in self.timed.drain(..) {
            close(world, t);
        }
        let fake = &world.yookassa.sandbox;
        fake.fail_creates(0);
        fake.lose_create_answers(0);
        fake.garble_create_answers(0, Garble::CutOff);
        for id in fake.refund_ids() {
            if fake
                .refund_object(&id)
                .is_some_and(|r| r["status"] == "pending")
            {
                fake.settle_refund(&id, "succeeded");
            }
        }
        for p in fake.payments() {
            if p["status"] == "pending" {
                if let Some(id) = p["id"].as_str() {
                    fake.settle(id, Outcome::Decline("expired_on_confirmation".into()));
                }
            }
        }
        world.cloudpayments.fail_requests(0);
        world.proxy.restore();
    }
}

/// The fake's id of our payment.
fn yookassa_id(world: &World, payment: &str) -> Option<String> {
    world
        .yookassa
        .sandbox
        .payments()
        .into_iter()
        .find(|p| p["metadata"]["payment_id"] == payment && p.get("payment_method").is_none())
        .and_then(|p| p["id"].as_str().map(str::to_owned))
}

async fn buy(
    world: &World,
    url: &str,
    user: UserId,
    provider: PaySystem,
    body: &Value,
    key: Option<&str>,
) -> Value {
    let mut req = world
        .http
        .post(format!("{url}/api/v1/subscriptions/{provider}/buy"))
        .header("authorization", world.keys.issue(user, false, 3600))
        .json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    answer(req.send().await).await
}

/// An answer as `{"status": …, …body}` (or `{"error": …}`), for the log.
async fn answer(r: reqwest::Result<reqwest::Response>) -> Value {
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            let mut body: Value = r.json().await.unwrap_or(Value::Null);
            if !body.is_object() {
                body = json!({});
            }
            body["http"] = json!(status);
            body
        }
        Err(e) => json!({"error": e.to_string()}),
    }
}
