use chrono::{DateTime, Utc};
use tokio_postgres::Row;

pub use super::payment_methods::{get as get_method, PaymentMethod};
use super::subscriptions::Subscription;
use super::{parse_col, GenericClient, StoreError};
use crate::domain::receipt::Receipt;
use crate::domain::{
    Currency, MethodId, Money, PaySystem, PaymentId, PaymentKind, PaymentStatus, Period,
    SubscriptionId, TariffId, UserId,
};
use crate::store::Cached as _;

#[derive(Debug, Clone)]
pub struct Payment {
    pub id: PaymentId,
    pub user_id: UserId,
    pub tariff_id: TariffId,
    pub subscription_id: Option<SubscriptionId>,
    pub pay_system: PaySystem,
    pub kind: PaymentKind,
    pub status: PaymentStatus,
    pub amount: Money,
    pub refunded_minor: i64,
    pub renew: bool,
    pub return_url: Option<String>,
    pub description: String,
    pub provider_idempotence_key: String,
    pub provider_payment_id: Option<String>,
    pub confirmation_url: Option<String>,
    pub provider_checkout_id: Option<String>,
    pub payment_method_id: Option<MethodId>,
    pub period_start: Option<DateTime<Utc>>,
    pub attempt: i32,
    pub cancellation_party: Option<String>,
    pub cancellation_reason: Option<String>,
    pub captured_at: Option<DateTime<Utc>>,
    pub review_reason: Option<String>,
    pub livemode: bool,
    pub check_attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The 54-FZ receipt sent with the create (every re-send sends the same).
    pub receipt: Option<Receipt>,
}

pub const COLS: &str = "id, user_id, tariff_id, subscription_id, pay_system, kind, status, amount_minor, \
    currency, refunded_minor, renew, return_url, description, provider_idempotence_key, provider_payment_id, \
    confirmation_url, provider_checkout_id, payment_method_id, period_start, attempt, cancellation_party, cancellation_reason, \
    captured_at, review_reason, livemode, check_attempts, created_at, updated_at, receipt";

/// A stored receipt (jsonb), read back into ours.
pub(crate) fn receipt_col(row: &Row, col: &str) -> Result<Option<Receipt>, StoreError> {
    row.try_get::<_, Option<serde_json::Value>>(col)?
        .map(|v| serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("{col}: {e}"))))
        .transpose()
}

/// A receipt as stored (jsonb).
pub(crate) fn receipt_json(r: Option<&Receipt>) -> Option<serde_json::Value> {
    r.map(|r| serde_json::to_value(r).expect("a receipt serialises"))
}

impl Payment {
    pub fn from_row(row: &Row) -> Result<Payment, StoreError> {
        let currency: Currency = parse_col(row, "currency")?;
        Ok(Payment {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            tariff_id: row.try_get("tariff_id")?,
            subscription_id: row.try_get("subscription_id")?,
            pay_system: parse_col(row, "pay_system")?,
            kind: parse_col(row, "kind")?,
            status: parse_col(row, "status")?,
            amount: Money::new(row.try_get("amount_minor")?, currency),
            refunded_minor: row.try_get("refunded_minor")?,
            renew: row.try_get("renew")?,
            return_url: row.try_get("return_url")?,
            description: row.try_get("description")?,
            provider_idempotence_key: row.try_get("provider_idempotence_key")?,
            provider_payment_id: row.try_get("provider_payment_id")?,
            confirmation_url: row.try_get("confirmation_url")?,
            provider_checkout_id: row.try_get("provider_checkout_id")?,
            payment_method_id: row.try_get("payment_method_id")?,
            period_start: row.try_get("period_start")?,
            attempt: row.try_get("attempt")?,
            cancellation_party: row.try_get("cancellation_party")?,
            cancellation_reason: row.try_get("cancellation_reason")?,
            captured_at: row.try_get("captured_at")?,
            review_reason: row.try_get("review_reason")?,
            livemode: row.try_get("livemode")?,
            check_attempts: row.try_get("check_attempts")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            receipt: receipt_col(row, "receipt")?,
        })
    }
}

pub async fn get(db: &impl GenericClient, id: PaymentId) -> Result<Option<Payment>, StoreError> {
    let sql = format!("SELECT {COLS} FROM payments WHERE id = $1");
    db.q_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(Payment::from_row)
        .transpose()
}

