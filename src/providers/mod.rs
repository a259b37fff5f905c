//! One trait for every payment provider. The core never sees provider JSON:
//! adapters translate to and from these types at the edge, notifications included
//! ([`Webhooks`]).

pub mod cloudpayments;
pub mod sandbox;
pub mod webhook;
pub mod yookassa;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::receipt::Receipt;
use crate::domain::PaymentId;
use crate::domain::UserId;
use crate::domain::{Money, PaySystem, PaymentStatus, RefundStatus};
pub use webhook::{Notification, Webhooks};

/// A payment as the provider sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderPayment {
    /// Empty when the provider has no payment yet (a CloudPayments order) or when the
    /// object must not lend its id to our row (a declined CloudPayments attempt).
    pub id: String,
    /// Only `pending`, `waiting_for_capture`, `succeeded` or `canceled`.
    pub status: PaymentStatus,
    pub amount: Money,
    /// Our payment id, as we put it in the provider's metadata.
    pub our_id: Option<PaymentId>,
    /// The provider's test flag.
    pub test: bool,
    /// YooKassa: the shop that receives the money. CloudPayments: the payer's
    /// `AccountId`, which must be our user id.
    pub account_id: Option<String>,
    pub captured_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub confirmation_url: Option<String>,
    /// The provider's id of the checkout page when it is not the payment's (a
    /// CloudPayments order): what `void_checkout` needs.
    pub checkout_id: Option<String>,
    pub method: Option<ProviderMethod>,
    pub cancellation: Option<Cancellation>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderMethod {
    /// YooKassa `payment_method.id`, CloudPayments card token.
    pub id: String,
    /// Whether it may be charged again without the viewer.
    pub saved: bool,
    /// `"Bank card *4444"`
    pub title: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cancellation {
    pub party: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct CreatePayment {
    pub our_id: PaymentId,
    pub user_id: UserId,
    pub amount: Money,
    pub description: String,
    /// Persisted before the call and re-sent on every retry of the same create.
    pub idempotence_key: String,
    /// A viewer is present: where to send them back after the provider's page.
    pub return_url: Option<String>,
    pub save_method: bool,
    /// A renewal: charge this saved method with no viewer present.
    pub saved_method_id: Option<String>,
    /// The 54-FZ receipt, when receipts are on for this provider.
    pub receipt: Option<Receipt>,
}

#[derive(Debug, Clone)]
pub struct CreateRefund {
    pub provider_payment_id: String,
    pub amount: Money,
    pub description: String,
    pub idempotence_key: String,
    /// The refund receipt ("return of income"), when receipts are on.
    pub receipt: Option<Receipt>,
    /// The whole payment goes back at once (YooKassa then builds the refund
    /// receipt from the payment's own and takes none).
    pub whole_payment: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRefund {
    pub id: String,
    pub payment_id: String,
    pub status: RefundStatus,
    pub amount: Money,
}

/// What a provider call ended with, other than an answer we could read.
///
/// Only a **definite** answer ends an attempt: a 4xx with an error body we parsed
/// (`Rejected`, `NotFound`), or a parsed `canceled` payment (an `Ok`). Everything
/// else leaves the outcome **unknown**: the same key is re-sent or the object looked
/// up, never a new key, never `failed`. The clients turn an unreadable API answer
/// into `Unavailable`, so callers that only match `Unavailable` stay on the safe side.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Network error, timeout, 5xx, 429, 202, a 4xx without a readable error, or a 2xx
    /// whose body could not be read or parsed: the outcome is unknown; retry with the same key.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request (a 4xx with a parsed error, or CloudPayments'
    /// `Success:false` without a transaction): a definite answer, nothing was done.
    /// `code` is the provider's code, or [`METHOD_REFUSED`] when the refusal is about
    /// the viewer's saved method rather than about us.
    #[error("provider rejected the request: {code}: {description}")]
    Rejected { code: String, description: String },
    #[error("not found at the provider")]
    NotFound,
    /// Provider data (a notification) that cannot be read. API answers never end
    /// here: the clients report those as `Unavailable`.
    #[error("unreadable provider answer: {0}")]
    Invalid(String),
}

/// `Rejected.code` of a refusal about the viewer's saved method (YooKassa: an error
/// naming `payment_method_id`; CloudPayments: the token refused). A renewal treats it
/// as a hard decline; any other refusal is ours (credentials, shop settings, a bug).
pub const METHOD_REFUSED: &str = "payment_method_refused";

impl ProviderError {
    /// A definite answer: nothing was created, a retry needs a new key.
    pub fn is_definite(&self) -> bool {
        matches!(
            self,
            ProviderError::Rejected { .. } | ProviderError::NotFound
        )
    }

    /// The outcome is unknown: retry with the same key (or look the object up).
    pub fn is_transient(&self) -> bool {
        !self.is_definite()
    }

    /// A definite refusal about the viewer's saved method (not about our shop).
    pub fn refuses_method(&self) -> bool {
        matches!(self, ProviderError::Rejected { code, .. } if code == METHOD_REFUSED)
    }

    /// An API answer that did not parse: unknown, not a refusal.
    pub fn unreadable(self) -> ProviderError {
        match self {
            ProviderError::Invalid(m) => {
                ProviderError::Unavailable(format!("unreadable answer: {m}"))
            }
            other => other,
        }
    }
}

/// Timeouts and retries of one provider call, shared by both clients. The
/// idempotency-key lease of a request that calls a provider is derived from it
/// ([`RetryPolicy::budget`]), so the lease cannot run out while the call is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub connect_timeout: Duration,
    /// One request, connect to the last byte of the body.
    pub timeout: Duration,
    /// Re-sends (same key) after an unknown outcome.
    pub retries: u32,
    /// The wait before re-send n is `backoff * n` (or the provider's `retry_after`),
    /// at most `max_wait`.
    pub backoff: Duration,
    pub max_wait: Duration,
}

impl RetryPolicy {
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        connect_timeout: Duration::from_secs(3),
        timeout: Duration::from_secs(10),
        retries: 2,
        backoff: Duration::from_millis(200),
        max_wait: Duration::from_secs(5),
    };

    /// The wait before re-send `attempt` (1-based).
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        retry_after
            .unwrap_or(self.backoff * attempt)
            .min(self.max_wait)
    }

    /// The HTTP client this policy's timeouts describe.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .pool_max_idle_per_host(64)
            .build()
            .expect("reqwest client builds")
    }

    /// The longest a call with all its re-sends can take.
    pub fn budget(&self) -> Duration {
        self.timeout * (self.retries + 1) + self.max_wait * self.retries
    }
}

