//! The billing anchor (issue 15): period ends are counted from the subscription's
//! first period start, so the anchor day comes back after a short month.

use crate::helpers::*;
use billing::domain::{PaymentStatus, SubscriptionId, SubscriptionStatus, UserId};
use billing::jobs::renewer;
use chrono::{DateTime, TimeZone, Utc};

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 10, 0, 0).unwrap()
}

/// A monthly subscription bought on 31 January 2027, in its first period, due.
async fn bought_on_31_january(app: &TestApp) -> SubscriptionId {
    let sub = app.seed_subscription(UserId::new(), true, true).await;
    app.sql()
        .await
        .execute(
            "UPDATE subscriptions SET current_period_start = $2, current_period_end = $3, \
             billing_anchor = $2 WHERE id = $1",
            &[&sub, &at(2027, 1, 31), &at(2027, 2, 28)],
        )
        .await
        .unwrap();
    sub
}

async fn renew_once(app: &TestApp, sub: SubscriptionId) -> DateTime<Utc> {
    app.make_due(sub).await;
    assert_eq!(renewer::run_once(app.app()).await.unwrap(), 1);
    let s = app.subscription(sub).await;
    assert_eq!(s.status, SubscriptionStatus::Active);
    s.current_period_end
}

/// Periods used to be added to the current end: 31 Jan → 28 Feb → 28 Mar, a few
/// days short forever after.
#[tokio::test]
async fn renewals_keep_the_anchor_day_after_a_short_month() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let sub = bought_on_31_january(&app).await;
    let mut ends = vec![];
    for _ in 0..3 {
        ends.push(renew_once(&app, sub).await);
    }
    assert_eq!(ends, [at(2027, 3, 31), at(2027, 4, 30), at(2027, 5, 31)]);
    let renewals = app.renewals(sub).await;
    let mut periods: Vec<_> = renewals
        .iter()
        .filter(|p| p.status == PaymentStatus::Succeeded)
        .map(|p| p.period_start.unwrap())
        .collect();
    periods.sort();
    assert_eq!(periods, [at(2027, 2, 28), at(2027, 3, 31), at(2027, 4, 30)]);
    assert_eq!(app.subscription(sub).await.billing_anchor, at(2027, 1, 31));
}

/// The same tariff bought again extends on the anchor's grid too.
#[tokio::test]
async fn an_extension_lands_on_the_anchor_day() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let sub = bought_on_31_january(&app).await;
    let user = app.subscription(sub).await.user_id;
    let (status, body) = app.buy(user, MONTH_TARIFF, false, None).await;
    assert_eq!(status, 201, "{body}");
    let pid = app.provider_id(payment_id(&body)).await;
    fake.settle(&pid, billing::providers::sandbox::Outcome::Succeed)
        .unwrap();
    assert_eq!(fake.notify(&pid).await.unwrap(), 200);
    assert_eq!(
        app.subscription(sub).await.current_period_end,
        at(2027, 3, 31)
    );
}

/// A full refund of a prepaid period gives back exactly that period, on the grid:
/// 30 Apr → 31 Mar, not 30 Mar.
#[tokio::test]
async fn a_refund_gives_back_the_anchored_period() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let sub = bought_on_31_january(&app).await;
    renew_once(&app, sub).await;
    renew_once(&app, sub).await;
    let last = app
        .renewals(sub)
        .await
        .into_iter()
        .find(|p| p.period_start == Some(at(2027, 3, 31)))
        .expect("the renewal of April");
    let (status, body) = app
        .post(
            &format!("/api/v1/admin/payments/{}/refund", last.id),
            Some(&app.admin_token()),
            serde_json::json!({"reason": "asked"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let s = app.subscription(sub).await;
    assert_eq!(s.current_period_end, at(2027, 3, 31));
    assert_eq!(s.current_period_start, at(2027, 2, 28));
}

/// Subscriptions that existed before anchors were kept get theirs from their first
/// paid period's start.
#[tokio::test]
async fn existing_subscriptions_are_anchored_at_their_first_period() {
    let db = TestDb::empty().await;
    billing::db::migrate_to(&db.url, Some(8)).await.unwrap();
    let sql = db.client().await;
    let user = UserId::new();
    let sub = seed_subscription(&sql, user, true, true).await;
    sql.execute(
        "UPDATE subscriptions SET current_period_start = $2, current_period_end = $3 WHERE id = $1",
        &[&sub, &at(2027, 2, 28), &at(2027, 3, 28)],
    )
    .await
    .unwrap();
    for (start, end) in [
        (at(2027, 1, 31), at(2027, 2, 28)),
        (at(2027, 2, 28), at(2027, 3, 28)),
    ] {
        sql.execute(
            "INSERT INTO payments (id, user_id, tariff_id, subscription_id, pay_system, kind, status, \
             amount_minor, currency, renew, description, provider_idempotence_key, livemode, period_start, period_end) \
             VALUES (gen_random_uuid(), $1, $2::text::uuid, $3, 'yookassa', 'purchase', 'succeeded', 29900, 'RUB', \
             true, 'Subscription', gen_random_uuid()::text, false, $4, $5)",
            &[&user, &MONTH_TARIFF, &sub, &start, &end],
        )
        .await
        .unwrap();
    }
    let untouched = seed_subscription(&sql, UserId::new(), true, true).await;
    // Started over after expiry at another time of day: its first period's start
    // is not on its current dates, and anchoring there would give it a free month.
    let restarted = seed_subscription(&sql, UserId::new(), true, true).await;
    let at_14 = |m, d| Utc.with_ymd_and_hms(2027, m, d, 14, 0, 0).unwrap();
    sql.execute(
        "UPDATE subscriptions SET current_period_start = $2, current_period_end = $3 WHERE id = $1",
        &[&restarted, &at_14(6, 5), &at_14(7, 5)],
    )
    .await
    .unwrap();
    sql.execute(
        "INSERT INTO payments (id, user_id, tariff_id, subscription_id, pay_system, kind, status, \
         amount_minor, currency, renew, description, provider_idempotence_key, livemode, period_start, period_end) \
         SELECT gen_random_uuid(), user_id, tariff_id, id, 'yookassa', 'purchase', 'succeeded', 29900, 'RUB', \
         true, 'Subscription', gen_random_uuid()::text, false, $2, $3 FROM subscriptions WHERE id = $1",
        &[&restarted, &at(2027, 1, 5), &at(2027, 2, 5)],
    )
    .await
    .unwrap();
    billing::db::migrate(&db.url).await.unwrap();
    let anchor = |id: SubscriptionId| {
        let sql = &sql;
        async move {
            sql.query_one(
                "SELECT billing_anchor, current_period_start FROM subscriptions WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
        }
    };
    let row = anchor(sub).await;
    assert_eq!(row.get::<_, DateTime<Utc>>(0), at(2027, 1, 31));
    let row = anchor(restarted).await;
    assert_eq!(
        row.get::<_, DateTime<Utc>>(0),
        at_14(6, 5),
        "anchored at its restart"
    );
    let row = anchor(untouched).await;
    assert_eq!(
        row.get::<_, DateTime<Utc>>(0),
        row.get::<_, DateTime<Utc>>(1),
        "no payment periods: its current period's start"
    );
}
