//! Changing the tariff of a live subscription (`POST /api/v1/subscriptions/change`).
//!
//! - `period_end`: the subscription keeps what it paid for; its next renewal charges
//!   the new tariff's price and switches to it (`settle`), a new billing anchor at
//!   that renewal's period start.
//! - `now`: a payment of its own kind (`change`) for the new tariff's price minus
//!   the unused part of what was paid (`domain::proration`), recorded with its
//!   provider key before the provider is called and paid on the provider's page,
//!   exactly as a purchase. When it succeeds, `settle` switches the subscription
//!   (a new period of the new tariff from the payment's capture), if it is still
//!   the one the change was priced on; else the payment is refunded. If it fails,
//!   nothing changes.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::App;
use crate::domain::proration::{self, PaidPeriod};
use crate::domain::receipt::Receipt;
use crate::domain::{Money, PaymentId, PaymentKind, PaymentStatus, TariffId, UserId};
use crate::events::{self, EventSubject, EventType};
use crate::service::idempotency::{self, IdempotencyKey, Keyed, Render, Scope};
use crate::service::purchase::{self, Start};
use crate::service::BillingError;
use crate::store::payments::NewPurchase;
use crate::store::tariff_changes::{self, ChangeTerms, Credited};
use crate::store::{self, Connect};
use crate::store::{payments, subscriptions, tariffs, Subscription};

/// When the new tariff takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Now, for the new tariff's price minus the unused part of what was paid.
    Now,
    /// At the next renewal, which charges the new tariff's price.
    PeriodEnd,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    pub tariff_id: TariffId,
    pub when: When,
    /// `now`: where the viewer returns after paying (one of RETURN_URL_ALLOWED_ORIGINS).
    #[serde(default)]
    pub return_url: Option<String>,
    /// `now`: where the payment's 54-FZ receipt goes; the subscription's receipt
    /// contact when not given.
    #[serde(default)]
    #[schema(example = "viewer@example.com")]
    pub email: Option<String>,
    #[serde(default)]
    #[schema(example = "+79001234567")]
    pub phone: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangeResponse {
    pub when: When,
    /// The tariff the subscription changes to (for `period_end` with the current
    /// tariff: the scheduled change is withdrawn).
    pub tariff_id: TariffId,
    /// `now`: the payment to confirm; send the viewer to `confirmation_url`.
    #[schema(required = true)]
    pub payment_id: Option<PaymentId>,
    #[schema(required = true)]
    pub status: Option<PaymentStatus>,
    #[schema(required = true)]
    pub confirmation_url: Option<String>,
    /// `now`: what is charged, the new tariff's price minus `credit`.
    #[schema(required = true)]
    pub amount: Option<Money>,
    /// `now`: the unused part of what was paid, each paid period prorated by time
    /// and rounded up to the kopeck.
    #[schema(required = true)]
    pub credit: Option<Money>,
    /// `period_end`: when the new tariff takes over (the current period's end, when
    /// the renewal charges it); null when the change is withdrawn.
    #[schema(format = DateTime, required = true)]
    pub effective_at: Option<String>,
}

