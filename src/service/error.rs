//! The service layer's one error: each variant names a business outcome a caller
//! can act on. Only `http::error` turns them into status codes.

use crate::domain::{PaySystem, PaymentId, PaymentStatus, RefundId};
use crate::providers::ProviderError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Store(#[from] StoreError),

    // Input the caller sent.
    #[error("Idempotency-Key must be 1..=255 printable ASCII characters")]
    BadIdempotencyKey,
    #[error("return_url {0}")]
    BadReturnUrl(&'static str),
    #[error("return_url origin {0} is not allowed")]
    ReturnUrlNotAllowed(String),
    #[error("reason must be 1..=500 characters")]
    BadRefundReason,
    #[error("refund currency differs from the payment's")]
    CurrencyMismatch,
    /// A field that does not hold what it must (`field: why`).
    #[error("{0}")]
    BadField(String),
    /// Receipts are on for this provider and the request named no one to send it to.
    #[error("`email` or `phone` is required: {0} sends a 54-FZ receipt for this payment and its renewals")]
    ContactRequired(PaySystem),

    // What the caller asked for does not exist.
    #[error("{0} is not enabled")]
    PaySystemNotEnabled(PaySystem),
    #[error("no such tariff on sale")]
    TariffNotFound,
    #[error("no such tariff")]
    UnknownTariff,
    #[error("no such payment")]
    PaymentNotFound,
    #[error("no active or past_due subscription")]
    NoActiveSubscription,
    #[error("refund {0} not found")]
    RefundNotFound(RefundId),

    // The state does not allow it.
    #[error("another tariff is active; cancel it and wait for it to end, or buy the same tariff to extend it")]
    TariffConflict,
    #[error("a renewal of this subscription is being charged")]
    RenewalPending,
    // A tariff change the subscription's state does not allow.
    #[error("the subscription is already on this tariff; buy it to extend it")]
    SameTariff,
    #[error("the new tariff is sold in another currency than the subscription's")]
    ChangeCurrency,
    /// What the unused part of the current period is worth, in minor units.
    #[error("the unused part of what was paid ({}) covers the new tariff's price: change at the period end instead", crate::domain::money::format_minor(*.0))]
    CreditCoversPrice(i64),
    #[error("auto-renewal is off, so the subscription ends at its period end: resume it first, or change now")]
    AutoRenewOff,
    #[error("auto-renewal needs a saved, usable payment method: buy with renew=true first")]
    NoPaymentMethod,
    #[error("a {0} payment cannot be refunded")]
    PaymentNotRefundable(PaymentStatus),
    /// What is left to refund, in minor units.
    #[error("at most {} can be refunded", crate::domain::money::format_minor(*.0))]
    RefundExceedsRemaining(i64),
    #[error("a tariff with alias {0:?} exists")]
    AliasTaken(String),
    #[error("a tariff's price and period never change: archive it and create another")]
    TariffImmutable,
    #[error("this payment is not waiting for a review")]
    NotUnderReview,
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still running")]
    RequestInProgress,

    // The provider.
    /// Unreachable, or its answer is unknown: the work is kept and resumed with the same key.
    #[error("{0}")]
    ProviderUnavailable(&'static str),
    /// The provider refused the payment for good: it ended `failed`.
    #[error("the payment provider refused the payment")]
    PaymentRefused,
    /// The provider refused the refund for good: it ended `canceled`.
    #[error("the provider refused the refund: {0}")]
    RefundRefused(String),
    /// A provider error a use case has no better name for: unreachable, or an
    /// answer that says nothing definite. Whatever was being done is kept and
    /// resumed with the same key.
    #[error("provider: {0}")]
    Provider(#[from] ProviderError),
    /// Money went back for a payment the provider has not (yet) shown us as
    /// succeeded: the refund is applied once the payment's success is.
    #[error("payment {0} has not succeeded at the provider yet")]
    PaymentNotYetPaid(PaymentId),

    /// A broken invariant of ours (a bug), never the caller's fault.
    #[error("internal: {0}")]
    Internal(String),
}

impl BillingError {
    pub fn internal(what: impl std::fmt::Display) -> Self {
        BillingError::Internal(what.to_string())
    }
}
