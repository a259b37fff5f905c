//! Notifications through the provider trait (Hyperswitch's `IncomingWebhook`, smaller):
//! each adapter authenticates its provider's requests, reads their bodies into our
//! [`Notification`], and words the answer its provider expects. No HTTP types here:
//! the HTTP layer hands over a [`WebhookRequest`] and turns a [`WebhookReply`] into
//! a response.

use std::collections::HashMap;
use std::net::IpAddr;

use super::cloudpayments::{self, CheckCode, Kind};
use super::ProviderError;
use crate::domain::InboxStatus;
use crate::domain::{PaySystem, PaymentStatus};

/// Which notification URL was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /webhooks/yookassa`
    YooKassa,
    /// `POST /webhooks/cloudpayments/{kind}`
    CloudPayments(Kind),
}

impl Endpoint {
    pub fn pay_system(self) -> PaySystem {
        match self {
            Endpoint::YooKassa => PaySystem::YooKassa,
            Endpoint::CloudPayments(_) => PaySystem::CloudPayments,
        }
    }
}

/// Request headers by lower-case name: the first value of each, `None` when that
/// value is not visible ASCII (the header is still present).
#[derive(Debug, Clone, Default)]
pub struct Headers(HashMap<String, Option<String>>);

impl Headers {
    /// Keeps the first value of a name.
    pub fn add(&mut self, name: &str, value: Option<&str>) {
        self.0
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| value.map(str::to_owned));
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.as_deref())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// A notification as received, before anything is parsed.
pub struct WebhookRequest<'a> {
    pub endpoint: Endpoint,
    /// The sender: the peer, or the client a trusted proxy forwarded for.
    pub source_ip: Option<IpAddr>,
    pub headers: &'a Headers,
    /// The exact bytes received: signatures are checked over them.
    pub body: &'a [u8],
}

impl WebhookRequest<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

/// Why a notification was refused before it was stored; `reason` labels
/// `webhooks_rejected_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// A signature missing, wrong, stale or replayed.
    Unauthenticated {
        reason: &'static str,
        detail: String,
    },
    /// Not a sender this provider sends from.
    Forbidden {
        reason: &'static str,
        detail: String,
    },
}

impl Rejection {
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Unauthenticated { reason, .. } | Rejection::Forbidden { reason, .. } => {
                reason
            }
        }
    }
}

/// What a notification says, in our words.
#[derive(Debug, Clone)]
pub enum Notification {
    /// Re-read this payment from the provider; `claimed` is the status the
    /// notification says it reached (applied only if the provider agrees).
    PaymentChanged {
        provider_id: String,
        claimed: PaymentStatus,
    },
    /// Re-read this refund from the provider.
    RefundChanged { provider_id: String },
    /// CloudPayments `check`: may the viewer pay this invoice? Decided from our row.
    CloudPaymentsCheck(cloudpayments::Notice),
    /// CloudPayments `pay`, `confirm`, `fail` or `cancel`: the signed body is the
    /// provider's word about the payment.
    CloudPaymentsPayment(cloudpayments::Notice),
    /// CloudPayments `refund`: a refund transaction of one of our payments.
    CloudPaymentsRefund(cloudpayments::Notice),
    /// Recorded and not acted on, for this reason.
    Ignored(String),
}

/// A notification read at the edge: its inbox key and what it says.
#[derive(Debug, Clone)]
pub struct Received {
    pub event: String,
    pub object_id: String,
    pub notification: Notification,
}

/// A body that does not read as a notification (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all where JSON is expected (`bad_json`).
    #[error("{0}")]
    NotJson(String),
    /// Not the fields that identify a notification (`bad_notification`).
    #[error("{0}")]
    Invalid(String),
}

/// A stored notification as the inbox keeps it.
pub struct Stored<'a> {
    pub event: &'a str,
    pub object_id: &'a str,
    /// `None` once housekeeping purged it.
    pub body: Option<&'a [u8]>,
    pub content_type: Option<&'a str>,
}

/// A stored notification that cannot be read again; retrying will not help.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("the notification body was purged")]
    Purged,
    #[error("{0}")]
    Invalid(#[from] ProviderError),
}

/// Reads a stored notification again, by the provider that sent it. Needs no
/// credentials: a row is processed even if its provider was switched off since.
pub fn restore(system: PaySystem, stored: &Stored<'_>) -> Result<Notification, Unreadable> {
    match system {
        PaySystem::YooKassa => Ok(super::yookassa::webhook::restore(stored)),
        PaySystem::CloudPayments => super::cloudpayments::webhook::restore(stored),
    }
}

/// What became of an accepted notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored; where processing left the row (`processed`, `ignored`, `failed`, or
    /// `received`: queued for the retry worker).
    Stored(InboxStatus),
    /// A CloudPayments `check`, decided.
    Checked(CheckCode),
}

/// The answer a provider expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookReply {
    pub status: u16,
    pub body: ReplyBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyBody {
    /// `{"status": …}` (YooKassa: any 200 stops its retries).
    Ack(InboxStatus),
    /// `{"code": N}` (CloudPayments: 0 accepts; a `check` may refuse with 10..=13).
    Code(u8),
}

/// A provider's side of notifications.
pub trait Webhooks {
    /// Whether ops replays (our own Standard Webhooks channel, checked before this
    /// provider's `authenticate`) are taken on this provider's URL.
    fn takes_ops_replays(&self) -> bool {
        false
    }

    /// Checks the request comes from the provider, before anything is parsed.
    fn authenticate(&self, req: &WebhookRequest<'_>) -> Result<(), Rejection>;

    /// Reads an authenticated body into its inbox key and what it says.
    fn parse(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Result<Received, ParseError>;

    /// The answer to send once the notification is stored.
    fn reply(&self, outcome: Outcome) -> WebhookReply;
}