pub async fn get_for_user(
    db: &impl GenericClient,
    id: PaymentId,
    user_id: UserId,
) -> Result<Option<Payment>, StoreError> {
    let sql = format!("SELECT {COLS} FROM payments WHERE id = $1 AND user_id = $2");
    db.q_opt(&sql, &[&id, &user_id])
        .await?
        .as_ref()
        .map(Payment::from_row)
        .transpose()
}

pub async fn lock(db: &impl GenericClient, id: PaymentId) -> Result<Option<Payment>, StoreError> {
    let sql = format!("SELECT {COLS} FROM payments WHERE id = $1 FOR UPDATE");
    db.q_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(Payment::from_row)
        .transpose()
}

/// What a payment list shows of each payment (`list_for_user`): the columns of
/// `LINE_COLS`, read by position.
#[derive(Debug, Clone)]
pub struct PaymentLine {
    pub id: PaymentId,
    pub status: PaymentStatus,
    pub amount: Money,
    pub refunded_minor: i64,
    pub pay_system: PaySystem,
    pub kind: PaymentKind,
    pub tariff_id: TariffId,
    pub subscription_id: Option<SubscriptionId>,
    pub confirmation_url: Option<String>,
    pub cancellation_reason: Option<String>,
    pub livemode: bool,
    pub created_at: DateTime<Utc>,
    pub captured_at: Option<DateTime<Utc>>,
}

/// The columns of a `PaymentLine`, in the order `PaymentLine::from_row` reads them.
const LINE_COLS: &str = "id, status, amount_minor, currency, refunded_minor, pay_system, kind, \
    tariff_id, subscription_id, confirmation_url, cancellation_reason, livemode, created_at, captured_at";

impl PaymentLine {
    fn from_row(row: &Row) -> Result<PaymentLine, StoreError> {
        let text = |i: usize| -> Result<&str, StoreError> { Ok(row.try_get::<_, &str>(i)?.trim()) };
        let parse =
            |i: usize, what: &str| StoreError::Corrupt(format!("{what}: {:?}", text(i).ok()));
        let currency: Currency = text(3)?.parse().map_err(|_| parse(3, "currency"))?;
        Ok(PaymentLine {
            id: row.try_get(0)?,
            status: text(1)?.parse().map_err(|_| parse(1, "status"))?,
            amount: Money::new(row.try_get(2)?, currency),
            refunded_minor: row.try_get(4)?,
            pay_system: text(5)?.parse().map_err(|_| parse(5, "pay_system"))?,
            kind: text(6)?.parse().map_err(|_| parse(6, "kind"))?,
            tariff_id: row.try_get(7)?,
            subscription_id: row.try_get(8)?,
            confirmation_url: row.try_get(9)?,
            cancellation_reason: row.try_get(10)?,
            livemode: row.try_get(11)?,
            created_at: row.try_get(12)?,
            captured_at: row.try_get(13)?,
        })
    }
}

impl From<&Payment> for PaymentLine {
    fn from(p: &Payment) -> Self {
        PaymentLine {
            id: p.id,
            status: p.status,
            amount: p.amount,
            refunded_minor: p.refunded_minor,
            pay_system: p.pay_system,
            kind: p.kind,
            tariff_id: p.tariff_id,
            subscription_id: p.subscription_id,
            confirmation_url: p.confirmation_url.clone(),
            cancellation_reason: p.cancellation_reason.clone(),
            livemode: p.livemode,
            created_at: p.created_at,
            captured_at: p.captured_at,
        }
    }
}

/// The user's payments, newest first, and the total count: one statement (the
/// count rides on each row) along `payments_user_recent`.
pub async fn list_for_user(
    db: &impl GenericClient,
    user_id: UserId,
    limit: i64,
    offset: i64,
) -> Result<(Vec<PaymentLine>, i64), StoreError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {LINE_COLS}, count(*) OVER () AS total FROM payments WHERE user_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        )
    });
    let rows = db.q(&SQL, &[&user_id, &limit, &offset]).await?;
    let total = match rows.first() {
        Some(r) => r.try_get(14)?,
        // Past the last page the window is empty: count separately.
        None => db
            .q_one(
                "SELECT count(*) FROM payments WHERE user_id = $1",
                &[&user_id],
            )
            .await?
            .try_get(0)?,
    };
    let lines = rows
        .iter()
        .map(PaymentLine::from_row)
        .collect::<Result<_, _>>()?;
    Ok((lines, total))
}

// --- service: purchase ---

