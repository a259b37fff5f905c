//! Background jobs: reconciler, renewer, expirer. Driven by `run_once`; time moves
//! by rewriting rows' timestamps, never by sleeping.

use crate::helpers::*;
use billing::domain::{
    PaymentId, PaymentKind, PaymentStatus, SubscriptionId, SubscriptionStatus, UserId,
};
use billing::jobs::{expirer, reconciler, renewer};
use billing::providers::sandbox::{Garble, Outcome};
use billing::service::create;
use billing::store::subscriptions;
use chrono::{Months, Utc};

async fn bought(app: &TestApp, user: UserId, renew: bool) -> (PaymentId, String) {
    let (status, body) = app.buy(user, MONTH_TARIFF, renew, None).await;
    assert_eq!(status, 201, "{body}");
    let id = payment_id(&body);
    let pid = app.provider_id(id).await;
    (id, pid)
}

/// Bought with renew=true, paid and notified: an active subscription with a saved method.
async fn subscribed(app: &TestApp, user: UserId) -> SubscriptionId {
    let fake = app.yookassa();
    let (_, pid) = bought(app, user, true).await;
    fake.settle(&pid, Outcome::Succeed).unwrap();
    assert_eq!(fake.notify(&pid).await.unwrap(), 200);
    let sub = app.subscription_of(user).await;
    assert_eq!(sub.status, SubscriptionStatus::Active);
    sub.id
}

/// Moves the period end into the past (the start too, keeping end > start).
async fn end_period(db: &tokio_postgres::Client, sub: SubscriptionId) {
    db.execute(
        "UPDATE subscriptions SET current_period_start = now() - interval '1 month' - interval '1 minute', \
         current_period_end = now() - interval '1 minute' WHERE id = $1",
        &[&sub],
    )
    .await
    .unwrap();
}

/// The payment's check attempts and the seconds until its next check (no store
/// type carries `next_check_at`).
async fn check_state(db: &tokio_postgres::Client, id: PaymentId) -> (i32, f64) {
    let r = db
        .query_one(
            "SELECT check_attempts, extract(epoch FROM next_check_at - now())::float8 FROM payments WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

// ----- reconciler -----

#[tokio::test]
async fn a_payment_whose_webhook_never_comes_is_activated_by_the_reconciler() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let (id, pid) = bought(&app, user, false).await;
    fake.settle(&pid, Outcome::Succeed).unwrap();
    assert_eq!(
        reconciler::run_once(app.app()).await.unwrap(),
        0,
        "not due before RECONCILE_AFTER"
    );
    app.make_checks_due().await;
    assert_eq!(reconciler::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(app.payment(id).await.status, PaymentStatus::Succeeded);
    let (status, sub) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(user)))
        .await;
    assert_eq!(status, 200, "{sub}");
    assert_eq!(sub["status"], "active");
    assert_eq!(
        app.outbox_types().await,
        ["payment.succeeded", "subscription.activated"]
    );
    assert_eq!(reconciler::run_once(app.app()).await.unwrap(), 0);
}

#[tokio::test]
async fn a_payment_the_provider_keeps_pending_is_rechecked_with_backoff() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let (id, _) = bought(&app, UserId::new(), false).await;
    let db = app.sql().await;
    app.make_checks_due().await;
    assert_eq!(reconciler::run_once(app.app()).await.unwrap(), 1);
    let (attempts1, wait1) = check_state(&db, id).await;
    assert_eq!(attempts1, 1);
    assert!(wait1 > 60.0, "next check moved out: {wait1}");
    assert_eq!(
        reconciler::run_once(app.app()).await.unwrap(),
        0,
        "not re-checked before its time"
    );
    app.make_checks_due().await;
    assert_eq!(reconciler::run_once(app.app()).await.unwrap(), 1);
    let (attempts2, wait2) = check_state(&db, id).await;
    assert_eq!(attempts2, 2);
    assert!(
        wait2 > wait1 + 60.0,
        "backoff doubles: {wait1} then {wait2}"
    );
    assert_eq!(app.payment(id).await.status, PaymentStatus::Pending);
}

