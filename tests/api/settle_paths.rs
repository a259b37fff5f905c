//! The common successes settle in one statement from an unlocked snapshot
//! (`settle::fast`); every other case, and any race that statement notices, through
//! `settle::apply` under row locks. Both paths must leave the same rows and events,
//! and the one-statement path must never act on a snapshot the world has left.

use crate::helpers::*;
use billing::domain::{PaySystem, PaymentId, PaymentStatus, SubscriptionStatus, UserId};
use billing::jobs::renewer;
use billing::providers::sandbox::Outcome;
use billing::providers::ProviderPayment;
use billing::service::create;
use billing::service::settle::{self, Applied};
use billing::store::{payments, Payment, Subscription};
use serde_json::Value;

const SUCCEEDED: Applied = Applied::Moved(PaymentStatus::Succeeded);

/// The provider's view of a payment, as a webhook's re-read gets it.
async fn provider_view(app: &TestApp, provider_id: &str) -> ProviderPayment {
    let provider = app.app().providers.get(PaySystem::YooKassa).unwrap();
    provider.get_payment(provider_id).await.unwrap()
}

/// A purchase with a card to save, paid at the fake; answers (payment, provider view).
async fn paid_purchase(app: &TestApp, user: UserId) -> (PaymentId, ProviderPayment) {
    let (status, body) = app.buy(user, MONTH_TARIFF, true, None).await;
    assert_eq!(status, 201, "{body}");
    let id = payment_id(&body);
    let pid = app.provider_id(id).await;
    app.yookassa().settle(&pid, Outcome::Succeed);
    (id, provider_view(app, &pid).await)
}

/// The period a payment paid (`period_start`, `period_end`).
async fn paid_period(
    app: &TestApp,
    id: PaymentId,
) -> (
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
) {
    let row = app
        .sql()
        .await
        .query_one(
            "SELECT period_start, period_end FROM payments WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn snapshot(app: &TestApp, id: PaymentId) -> payments::Snapshot {
    payments::snapshot(&app.conn().await, id)
        .await
        .unwrap()
        .expect("the payment exists")
}

/// The user's events, oldest first: (type, data without ids, times and seq).
async fn events_of(app: &TestApp, user: UserId) -> Vec<(String, Value)> {
    let rows = app
        .sql()
        .await
        .query(
            "SELECT event_type, payload FROM outbox WHERE payload -> 'data' ->> 'user_id' = $1 \
             ORDER BY id",
            &[&user.to_string()],
        )
        .await
        .unwrap();
    let seqs: Vec<i64> = rows
        .iter()
        .map(|r| r.get::<_, Value>(1)["data"]["seq"].as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq rises: {seqs:?}");
    rows.iter()
        .map(|r| {
            let mut payload: Value = r.get(1);
            let data = payload["data"].as_object_mut().unwrap();
            for volatile in [
                "user_id",
                "payment_id",
                "subscription_id",
                "seq",
                "current_period_end",
            ] {
                assert!(
                    volatile == "current_period_end" || data.contains_key(volatile),
                    "{volatile} in {data:?}"
                );
                data.remove(volatile);
            }
            (r.get::<_, String>(0), payload["data"].clone())
        })
        .collect()
}

/// The types of the user's events, oldest first.
async fn event_types(app: &TestApp, user: UserId) -> Vec<String> {
    events_of(app, user)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect()
}

/// What must be equal between two paid payments and their subscriptions, whichever
/// path settled them (ids, users and instants differ; durations must not).
fn shape(p: &Payment, s: &Subscription) -> Value {
    let len = |a: Option<chrono::DateTime<chrono::Utc>>,
               b: Option<chrono::DateTime<chrono::Utc>>| {
        a.zip(b).map(|(a, b)| (b - a).num_seconds())
    };
    serde_json::json!({
        "payment": {
            "status": p.status.as_str(),
            "kind": p.kind.as_str(),
            "amount": p.amount.minor(),
            "linked": p.subscription_id == Some(s.id),
            "captured": p.captured_at.is_some(),
            "method": p.payment_method_id.is_some(),
            "provider_id": p.provider_payment_id.is_some(),
            "checks_left": p.review_reason.is_none(),
        },
        "subscription": {
            "status": s.status.as_str(),
            "price": s.price.minor(),
            "tariff": s.tariff_id.to_string(),
            "auto_renew": s.auto_renew,
            "method": s.payment_method_id.is_some(),
            "period_s": len(Some(s.current_period_start), Some(s.current_period_end)),
            "renews_before_end_s": len(s.next_charge_at, Some(s.current_period_end)),
            "attempts": s.renewal_attempts,
            "past_due": s.past_due_since.is_some(),
        },
    })
}

#[tokio::test]
async fn a_paid_purchase_leaves_the_same_rows_and_events_by_either_path() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let (locked_user, fast_user) = (UserId::new(), UserId::new());
    let (locked, locked_pp) = paid_purchase(&app, locked_user).await;
    let (fast, fast_pp) = paid_purchase(&app, fast_user).await;

    assert_eq!(
        settle::apply(app.app(), locked, &locked_pp).await.unwrap(),
        SUCCEEDED
    );
    let snap = snapshot(&app, fast).await;
    assert_eq!(
        settle::fast(app.app(), &snap, &fast_pp).await.unwrap(),
        Some(SUCCEEDED),
        "a pending purchase of a user with nothing live is the one-statement case"
    );

    let (a, b) = (app.payment(locked).await, app.payment(fast).await);
    let (sa, sb) = (
        app.subscription_of(locked_user).await,
        app.subscription_of(fast_user).await,
    );
    assert_eq!(shape(&a, &sa), shape(&b, &sb));
    assert_eq!(sb.status, SubscriptionStatus::Active);
    assert_eq!(
        app.method_of(&sb).await.map(|m| m.provider_method_id),
        fast_pp.method.as_ref().map(|m| m.id.clone()),
        "the card the provider saved is the one renewals charge"
    );
    assert_eq!(
        paid_period(&app, fast).await,
        (Some(sb.current_period_start), Some(sb.current_period_end))
    );
    let (ea, eb) = (
        events_of(&app, locked_user).await,
        events_of(&app, fast_user).await,
    );
    assert_eq!(ea, eb);
    let types: Vec<&str> = eb.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["payment.succeeded", "subscription.activated"]);
}