/// A purchase (or a tariff change paid now) to record before the provider is called.
#[derive(Debug, Clone)]
pub struct NewPurchase<'a> {
    pub id: PaymentId,
    pub kind: PaymentKind,
    pub user_id: UserId,
    pub tariff_id: TariffId,
    pub pay_system: PaySystem,
    pub amount: Money,
    pub renew: bool,
    pub return_url: Option<&'a str>,
    pub description: &'a str,
    pub provider_idempotence_key: &'a str,
    pub livemode: bool,
    /// The reconciler's first look, if no notification came.
    pub check_after: std::time::Duration,
    pub receipt: Option<&'a Receipt>,
}

pub async fn insert_purchase(
    db: &impl GenericClient,
    p: &NewPurchase<'_>,
) -> Result<Payment, StoreError> {
    let sql = super::sql_file!("payments/insert_purchase.sql", COLS);
    let row = db
        .query_one(
            sql,
            &[
                &p.id,
                &p.user_id,
                &p.tariff_id,
                &p.pay_system.as_str(),
                &p.kind.as_str(),
                &p.amount.minor(),
                &p.amount.currency().code(),
                &p.renew,
                &p.return_url,
                &p.description,
                &p.provider_idempotence_key,
                &p.livemode,
                &p.check_after.as_secs_f64(),
                &receipt_json(p.receipt),
            ],
        )
        .await?;
    Payment::from_row(&row)
}

/// A renewal of this subscription is being charged (and not held for review).
pub async fn renewal_in_flight(
    db: &impl GenericClient,
    subscription_id: SubscriptionId,
) -> Result<bool, StoreError> {
    Ok(db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM payments WHERE subscription_id = $1 AND kind = 'renewal' \
             AND status IN ('pending', 'waiting_for_capture') AND review_reason IS NULL)",
            &[&subscription_id],
        )
        .await?
        .get(0))
}

/// What a provider's answer to a create tells the row: its id (an empty one, a
/// CloudPayments order, leaves the column for settle to fill), where to send the
/// viewer, and the checkout's own id when it has one.
pub struct CreateAnswer<'a> {
    pub provider_payment_id: &'a str,
    pub confirmation_url: Option<&'a str>,
    pub checkout_id: Option<&'a str>,
}

pub async fn record_create_answer(
    db: &impl GenericClient,
    id: PaymentId,
    answer: &CreateAnswer<'_>,
) -> Result<(), StoreError> {
    db.exec(
        "UPDATE payments SET provider_payment_id = COALESCE(provider_payment_id, NULLIF($2, '')), \
         confirmation_url = COALESCE(confirmation_url, $3), \
         provider_checkout_id = COALESCE(provider_checkout_id, $4), updated_at = now() WHERE id = $1",
        &[
            &id,
            &answer.provider_payment_id,
            &answer.confirmation_url,
            &answer.checkout_id,
        ],
    )
    .await?;
    Ok(())
}

/// The provider refused the create: a pending purchase ends `failed`.
pub async fn fail_pending_purchase(
    db: &impl GenericClient,
    id: PaymentId,
) -> Result<(), StoreError> {
    db.execute(
        "UPDATE payments SET status = 'failed', updated_at = now() WHERE id = $1 AND status = 'pending'",
        &[&id],
    )
    .await?;
    Ok(())
}

// --- service: refunds ---

/// Records money gone back. Forward only, in SQL too: a payment is refunded only
/// after it succeeded (`None` otherwise).
pub async fn record_refunded(
    db: &impl GenericClient,
    id: PaymentId,
    refunded_minor: i64,
    status: PaymentStatus,
) -> Result<Option<Payment>, StoreError> {
    let sql = format!(
        "UPDATE payments SET refunded_minor = $2, status = $3, updated_at = now() \
         WHERE id = $1 AND status IN ('succeeded', 'partially_refunded', 'refunded') RETURNING {COLS}"
    );
    db.query_opt(&sql, &[&id, &refunded_minor, &status.as_str()])
        .await?
        .as_ref()
        .map(Payment::from_row)
        .transpose()
}

