//! Buying a tariff: the payment row and its provider idempotence key are committed
//! before the provider is called, so a crash or a retry re-sends the same key and
//! the provider never creates two payments for one purchase.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::App;
use crate::domain::receipt::{Customer, Email, Phone};
use crate::domain::{Money, PaySystem, PaymentStatus};
use crate::domain::{PaymentId, TariffId, UserId};
pub use crate::service::idempotency::IdempotencyKey;
use crate::service::idempotency::{self, Claim, Keyed, Render, Scope, StoredAnswer};
use crate::service::BillingError;
use crate::store::payments::NewPurchase;
use crate::store::{self, Connect};
use crate::store::{payments, subscriptions, tariffs, Payment};

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuyRequest {
    pub tariff_id: TariffId,
    /// Save the payment method and renew automatically.
    pub renew: bool,
    /// Where the viewer returns after paying; must be one of RETURN_URL_ALLOWED_ORIGINS (else 400).
    #[serde(default)]
    pub return_url: Option<String>,
    /// Where the 54-FZ receipt goes (this purchase's and its renewals'). Required,
    /// this or `phone`, when receipts are on for the pay system (else 400
    /// `contact_required`).
    #[serde(default)]
    #[schema(example = "viewer@example.com")]
    pub email: Option<String>,
    /// E.164 with the country code: `+7 900 123-45-67` is kept as `79001234567`.
    #[serde(default)]
    #[schema(example = "+79001234567")]
    pub phone: Option<String>,
}

/// The contact a request gave, each field checked (400 `bad_field` naming it);
/// None when it gave neither.
pub fn contact(email: Option<&str>, phone: Option<&str>) -> Result<Option<Customer>, BillingError> {
    // A form's empty field is no contact, not a bad one.
    let email = given(email)
        .map(|e| Email::parse(e).map_err(|why| BillingError::BadField(format!("email {why}"))))
        .transpose()?;
    let phone = given(phone)
        .map(|p| Phone::parse(p).map_err(|why| BillingError::BadField(format!("phone {why}"))))
        .transpose()?;
    Ok(Customer::new(email, phone))
}