#[tokio::test]
async fn a_payment_the_provider_cancels_ends_canceled() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (id, pid) = bought(&app, UserId::new(), false).await;
    fake.settle(&pid, Outcome::Decline("expired_on_confirmation".into()))
        .unwrap();
    app.make_checks_due().await;
    assert_eq!(reconciler::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(app.payment(id).await.status, PaymentStatus::Canceled);
    assert_eq!(app.subscriptions().await.len(), 0);
    assert_eq!(app.outbox_types().await, ["payment.canceled"]);
}

#[tokio::test]
async fn a_payment_pending_for_a_day_is_failed_locally_and_a_later_success_still_applies() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let (id, pid) = bought(&app, user, false).await;
    let db = app.sql().await;
    db.execute(
        "UPDATE payments SET created_at = now() - interval '25 hours', next_check_at = now() - interval '1 second' \
         WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    assert_eq!(reconciler::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(app.payment(id).await.status, PaymentStatus::Failed);
    // Only the provider makes it final: its later success is applied.
    fake.settle(&pid, Outcome::Succeed).unwrap();
    assert_eq!(fake.notify(&pid).await.unwrap(), 200);
    assert_eq!(app.payment(id).await.status, PaymentStatus::Succeeded);
    assert_eq!(
        app.subscriptions_with(SubscriptionStatus::Active)
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn a_purchase_whose_create_answer_was_lost_is_resent_with_the_same_key() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    // Every attempt of the client fails: the buy answers 502, the row has no provider id.
    fake.fail_creates(3);
    let (status, body) = app.buy(UserId::new(), MONTH_TARIFF, false, None).await;
    assert_eq!(status, 502, "{body}");
    let payments = app.payments().await;
    assert_eq!(payments.len(), 1);
    let (id, key) = (payments[0].id, payments[0].provider_idempotence_key.clone());
    assert_eq!(payments[0].provider_payment_id, None);
    app.make_checks_due().await;
    assert_eq!(reconciler::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(fake.creates(), 1);
    assert_eq!(fake.requests_with_key(&key), 4, "3 failed + 1 re-send");
    let pid = app.provider_id(id).await;
    assert!(fake.payment(&pid).is_some());
    assert_eq!(app.payment(id).await.status, PaymentStatus::Pending);
}

// ----- renewer -----

#[tokio::test]
async fn a_due_subscription_renews_once() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (sub, pm) = app.due().await;
    let before = app.subscription(sub).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(fake.charges(), 1);
    let charged = fake.payments().pop().unwrap();
    assert_eq!(charged["payment_method"]["id"], pm.as_str());
    assert_eq!(charged["amount"]["value"], "299.00");

    let after = app.subscription(sub).await;
    assert_eq!(after.status, SubscriptionStatus::Active);
    assert_eq!(
        after.current_period_end,
        before
            .current_period_end
            .checked_add_months(Months::new(1))
            .unwrap()
    );
    assert!(after.next_charge_at.unwrap() > Utc::now());
    let paid: Vec<_> = app
        .payments()
        .await
        .into_iter()
        .filter(|p| p.subscription_id == Some(sub))
        .collect();
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].status, PaymentStatus::Succeeded);
    assert_eq!(paid[0].kind, PaymentKind::Renewal);
    assert_eq!(paid[0].period_start, Some(before.current_period_end));
    assert_eq!(paid[0].attempt, 0);
    let types = app.outbox_types().await;
    assert_eq!(count(&types, "subscription.renewed"), 1, "{types:?}");
    assert_eq!(count(&types, "payment.succeeded"), 1, "{types:?}");

    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 0);
    assert_eq!(fake.charges(), 1, "running again charges nothing");
}