#[tokio::test]
async fn a_paid_renewal_leaves_the_same_rows_and_events_by_either_path() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let (locked_sub, _) = app.due().await;
    let (fast_sub, _) = app.due().await;
    let claimed = renewer::claim(app.app(), 10, app.app().config.jobs.renewer_lease)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let provider = app.app().providers.get(PaySystem::YooKassa).unwrap();
    for c in &claimed {
        let req = create::request(app.app(), &c.payment, Some(c.saved_method.clone()));
        let pp = provider.create_payment(&req).await.unwrap();
        assert_eq!(pp.status, PaymentStatus::Succeeded);
        if c.payment.subscription_id == Some(locked_sub) {
            // What `send` did before the one-statement path: record, then apply.
            payments::record_create_answer(
                &app.conn().await,
                c.payment.id,
                &create::answer_of(&pp),
            )
            .await
            .unwrap();
            assert_eq!(
                settle::apply(app.app(), c.payment.id, &pp).await.unwrap(),
                SUCCEEDED
            );
        } else {
            assert!(
                settle::answered(app.app(), c.payment.id, &pp)
                    .await
                    .unwrap(),
                "a renewal paid for the next period is the one-statement case"
            );
        }
    }
    let pay = |sub| {
        let c = claimed
            .iter()
            .find(|c| c.payment.subscription_id == Some(sub))
            .unwrap();
        c.payment.id
    };
    let (a, b) = (
        app.payment(pay(locked_sub)).await,
        app.payment(pay(fast_sub)).await,
    );
    let (sa, sb) = (
        app.subscription(locked_sub).await,
        app.subscription(fast_sub).await,
    );
    assert_eq!(shape(&a, &sa), shape(&b, &sb));
    assert!(
        b.provider_payment_id.is_some(),
        "the answer's id is recorded"
    );
    assert_eq!(
        paid_period(&app, b.id).await,
        (Some(sb.current_period_start), Some(sb.current_period_end)),
        "the renewal names the period it paid"
    );
    assert_eq!(
        events_of(&app, sa.user_id).await,
        events_of(&app, sb.user_id).await
    );
    assert_eq!(
        event_types(&app, sb.user_id).await,
        ["payment.succeeded", "subscription.renewed"]
    );
}

