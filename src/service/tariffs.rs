//! The tariff catalogue's changes: create, rename, describe, archive. Price and
//! period never change (a sold tariff keeps its price: archive it and create
//! another). The admin API and the console both come here.

use serde::Deserialize;

use crate::app::App;
use crate::domain::receipt::{TaxSystem, VatCode};
use crate::domain::{Money, Period, TariffId};
use crate::service::BillingError;
use crate::store::tariffs::{self, NewTariffRow, Tariff, TariffChange};
use crate::store::Connect;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTariff {
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub alias: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: String,
    pub price: Money,
    pub period: Period,
    /// The receipt line's VAT code (54-FZ), YooKassa's numbering 1..12; default 1 (no VAT).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 12)]
    pub vat_code: Option<i64>,
    /// The shop's tax system, YooKassa's numbering 1..6; default none (the till's own).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 6)]
    pub tax_system_code: Option<i64>,
}

/// What may change about a tariff; `None` leaves a field as it is.
#[derive(Default)]
pub struct TariffEdit {
    pub name: Option<String>,
    pub description: Option<String>,
    pub archived: Option<bool>,
    pub vat_code: Option<i64>,
    pub tax_system_code: Option<i64>,
    /// Set the tax system to none (the till's own).
    pub clear_tax_system: bool,
}

pub async fn create(app: &App, t: &NewTariff) -> Result<Tariff, BillingError> {
    check_text("name", &t.name, 200)?;
    check_description(&t.description)?;
    if t.alias.is_empty()
        || t.alias.len() > 64
        || !t
            .alias
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(bad("alias must be 1..=64 of a-z, 0-9, - and _"));
    }
    let period = Period::new(t.period.count, t.period.unit).map_err(bad)?;
    let vat = vat_code(t.vat_code)?.unwrap_or(VatCode::NO_VAT);
    let tax = tax_system(t.tax_system_code)?;
    tariffs::insert(
        &app.db.conn().await?,
        &NewTariffRow {
            id: TariffId::new(),
            alias: &t.alias,
            name: t.name.trim(),
            description: &t.description,
            price: t.price,
            period,
            vat_code: vat,
            tax_system_code: tax,
        },
    )
    .await?
    .ok_or_else(|| BillingError::AliasTaken(t.alias.clone()))
}

pub async fn change(app: &App, id: TariffId, edit: &TariffEdit) -> Result<Tariff, BillingError> {
    if let Some(n) = &edit.name {
        check_text("name", n, 200)?;
    }
    if let Some(d) = &edit.description {
        check_description(d)?;
    }
    tariffs::change(
        &app.db.conn().await?,
        id,
        &TariffChange {
            name: edit.name.as_deref().map(str::trim),
            description: edit.description.as_deref(),
            archived: edit.archived,
            vat_code: vat_code(edit.vat_code)?,
            tax_system_code: tax_system(edit.tax_system_code)?,
            clear_tax_system: edit.clear_tax_system,
        },
    )
    .await?
    .ok_or(BillingError::UnknownTariff)
}

fn bad(why: impl Into<String>) -> BillingError {
    BillingError::BadField(why.into())
}

/// A VAT code within 1..12.
fn vat_code(v: Option<i64>) -> Result<Option<VatCode>, BillingError> {
    v.map(|c| {
        u8::try_from(c)
            .map_err(|_| format!("vat_code must be 1..12, not {c}"))
            .and_then(VatCode::new)
            .map_err(bad)
    })
    .transpose()
}

/// A tax system within 1..6.
fn tax_system(v: Option<i64>) -> Result<Option<TaxSystem>, BillingError> {
    v.map(|c| {
        u8::try_from(c)
            .map_err(|_| format!("tax_system_code must be 1..6, not {c}"))
            .and_then(TaxSystem::new)
            .map_err(bad)
    })
    .transpose()
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), BillingError> {
    if value.trim().is_empty() || value.chars().count() > max {
        return Err(bad(format!("{field} must be 1..={max} characters")));
    }
    Ok(())
}

/// A tariff's description: at most 2 000 characters, on create and on change alike.
fn check_description(value: &str) -> Result<(), BillingError> {
    if value.chars().count() > 2000 {
        return Err(bad("description must be at most 2000 characters"));
    }
    Ok(())
}