#[tokio::test]
async fn the_renewal_charges_the_subscriptions_price_not_todays_tariff() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (sub, _) = app.due().await;
    db.execute(
        "UPDATE subscriptions SET price_minor = 19900 WHERE id = $1",
        &[&sub],
    )
    .await
    .unwrap();
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(fake.payments().pop().unwrap()["amount"]["value"], "199.00");
    assert_eq!(
        app.subscription(sub).await.status,
        SubscriptionStatus::Active
    );
}

#[tokio::test]
async fn two_concurrent_renewers_charge_200_due_subscriptions_exactly_once() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    for _ in 0..200 {
        app.seed_subscription(UserId::new(), true, true).await;
    }
    db.execute(
        "UPDATE subscriptions SET next_charge_at = now() - interval '1 second'",
        &[],
    )
    .await
    .unwrap();
    let workers = (0..2).map(|_| {
        let a = app.app().clone();
        tokio::spawn(async move {
            let mut handled = 0;
            loop {
                let n = renewer::run_once(&a).await.unwrap();
                if n == 0 {
                    return handled;
                }
                handled += n;
            }
        })
    });
    let handled: usize = futures::future::join_all(workers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    assert_eq!(handled, 200);
    assert_eq!(fake.charges(), 200);
    let succeeded = app.payments_with(PaymentStatus::Succeeded).await;
    assert_eq!(
        succeeded
            .iter()
            .filter(|p| p.kind == PaymentKind::Renewal)
            .count(),
        200
    );
    assert_eq!(
        count(&app.outbox_types().await, "subscription.renewed"),
        200
    );
}

#[tokio::test]
async fn a_renewal_sent_before_a_crash_is_resent_by_the_reconciler_with_the_same_key() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (sub, _) = app.due().await;
    // The row is committed, the charge reaches the provider, then the process dies.
    let payment = app.claimed_renewal(sub).await;
    let req = create::request_for(app.app(), &app.app().db.get().await.unwrap(), &payment)
        .await
        .unwrap();
    let provider = app
        .app()
        .providers
        .get(billing::domain::PaySystem::YooKassa)
        .unwrap()
        .clone();
    provider.create_payment(&req).await.unwrap();
    assert_eq!(fake.charges(), 1);

    assert_eq!(
        renewer::run_once(app.app()).await.unwrap(),
        0,
        "leased: not re-claimed"
    );
    app.make_checks_due().await;
    assert_eq!(reconciler::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(fake.charges(), 1, "the same key answers the same charge");
    assert_eq!(fake.requests_with_key(&payment.provider_idempotence_key), 2);
    assert_eq!(
        app.payment(payment.id).await.status,
        PaymentStatus::Succeeded
    );
    let types = app.outbox_types().await;
    assert_eq!(count(&types, "subscription.renewed"), 1, "{types:?}");
}

/// Seeds 1831 and 1886 of the simulator's long run: a renewal was charged but every
/// answer was lost; the re-send of its key came while YooKassa refused our
/// credentials (401, answered before the key is looked at) and was taken as proof
/// that nothing was charged: the renewal failed, the subscription went past_due
/// and expired, and the viewer's money had no payment of ours. A refused re-send is
/// now checked with a look-up first.
#[tokio::test]
async fn a_refused_resend_of_a_renewal_whose_answer_was_lost_is_looked_up_not_failed() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (sub, _) = app.due().await;
    let before = app.subscription(sub).await;
    fake.garble_create_answers(1_000, Garble::CutOff);
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    fake.garble_create_answers(0, Garble::CutOff);
    assert_eq!(fake.charges(), 1, "charged, though no answer was read");
    let renewal = app.renewals(sub).await;
    assert_eq!(renewal.len(), 1);
    assert_eq!(renewal[0].status, PaymentStatus::Pending);
    assert_eq!(renewal[0].provider_payment_id, None);

    // The re-send with the same key is refused: our credentials, not the charge.
    fake.refuse_creates(Some((401, "invalid_credentials", None)));
    app.make_checks_due().await;
    assert_eq!(reconciler::run_once(app.app()).await.unwrap(), 1);
    fake.refuse_creates(None);

    let renewal = app.renewals(sub).await;
    assert_eq!(renewal.len(), 1, "no second attempt: {renewal:?}");
    assert_eq!(
        renewal[0].status,
        PaymentStatus::Succeeded,
        "the charge was found and applied"
    );
    assert!(renewal[0].provider_payment_id.is_some());
    let after = app.subscription(sub).await;
    assert_eq!(after.status, SubscriptionStatus::Active);
    assert!(after.current_period_end > before.current_period_end);
    assert_eq!(fake.charges(), 1, "charged once");
}