#[tokio::test]
async fn a_snapshot_the_payment_has_moved_on_from_changes_nothing() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let (id, pp) = paid_purchase(&app, user).await;
    let stale = snapshot(&app, id).await;
    // A second delivery of the same notification settled it meanwhile.
    assert_eq!(settle::apply(app.app(), id, &pp).await.unwrap(), SUCCEEDED);

    assert_eq!(settle::fast(app.app(), &stale, &pp).await.unwrap(), None);
    assert_eq!(
        settle::settle(app.app(), &stale, &pp).await.unwrap(),
        Applied::Unchanged
    );
    assert_eq!(app.subscriptions().await.len(), 1, "one subscription");
    assert_eq!(
        event_types(&app, user).await,
        ["payment.succeeded", "subscription.activated"]
    );
}

#[tokio::test]
async fn a_live_subscription_that_appeared_after_the_snapshot_sends_the_purchase_down_the_locked_path(
) {
    let app = TestApp::builder().fake_yookassa().start().await;
    let user = UserId::new();
    let (id, pp) = paid_purchase(&app, user).await;
    let stale = snapshot(&app, id).await;
    assert!(!stale.user_has_live);
    // The same tariff bought again meanwhile and already live.
    let live = app.seed_subscription(user, false, false).await;
    let before = app.subscription(live).await;

    assert_eq!(settle::fast(app.app(), &stale, &pp).await.unwrap(), None);
    assert_eq!(
        settle::settle(app.app(), &stale, &pp).await.unwrap(),
        SUCCEEDED
    );
    let after = app.subscription(live).await;
    assert_eq!(
        app.subscriptions().await.len(),
        1,
        "still one live subscription"
    );
    assert!(
        after.current_period_end > before.current_period_end,
        "the payment extends the live one"
    );
    assert_eq!(app.payment(id).await.subscription_id, Some(live));
    assert_eq!(
        event_types(&app, user).await,
        ["payment.succeeded", "subscription.renewed"]
    );
}

#[tokio::test]
async fn a_claimed_renewal_carries_the_key_its_inputs_derive() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let (sub, _) = app.due().await;
    let payment = app.claimed_renewal(sub).await;
    let period_start = payment.period_start.expect("a renewal names its period");
    assert_eq!(
        payment.provider_idempotence_key,
        renewer::renewal_key(sub, period_start, payment.attempt)
    );
    assert_eq!(period_start, app.subscription(sub).await.current_period_end);
    assert_eq!(payment.description, "Subscription renewal: Monthly");
}

#[tokio::test]
async fn a_renewal_whose_period_moved_after_the_snapshot_pays_the_next_one_by_the_locked_path() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let (sub, _) = app.due().await;
    let payment = app.claimed_renewal(sub).await;
    let provider = app.app().providers.get(PaySystem::YooKassa).unwrap();
    let req = create::request_for(app.app(), &app.conn().await, &payment)
        .await
        .unwrap();
    let pp = provider.create_payment(&req).await.unwrap();
    let stale = snapshot(&app, payment.id).await;
    let end = app.subscription(sub).await.current_period_end;
    // A purchase of the same tariff paid the period this renewal was charged for.
    app.sql()
        .await
        .execute(
            "UPDATE subscriptions SET current_period_end = current_period_end + interval '1 month' \
             WHERE id = $1",
            &[&sub],
        )
        .await
        .unwrap();

    assert_eq!(settle::fast(app.app(), &stale, &pp).await.unwrap(), None);
    assert_eq!(
        settle::settle(app.app(), &stale, &pp).await.unwrap(),
        SUCCEEDED
    );
    let after = app.subscription(sub).await;
    let two_months = end.checked_add_months(chrono::Months::new(2)).unwrap();
    assert_eq!(
        after.current_period_end, two_months,
        "the renewal buys the period after the one the purchase paid"
    );
}