/// The end of the period the payment paid (if recorded), and the database's now.
pub async fn paid_period_end(
    db: &impl GenericClient,
    id: PaymentId,
) -> Result<(Option<DateTime<Utc>>, DateTime<Utc>), StoreError> {
    let row = db
        .query_one(
            "SELECT period_end, now() FROM payments WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Another payment of the subscription, made after `after`, paid for the period in use
/// (for payments made before periods were recorded).
pub async fn later_payment_pays_now(
    db: &impl GenericClient,
    subscription_id: SubscriptionId,
    except: PaymentId,
    after: DateTime<Utc>,
) -> Result<bool, StoreError> {
    Ok(db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM payments WHERE subscription_id = $1 AND id <> $2 \
             AND created_at > $3 AND status IN ('succeeded', 'partially_refunded') \
             AND (period_start IS NULL OR period_start <= now()))",
            &[&subscription_id, &except, &after],
        )
        .await?
        .try_get(0)?)
}

/// Where the paid period ending at `end` began, by the newest other payment for it.
pub async fn period_start_ending_at(
    db: &impl GenericClient,
    subscription_id: SubscriptionId,
    except: PaymentId,
    end: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(db
        .query_opt(
            "SELECT period_start FROM payments WHERE subscription_id = $1 AND id <> $2 AND period_end = $3 \
             AND period_start < $3 AND status IN ('succeeded', 'partially_refunded') \
             ORDER BY created_at DESC LIMIT 1",
            &[&subscription_id, &except, &end],
        )
        .await?
        .map(|r| r.get(0)))
}

// --- service: settle ---

/// The provider's id, adopted when the create's answer was never recorded.
pub async fn adopt_provider_id(
    db: &impl GenericClient,
    id: PaymentId,
    provider_payment_id: &str,
) -> Result<(), StoreError> {
    db.exec(
        "UPDATE payments SET provider_payment_id = $2, updated_at = now() WHERE id = $1",
        &[&id, &provider_payment_id],
    )
    .await?;
    Ok(())
}

/// A move to the provider's status.
#[derive(Debug, Clone)]
pub struct StatusMove<'a> {
    pub status: PaymentStatus,
    pub captured_at: Option<DateTime<Utc>>,
    pub cancellation_party: Option<&'a str>,
    pub cancellation_reason: Option<&'a str>,
    /// The method saved by this payment, if it saved one.
    pub payment_method_id: Option<MethodId>,
}

/// Moves the payment forward only (from a status `m.status` may follow); `None` when
/// it may not move.
pub async fn move_status(
    db: &impl GenericClient,
    id: PaymentId,
    m: &StatusMove<'_>,
) -> Result<Option<Payment>, StoreError> {
    let allowed: Vec<&str> = m.status.allowed_from().iter().map(|s| s.as_str()).collect();
    db.q_opt(
        super::sql_file!("payments/move_status.sql", COLS),
        &[
            &id,
            &m.status.as_str(),
            &m.captured_at,
            &m.cancellation_party,
            &m.cancellation_reason,
            &m.payment_method_id,
            &allowed,
        ],
    )
    .await?
    .as_ref()
    .map(Payment::from_row)
    .transpose()
}

pub async fn link_subscription(
    db: &impl GenericClient,
    id: PaymentId,
    subscription_id: SubscriptionId,
) -> Result<(), StoreError> {
    db.exec(
        "UPDATE payments SET subscription_id = $2 WHERE id = $1",
        &[&id, &subscription_id],
    )
    .await?;
    Ok(())
}

/// A second charge the provider made for `of`.
#[derive(Debug, Clone)]
pub struct DuplicateCharge<'a> {
    pub of: &'a Payment,
    pub provider_payment_id: &'a str,
    pub amount: Money,
    pub captured_at: Option<DateTime<Utc>>,
}

/// Records it as a payment of its own; `None` if it was recorded already.
pub async fn insert_duplicate_charge(
    db: &impl GenericClient,
    d: &DuplicateCharge<'_>,
) -> Result<Option<Payment>, StoreError> {
    let of = d.of;
    db.q_opt(
        super::sql_file!("payments/insert_duplicate_charge.sql", COLS),
        &[
            &PaymentId::new(),
            &of.user_id,
            &of.tariff_id,
            &of.pay_system.as_str(),
            &d.amount.minor(),
            &d.amount.currency().code(),
            &format!("Duplicate charge of payment {}", of.id),
            &format!("duplicate:{}", d.provider_payment_id),
            &d.provider_payment_id,
            &d.captured_at,
            &format!("duplicate_charge of payment {}", of.id),
            &of.livemode,
            &receipt_json(of.receipt.as_ref().map(|r| r.for_sum(d.amount)).as_ref()),
        ],
    )
    .await?
    .as_ref()
    .map(Payment::from_row)
    .transpose()
}