/// A refused re-send whose look-up finds nothing is a refusal after all: the
/// renewal fails and the subscription moves on (past_due, retried later).
#[tokio::test]
async fn a_refused_resend_of_a_renewal_never_made_fails_it_after_the_look_up() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (sub, _) = app.due().await;
    fake.fail_creates(1_000);
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    fake.fail_creates(0);
    assert_eq!(fake.charges(), 0);

    fake.refuse_creates(Some((401, "invalid_credentials", None)));
    app.make_checks_due().await;
    assert_eq!(reconciler::run_once(app.app()).await.unwrap(), 1);
    fake.refuse_creates(None);
    let renewal = app.renewals(sub).await;
    assert_eq!(renewal.len(), 1);
    assert_eq!(renewal[0].status, PaymentStatus::Failed);
    assert_eq!(
        app.subscription(sub).await.status,
        SubscriptionStatus::PastDue
    );
    assert_eq!(fake.charges(), 0);
}

#[tokio::test]
async fn a_renewal_whose_answer_was_lost_is_resent_by_the_renewer_and_charged_once() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let (sub, _) = app.due().await;
    // The charge is made but the answer to the first request is lost.
    fake.lose_create_answers(1);
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    // The client's own retry with the same key recovers the answer: one charge, recorded.
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 0);
    assert_eq!(fake.charges(), 1);
    let renewals = app.payments().await;
    assert_eq!(
        renewals
            .iter()
            .filter(|p| p.kind == PaymentKind::Renewal)
            .count(),
        1
    );
    assert_eq!(
        app.subscription(sub).await.status,
        SubscriptionStatus::Active
    );

    // Now the provider is unreachable for the whole call: the row stays without a provider id.
    let (sub2, _) = app.due().await;
    fake.fail_creates(3);
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let unsent: Vec<_> = app
        .renewals(sub2)
        .await
        .into_iter()
        .filter(|p| p.provider_payment_id.is_none())
        .collect();
    assert_eq!(unsent.len(), 1, "{unsent:?}");
    let key = unsent[0].provider_idempotence_key.clone();
    app.make_due(sub2).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(fake.charges(), 2);
    assert_eq!(fake.requests_with_key(&key), 4, "3 failed + the re-send");
    let renewals = app.payments().await;
    assert_eq!(
        renewals
            .iter()
            .filter(|p| p.kind == PaymentKind::Renewal)
            .count(),
        2
    );
}

#[tokio::test]
async fn insufficient_funds_makes_past_due_and_a_scheduled_retry_renews() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (sub, pm) = app.due().await;
    let before = app.subscription(sub).await;
    fake.decline_method(&pm, "insufficient_funds");
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let s = app.subscription(sub).await;
    assert_eq!(s.status, SubscriptionStatus::PastDue);
    assert_eq!(s.renewal_attempts, 1);
    let retry_in = (s.next_charge_at.unwrap() - Utc::now()).num_hours();
    assert!(
        (23..=24).contains(&retry_in),
        "first retry after 1d: {retry_in}h"
    );
    assert!(app
        .outbox_types()
        .await
        .contains(&"subscription.past_due".to_owned()));
    assert_eq!(
        renewer::run_once(app.app()).await.unwrap(),
        0,
        "not before the retry time"
    );

    // The card works again (a fresh card id on the fake stands for the topped-up card).
    db.execute(
        "UPDATE payment_methods SET provider_method_id = $2 WHERE provider_method_id = $1",
        &[&pm, &format!("{pm}-ok")],
    )
    .await
    .unwrap();
    app.make_due(sub).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(fake.charges(), 2);
    let s = app.subscription(sub).await;
    assert_eq!(s.status, SubscriptionStatus::Active);
    assert_eq!(s.renewal_attempts, 0);
    assert_eq!(
        s.current_period_end,
        before
            .current_period_end
            .checked_add_months(Months::new(1))
            .unwrap()
    );
    let attempts: Vec<(i32, PaymentStatus)> = app
        .renewals(sub)
        .await
        .iter()
        .map(|p| (p.attempt, p.status))
        .collect();
    assert_eq!(
        attempts,
        [(0, PaymentStatus::Canceled), (1, PaymentStatus::Succeeded)]
    );
    let types = app.outbox_types().await;
    assert_eq!(count(&types, "subscription.renewed"), 1, "{types:?}");
}

