//! What the service stored, read back as the store's own types: assertions name a
//! helper and compare typed ids and statuses, not SQL text.
//!
//! The reads go through a pool of the test's own (not the server's), so they work
//! after a test stopped its server. The few helpers with SQL read what no store
//! type carries (the outbox, a refund's provider id, Idempotency-Key rows).

use billing::domain::{
    InboxStatus, MethodId, PaymentId, PaymentKind, PaymentStatus, RefundId, SubscriptionId,
    SubscriptionStatus, UserId,
};
use billing::store::payment_methods::{self, PaymentMethod};
use billing::store::refunds::{self, Refund};
use billing::store::webhook_inbox::{self, InboxRow};
use billing::store::{payments, subscriptions, Payment, Subscription};

use super::TestApp;

/// More rows than any test stores.
const ALL: i64 = 10_000;

impl TestApp {
    /// A connection for the store's functions (`billing::store::…`).
    pub async fn conn(&self) -> deadpool_postgres::Object {
        self.store
            .get()
            .await
            .expect("a connection to the test database")
    }

    pub async fn payment(&self, id: PaymentId) -> Payment {
        payments::get(&self.conn().await, id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no payment {id}"))
    }

    /// Every row of `table`, oldest first, read as the store reads it.
    async fn all<T, E: std::fmt::Debug>(
        &self,
        table: &str,
        cols: &str,
        from_row: fn(&tokio_postgres::Row) -> Result<T, E>,
    ) -> Vec<T> {
        let sql = format!("SELECT {cols} FROM {table} ORDER BY created_at, id");
        self.conn()
            .await
            .query(&sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| from_row(r).unwrap())
            .collect()
    }

    /// Every payment, oldest first.
    pub async fn payments(&self) -> Vec<Payment> {
        self.all("payments", payments::COLS, Payment::from_row)
            .await
    }

    pub async fn payments_with(&self, status: PaymentStatus) -> Vec<Payment> {
        let mut all = self.payments().await;
        all.retain(|p| p.status == status);
        all
    }

    /// A subscription's renewal payments, by attempt.
    pub async fn renewals(&self, sub: SubscriptionId) -> Vec<Payment> {
        let mut all = self.payments().await;
        all.retain(|p| p.subscription_id == Some(sub) && p.kind == PaymentKind::Renewal);
        all.sort_by_key(|p| p.attempt);
        all
    }

    /// The provider's id of one of our payments (it has one once the create was answered).
    pub async fn provider_id(&self, id: PaymentId) -> String {
        self.payment(id)
            .await
            .provider_payment_id
            .unwrap_or_else(|| panic!("payment {id} has no provider id"))
    }

    pub async fn subscription(&self, id: SubscriptionId) -> Subscription {
        subscriptions::get(&self.conn().await, id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no subscription {id}"))
    }

    /// The user's live subscription if any, else their latest one (as the profile shows).
    pub async fn subscription_of(&self, user: UserId) -> Subscription {
        subscriptions::current_for_user(&self.conn().await, user)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("user {user} has no subscription"))
    }

    /// Every subscription, oldest first.
    pub async fn subscriptions(&self) -> Vec<Subscription> {
        self.all("subscriptions", subscriptions::COLS, Subscription::from_row)
            .await
    }

    pub async fn subscriptions_with(&self, status: SubscriptionStatus) -> Vec<Subscription> {
        let mut all = self.subscriptions().await;
        all.retain(|s| s.status == status);
        all
    }

    pub async fn method(&self, id: MethodId) -> PaymentMethod {
        payment_methods::get(&self.conn().await, id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no payment method {id}"))
    }

    /// The saved method a subscription renews with, if any.
    pub async fn method_of(&self, sub: &Subscription) -> Option<PaymentMethod> {
        match sub.payment_method_id {
            Some(id) => Some(self.method(id).await),
            None => None,
        }
    }

    /// The user's saved methods, newest first.
    pub async fn methods_of(&self, user: UserId) -> Vec<PaymentMethod> {
        payment_methods::of_user(&self.conn().await, user)
            .await
            .unwrap()
    }

    pub async fn refund(&self, id: RefundId) -> Refund {
        refunds::get(&self.conn().await, id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no refund {id}"))
    }

    /// Every refund, oldest first.
    pub async fn refunds(&self) -> Vec<Refund> {
        let conn = self.conn().await;
        let ids: Vec<RefundId> = conn
            .query("SELECT id FROM refunds ORDER BY created_at, id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut all = Vec::new();
        for id in ids {
            all.push(refunds::get(&conn, id).await.unwrap().unwrap());
        }
        all
    }

    /// The provider's id of one of our refunds (no store type carries it).
    pub async fn provider_refund_id(&self, id: RefundId) -> Option<String> {
        self.conn()
            .await
            .query_one(
                "SELECT provider_refund_id FROM refunds WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// Every stored notification, newest first.
    pub async fn inbox(&self) -> Vec<InboxRow> {
        webhook_inbox::list(&self.conn().await, None, None, None, ALL, 0)
            .await
            .unwrap()
    }

    pub async fn inbox_with(&self, status: InboxStatus) -> Vec<InboxRow> {
        webhook_inbox::list(
            &self.conn().await,
            Some(status.as_str()),
            None,
            None,
            ALL,
            0,
        )
        .await
        .unwrap()
    }

    /// The status of the notification about one provider object.
    pub async fn inbox_status(&self, object_id: &str) -> InboxStatus {
        let rows: Vec<InboxRow> = self
            .inbox()
            .await
            .into_iter()
            .filter(|r| r.object_id == object_id)
            .collect();
        assert_eq!(rows.len(), 1, "one notification about {object_id}");
        rows[0].status
    }

    /// The outbox's event types, in insert order.
    pub async fn outbox_types(&self) -> Vec<String> {
        self.conn()
            .await
            .query("SELECT event_type FROM outbox ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// How many Idempotency-Key rows there are.
    pub async fn idempotency_keys(&self) -> i64 {
        self.conn()
            .await
            .query_one("SELECT count(*) FROM idempotency_keys", &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// How many times `t` occurs in `types`.
pub fn count(types: &[String], t: &str) -> usize {
    types.iter().filter(|x| *x == t).count()
}