/// A renewal create refused by the provider: `failed` with whose fault and the code.
/// `None` unless it was still an unanswered pending create.
pub async fn fail_refused_create(
    db: &impl GenericClient,
    id: PaymentId,
    party: Option<&str>,
    code: &str,
) -> Result<Option<Payment>, StoreError> {
    let sql = format!(
        "UPDATE payments SET status = 'failed', cancellation_party = $2, cancellation_reason = $3, \
         next_check_at = NULL, lease_until = NULL, updated_at = now() \
         WHERE id = $1 AND status = 'pending' AND provider_payment_id IS NULL RETURNING {COLS}"
    );
    db.q_opt(&sql, &[&id, &party, &code])
        .await?
        .as_ref()
        .map(Payment::from_row)
        .transpose()
}

pub async fn set_review_reason(
    db: &impl GenericClient,
    id: PaymentId,
    reason: &str,
) -> Result<(), StoreError> {
    db.execute(
        "UPDATE payments SET review_reason = $2, updated_at = now() WHERE id = $1",
        &[&id, &reason],
    )
    .await?;
    Ok(())
}

/// The period this payment paid.
pub async fn record_paid_period(
    db: &impl GenericClient,
    id: PaymentId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(), StoreError> {
    db.exec(
        "UPDATE payments SET period_start = $2, period_end = $3 WHERE id = $1",
        &[&id, &start, &end],
    )
    .await?;
    Ok(())
}

/// The end of the period a renewal paid (its start was set when it was charged).
pub async fn record_period_end(
    db: &impl GenericClient,
    id: PaymentId,
    end: DateTime<Utc>,
) -> Result<(), StoreError> {
    db.exec(
        "UPDATE payments SET period_end = $2 WHERE id = $1",
        &[&id, &end],
    )
    .await?;
    Ok(())
}

/// Renewal creates for this period that the provider refused with `party` to blame.
pub async fn count_refused_renewals(
    db: &impl GenericClient,
    subscription_id: SubscriptionId,
    period_start: DateTime<Utc>,
    party: &str,
) -> Result<i64, StoreError> {
    Ok(db
        .q_one(
            "SELECT count(*) FROM payments WHERE subscription_id = $1 AND kind = 'renewal' \
             AND period_start = $2 AND status = 'failed' AND cancellation_party = $3",
            &[&subscription_id, &period_start, &party],
        )
        .await?
        .try_get(0)?)
}

// --- webhooks ---

/// Our payment with this provider id, at this provider.
pub async fn id_by_provider_id(
    db: &impl GenericClient,
    system: PaySystem,
    provider_payment_id: &str,
) -> Result<Option<PaymentId>, StoreError> {
    Ok(db
        .q_opt(
            "SELECT id FROM payments WHERE pay_system = $1 AND provider_payment_id = $2",
            &[&system.as_str(), &provider_payment_id],
        )
        .await?
        .map(|r| r.get(0)))
}

/// `id`, when it names one of our payments at this provider.
pub async fn id_at_provider(
    db: &impl GenericClient,
    id: PaymentId,
    system: PaySystem,
) -> Result<Option<PaymentId>, StoreError> {
    Ok(db
        .q_opt(
            "SELECT id FROM payments WHERE id = $1 AND pay_system = $2",
            &[&id, &system.as_str()],
        )
        .await?
        .map(|r| r.get(0)))
}

// --- jobs: reconciler, renewer, create ---

/// A create about to be sent: whether the row is past the key window (`hours`: then
/// it is not sent, and not counted), and whether its key was sent before.
#[derive(Debug, Clone, Copy)]
pub struct SendStart {
    pub past_window: bool,
    pub resent: bool,
}

/// Counts a send of the create (one statement), unless the row is past the window.
pub async fn start_send(
    db: &impl GenericClient,
    id: PaymentId,
    hours: i32,
) -> Result<SendStart, StoreError> {
    let row = db
        .q_one(
            "UPDATE payments SET create_sends = create_sends \
               + CASE WHEN created_at < now() - make_interval(hours => $2) THEN 0 ELSE 1 END \
             WHERE id = $1 \
             RETURNING created_at < now() - make_interval(hours => $2) AS past_window, create_sends",
            &[&id, &hours],
        )
        .await?;
    let past_window: bool = row.try_get("past_window")?;
    let sends: i32 = row.try_get("create_sends")?;
    Ok(SendStart {
        past_window,
        resent: sends > 1,
    })
}

/// Claims up to `batch` open payments due a check for `lease`.
pub async fn claim_for_reconcile(
    db: &impl GenericClient,
    batch: i64,
    lease: std::time::Duration,
) -> Result<Vec<Payment>, StoreError> {
    db.q(
        super::sql_file!("payments/claim_for_reconcile.sql", COLS),
        &[&batch, &lease.as_secs_f64()],
    )
    .await?
    .iter()
    .map(Payment::from_row)
    .collect()
}

/// A payment still open after a check, as the next check was scheduled.
#[derive(Debug, Clone, Copy)]
pub struct StillOpen {
    pub status: PaymentStatus,
    /// Older than the `give_up_hours` asked about.
    pub too_old: bool,
}

/// Schedules the next check of an open payment (`first` doubling per check, capped
/// at `max`); `None` when it is no longer open or is flagged for review.
pub async fn schedule_next_check(
    db: &impl GenericClient,
    id: PaymentId,
    first: std::time::Duration,
    max: std::time::Duration,
    give_up_hours: i32,
) -> Result<Option<StillOpen>, StoreError> {
    let row = db
        .q_opt(
            super::sql_file!("payments/schedule_next_check.sql"),
            &[
                &id,
                &first.as_secs_f64(),
                &max.as_secs_f64(),
                &give_up_hours,
            ],
        )
        .await?;
    row.map(|r| {
        Ok(StillOpen {
            status: parse_col(&r, "status")?,
            too_old: r.try_get("too_old")?,
        })
    })
    .transpose()
}

/// A purchase the provider kept pending too long: failed locally. True when this
/// call moved it.
pub async fn fail_stale_pending(
    db: &impl GenericClient,
    id: PaymentId,
) -> Result<Option<StaleFailed>, StoreError> {
    // A checkout the viewer left after a declined card ends with that decline's reason.
    let row = db
        .q_opt(
            "UPDATE payments p SET status = 'failed', next_check_at = NULL, updated_at = now(), \
               cancellation_reason = coalesce(p.cancellation_reason, d.reason) \
             FROM (SELECT (SELECT reason FROM declined_attempts WHERE payment_id = $1 \
                           ORDER BY declined_at DESC LIMIT 1) AS reason) d \
             WHERE p.id = $1 AND p.status = 'pending' RETURNING d.reason",
            &[&id],
        )
        .await?;
    Ok(row
        .map(|r| r.try_get(0))
        .transpose()?
        .map(|last_decline| StaleFailed { last_decline }))
}

/// A purchase failed locally after a day pending.
pub struct StaleFailed {
    /// The reason of its last declined attempt, if the viewer had one.
    pub last_decline: Option<String>,
}

// --- service: declined attempts ---

/// A declined attempt on a checkout page that stays open, once per provider
/// transaction. True when it is new.
pub async fn record_decline(
    db: &impl GenericClient,
    payment_id: PaymentId,
    pay_system: PaySystem,
    transaction_id: &str,
    reason: &str,
    provider_reason: Option<&str>,
) -> Result<bool, StoreError> {
    Ok(db
        .exec(
            "INSERT INTO declined_attempts (pay_system, provider_transaction_id, payment_id, reason, provider_reason) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&pay_system.as_str(), &transaction_id, &payment_id, &reason, &provider_reason],
        )
        .await?
        == 1)
}

/// A receipt we sent, with what it was for.
#[derive(Debug, Clone)]
pub struct SentReceipt {
    pub payment_id: PaymentId,
    /// Set for a refund's receipt ("return of income").
    pub refund_id: Option<crate::domain::RefundId>,
    pub receipt: Receipt,
    pub created_at: DateTime<Utc>,
}

/// The receipts sent for one user's payments and refunds, newest first (at most 200).
pub async fn receipts_of_user(
    db: &impl GenericClient,
    user_id: UserId,
) -> Result<Vec<SentReceipt>, StoreError> {
    db.query(
        "SELECT p.id AS payment_id, NULL::uuid AS refund_id, p.receipt, p.created_at \
           FROM payments p WHERE p.user_id = $1 AND p.receipt IS NOT NULL \
         UNION ALL \
         SELECT r.payment_id, r.id, r.receipt, r.created_at \
           FROM refunds r JOIN payments p ON p.id = r.payment_id \
          WHERE p.user_id = $1 AND r.receipt IS NOT NULL \
         ORDER BY created_at DESC LIMIT 200",
        &[&user_id],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(SentReceipt {
            payment_id: r.try_get(0)?,
            refund_id: r.try_get(1)?,
            receipt: receipt_col(r, "receipt")?
                .ok_or_else(|| StoreError::Corrupt("receipt vanished".into()))?,
            created_at: r.try_get(3)?,
        })
    })
    .collect()
}