#[tokio::test]
async fn exhausted_retries_expire_the_subscription_at_the_period_end() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (sub, pm) = app.due().await;
    fake.decline_method(&pm, "insufficient_funds");
    // The first attempt and the three retries of DUNNING_SCHEDULE (1d,3d,5d).
    for _ in 0..4 {
        app.make_due(sub).await;
        assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    }
    assert_eq!(fake.charges(), 4);
    let s = app.subscription(sub).await;
    assert_eq!(s.status, SubscriptionStatus::PastDue);
    assert_eq!(s.next_charge_at, None, "no retries left");
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 0);
    assert_eq!(
        expirer::run_once(app.app()).await.unwrap(),
        0,
        "access continues to the period end"
    );
    end_period(&db, sub).await;
    assert_eq!(expirer::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(
        app.subscription(sub).await.status,
        SubscriptionStatus::Expired
    );
    let types = app.outbox_types().await;
    assert_eq!(count(&types, "subscription.expired"), 1, "{types:?}");
    assert_eq!(expirer::run_once(app.app()).await.unwrap(), 0);
}

#[tokio::test]
async fn a_hard_decline_is_not_retried_and_the_method_becomes_unusable() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (sub, pm) = app.due().await;
    fake.decline_method(&pm, "permission_revoked");
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let s = app.subscription(sub).await;
    assert_eq!(s.status, SubscriptionStatus::PastDue);
    assert_eq!(s.next_charge_at, None);
    let method = app.method_of(&s).await.expect("the seeded card");
    assert_eq!(method.provider_method_id, pm);
    assert!(!method.usable);
    // Even forced due, an unusable method is never charged.
    app.make_due(sub).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 0);
    assert_eq!(fake.charges(), 1);
    end_period(&db, sub).await;
    assert_eq!(expirer::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(
        app.subscription(sub).await.status,
        SubscriptionStatus::Expired
    );
}

#[tokio::test]
async fn cancel_stops_renewal_and_the_expirer_ends_it_at_the_period_end() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let sub = subscribed(&app, user).await;
    let (status, body) = app
        .post(
            "/api/v1/subscriptions/cancel",
            Some(&app.token(user)),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["auto_renew"], false);
    let db = app.sql().await;
    app.make_due(sub).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 0);
    assert_eq!(fake.charges(), 0);
    assert_eq!(expirer::run_once(app.app()).await.unwrap(), 0);
    assert_eq!(
        app.subscription(sub).await.status,
        SubscriptionStatus::Active
    );
    end_period(&db, sub).await;
    assert_eq!(expirer::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(
        app.subscription(sub).await.status,
        SubscriptionStatus::Expired
    );
    let types = app.outbox_types().await;
    assert_eq!(types.last().unwrap(), "subscription.expired", "{types:?}");
}

#[tokio::test]
async fn resume_after_cancel_charges_again() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let user = UserId::new();
    let sub = subscribed(&app, user).await;
    let token = app.token(user);
    let (status, _) = app
        .post(
            "/api/v1/subscriptions/cancel",
            Some(&token),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = app
        .post(
            "/api/v1/subscriptions/resume",
            Some(&token),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["auto_renew"], true);
    let before = app.subscription(sub).await;
    app.make_due(sub).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(fake.charges(), 1);
    let after = app.subscription(sub).await;
    assert_eq!(
        after.current_period_end,
        before
            .current_period_end
            .checked_add_months(Months::new(1))
            .unwrap()
    );
}