/// The plan PostgreSQL keeps for a prepared statement once it stops re-planning
/// per call (`force_generic_plan`), as text.
async fn generic_plan(db: &tokio_postgres::Client, sql: &str, types: &str, args: &str) -> String {
    db.batch_execute(&format!(
        "SET plan_cache_mode = force_generic_plan; DEALLOCATE ALL; PREPARE probe({types}) AS {sql}"
    ))
    .await
    .unwrap();
    db.simple_query(&format!("EXPLAIN EXECUTE probe({args})"))
        .await
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn the_settle_statements_lock_their_rows_by_primary_key() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let db = app.sql().await;
    // Many open payments the statistics do not know of yet (as in the bench, where
    // they arrive faster than autovacuum analyses): a plan that walks the partial
    // index of open payments for one id costs their number on every settle.
    let tariff: billing::domain::TariffId = MONTH_TARIFF.parse().unwrap();
    db.query(
        include_str!("../../src/bench/sql/pending_purchases.sql"),
        &[&tariff, &29_900i64, &60.0f64, &2_000i32],
    )
    .await
    .unwrap();
    db.batch_execute(
        "UPDATE payments SET status = 'succeeded'; ANALYZE; UPDATE payments SET status = 'pending'",
    )
    .await
    .unwrap();
    let activation = generic_plan(
        &db,
        include_str!("../../src/store/payments/settle_activation.sql"),
        "uuid, timestamptz, text, text, uuid, uuid, timestamptz, timestamptz, bool, \
         timestamptz, uuid[], text[], jsonb[], text",
        "gen_random_uuid(), null, null, null, gen_random_uuid(), gen_random_uuid(), now(), \
         now(), false, null, '{}', '{}', '{}', ''",
    )
    .await;
    let renewal = generic_plan(
        &db,
        include_str!("../../src/store/payments/settle_renewal.sql"),
        "uuid, timestamptz, timestamptz, bool, timestamptz, text, timestamptz, uuid[], \
         text[], jsonb[]",
        "gen_random_uuid(), now(), now(), true, null, '', null, '{}', '{}', '{}'",
    )
    .await;
    for (name, plan) in [("activation", activation), ("renewal", renewal)] {
        assert!(plan.contains("payments_pkey"), "{name}:\n{plan}");
        for walk in ["payments_open", "Seq Scan on payments"] {
            assert!(!plan.contains(walk), "{name} walks {walk}:\n{plan}");
        }
    }
}

#[tokio::test]
async fn the_renewal_claim_updates_its_rows_by_primary_key() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let db = app.sql().await;
    // Many subscriptions: a plan that hashes all of them costs their number on
    // every claim of 200 (the generic plan cannot know `LIMIT $1`).
    let tariff: billing::domain::TariffId = MONTH_TARIFF.parse().unwrap();
    db.execute(
        include_str!("../../src/bench/sql/renew_methods.sql"),
        &[&5_000i32],
    )
    .await
    .unwrap();
    db.execute(
        include_str!("../../src/bench/sql/renew_subscriptions.sql"),
        &[&tariff, &29_900i64],
    )
    .await
    .unwrap();
    db.execute("ANALYZE", &[]).await.unwrap();
    let cols = billing::store::payments::COLS;
    let qualified: Vec<String> = cols.split(", ").map(|c| format!("p.{c}")).collect();
    let sql = include_str!("../../src/store/payments/claim_renewals.sql")
        .replace("{p.cols}", &qualified.join(", "))
        .replace("{cols}", cols);
    let plan = generic_plan(
        &db,
        &sql,
        "bigint, float8, float8, int, text[]",
        "200, 600, 60, 23, ARRAY['yookassa']",
    )
    .await;
    assert!(
        !plan.contains("Seq Scan on subscriptions"),
        "the claim walks every subscription:\n{plan}"
    );
}