/// Changes the tariff of the user's live subscription. Under an Idempotency-Key
/// the final outcome is rendered by `render` and stored with the key, as for buy.
pub async fn change(
    app: &App,
    user_id: UserId,
    req: ChangeRequest,
    key: Option<IdempotencyKey>,
    render: Render<'_, ChangeResponse>,
) -> Result<Keyed<ChangeResponse>, BillingError> {
    let return_url = purchase::check_return_url(app, req.return_url.as_deref())?;
    let contact = purchase::contact(req.email.as_deref(), req.phone.as_deref())?;
    let hash =
        idempotency::request_hash(&[b"change", &serde_json::to_vec(&req).expect("serializable")]);
    let scope = key.as_ref().map(|key| Scope {
        user_id,
        scope: "change",
        key,
    });
    if req.when == When::PeriodEnd {
        return schedule(app, user_id, &req, scope.as_ref(), &hash, render).await;
    }

    let mut db = app.db.conn().await?;
    let tx = store::begin(&mut db).await?;
    let start = match purchase::claim_key(&tx, scope.as_ref(), &hash).await? {
        Some(earlier) => earlier,
        None => {
            let payment = record(app, &tx, user_id, &req, return_url, contact).await?;
            if let Some(s) = &scope {
                idempotency::attach(&tx, s, payment.id.as_uuid()).await?;
            }
            Start::Create {
                payment: Box::new(payment),
                resumed: false,
            }
        }
    };
    store::commit(tx).await?;
    drop(db);
    let (payment, resumed) = match start {
        Start::Replay(answer) => return Ok(Keyed::Replayed(answer)),
        Start::Create { payment, resumed } => (*payment, resumed),
    };

    let sent = purchase::send_first(app, &payment, resumed, scope.as_ref()).await?;
    let outcome = match sent {
        Ok(created) => {
            let terms = tariff_changes::get(&app.db.conn().await?, payment.id)
                .await?
                .ok_or_else(|| BillingError::internal("a change payment without its terms"))?;
            let currency = created.payment.amount.currency();
            Ok(ChangeResponse {
                when: When::Now,
                tariff_id: created.payment.tariff_id,
                payment_id: Some(created.payment.id),
                status: Some(created.payment.status),
                confirmation_url: created.confirmation_url,
                amount: Some(created.payment.amount),
                credit: Some(Money::new(terms.credit_minor, currency)),
                effective_at: None,
            })
        }
        Err(refused) => Err(refused),
    };
    if let Some(s) = &scope {
        idempotency::complete(&app.db.conn().await?, s, &render(&outcome)).await?;
    }
    outcome.map(Keyed::Fresh)
}

/// Checks the change against the live subscription (locked) and records its
/// payment and terms, committed by the caller before the provider is called.
async fn record(
    app: &App,
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: UserId,
    req: &ChangeRequest,
    return_url: Option<String>,
    contact: Option<crate::domain::receipt::Customer>,
) -> Result<payments::Payment, BillingError> {
    let (sub, tariff) = changeable(tx, user_id, req.tariff_id).await?;
    if tariff.id == sub.tariff_id {
        return Err(BillingError::SameTariff);
    }
    let system = sub.pay_system;
    if app.providers.get(system).is_none() {
        return Err(BillingError::PaySystemNotEnabled(system));
    }
    let now = store::now(tx).await?;
    let (credit, credits) = credit_at(tx, &sub, now).await?;
    let charge = tariff.price.minor() - credit;
    if charge <= 0 {
        return Err(BillingError::CreditCoversPrice(credit));
    }
    let charge = Money::new(charge, tariff.price.currency());
    // The receipt goes where the request says, else where the subscription's go.
    let customer = match contact {
        Some(c) => Some(c),
        None => subscriptions::receipt_of(tx, sub.id)
            .await?
            .map(|r| r.customer),
    };
    if customer.is_none() && app.config.receipts_on(system) {
        return Err(BillingError::ContactRequired(system));
    }
    let from = tariffs::get(tx, sub.tariff_id)
        .await?
        .ok_or_else(|| BillingError::internal("subscription without its tariff"))?;
    let description = format!("Subscription: {} (change from {})", tariff.name, from.name);
    let receipt = customer
        .filter(|_| app.config.receipts_on(system))
        .map(|c| {
            Receipt::for_period(
                c,
                &description,
                charge,
                tariff.vat_code,
                tariff.tax_system_code,
            )
        });
    let id = PaymentId::new();
    let payment = payments::insert_purchase(
        tx,
        &NewPurchase {
            id,
            kind: PaymentKind::Change,
            user_id,
            tariff_id: tariff.id,
            pay_system: system,
            amount: charge,
            // A renewing subscription renews with the card the viewer pays with now.
            renew: sub.auto_renew,
            return_url: return_url.as_deref(),
            description: &description,
            provider_idempotence_key: &Uuid::new_v4().to_string(),
            livemode: app.config.livemode(system),
            check_after: app.config.reconcile_after,
            receipt: receipt.as_ref(),
        },
    )
    .await?;
    tariff_changes::insert(
        tx,
        &ChangeTerms {
            payment_id: id,
            subscription_id: sub.id,
            from_tariff_id: sub.tariff_id,
            credit_minor: credit,
            credited_until: sub.current_period_end,
        },
    )
    .await?;
    tariff_changes::insert_credits(tx, id, &credits).await?;
    Ok(payment)
}

