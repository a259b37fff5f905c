//! Alerts: something a person must look at. Each one is an error log line with an
//! `alert` field, a `billing_alerts_total{kind}` increment and an `alerts` row (the
//! console's overview counts them).
//!
//! The row is written by one writer task per process ([`write`]) from a bounded
//! queue, on its own connection, after the caller's transaction whatever its fate
//! (an alert is about what was seen). A full queue drops the row, not the alert:
//! the log line and the metric stay, and `alerts_unstored_total` counts it. At
//! shutdown the writer stores what is queued after every other task has ended.

use std::fmt;
use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::domain::{InboxId, PaymentId, SubscriptionId, UserId};
use crate::store::{alerts, Connect};

/// Alerts waiting for their row, at most.
const QUEUE: usize = 1024;

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

struct Queued {
    kind: &'static str,
    message: String,
    subject: String,
}

/// The queue between `raise` and the writer task.
pub struct AlertQueue {
    tx: mpsc::Sender<Queued>,
    rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    /// Cancelled once every other task has ended: the writer stores what is
    /// queued and stops.
    pub close: CancellationToken,
}

impl Default for AlertQueue {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        AlertQueue {
            tx,
            rx: Mutex::new(Some(rx)),
            close: CancellationToken::new(),
        }
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
    let queued = Queued {
        kind,
        message: message.to_owned(),
        subject: subject.to_string(),
    };
    if app.alerts.tx.try_send(queued).is_err() {
        metrics::counter!("alerts_unstored_total").increment(1);
        tracing::warn!(alert = kind, "alert queue full: this alert gets no row");
    }
}

/// Stores queued alerts until [`AlertQueue::close`]; then what is left, and stops.
pub async fn write(app: App) {
    let Some(mut rx) = app.alerts.rx.lock().expect("alert queue").take() else {
        return;
    };
    loop {
        tokio::select! {
            biased;
            queued = rx.recv() => match queued {
                Some(a) => store(&app, a).await,
                None => return,
            },
            _ = app.alerts.close.cancelled() => break,
        }
    }
    while let Ok(a) = rx.try_recv() {
        store(&app, a).await;
    }
}

async fn store(app: &App, a: Queued) {
    let stored =
        async { alerts::insert(&app.db.conn().await?, a.kind, &a.message, &a.subject).await };
    if let Err(e) = stored.await {
        metrics::counter!("alerts_unstored_total").increment(1);
        tracing::warn!(error = %e, alert = a.kind, "alert not stored");
    }
}