/// A declined attempt, as operators see it.
#[derive(Debug, Clone)]
pub struct Decline {
    pub payment_id: PaymentId,
    pub pay_system: PaySystem,
    pub provider_transaction_id: String,
    pub reason: String,
    pub provider_reason: Option<String>,
    pub declined_at: DateTime<Utc>,
}

/// The declined attempts of one user's payments, newest first (at most 100).
pub async fn declines_of_user(
    db: &impl GenericClient,
    user_id: UserId,
) -> Result<Vec<Decline>, StoreError> {
    db.query(
        "SELECT d.payment_id, d.pay_system, d.provider_transaction_id, d.reason, d.provider_reason, d.declined_at \
         FROM declined_attempts d JOIN payments p ON p.id = d.payment_id \
         WHERE p.user_id = $1 ORDER BY d.declined_at DESC LIMIT 100",
        &[&user_id],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Decline {
            payment_id: r.try_get(0)?,
            pay_system: parse_col(r, "pay_system")?,
            provider_transaction_id: r.try_get(2)?,
            reason: r.try_get(3)?,
            provider_reason: r.try_get(4)?,
            declined_at: r.try_get(5)?,
        })
    })
    .collect()
}

// --- service: settle in one statement ---

/// `COLS` qualified with a table alias, for statements that join payments.
fn qualified(cols: &str, alias: &str) -> String {
    cols.split(", ")
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `settle` decides on without locks (payments/snapshot.sql).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub payment: Payment,
    /// A renewal's subscription (None for a purchase not yet linked).
    pub subscription: Option<Subscription>,
    pub user_has_live: bool,
    pub tariff_period: Period,
    /// The saved method the payment names: (provider id, title).
    pub method: Option<(String, String)>,
    /// The database's clock when it was read.
    pub now: DateTime<Utc>,
}