fn given(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

/// The receipt's customer from a buy request: each given field checked (400
/// `bad_field` naming it), one of them required while receipts are on.
pub fn customer(
    app: &App,
    system: PaySystem,
    email: Option<&str>,
    phone: Option<&str>,
) -> Result<Option<Customer>, BillingError> {
    let customer = contact(email, phone)?;
    if customer.is_none() && app.config.receipts_on(system) {
        return Err(BillingError::ContactRequired(system));
    }
    Ok(customer)
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuyResponse {
    pub payment_id: PaymentId,
    pub status: PaymentStatus,
    /// Send the viewer here to pay.
    #[schema(required = true)]
    pub confirmation_url: Option<String>,
    pub amount: Money,
}

pub fn check_return_url(app: &App, url: Option<&str>) -> Result<Option<String>, BillingError> {
    let Some(raw) = url else { return Ok(None) };
    // The URL parser drops tabs and line breaks silently: refuse them instead.
    if raw.chars().any(char::is_control) {
        return Err(BillingError::BadReturnUrl("contains control characters"));
    }
    let parsed =
        url::Url::parse(raw).map_err(|_| BillingError::BadReturnUrl("is not an absolute URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(BillingError::BadReturnUrl("must be http(s)"));
    }
    let origin = parsed.origin().ascii_serialization();
    if !app.config.allowed_return_origins().contains(&origin) {
        return Err(BillingError::ReturnUrlNotAllowed(origin));
    }
    // What was checked is what is sent: the parsed form, not the raw text (which
    // browsers and providers may read differently, e.g. `http://a\@b/`).
    let normalised = parsed.to_string();
    if normalised.len() > MAX_RETURN_URL {
        return Err(BillingError::BadReturnUrl("is longer than 2048 characters"));
    }
    Ok(Some(normalised))
}

/// YooKassa's limit for `confirmation.return_url`.
const MAX_RETURN_URL: usize = 2048;

pub(crate) enum Start {
    /// A stored answer for this key: return it as it was.
    Replay(StoredAnswer),
    /// A payment to create (new) or to resume (an earlier request with the same key
    /// that stopped or did not learn the outcome: its create may have been made).
    Create {
        payment: Box<Payment>,
        resumed: bool,
    },
}

/// Buys `req.tariff_id` for the user. Under an Idempotency-Key the final outcome (the
/// payment, or the provider's refusal) is rendered by `render` and stored with the key;
/// an unknown outcome releases the key so a retry with it resumes the same payment.
pub async fn buy(
    app: &App,
    user_id: UserId,
    system: PaySystem,
    req: BuyRequest,
    key: Option<IdempotencyKey>,
    render: Render<'_, BuyResponse>,
) -> Result<Keyed<BuyResponse>, BillingError> {
    if app.providers.get(system).is_none() {
        return Err(BillingError::PaySystemNotEnabled(system));
    }
    let return_url = check_return_url(app, req.return_url.as_deref())?;
    let customer = customer(app, system, req.email.as_deref(), req.phone.as_deref())?;
    let hash = idempotency::request_hash(&[
        system.as_str().as_bytes(),
        &serde_json::to_vec(&req).expect("serializable"),
    ]);
    let scope = key.as_ref().map(|key| Scope {
        user_id,
        scope: "buy",
        key,
    });

    let start = begin(
        app,
        user_id,
        system,
        &req,
        Checked {
            return_url,
            customer,
        },
        scope.as_ref(),
        &hash,
    )
    .await?;
    let (payment, resumed) = match start {
        Start::Replay(answer) => return Ok(Keyed::Replayed(answer)),
        Start::Create { payment, resumed } => (*payment, resumed),
    };

    let outcome = send_first(app, &payment, resumed, scope.as_ref())
        .await?
        .map(|created| BuyResponse {
            payment_id: created.payment.id,
            status: created.payment.status,
            confirmation_url: created.confirmation_url,
            amount: created.payment.amount,
        });
    if let Some(s) = &scope {
        idempotency::complete(&app.db.conn().await?, s, &render(&outcome)).await?;
    }
    outcome.map(Keyed::Fresh)
}

/// A payment the viewer pays on the provider's page, as its first create left it.
pub(crate) struct Created {
    pub payment: Payment,
    pub confirmation_url: Option<String>,
}

/// Sends the first create of a committed payment row the viewer pays on the
/// provider's page (a purchase, a tariff change) and records the answer. The inner
/// result is the final outcome, for the caller to render and store with the key;
/// an unknown outcome is an `Err`: the payment stays pending for the reconciler,
/// and the key is released so a retry with it resumes the same payment.
pub(crate) async fn send_first(
    app: &App,
    payment: &Payment,
    resumed: bool,
    scope: Option<&Scope<'_>>,
) -> Result<Result<Created, BillingError>, BillingError> {
    let provider = app
        .providers
        .get(payment.pay_system)
        .cloned()
        .ok_or(BillingError::PaySystemNotEnabled(payment.pay_system))?;
    let create = crate::service::create::request(app, payment, None);
    match provider.create_payment(&create).await {
        Ok(pp) => {
            payments::record_create_answer(
                &app.db.conn().await?,
                payment.id,
                &crate::service::create::answer_of(&pp),
            )
            .await?;
            // settle takes its own connection: none is held here meanwhile.
            if pp.status != PaymentStatus::Pending {
                crate::service::settle::apply(app, payment.id, &pp).await?;
            }
            let current = payments::get(&app.db.conn().await?, payment.id)
                .await?
                .unwrap_or_else(|| payment.clone());
            Ok(Ok(Created {
                payment: current,
                confirmation_url: pp.confirmation_url.clone(),
            }))
        }
        // The outcome is unknown: the payment stays pending without a provider id and
        // the reconciler resumes it with the same key. The key is released so a client
        // retry with it resumes too. A resumed create's refusal is no better: it
        // re-sends the key of a create whose answer was never read, and a 401 is
        // answered before the key is looked at, so that first send may have charged;
        // the reconciler looks the payment up before failing it.
        Err(e) if resumed || !e.is_definite() => {
            tracing::warn!(payment_id = %payment.id, error = %e, resumed, "create outcome unknown; left to the reconciler");
            if let Some(s) = scope {
                idempotency::release(&app.db.conn().await?, s).await?;
            }
            Err(BillingError::ProviderUnavailable(
                "the payment provider is unavailable; retry later",
            ))
        }
        Err(e) => {
            tracing::error!(payment_id = %payment.id, error = %e, "provider refused the create");
            payments::fail_pending_purchase(&app.db.conn().await?, payment.id).await?;
            Ok(Err(BillingError::PaymentRefused))
        }
    }
}

/// Claims the Idempotency-Key (if any) in the caller's transaction: what an earlier
/// request with it left (its answer, or its payment to resume), or None to go on.
pub(crate) async fn claim_key(
    tx: &deadpool_postgres::Transaction<'_>,
    scope: Option<&Scope<'_>>,
    hash: &[u8],
) -> Result<Option<Start>, BillingError> {
    let Some(s) = scope else { return Ok(None) };
    Ok(match idempotency::claim(tx, s, hash).await? {
        Claim::New => None,
        Claim::Replay(answer) => Some(Start::Replay(answer)),
        Claim::Resume(payment_id) => {
            // The earlier request recorded its payment and then stopped: resume it.
            let payment = payments::get(tx, PaymentId::from_uuid(payment_id))
                .await?
                .ok_or_else(|| BillingError::internal("lost payment"))?;
            Some(Start::Create {
                payment: Box::new(payment),
                resumed: true,
            })
        }
    })
}

/// What the edge checked of a buy request.
struct Checked {
    return_url: Option<String>,
    customer: Option<Customer>,
}

/// Claims the idempotency key (if any), checks the rules, and commits the payment row.
async fn begin(
    app: &App,
    user_id: UserId,
    system: PaySystem,
    req: &BuyRequest,
    Checked {
        return_url,
        customer,
    }: Checked,
    scope: Option<&Scope<'_>>,
    hash: &[u8],
) -> Result<Start, BillingError> {
    let mut db = app.db.conn().await?;
    let tx = store::begin(&mut db).await?;
    if let Some(earlier) = claim_key(&tx, scope, hash).await? {
        store::commit(tx).await?;
        return Ok(earlier);
    }

    let tariff = tariffs::get(&tx, req.tariff_id)
        .await?
        .filter(|t| t.archived_at.is_none())
        .ok_or(BillingError::TariffNotFound)?;
    if let Some(live) = subscriptions::lock_live_for_user(&tx, user_id).await? {
        if live.tariff_id != tariff.id {
            return Err(BillingError::TariffConflict);
        }
        if payments::renewal_in_flight(&tx, live.id).await? {
            return Err(BillingError::RenewalPending);
        }
    }

    let id = PaymentId::new();
    let description = tariff.line();
    // Stored with the row (what is sent, and re-sent, is what is stored), and
    // kept by the subscription for its renewals.
    let receipt = customer
        .filter(|_| app.config.receipts_on(system))
        .map(|c| tariff.receipt(c, tariff.price));
    let payment = payments::insert_purchase(
        &tx,
        &NewPurchase {
            id,
            kind: crate::domain::PaymentKind::Purchase,
            user_id,
            tariff_id: tariff.id,
            pay_system: system,
            amount: tariff.price,
            renew: req.renew,
            return_url: return_url.as_deref(),
            description: &description,
            provider_idempotence_key: &Uuid::new_v4().to_string(),
            livemode: app.config.livemode(system),
            check_after: app.config.reconcile_after,
            receipt: receipt.as_ref(),
        },
    )
    .await?;
    if let Some(s) = scope {
        idempotency::attach(&tx, s, id.as_uuid()).await?;
    }
    store::commit(tx).await?;
    Ok(Start::Create {
        payment: Box::new(payment),
        resumed: false,
    })
}
