//! The invariants, read from the database, the fakes and the event consumer. Each
//! violation names its invariant and what was seen.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::world::{rows, World, ACCESS_SLACK};
use super::SimResult;
use crate::domain::money::format_minor;

#[derive(Debug, Clone)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

fn v(invariant: &'static str, detail: String) -> Violation {
    Violation { invariant, detail }
}

const PAID: [&str; 3] = ["succeeded", "partially_refunded", "refunded"];

/// An amount in minor units, read exactly: a decimal string or JSON number in
/// major units (CloudPayments' `Amount`), or YooKassa's `{"value": "299.00", …}`.
/// `Money::parse` refuses zero, which a provider's `refunded_amount` can be; -1 when
/// unreadable.
pub fn minor_units(value: &Value) -> i64 {
    let text = match value {
        Value::Object(_) => value["value"].as_str().map(str::to_owned),
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    text.and_then(|t| rust_decimal::Decimal::from_str_exact(&t).ok())
        .and_then(|d| {
            (d * rust_decimal::Decimal::from(100))
                .trunc()
                .to_string()
                .parse()
                .ok()
        })
        .unwrap_or(-1)
}

/// Checks that hold at every step, whatever is in flight.
pub async fn always(world: &World) -> SimResult<Vec<Violation>> {
    let mut out = Vec::new();
    // No double charge: one of our payments, at most one success at the provider
    // (an extra one must be given back in full, rule 10).
    let mut by_ours: HashMap<String, Vec<Value>> = HashMap::new();
    for p in world.yookassa.sandbox.payments() {
        if p["status"] == "succeeded" {
            if let Some(ours) = p["metadata"]["payment_id"].as_str() {
                by_ours.entry(ours.to_owned()).or_default().push(p.clone());
            }
        }
    }
    for (ours, charges) in by_ours {
        let kept = charges
            .iter()
            .filter(|c| {
                c.get("refunded_amount").map(minor_units).unwrap_or(0) < minor_units(&c["amount"])
            })
            .count();
        if charges.len() > 1 && kept > 1 {
            out.push(v(
                "no double charge",
                format!(
                    "our payment {ours} was charged {} times at YooKassa, {kept} not refunded",
                    charges.len()
                ),
            ));
        }
    }
    let subs = rows(
        &world.db,
        include_str!("sql/subscriptions.sql"),
        &[&ACCESS_SLACK],
    )
    .await?;
    let mut live: HashMap<String, usize> = HashMap::new();
    for s in &subs {
        if s["status"] == "active" || s["status"] == "past_due" {
            *live
                .entry(s["user_id"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    for (user, n) in live {
        if n > 1 {
            out.push(v(
                "access is money",
                format!("user {user} has {n} live subscriptions"),
            ));
        }
    }
    Ok(out)
}

/// Access is money, once the jobs have acted on the time that passed: no
/// subscription is live past its period end plus the longest wait the contract
/// allows (the dunning schedule or the refusal grace, plus 24 h in flight; rule 8).
pub async fn overdue(world: &World) -> SimResult<Vec<Violation>> {
    let subs = rows(
        &world.db,
        include_str!("sql/subscriptions.sql"),
        &[&ACCESS_SLACK],
    )
    .await?;
    Ok(overdue_of(&subs))
}

fn overdue_of(subs: &[HashMap<String, Value>]) -> Vec<Violation> {
    let text = |r: &HashMap<String, Value>, k: &str| r[k].as_str().unwrap_or_default().to_owned();
    subs.iter()
        .filter(|s| s["overdue"] == true)
        .map(|s| {
            v(
                "access is money",
                format!(
                    "subscription {} is {} past its period end {} plus {ACCESS_SLACK}",
                    text(s, "id"),
                    text(s, "status"),
                    text(s, "period_end")
                ),
            )
        })
        .collect()
}

/// Every invariant, once the world has settled.
pub async fn settled(world: &World) -> SimResult<Vec<Violation>> {
    let mut out = always(world).await?;
    let payments = rows(&world.db, include_str!("sql/payments.sql"), &[]).await?;
    let refunds = rows(&world.db, include_str!("sql/refunds.sql"), &[]).await?;
    let subs = rows(
        &world.db,
        include_str!("sql/subscriptions.sql"),
        &[&ACCESS_SLACK],
    )
    .await?;
    let text = |r: &HashMap<String, Value>, k: &str| r[k].as_str().unwrap_or_default().to_owned();

    // 1. Provider truth, and 2. the provider's charges are ours, one to one.
    let fake: HashMap<String, Value> = world
        .yookassa
        .sandbox
        .payments()
        .into_iter()
        .filter_map(|p| Some((p["id"].as_str()?.to_owned(), p)))
        .collect();
    let cp: HashMap<String, Value> = world
        .cloudpayments
        .transactions()
        .into_iter()
        .filter(|t| t["OperationType"] == "Payment")
        .map(|t| (t["TransactionId"].to_string(), t))
        .collect();
    let mut known: HashSet<String> = HashSet::new();
    for p in &payments {
        let (id, status) = (text(p, "id"), text(p, "status"));
        let amount = p["amount_minor"].as_i64().unwrap_or(0);
        let Some(pid) = p["provider_payment_id"].as_str() else {
            if PAID.contains(&status.as_str()) {
                out.push(v(
                    "provider truth",
                    format!("payment {id} is {status} with no provider payment"),
                ));
            }
            continue;
        };
        known.insert(pid.to_owned());
        let (theirs, their_amount) = if text(p, "pay_system") == "yookassa" {
            match fake.get(pid) {
                Some(f) => (
                    f["status"].as_str().unwrap_or("?").to_owned(),
                    minor_units(&f["amount"]),
                ),
                None => {
                    out.push(v(
                        "provider truth",
                        format!("payment {id}: YooKassa has no {pid}"),
                    ));
                    continue;
                }
            }
        } else {
            match cp.get(pid) {
                Some(t) => (
                    match t["Status"].as_str() {
                        Some("Completed") => "succeeded".to_owned(),
                        Some("Declined") => "canceled".to_owned(),
                        other => other.unwrap_or("?").to_owned(),
                    },
                    minor_units(&t["Amount"]),
                ),
                None => ("pending".to_owned(), amount),
            }
        };
        let agrees = match theirs.as_str() {
            "succeeded" => PAID.contains(&status.as_str()),
            "canceled" => status == "canceled" || status == "failed",
            _ => status == "pending" || status == "failed",
        };
        if !agrees || their_amount != amount {
            out.push(v(
                "provider truth",
                format!(
                    "payment {id} is {status} {} here, {theirs} {} at the provider ({pid})",
                    format_minor(amount),
                    format_minor(their_amount)
                ),
            ));
        }
    }
    for (pid, f) in &fake {
        if f["status"] == "succeeded" && !known.contains(pid) {
            out.push(v(
                "no double charge",
                format!(
                    "YooKassa charged {pid} (for our {}) and we have no row for it",
                    f["metadata"]["payment_id"]
                ),
            ));
        }
    }
    for (tid, t) in &cp {
        if t["Status"] == "Completed" && !known.contains(tid) {
            out.push(v("no double charge", format!("CloudPayments charged transaction {tid} (invoice {}) and we have no row for it", t["InvoiceId"])));
        }
    }
    // At most one kept renewal per subscription and period.
    let mut periods: BTreeMap<(String, String), usize> = BTreeMap::new();
    for p in &payments {
        let status = text(p, "status");
        if text(p, "kind") == "renewal" && (status == "succeeded" || status == "partially_refunded")
        {
            *periods
                .entry((text(p, "subscription_id"), text(p, "period_start")))
                .or_default() += 1;
        }
    }
    for ((sub, start), n) in periods {
        if n > 1 {
            out.push(v(
                "no double charge",
                format!("subscription {sub} paid {n} times for the period from {start}"),
            ));
        }
    }

    // 3. Access is money.
    out.extend(overdue_of(&subs));
    if world.has_periods {
        for r in rows(&world.db, include_str!("sql/paid_access.sql"), &[]).await? {
            let live = r["status"] == "active" || r["status"] == "past_due";
            if !live || r["covered"] != true {
                out.push(v(
                    "access is money",
                    format!("payment {} paid for a period not over, but subscription {} is {} (covers it: {})", text(&r, "payment_id"), text(&r, "subscription_id"), text(&r, "status"), r["covered"]),
                ));
            }
        }
    }

    // 4. Refunds: ours equal the provider's.
    let mut our_refunded: HashMap<String, i64> = HashMap::new();
    for r in &refunds {
        if r["status"] == "succeeded" {
            *our_refunded.entry(text(r, "payment_id")).or_default() +=
                r["amount_minor"].as_i64().unwrap_or(0);
        }
    }
    let mut cp_refunded: HashMap<String, i64> = HashMap::new();
    for t in world.cloudpayments.transactions() {
        if t["OperationType"] == "Refund" && t["Status"] == "Completed" {
            *cp_refunded
                .entry(t["PaymentTransactionId"].to_string())
                .or_default() += minor_units(&t["Amount"]);
        }
    }
    for p in &payments {
        let id = text(p, "id");
        let refunded = p["refunded_minor"].as_i64().unwrap_or(0);
        let amount = p["amount_minor"].as_i64().unwrap_or(0);
        if refunded > amount {
            out.push(v(
                "refunds",
                format!("payment {id}: refunded {refunded} of {amount}"),
            ));
        }
        let Some(pid) = p["provider_payment_id"].as_str() else {
            continue;
        };
        let theirs = if text(p, "pay_system") == "yookassa" {
            fake.get(pid)
                .and_then(|f| f.get("refunded_amount"))
                .map(minor_units)
                .unwrap_or(0)
        } else {
            cp_refunded.get(pid).copied().unwrap_or(0)
        };
        if theirs != refunded {
            out.push(v(
                "refunds",
                format!(
                    "payment {id}: {} refunded here, {} at the provider",
                    format_minor(refunded),
                    format_minor(theirs)
                ),
            ));
        }
        let rows_sum = our_refunded.get(&id).copied().unwrap_or(0);
        if rows_sum != refunded {
            out.push(v("refunds", format!("payment {id}: refunded_minor {refunded} but its succeeded refunds add up to {rows_sum}")));
        }
    }

    // 5. Events.
    let outbox = rows(&world.db, include_str!("sql/outbox.sql"), &[]).await?;
    let received = world.events.lock().unwrap().clone();
    let got: HashSet<&str> = received.iter().map(|e| e.event_id.as_str()).collect();
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    for o in &outbox {
        let id = text(o, "event_id");
        if o["sent"] != true {
            out.push(v(
                "events",
                format!("event {id} ({}) is still unsent", text(o, "event_type")),
            ));
        } else if !got.contains(id.as_str()) {
            out.push(v(
                "events",
                format!(
                    "event {id} ({}) is marked sent but never reached the queue",
                    text(o, "event_type")
                ),
            ));
        }
        if let (Some(sub), Some(seq)) = (o["subscription_id"].as_str(), o["seq"].as_i64()) {
            if let Some(prev) = last_seq.insert(sub.to_owned(), seq) {
                if seq <= prev {
                    out.push(v(
                        "events",
                        format!("subscription {sub}: seq {seq} published after {prev}"),
                    ));
                }
            }
        }
    }
    // A consumer that applies subscription events by seq ends with our state.
    let ours: HashMap<String, String> = outbox
        .iter()
        .map(|o| (text(o, "event_id"), text(o, "period_end")))
        .collect();
    let mut applied: HashMap<String, (i64, Value)> = HashMap::new();
    for e in received
        .iter()
        .filter(|e| e.event_type.starts_with("subscription."))
    {
        let Some(end) = ours.get(&e.event_id) else {
            continue;
        };
        let (Some(sub), Some(seq)) = (e.data["subscription_id"].as_str(), e.data["seq"].as_i64())
        else {
            continue;
        };
        let entry = applied
            .entry(sub.to_owned())
            .or_insert((i64::MIN, Value::Null));
        if seq > entry.0 {
            let mut data = e.data.clone();
            data["current_period_end"] = Value::from(end.clone());
            *entry = (seq, data);
        }
    }
    for s in &subs {
        let id = text(s, "id");
        let Some((_, data)) = applied.get(&id) else {
            out.push(v(
                "events",
                format!("subscription {id}: no subscription event reached the consumer"),
            ));
            continue;
        };
        let their_end = data["current_period_end"].as_str().unwrap_or_default();
        let same = data["status"] == s["status"]
            && data["auto_renew"] == s["auto_renew"]
            && their_end == text(s, "period_end");
        if !same {
            out.push(v(
                "events",
                format!("subscription {id}: the consumer has {} / {} / auto_renew {}, the database {} / {} / auto_renew {}", data["status"], their_end, data["auto_renew"], text(s, "status"), text(s, "period_end"), s["auto_renew"]),
            ));
        }
    }

    // 6. Nothing stuck.
    for p in &payments {
        let status = text(p, "status");
        if (status == "pending" || status == "waiting_for_capture") && p["overdue"] == true {
            out.push(v(
                "nothing stuck",
                format!(
                    "payment {} is {status} more than 25 h after it was created",
                    text(p, "id")
                ),
            ));
        }
    }
    let waiting = crate::bench::count(&world.db, include_str!("sql/stuck_inbox.sql"))
        .await
        .map_err(super::SimError::new)?;
    if waiting > 0 {
        out.push(v(
            "nothing stuck",
            format!("{waiting} notification(s) still unprocessed in the inbox"),
        ));
    }
    Ok(out)
}
