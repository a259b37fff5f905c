use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{parse_col, GenericClient, StoreError};
use crate::domain::receipt::{Customer, Receipt, TaxSystem, VatCode};
use crate::domain::TariffId;
use crate::domain::{Currency, Money, PaySystem, Period};
use crate::store::Cached as _;

#[derive(Debug, Clone)]
pub struct Tariff {
    pub id: TariffId,
    pub alias: String,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub period: Period,
    pub archived_at: Option<DateTime<Utc>>,
    /// The receipt line's VAT rate and the shop's tax system (54-FZ).
    pub vat_code: VatCode,
    pub tax_system_code: Option<TaxSystem>,
}

const TARIFF_COLS: &str =
    "id, alias, name, description, price_minor, currency, period_count, period_unit, \
    archived_at, vat_code, tax_system_code";

impl Tariff {
    pub fn from_row(row: &Row) -> Result<Tariff, StoreError> {
        let currency: Currency = parse_col(row, "currency")?;
        let count: i32 = row.try_get("period_count")?;
        let period = Period::new(count as u32, parse_col(row, "period_unit")?)
            .map_err(StoreError::Corrupt)?;
        Ok(Tariff {
            id: row.try_get("id")?,
            alias: row.try_get("alias")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            price: Money::new(row.try_get("price_minor")?, currency),
            period,
            archived_at: row.try_get("archived_at")?,
            vat_code: VatCode::new(row.try_get::<_, i16>("vat_code")? as u8)
                .map_err(StoreError::Corrupt)?,
            tax_system_code: row
                .try_get::<_, Option<i16>>("tax_system_code")?
                .map(|c| TaxSystem::new(c as u8).map_err(StoreError::Corrupt))
                .transpose()?,
        })
    }
}

impl Tariff {
    /// What a period of this tariff is called: the purchase's description and the
    /// receipt line (the renewal claim writes the same in SQL, claim_renewals.sql).
    pub fn line(&self) -> String {
        format!("Subscription: {}", self.name)
    }

    /// The 54-FZ receipt of one period of this tariff sold for `amount`.
    pub fn receipt(&self, customer: Customer, amount: Money) -> Receipt {
        Receipt::for_period(
            customer,
            &self.line(),
            amount,
            self.vat_code,
            self.tax_system_code,
        )
    }
}

/// Active tariffs, cheapest first.
pub async fn list_active(db: &impl GenericClient) -> Result<Vec<Tariff>, StoreError> {
    let sql = format!(
        "SELECT {TARIFF_COLS} FROM tariffs WHERE archived_at IS NULL ORDER BY price_minor, alias"
    );
    db.q(&sql, &[])
        .await?
        .iter()
        .map(Tariff::from_row)
        .collect()
}

pub async fn get(db: &impl GenericClient, id: TariffId) -> Result<Option<Tariff>, StoreError> {
    let sql = format!("SELECT {TARIFF_COLS} FROM tariffs WHERE id = $1");
    db.q_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(Tariff::from_row)
        .transpose()
}

#[derive(Debug, Clone)]
pub struct PaySystemRow {
    pub alias: PaySystem,
    pub name: String,
    pub currencies: Vec<String>,
}

pub async fn list_pay_systems(db: &impl GenericClient) -> Result<Vec<PaySystemRow>, StoreError> {
    let rows = db
        .q("SELECT alias, name, currencies FROM pay_systems WHERE enabled ORDER BY position, alias", &[])
        .await?;
    rows.iter()
        .map(|r| {
            Ok(PaySystemRow {
                alias: parse_col(r, "alias")?,
                name: r.try_get("name")?,
                currencies: r.try_get("currencies")?,
            })
        })
        .collect()
}

// --- http: admin ---

/// Every tariff, live ones first.
pub async fn list_all(db: &impl GenericClient) -> Result<Vec<Tariff>, StoreError> {
    let sql =
        format!("SELECT {TARIFF_COLS} FROM tariffs ORDER BY archived_at NULLS FIRST, price_minor");
    db.query(&sql, &[])
        .await?
        .iter()
        .map(Tariff::from_row)
        .collect()
}

#[derive(Debug, Clone)]
pub struct NewTariffRow<'a> {
    pub id: TariffId,
    pub alias: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub price: Money,
    pub period: Period,
    pub vat_code: VatCode,
    pub tax_system_code: Option<TaxSystem>,
}

/// The new tariff, or `None` when its alias is taken.
pub async fn insert(
    db: &impl GenericClient,
    t: &NewTariffRow<'_>,
) -> Result<Option<Tariff>, StoreError> {
    let sql = format!(
        "INSERT INTO tariffs (id, alias, name, description, price_minor, currency, period_count, period_unit, \
         vat_code, tax_system_code) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (alias) DO NOTHING RETURNING {TARIFF_COLS}"
    );
    db.query_opt(
        &sql,
        &[
            &t.id,
            &t.alias,
            &t.name,
            &t.description,
            &t.price.minor(),
            &t.price.currency().code(),
            &(t.period.count as i32),
            &t.period.unit.as_str(),
            &i16::from(t.vat_code.code()),
            &t.tax_system_code.map(|c| i16::from(c.code())),
        ],
    )
    .await?
    .as_ref()
    .map(Tariff::from_row)
    .transpose()
}

/// What may change on a tariff; `None` keeps the field.
#[derive(Debug, Clone, Default)]
pub struct TariffChange<'a> {
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    /// Archive (true) or put back on sale (false).
    pub archived: Option<bool>,
    pub vat_code: Option<VatCode>,
    pub tax_system_code: Option<TaxSystem>,
    /// Back to no tax system (the till's own).
    pub clear_tax_system: bool,
}

/// The changed tariff, or `None` when there is no such tariff.
pub async fn change(
    db: &impl GenericClient,
    id: TariffId,
    c: &TariffChange<'_>,
) -> Result<Option<Tariff>, StoreError> {
    let sql = format!(
        "UPDATE tariffs SET name = COALESCE($2, name), description = COALESCE($3, description), \
         archived_at = CASE WHEN $4::bool IS NULL THEN archived_at WHEN $4 THEN COALESCE(archived_at, now()) END, \
         vat_code = COALESCE($5, vat_code), \
         tax_system_code = CASE WHEN $7 THEN NULL ELSE COALESCE($6, tax_system_code) END, \
         updated_at = now() WHERE id = $1 RETURNING {TARIFF_COLS}"
    );
    let vat = c.vat_code.map(|v| i16::from(v.code()));
    let tax = c.tax_system_code.map(|t| i16::from(t.code()));
    db.query_opt(
        &sql,
        &[
            &id,
            &c.name,
            &c.description,
            &c.archived,
            &vat,
            &tax,
            &c.clear_tax_system,
        ],
    )
    .await?
    .as_ref()
    .map(Tariff::from_row)
    .transpose()
}
