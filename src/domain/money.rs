//! Money as integer minor units with a currency. Provider strings are parsed here,
//! exactly, and nowhere else; there is no float anywhere near an amount.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Currencies we sell in. All have two minor digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Currency {
    Rub,
    Usd,
    Eur,
}

impl Currency {
    pub const ALL: &'static [Currency] = &[Currency::Rub, Currency::Usd, Currency::Eur];

    pub fn code(self) -> &'static str {
        match self {
            Currency::Rub => "RUB",
            Currency::Usd => "USD",
            Currency::Eur => "EUR",
        }
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "RUB" => Ok(Currency::Rub),
            "USD" => Ok(Currency::Usd),
            "EUR" => Ok(Currency::Eur),
            other => Err(MoneyError::UnknownCurrency(other.to_owned())),
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    #[error("amount {0:?} is not a decimal number")]
    NotADecimal(String),
    #[error("amount {0:?} has more than two decimal places")]
    TooPrecise(String),
    #[error("amount {0:?} must be positive")]
    NotPositive(String),
    #[error("amount {0:?} is too large")]
    TooLarge(String),
}

/// An amount in minor units (kopecks, cents). Always positive for a price or a
/// payment; zero is allowed only where a sum can be empty (refunded so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    pub const fn new(minor: i64, currency: Currency) -> Self {
        Money { minor, currency }
    }

    pub fn minor(self) -> i64 {
        self.minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    /// Parses a provider or client decimal string (`"299.00"`, `"154.0"`, `"15"`)
    /// exactly. More than two decimal places is an error unless the extra digits are
    /// zeros; a float-looking value is fine as long as it is exact.
    pub fn parse(value: &str, currency: Currency) -> Result<Money, MoneyError> {
        // One strict grammar everywhere: digits with at most one point, a leading minus
        // only to be told it is not positive. No spaces, no plus, no `1_000` (which
        // Decimal::from_str accepts).
        let plain = !value.is_empty()
            && value
                .chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_digit() || c == '.' || (i == 0 && c == '-'))
            && value.chars().filter(|c| *c == '.').count() <= 1
            && value.chars().any(|c| c.is_ascii_digit());
        if !plain {
            return Err(MoneyError::NotADecimal(value.to_owned()));
        }
        let decimal = Decimal::from_str_exact(value)
            .map_err(|_| MoneyError::NotADecimal(value.to_owned()))?;
        Self::from_decimal(decimal, currency).map_err(|e| match e {
            MoneyError::NotADecimal(_) => MoneyError::NotADecimal(value.to_owned()),
            MoneyError::TooPrecise(_) => MoneyError::TooPrecise(value.to_owned()),
            MoneyError::NotPositive(_) => MoneyError::NotPositive(value.to_owned()),
            MoneyError::TooLarge(_) => MoneyError::TooLarge(value.to_owned()),
            other => other,
        })
    }

    /// Exact conversion of a decimal in major units (CloudPayments sends JSON numbers).
    pub fn from_decimal(decimal: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        let text = decimal.to_string();
        let scaled = decimal
            .checked_mul(Decimal::from(100))
            .ok_or_else(|| MoneyError::TooLarge(text.clone()))?;
        if scaled.fract() != Decimal::ZERO {
            return Err(MoneyError::TooPrecise(text));
        }
        if scaled <= Decimal::ZERO {
            return Err(MoneyError::NotPositive(text));
        }
        let minor: i64 = scaled
            .trunc()
            .try_into()
            .map_err(|_| MoneyError::TooLarge(text.clone()))?;
        // Keep far away from i64 overflow in sums: a trillion roubles is not a cinema ticket.
        if minor > 100_000_000_000_000 {
            return Err(MoneyError::TooLarge(text));
        }
        Ok(Money { minor, currency })
    }

    /// `"299.00"`: the decimal string providers and clients expect.
    pub fn value_string(self) -> String {
        format_minor(self.minor)
    }

    pub fn as_decimal(self) -> Decimal {
        Decimal::new(self.minor, 2)
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        (self.currency == other.currency)
            .then(|| Money::new(self.minor - other.minor, self.currency))
    }
}

/// Formats minor units as a two-decimal string; works for zero and negatives too.
pub fn format_minor(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.value_string(), self.currency)
    }
}

/// The wire form of `docs/contract.md`: `{"value": "299.00", "currency": "RUB"}`.
#[derive(Serialize, Deserialize)]
struct MoneyWire {
    value: String,
    currency: String,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        MoneyWire {
            value: self.value_string(),
            currency: self.currency.code().to_owned(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = MoneyWire::deserialize(deserializer)?;
        let currency = wire.currency.parse().map_err(serde::de::Error::custom)?;
        Money::parse(&wire.value, currency).map_err(serde::de::Error::custom)
    }
}

/// The OpenAPI schema of that wire form; written by hand because the serde impls
/// are (a test serializes real amounts against it).
impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let value = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[0-9]+\.[0-9]{2}$"))
            .description(Some(
                "Decimal string in major units, two decimal places (never a float)",
            ))
            .examples(["299.00"]);
        let currency = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Currency::ALL.iter().map(|c| c.code())))
            .examples(["RUB"]);
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("value", value)
            .required("value")
            .property("currency", currency)
            .required("currency")
            .into()
    }
}

impl utoipa::ToSchema for Money {
    fn name() -> std::borrow::Cow<'static, str> {
        "Money".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_provider_strings_exactly() {
        let rub = Currency::Rub;
        assert_eq!(Money::parse("299.00", rub).unwrap().minor(), 29_900);
        assert_eq!(Money::parse("154.0", rub).unwrap().minor(), 15_400);
        assert_eq!(Money::parse("15", rub).unwrap().minor(), 1_500);
        assert_eq!(Money::parse("0.01", rub).unwrap().minor(), 1);
        assert_eq!(Money::parse("2990.000", rub).unwrap().minor(), 299_000);
    }

    #[test]
    fn rejects_what_is_not_an_exact_positive_amount() {
        let rub = Currency::Rub;
        for bad in [
            "", "abc", "1.001", "-1.00", "0", "0.00", "1e3", "1_000", "NaN", ".", "1.2.3", "+1.00",
            " 1.00", "1.00 ", "1 000",
        ] {
            assert!(
                Money::parse(bad, rub).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn formats_minor_units() {
        assert_eq!(format_minor(29_900), "299.00");
        assert_eq!(format_minor(5), "0.05");
        assert_eq!(format_minor(0), "0.00");
        assert_eq!(format_minor(-150), "-1.50");
    }

    #[test]
    fn serializes_as_the_design_object() {
        let json = serde_json::to_value(Money::new(29_900, Currency::Rub)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"value": "299.00", "currency": "RUB"})
        );
        let back: Money = serde_json::from_value(json).unwrap();
        assert_eq!(back, Money::new(29_900, Currency::Rub));
    }

    proptest! {
        #[test]
        fn round_trips_through_its_string(minor in 1i64..100_000_000_000_000) {
            let money = Money::new(minor, Currency::Rub);
            prop_assert_eq!(Money::parse(&money.value_string(), Currency::Rub).unwrap(), money);
        }

        #[test]
        fn trailing_zeros_do_not_change_the_amount(minor in 1i64..1_000_000_000, zeros in 0usize..4) {
            let text = format!("{}{}", format_minor(minor), "0".repeat(zeros));
            prop_assert_eq!(Money::parse(&text, Currency::Rub).unwrap().minor(), minor);
        }
    }
}
