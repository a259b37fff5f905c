//! Tariff periods and calendar arithmetic. One month after 31 January is the end
//! of February (chrono clamps to the last day of the month).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Days, Months, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PeriodUnit {
    Day,
    Month,
    Year,
}

impl PeriodUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            PeriodUnit::Day => "day",
            PeriodUnit::Month => "month",
            PeriodUnit::Year => "year",
        }
    }
}

impl FromStr for PeriodUnit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(PeriodUnit::Day),
            "month" => Ok(PeriodUnit::Month),
            "year" => Ok(PeriodUnit::Year),
            other => Err(format!(
                "unknown period unit {other:?} (day, month or year)"
            )),
        }
    }
}

/// `{"count": 1, "unit": "month"}`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Period {
    #[schema(minimum = 1, maximum = 1000, example = 1)]
    pub count: u32,
    pub unit: PeriodUnit,
}

impl Period {
    pub const MAX_COUNT: u32 = 1000;

    pub fn new(count: u32, unit: PeriodUnit) -> Result<Period, String> {
        if count == 0 || count > Self::MAX_COUNT {
            return Err(format!("period count must be 1..={}", Self::MAX_COUNT));
        }
        Ok(Period { count, unit })
    }

    fn months(self) -> Option<u32> {
        match self.unit {
            PeriodUnit::Day => None,
            PeriodUnit::Month => Some(self.count),
            PeriodUnit::Year => Some(self.count * 12),
        }
    }

    /// The end of a period that starts at `start`.
    pub fn add_to(self, start: DateTime<Utc>) -> DateTime<Utc> {
        let end = match self.months() {
            Some(m) => start.checked_add_months(Months::new(m)),
            None => start.checked_add_days(Days::new(self.count.into())),
        };
        end.expect("period arithmetic stays within chrono's range for count <= 1000")
    }

    /// The start of a period that ends at `end` (moving a period end back after a refund).
    pub fn sub_from(self, end: DateTime<Utc>) -> DateTime<Utc> {
        let start = match self.months() {
            Some(m) => end.checked_sub_months(Months::new(m)),
            None => end.checked_sub_days(Days::new(self.count.into())),
        };
        start.expect("period arithmetic stays within chrono's range for count <= 1000")
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.count, self.unit.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone};
    use proptest::prelude::*;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 10, 30, 0).unwrap()
    }

    #[test]
    fn one_month_after_31_january_is_the_end_of_february() {
        let month = Period::new(1, PeriodUnit::Month).unwrap();
        assert_eq!(month.add_to(at(2026, 1, 31)), at(2026, 2, 28));
        assert_eq!(month.add_to(at(2028, 1, 31)), at(2028, 2, 29));
    }

    #[test]
    fn a_year_after_29_february_is_28_february() {
        let year = Period::new(1, PeriodUnit::Year).unwrap();
        assert_eq!(year.add_to(at(2028, 2, 29)), at(2029, 2, 28));
    }

    #[test]
    fn three_months_and_days() {
        assert_eq!(
            Period::new(3, PeriodUnit::Month)
                .unwrap()
                .add_to(at(2026, 11, 30)),
            at(2027, 2, 28)
        );
        assert_eq!(
            Period::new(30, PeriodUnit::Day)
                .unwrap()
                .add_to(at(2026, 2, 1)),
            at(2026, 3, 3)
        );
    }

    #[test]
    fn count_is_bounded() {
        assert!(Period::new(0, PeriodUnit::Month).is_err());
        assert!(Period::new(1001, PeriodUnit::Day).is_err());
    }

    proptest! {
        #[test]
        fn a_period_always_moves_forward_and_keeps_the_time_of_day(
            secs in 0i64..4_000_000_000, count in 1u32..=36, unit in 0u8..3
        ) {
            let unit = [PeriodUnit::Day, PeriodUnit::Month, PeriodUnit::Year][unit as usize];
            let start = Utc.timestamp_opt(secs, 0).unwrap();
            let end = Period::new(count, unit).unwrap().add_to(start);
            prop_assert!(end > start);
            prop_assert_eq!(end.time(), start.time());
        }

        #[test]
        fn months_land_on_the_same_day_or_the_last_day_of_the_month(
            secs in 0i64..4_000_000_000, count in 1u32..=24
        ) {
            let start = Utc.timestamp_opt(secs, 0).unwrap();
            let end = Period::new(count, PeriodUnit::Month).unwrap().add_to(start);
            let months = (end.year() - start.year()) * 12 + end.month() as i32 - start.month() as i32;
            prop_assert_eq!(months, count as i32);
            let last_day = end.with_day(1).unwrap().checked_add_months(Months::new(1)).unwrap()
                .checked_sub_days(Days::new(1)).unwrap().day();
            prop_assert!(end.day() == start.day() || (end.day() == last_day && start.day() > last_day));
        }

        #[test]
        fn day_periods_are_reversible(secs in 0i64..4_000_000_000, count in 1u32..=1000) {
            let start = Utc.timestamp_opt(secs, 0).unwrap();
            let period = Period::new(count, PeriodUnit::Day).unwrap();
            prop_assert_eq!(period.sub_from(period.add_to(start)), start);
        }
    }
}