#[tokio::test]
async fn a_renewal_still_pending_a_day_after_the_period_end_is_expired() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let db = app.sql().await;
    let (sub, _) = app.due().await;
    let payment = app.claimed_renewal(sub).await;
    db.execute(
        "UPDATE subscriptions SET current_period_start = now() - interval '40 days', \
         current_period_end = now() - interval '25 hours' WHERE id = $1",
        &[&sub],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE payments SET period_start = (SELECT current_period_end FROM subscriptions WHERE id = $2) \
         WHERE id = $1",
        &[&payment.id, &sub],
    )
    .await
    .unwrap();
    assert_eq!(expirer::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(
        app.subscription(sub).await.status,
        SubscriptionStatus::Expired
    );
}

#[tokio::test]
async fn a_renewal_pending_at_the_period_end_keeps_access_as_past_due() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let db = app.sql().await;
    let (sub, _) = app.due().await;
    let payment = app.claimed_renewal(sub).await;
    db.execute(
        "UPDATE subscriptions SET current_period_start = now() - interval '31 days', \
         current_period_end = now() - interval '1 hour' WHERE id = $1",
        &[&sub],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE payments SET period_start = (SELECT current_period_end FROM subscriptions WHERE id = $2) WHERE id = $1",
        &[&payment.id, &sub],
    )
    .await
    .unwrap();
    assert_eq!(expirer::run_once(app.app()).await.unwrap(), 1);
    assert_eq!(
        app.subscription(sub).await.status,
        SubscriptionStatus::PastDue,
        "access continues while the renewal is in flight"
    );
    let types = app.outbox_types().await;
    assert_eq!(
        types.last().map(String::as_str),
        Some("subscription.past_due")
    );
    assert_eq!(
        expirer::run_once(app.app()).await.unwrap(),
        0,
        "nothing more to do within the 24 h"
    );
}

#[tokio::test]
async fn a_renewal_pending_for_a_day_is_not_failed_by_the_reconciler() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let db = app.sql().await;
    let (sub, _) = app.due().await;
    let payment = app.claimed_renewal(sub).await;
    // Sent to the provider, which keeps it pending (e.g. receipt-first fiscalisation).
    billing::service::create::send(app.app(), &payment)
        .await
        .unwrap();
    db.execute(
        "UPDATE payments SET status = 'pending', created_at = now() - interval '25 hours', next_check_at = now() \
         WHERE id = $1",
        &[&payment.id],
    )
    .await
    .unwrap();
    let pid = app.provider_id(payment.id).await;
    fake.patch(&pid, "status", serde_json::json!("pending"));
    reconciler::run_once(app.app()).await.unwrap();
    assert_eq!(
        app.payment(payment.id).await.status,
        PaymentStatus::Pending,
        "a renewal is left to the provider and the expirer, never failed locally"
    );
}

#[tokio::test]
async fn workers_only_starts_the_jobs_without_a_listener() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let sub = seed_subscription(&client, UserId::new(), false, false).await;
    end_period(&client, sub).await;
    let running = billing::server::start(
        base_config(&db),
        billing::server::ServeOptions {
            api: false,
            workers: true,
        },
    )
    .await
    .expect("starts");
    assert!(running.addr.is_none(), "no listener");
    // Each loop runs a batch as soon as it starts: the expirer ends the seeded subscription.
    let mut status = SubscriptionStatus::Active;
    for _ in 0..100 {
        let conn = running.app.db.get().await.unwrap();
        status = subscriptions::get(&conn, sub)
            .await
            .unwrap()
            .unwrap()
            .status;
        if status == SubscriptionStatus::Expired {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, SubscriptionStatus::Expired);
    running.stop().await;
}