/// The user's live subscription (locked) and the tariff on sale it may change to.
async fn changeable(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: UserId,
    tariff_id: TariffId,
) -> Result<(Subscription, tariffs::Tariff), BillingError> {
    let sub = crate::service::subscriptions::lock_live(tx, user_id).await?;
    // The subscription's own tariff, even archived (withdrawing a scheduled change).
    let tariff = tariffs::get(tx, tariff_id)
        .await?
        .filter(|t| t.archived_at.is_none() || t.id == sub.tariff_id)
        .ok_or(BillingError::TariffNotFound)?;
    if tariff.price.currency() != sub.price.currency() {
        return Err(BillingError::ChangeCurrency);
    }
    // A renewal being charged would pay a period of the old tariff (or the new).
    if payments::renewal_in_flight(tx, sub.id).await? {
        return Err(BillingError::RenewalPending);
    }
    Ok((sub, tariff))
}

/// What the unused part of what the subscription's payments paid is worth at
/// `at`, and each payment's share. A payment's value is its amount net of its
/// refunds (pending ones included) and of earlier credits; its period counts only
/// up to the subscription's end (a refund may have given the rest back). A
/// subscription none of whose payments recorded a period ending after `at`
/// (bought before periods were kept) is credited its price over its current
/// period, tied to no payment.
pub async fn credit_at(
    db: &impl store::GenericClient,
    sub: &Subscription,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(i64, Vec<Credited>), BillingError> {
    let paid = tariff_changes::paid_periods_after(db, sub.id, at).await?;
    if paid.is_empty() {
        let legacy = PaidPeriod {
            net_minor: sub.price.minor(),
            start: sub.current_period_start,
            end: sub.current_period_end,
        };
        return Ok((proration::unused_minor(&[legacy], at), vec![]));
    }
    let credits: Vec<Credited> = paid
        .iter()
        .map(|p| Credited {
            payment_id: p.payment_id,
            credit_minor: proration::unused_share(&p.period, at, sub.current_period_end),
            refunded_minor: p.refunded_minor,
        })
        .collect();
    Ok((credits.iter().map(|c| c.credit_minor).sum(), credits))
}

/// `period_end`: the next renewal charges and switches to the tariff (the current
/// tariff withdraws a scheduled change). Repeating it changes nothing.
async fn schedule(
    app: &App,
    user_id: UserId,
    req: &ChangeRequest,
    scope: Option<&Scope<'_>>,
    hash: &[u8],
    render: Render<'_, ChangeResponse>,
) -> Result<Keyed<ChangeResponse>, BillingError> {
    let mut db = app.db.conn().await?;
    let tx = store::begin(&mut db).await?;
    match purchase::claim_key(&tx, scope, hash).await? {
        None => {}
        Some(Start::Replay(answer)) => return Ok(Keyed::Replayed(answer)),
        Some(Start::Create { .. }) => {
            return Err(BillingError::internal(
                "a scheduled change's key names a payment",
            ))
        }
    }
    let (sub, tariff) = changeable(&tx, user_id, req.tariff_id).await?;
    let scheduled = (tariff.id != sub.tariff_id).then_some(tariff.id);
    if scheduled.is_some() && !sub.auto_renew {
        return Err(BillingError::AutoRenewOff);
    }
    if sub.scheduled_tariff_id != scheduled {
        let updated = subscriptions::schedule_tariff(&tx, sub.id, scheduled).await?;
        events::record(
            &tx,
            EventType::SubscriptionTariffChangeScheduled,
            EventSubject::subscription(&updated)
                .with("scheduled_tariff_id", serde_json::json!(scheduled))
                .with(
                    "effective_at",
                    serde_json::json!(scheduled.map(|_| rfc3339(updated.current_period_end))),
                ),
        )
        .await?;
    }
    let answer = ChangeResponse {
        when: When::PeriodEnd,
        tariff_id: tariff.id,
        payment_id: None,
        status: None,
        confirmation_url: None,
        amount: None,
        credit: None,
        effective_at: scheduled.map(|_| rfc3339(sub.current_period_end)),
    };
    let outcome = Ok(answer);
    if let Some(s) = scope {
        idempotency::complete(&tx, s, &render(&outcome)).await?;
    }
    store::commit(tx).await?;
    outcome.map(Keyed::Fresh)
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