fn snapshot_sql(filter: &str) -> String {
    let sub_cols = super::subscriptions::COLS
        .split(", ")
        .map(|c| format!("s.{0} AS s_{0}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    include_str!("payments/snapshot.sql")
        .replace("{p.cols}", &qualified(COLS, "p"))
        .replace("{s.cols}", &sub_cols)
        .replace("{where}", filter)
}

impl Snapshot {
    fn from_row(row: &Row) -> Result<Snapshot, StoreError> {
        let sub_id: Option<SubscriptionId> = row.try_get("s_id")?;
        let count: i32 = row.try_get("tariff_period_count")?;
        let provider_id: Option<String> = row.try_get("method_provider_id")?;
        let title: Option<String> = row.try_get("method_title")?;
        Ok(Snapshot {
            payment: Payment::from_row(row)?,
            subscription: match sub_id {
                Some(_) => Some(Subscription::from_row_prefixed(row, "s_")?),
                None => None,
            },
            user_has_live: row.try_get("user_has_live")?,
            tariff_period: Period::new(count as u32, parse_col(row, "tariff_period_unit")?)
                .map_err(StoreError::Corrupt)?,
            method: provider_id.zip(title),
            now: row.try_get("db_now")?,
        })
    }
}

pub async fn snapshot(
    db: &impl GenericClient,
    id: PaymentId,
) -> Result<Option<Snapshot>, StoreError> {
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| snapshot_sql("p.id = $1"));
    db.q_opt(&SQL, &[&id])
        .await?
        .as_ref()
        .map(Snapshot::from_row)
        .transpose()
}

/// The snapshot of the payment with this provider id (a webhook's object).
pub async fn snapshot_by_provider_id(
    db: &impl GenericClient,
    system: PaySystem,
    provider_payment_id: &str,
) -> Result<Option<Snapshot>, StoreError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        snapshot_sql("p.pay_system = $1 AND p.provider_payment_id = $2")
    });
    db.q_opt(&SQL, &[&system.as_str(), &provider_payment_id])
        .await?
        .as_ref()
        .map(Snapshot::from_row)
        .transpose()
}

