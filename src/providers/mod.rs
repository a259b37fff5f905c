//! One trait for every payment provider. The core never sees provider JSON:
//! adapters translate to and from these types at the edge.

pub mod cloudpayments;
pub mod sandbox;
pub mod yookassa;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{Money, PaySystem, PaymentStatus, RefundStatus};

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
    pub our_id: Option<Uuid>,
    /// The provider's test flag.
    pub test: bool,
    /// YooKassa: the shop that receives the money. CloudPayments: the payer's
    /// `AccountId`, which must be our user id.
    pub account_id: Option<String>,
    pub captured_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub confirmation_url: Option<String>,
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
    pub our_id: Uuid,
    pub user_id: Uuid,
    pub amount: Money,
    pub description: String,
    /// Persisted before the call and re-sent on every retry of the same create.
    pub idempotence_key: String,
    /// A viewer is present: where to send them back after the provider's page.
    pub return_url: Option<String>,
    pub save_method: bool,
    /// A renewal: charge this saved method with no viewer present.
    pub saved_method_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CreateRefund {
    pub provider_payment_id: String,
    pub amount: Money,
    pub description: String,
    pub idempotence_key: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRefund {
    pub id: String,
    pub payment_id: String,
    pub status: RefundStatus,
    pub amount: Money,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Network error, timeout, 5xx, 202: the outcome is unknown; retry with the same key.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request (4xx): a definite answer.
    #[error("provider rejected the request: {code}: {description}")]
    Rejected { code: String, description: String },
    #[error("not found at the provider")]
    NotFound,
    /// The provider answered something we cannot read.
    #[error("unreadable provider answer: {0}")]
    Invalid(String),
}

impl ProviderError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ProviderError::Unavailable(_))
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn pay_system(&self) -> PaySystem;
    async fn create_payment(&self, req: &CreatePayment) -> Result<ProviderPayment, ProviderError>;
    async fn get_payment(&self, provider_id: &str) -> Result<ProviderPayment, ProviderError>;
    /// Looks a payment up by our id (a create whose answer we never recorded).
    async fn find_payment(
        &self,
        our_id: Uuid,
        created_after: DateTime<Utc>,
    ) -> Result<Option<ProviderPayment>, ProviderError>;
    async fn create_refund(&self, req: &CreateRefund) -> Result<ProviderRefund, ProviderError>;
    async fn get_refund(&self, provider_id: &str) -> Result<ProviderRefund, ProviderError>;
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
}