/// A provider's API calls; its notifications are [`Webhooks`].
#[async_trait]
pub trait Provider: Webhooks + Send + Sync {
    fn pay_system(&self) -> PaySystem;
    async fn create_payment(&self, req: &CreatePayment) -> Result<ProviderPayment, ProviderError>;
    async fn get_payment(&self, provider_id: &str) -> Result<ProviderPayment, ProviderError>;
    /// Looks a payment up by our id (a create whose answer we never recorded), among
    /// the payments created between `from` and `to`. `Ok(None)` only once the whole
    /// window was searched; an unreadable page or item naming our id is an error.
    async fn find_payment(
        &self,
        our_id: PaymentId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Option<ProviderPayment>, ProviderError>;
    async fn create_refund(&self, req: &CreateRefund) -> Result<ProviderRefund, ProviderError>;
    async fn get_refund(&self, provider_id: &str) -> Result<ProviderRefund, ProviderError>;
    /// Every refund of one of the provider's payments, whoever made it, to the end
    /// of the list; `Ok(None)` when this provider cannot list them. An unreadable
    /// page or item is an error (the refund looked for may be the unreadable one).
    async fn list_refunds(
        &self,
        provider_payment_id: &str,
    ) -> Result<Option<Vec<ProviderRefund>>, ProviderError>;
    /// Every refund the provider made between `from` and `to` (its creation time),
    /// of any payment and whoever asked for it, to the end of the list; `Ok(None)`
    /// when this provider cannot list them. The refund sweep learns from it the
    /// refunds whose notification never came (a dashboard refund, say). An
    /// unreadable page or refund is an error: the one looked for may be it.
    async fn refunds_between(
        &self,
        _from: DateTime<Utc>,
        _to: DateTime<Utc>,
    ) -> Result<Option<Vec<ProviderRefund>>, ProviderError> {
        Ok(None)
    }
    /// Makes a checkout page that was never paid unpayable, before we give its
    /// purchase up. `Ok` when it can no longer be paid (already void included).
    /// Only providers whose pages outlive our patience need it: YooKassa cancels an
    /// unpaid confirmation itself within about an hour.
    async fn void_checkout(&self, _checkout_id: &str) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// The configured providers.
#[derive(Clone)]
pub struct Providers {
    pub yookassa: Arc<dyn Provider>,
    pub cloudpayments: Option<Arc<dyn Provider>>,
}

impl Providers {
    pub fn get(&self, system: PaySystem) -> Option<&Arc<dyn Provider>> {
        match system {
            PaySystem::YooKassa => Some(&self.yookassa),
            PaySystem::CloudPayments => self.cloudpayments.as_ref(),
        }
    }

    /// The pay systems configured here.
    pub fn configured(&self) -> impl Iterator<Item = PaySystem> + '_ {
        [PaySystem::YooKassa, PaySystem::CloudPayments]
            .into_iter()
            .filter(|s| self.get(*s).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_parsed_refusal_is_definite() {
        let rejected = ProviderError::Rejected {
            code: "invalid_credentials".into(),
            description: String::new(),
        };
        assert!(rejected.is_definite());
        assert!(!rejected.refuses_method());
        assert!(ProviderError::NotFound.is_definite());
        assert!(!ProviderError::Unavailable("timeout".into()).is_definite());
        assert!(!ProviderError::Invalid("cut off".into()).is_definite());
        assert!(matches!(
            ProviderError::Invalid("x".into()).unreadable(),
            ProviderError::Unavailable(_)
        ));
        assert!(ProviderError::Rejected {
            code: METHOD_REFUSED.into(),
            description: String::new()
        }
        .refuses_method());
    }

    #[test]
    fn the_budget_covers_every_attempt_and_every_wait() {
        let p = RetryPolicy::DEFAULT;
        let longest = p.timeout * 3 + p.wait(1, Some(Duration::from_secs(60))) + p.wait(2, None);
        assert!(p.budget() >= longest, "{:?} < {longest:?}", p.budget());
        assert!(
            p.budget() > Duration::from_secs(31),
            "the ~31 s of issue 10"
        );
    }
}
