//! 54-FZ receipts, in our words: the customer's contact, one line per subscription
//! period, the VAT code and tax system of the tariff. Built once when the payment
//! (or refund) row is written, stored with it, and translated by each provider's
//! adapter on every send, so a re-send carries the same receipt.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Money;

/// What the fiscal receipt names as the line: YooKassa allows 128 characters.
pub const MAX_DESCRIPTION: usize = 128;

/// An e-mail address the receipt is sent to: checked for shape only (a person
/// typed it; the provider delivers or reports it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "viewer@example.com")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, String> {
        let s = raw.trim();
        if s.is_empty() || s.chars().count() > 254 {
            return Err("must be 1..254 characters".into());
        }
        if s.chars().any(|c| {
            c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | '"' | ',' | ';')
        }) {
            return Err("must not contain spaces, control characters or <>\",;".into());
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err("must be an address like name@example.com".into());
        };
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err("must be an address like name@example.com".into());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels
                .iter()
                .any(|l| l.is_empty() || l.len() > 63 || l.starts_with('-') || l.ends_with('-'))
        {
            return Err("must have a domain like example.com".into());
        }
        Ok(Email(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Email::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

/// A phone number in ITU-T E.164 as YooKassa takes it: digits only, country code
/// first (`79001234567`). Written with `+`, spaces, dashes or brackets, it is
/// accepted and kept as its digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "79001234567")]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Phone, String> {
        let s = raw.trim();
        let s = s.strip_prefix('+').unwrap_or(s);
        if !s
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')'))
        {
            return Err("must be digits with the country code, e.g. +7 900 123-45-67".into());
        }
        let mut digits: String = s.chars().filter(char::is_ascii_digit).collect();
        // A Russian mobile written the domestic way (8 9xx …, no `+`): 89 is no
        // country code, so it can only mean +7 9xx ….
        if !raw.trim().starts_with('+') && digits.len() == 11 && digits.starts_with("89") {
            digits.replace_range(0..1, "7");
        }
        if !(11..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err("must be 11..15 digits with the country code (E.164)".into());
        }
        Ok(Phone(digits))
    }

    /// Digits only, country code first.
    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Phone {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Phone::parse(&s)
    }
}

impl From<Phone> for String {
    fn from(p: Phone) -> String {
        p.0
    }
}

/// Where the receipt goes: an e-mail, a phone, or both. Never neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Customer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
}

impl Customer {
    pub fn new(email: Option<Email>, phone: Option<Phone>) -> Option<Customer> {
        (email.is_some() || phone.is_some()).then_some(Customer { email, phone })
    }
}

/// The VAT rate of a line, in YooKassa's numbering (`vat_code` 1..12): 1 no VAT,
/// 2 0 %, 3 10 %, 4 20 %, 5 10/110, 6 20/120, 7 5 %, 8 7 %, 9 5/105, 10 7/107,
/// 11 22 %, 12 22/122. Each adapter maps it to its provider's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "u8", into = "u8")]
#[schema(value_type = u8, minimum = 1, maximum = 12, example = 1)]
pub struct VatCode(u8);

impl VatCode {
    pub const NO_VAT: VatCode = VatCode(1);

    pub fn new(code: u8) -> Result<VatCode, String> {
        (1..=12)
            .contains(&code)
            .then_some(VatCode(code))
            .ok_or_else(|| format!("vat_code must be 1..12, not {code}"))
    }