/// An event to insert with a settle statement: id, type, body.
pub type NewEvent = (uuid::Uuid, &'static str, serde_json::Value);

fn event_columns(
    events: &[NewEvent],
) -> (Vec<uuid::Uuid>, Vec<&'static str>, Vec<serde_json::Value>) {
    (
        events.iter().map(|e| e.0).collect(),
        events.iter().map(|e| e.1).collect(),
        events.iter().map(|e| e.2.clone()).collect(),
    )
}

/// A purchase's activation, decided from a snapshot (payments/settle_activation.sql).
pub struct Activation<'a> {
    pub payment_id: PaymentId,
    pub captured_at: Option<DateTime<Utc>>,
    pub provider_payment_id: &'a str,
    /// The method the provider saved: (provider id, title).
    pub saved_method: Option<(&'a str, &'a str)>,
    pub subscription_id: SubscriptionId,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub auto_renew: bool,
    pub next_charge_at: Option<DateTime<Utc>>,
    pub events: &'a [NewEvent],
}

/// True when it was applied; false when the row no longer is what the snapshot
/// showed (nothing changed).
pub async fn settle_activation(
    db: &impl GenericClient,
    a: &Activation<'_>,
) -> Result<bool, StoreError> {
    let (ids, types, bodies) = event_columns(a.events);
    let row = db
        .q_one(
            include_str!("payments/settle_activation.sql"),
            &[
                &a.payment_id,
                &a.captured_at,
                &a.saved_method.map(|m| m.0),
                &a.saved_method.map(|m| m.1),
                &MethodId::new(),
                &a.subscription_id,
                &a.start,
                &a.end,
                &a.auto_renew,
                &a.next_charge_at,
                &ids,
                &types,
                &bodies,
                &a.provider_payment_id,
            ],
        )
        .await?;
    applied(&row, a.events.len())
}

/// A renewal's success, decided from a snapshot (payments/settle_renewal.sql).
pub struct RenewalPaid<'a> {
    pub payment_id: PaymentId,
    pub period_start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub auto_renew: bool,
    pub captured_at: Option<DateTime<Utc>>,
    pub provider_payment_id: &'a str,
    pub next_charge_at: Option<DateTime<Utc>>,
    pub events: &'a [NewEvent],
}

pub async fn settle_renewal(
    db: &impl GenericClient,
    r: &RenewalPaid<'_>,
) -> Result<bool, StoreError> {
    let (ids, types, bodies) = event_columns(r.events);
    let row = db
        .q_one(
            include_str!("payments/settle_renewal.sql"),
            &[
                &r.payment_id,
                &r.period_start,
                &r.end,
                &r.auto_renew,
                &r.captured_at,
                &r.provider_payment_id,
                &r.next_charge_at,
                &ids,
                &types,
                &bodies,
            ],
        )
        .await?;
    applied(&row, r.events.len())
}

fn applied(row: &Row, events: usize) -> Result<bool, StoreError> {
    let paid: i64 = row.try_get("paid")?;
    let inserted: i64 = row.try_get("events")?;
    match (paid, inserted) {
        (0, 0) => Ok(false),
        (1, n) if n == events as i64 => Ok(true),
        _ => Err(StoreError::Corrupt(format!(
            "a settle statement moved {paid} payments with {inserted} events"
        ))),
    }
}

// --- jobs: renewer ---

/// A renewal payment the renewer claimed, ready to send (payments/claim_renewals.sql).
#[derive(Debug, Clone)]
pub struct ClaimedRenewal {
    pub payment: Payment,
    pub start: SendStart,
    /// The saved method's id at its provider.
    pub saved_method: String,
}

/// Claims up to `batch` due renewals for `lease` and commits the payment each one
/// sends, in one statement.
pub async fn claim_renewals(
    db: &impl GenericClient,
    batch: i64,
    lease: std::time::Duration,
    check_after: std::time::Duration,
    window_hours: i32,
    receipts: &[PaySystem],
) -> Result<Vec<ClaimedRenewal>, StoreError> {
    let receipts: Vec<&str> = receipts.iter().map(|s| s.as_str()).collect();
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        include_str!("payments/claim_renewals.sql")
            .replace("{p.cols}", &qualified(COLS, "p"))
            .replace("{cols}", COLS)
    });
    db.q(
        &SQL,
        &[
            &batch,
            &lease.as_secs_f64(),
            &check_after.as_secs_f64(),
            &window_hours,
            &receipts,
        ],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(ClaimedRenewal {
            payment: Payment::from_row(row)?,
            start: SendStart {
                past_window: row.try_get("past_window")?,
                resent: row.try_get("resent")?,
            },
            saved_method: row.try_get("saved_method")?,
        })
    })
    .collect()
}
