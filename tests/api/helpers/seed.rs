//! Set-up no API can make: rows inserted or moved in time directly. SQL lives here
//! (and in a few per-file helpers), not in the tests' assertions.

use billing::domain::{MethodId, SubscriptionId, TariffId, UserId};
use uuid::Uuid;

use super::{TestApp, MONTH_TARIFF};

/// Inserts a live monthly subscription directly, optionally with a saved card
/// (for tests of what reads or changes one).
pub async fn seed_subscription(
    db: &tokio_postgres::Client,
    user: UserId,
    auto_renew: bool,
    with_method: bool,
) -> SubscriptionId {
    let tariff: TariffId = MONTH_TARIFF.parse().unwrap();
    let method = if with_method {
        let id = MethodId::new();
        db.execute(
            "INSERT INTO payment_methods (id, user_id, pay_system, provider_method_id, title, livemode) \
             VALUES ($1, $2, 'yookassa', $3, 'Bank card *4444', false)",
            &[&id, &user, &format!("pm-{}", Uuid::new_v4())],
        )
        .await
        .unwrap();
        Some(id)
    } else {
        None
    };
    let id = SubscriptionId::new();
    db.execute(
        "INSERT INTO subscriptions (id, user_id, tariff_id, pay_system, status, price_minor, currency, \
         period_count, period_unit, current_period_start, current_period_end, auto_renew, payment_method_id, \
         next_charge_at, livemode) \
         VALUES ($1, $2, $3, 'yookassa', 'active', 29900, 'RUB', 1, 'month', now(), now() + interval '1 month', \
         $4, $5, CASE WHEN $4 THEN now() + interval '1 month' - interval '1 day' END, false)",
        &[&id, &user, &tariff, &auto_renew, &method],
    )
    .await
    .unwrap();
    id
}

impl TestApp {
    /// A connection to the test's database, for set-up in SQL.
    pub async fn sql(&self) -> tokio_postgres::Client {
        self.db.client().await
    }

    /// [`seed_subscription`] in this test's database.
    pub async fn seed_subscription(
        &self,
        user: UserId,
        auto_renew: bool,
        with_method: bool,
    ) -> SubscriptionId {
        seed_subscription(&self.sql().await, user, auto_renew, with_method).await
    }

    /// A seeded subscription whose renewal is due now; answers it and the
    /// provider's id of its saved card.
    pub async fn due(&self) -> (SubscriptionId, String) {
        let sub = self.seed_subscription(UserId::new(), true, true).await;
        self.make_due(sub).await;
        let method = self
            .method_of(&self.subscription(sub).await)
            .await
            .expect("seeded with a card");
        (sub, method.provider_method_id)
    }

    /// The renewer's claim of the one due subscription `sub`: its renewal payment
    /// committed, not sent (a crash right after the claim).
    pub async fn claimed_renewal(&self, sub: SubscriptionId) -> billing::store::Payment {
        let app = self.app();
        let mut claimed = billing::jobs::renewer::claim(app, 10, app.config.jobs.renewer_lease)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "one due subscription");
        let payment = claimed.remove(0).payment;
        assert_eq!(payment.subscription_id, Some(sub));
        payment
    }

    /// The subscription's next charge is due now.
    pub async fn make_due(&self, sub: SubscriptionId) {
        self.sql()
            .await
            .execute(
                "UPDATE subscriptions SET next_charge_at = now() - interval '1 second' WHERE id = $1",
                &[&sub],
            )
            .await
            .unwrap();
    }

    /// Every open payment is due for the reconciler's next check.
    pub async fn make_checks_due(&self) {
        self.sql()
            .await
            .execute(
                "UPDATE payments SET next_check_at = now() - interval '1 second' \
                 WHERE status IN ('pending', 'waiting_for_capture')",
                &[],
            )
            .await
            .unwrap();
    }

    /// Every stored notification is due for the retry worker's next attempt.
    pub async fn make_inbox_due(&self) {
        self.sql()
            .await
            .execute("UPDATE webhook_inbox SET next_attempt_at = now()", &[])
            .await
            .unwrap();
    }
}