    pub fn code(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for VatCode {
    type Error = String;
    fn try_from(c: u8) -> Result<Self, Self::Error> {
        VatCode::new(c)
    }
}

impl From<VatCode> for u8 {
    fn from(v: VatCode) -> u8 {
        v.0
    }
}

/// The shop's tax system, in YooKassa's numbering (`tax_system_code` 1..6): 1 general,
/// 2 simplified (income), 3 simplified (income minus expenses), 4 imputed income,
/// 5 agricultural, 6 patent. CloudPayments counts the same list from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "u8", into = "u8")]
#[schema(value_type = u8, minimum = 1, maximum = 6, example = 2)]
pub struct TaxSystem(u8);

impl TaxSystem {
    pub fn new(code: u8) -> Result<TaxSystem, String> {
        (1..=6)
            .contains(&code)
            .then_some(TaxSystem(code))
            .ok_or_else(|| format!("tax_system_code must be 1..6, not {code}"))
    }

    pub fn code(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for TaxSystem {
    type Error = String;
    fn try_from(c: u8) -> Result<Self, Self::Error> {
        TaxSystem::new(c)
    }
}

impl From<TaxSystem> for u8 {
    fn from(t: TaxSystem) -> u8 {
        t.0
    }
}

/// One line: a subscription period is a service (`payment_subject`), paid in full
/// at once (`payment_mode`); quantity 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptItem {
    #[schema(example = "Subscription: Monthly")]
    pub description: String,
    pub quantity: u32,
    pub amount: Money,
    pub vat_code: VatCode,
    #[schema(example = "service")]
    pub payment_subject: String,
    #[schema(example = "full_payment")]
    pub payment_mode: String,
}

/// A 54-FZ receipt as we stored and sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Receipt {
    pub customer: Customer,
    pub items: Vec<ReceiptItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_system_code: Option<TaxSystem>,
}

impl Receipt {
    /// The receipt of one subscription period sold for `amount`.
    pub fn for_period(
        customer: Customer,
        description: &str,
        amount: Money,
        vat_code: VatCode,
        tax_system_code: Option<TaxSystem>,
    ) -> Receipt {
        Receipt {
            customer,
            items: vec![ReceiptItem {
                description: truncate(description, MAX_DESCRIPTION),
                quantity: 1,
                amount,
                vat_code,
                payment_subject: "service".into(),
                payment_mode: "full_payment".into(),
            }],
            tax_system_code,
        }
    }

    /// The same line, customer and taxes for another sum: a refund of `amount` of
    /// the payment this receipt was for ("return of income"), or an extra charge.
    pub fn for_sum(&self, amount: Money) -> Receipt {
        let mut r = self.clone();
        r.items.truncate(1);
        if let Some(item) = r.items.first_mut() {
            item.amount = amount;
            item.quantity = 1;
        }
        r
    }

    /// What the lines add up to (quantity × amount), in minor units.
    pub fn total_minor(&self) -> i64 {
        self.items
            .iter()
            .map(|i| i.amount.minor() * i64::from(i.quantity))
            .sum()
    }
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;

    #[test]
    fn emails_are_checked_for_shape() {
        for good in ["viewer@example.com", "a.b+c@mail.example.ru", " x@y.io "] {
            assert!(Email::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "viewer",
            "@example.com",
            "a@",
            "a@b",
            "a b@c.ru",
            "a@-b.ru",
            "a@b..ru",
            "a@b\n.ru",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn phones_are_kept_as_e164_digits() {
        assert_eq!(
            Phone::parse("+7 (900) 123-45-67").unwrap().digits(),
            "79001234567"
        );
        assert_eq!(Phone::parse("79001234567").unwrap().digits(), "79001234567");
        assert_eq!(
            Phone::parse("8 900 123-45-67").unwrap().digits(),
            "79001234567"
        );
        assert_eq!(
            Phone::parse("+86 138 0013 8000").unwrap().digits(),
            "8613800138000"
        );
        for bad in [
            "",
            "+7",
            "8900",
            "+7 900 123 45 67 ext 2",
            "07001234567",
            "+7900123456789012",
        ] {
            assert!(Phone::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn codes_are_bounded() {
        assert!(VatCode::new(0).is_err() && VatCode::new(13).is_err());
        assert!(VatCode::new(12).is_ok());
        assert!(TaxSystem::new(0).is_err() && TaxSystem::new(7).is_err());
    }

    #[test]
    fn a_refund_receipt_is_the_same_line_for_the_refunded_sum() {
        let customer = Customer::new(Some(Email::parse("v@example.com").unwrap()), None).unwrap();
        let long = "x".repeat(200);
        let r = Receipt::for_period(
            customer,
            &long,
            Money::new(29_900, Currency::Rub),
            VatCode::NO_VAT,
            Some(TaxSystem::new(2).unwrap()),
        );
        assert_eq!(r.items[0].description.chars().count(), MAX_DESCRIPTION);
        assert_eq!(r.total_minor(), 29_900);
        let back = r.for_sum(Money::new(10_000, Currency::Rub));
        assert_eq!(back.total_minor(), 10_000);
        assert_eq!(back.customer, r.customer);
        let json: Receipt = serde_json::from_str(&r.to_string()).unwrap();
        assert_eq!(json, r);
    }
}
