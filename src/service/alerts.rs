//! Alerts: something a person must look at. Each one is an error log line with an
//! `alert` field, a `billing_alerts_total{kind}` increment and an `alerts` row (the
//! console's overview counts them). The row is written on its own connection, after
//! the caller's transaction whatever its fate: an alert is about what was seen.

use std::fmt;

use crate::app::App;
use crate::domain::{InboxId, PaymentId, SubscriptionId, UserId};
use crate::store::{alerts, Connect};

/// What an alert is about.
#[derive(Debug, Clone, Copy)]
pub enum Subject {
    Payment(PaymentId),
    Subscription(SubscriptionId),
    Webhook(InboxId),
    /// An operator's console action.
    Operator(UserId),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Payment(id) => write!(f, "payment:{id}"),
            Subject::Subscription(id) => write!(f, "subscription:{id}"),
            Subject::Webhook(id) => write!(f, "webhook:{id}"),
            Subject::Operator(id) => write!(f, "operator:{id}"),
        }
    }
}

impl From<PaymentId> for Subject {
    fn from(id: PaymentId) -> Self {
        Subject::Payment(id)
    }
}

pub fn raise(app: &App, kind: &'static str, message: &str, subject: impl Into<Subject>) {
    let subject = subject.into();
    metrics::counter!("billing_alerts_total", "kind" => kind).increment(1);
    match subject {
        Subject::Payment(id) => tracing::error!(alert = kind, payment_id = %id, "{message}"),
        Subject::Subscription(id) => {
            tracing::error!(alert = kind, subscription_id = %id, "{message}")
        }
        Subject::Webhook(id) => tracing::error!(alert = kind, inbox_id = %id, "{message}"),
        Subject::Operator(id) => tracing::error!(alert = kind, operator = %id, "{message}"),
    }
    let (db, message) = (app.db.clone(), message.to_owned());
    tokio::spawn(async move {
        let stored =
            async { alerts::insert(&db.conn().await?, kind, &message, &subject.to_string()).await };
        if let Err(e) = stored.await {
            tracing::warn!(error = %e, alert = kind, "alert not stored");
        }
    });
}
