//! Tariff periods and calendar arithmetic. One month after 31 January is the end
//! of February (chrono clamps to the last day of the month).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, Months, Utc};
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

/// The most a period end moves forward to reach the anchor's day: the days a
/// month shorter than the anchor's day took off (31 January → 28 February).
pub const MAX_CATCH_UP: chrono::TimeDelta = chrono::TimeDelta::days(3);

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

    /// The end of the `n`-th period counted from the billing anchor: each end is
    /// computed from the anchor, never from the previous end, so the anchor's day
    /// comes back after a short month (31 Jan → 28 Feb → 31 Mar → 30 Apr).
    fn nth_end(self, anchor: DateTime<Utc>, n: u32) -> Option<DateTime<Utc>> {
        match self.months() {
            Some(m) => anchor.checked_add_months(Months::new(m.checked_mul(n)?)),
            None => anchor.checked_add_days(Days::new(u64::from(self.count) * u64::from(n))),
        }
    }

    /// The end of the period that starts at `start`, on the grid of ends the billing
    /// `anchor` (Stripe's `billing_cycle_anchor`) sets: the first anchor date at or
    /// after one plain period from `start`, when that is at most [`MAX_CATCH_UP`]
    /// later (what a short month takes off: 31 Jan → 28 Feb), else the plain end.
    /// From an end on the grid that is the next grid date; an end that drifted a
    /// few days before anchors were kept gets them back; an end off the grid for
    /// another reason (a time of day that differs) keeps plain periods, never
    /// getting almost a period more. Day periods ignore the anchor.
    pub fn end_from(self, anchor: DateTime<Utc>, start: DateTime<Utc>) -> DateTime<Utc> {
        let plain = self.add_to(start);
        let Some(months) = self.months() else {
            return plain;
        };
        if anchor > start {
            return plain;
        }
        // Whole periods between the anchor and `plain`, minus one to stay below it.
        let gap =
            (plain.year() - anchor.year()) * 12 + plain.month() as i32 - anchor.month() as i32;
        let mut n = (gap / months as i32 - 1).max(0) as u32;
        loop {
            match self.nth_end(anchor, n) {
                Some(end) if end >= plain && end - plain <= MAX_CATCH_UP => return end,
                Some(end) if end >= plain => return plain,
                Some(_) => n += 1,
                None => return plain,
            }
        }
    }

    /// The start of the period that ends at `end`, on the anchor's grid when `end`
    /// is on it (a refund giving a period back: 30 Apr → 31 Mar, not 30 Mar);
    /// otherwise one plain period back. Never before the anchor.
    pub fn start_before(self, anchor: DateTime<Utc>, end: DateTime<Utc>) -> DateTime<Utc> {
        let plain = self.sub_from(end);
        if self.months().is_none() || anchor >= end {
            return plain;
        }
        let mut n = 0u32;
        while let Some(e) = self.nth_end(anchor, n + 1) {
            if e == end {
                return self.nth_end(anchor, n).unwrap_or(plain);
            }
            if e > end {
                break;
            }
            n += 1;
        }
        plain.max(anchor)
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
    fn the_anchor_day_comes_back_after_short_months() {
        let month = Period::new(1, PeriodUnit::Month).unwrap();
        let anchor = at(2026, 1, 31);
        let mut end = anchor;
        let mut ends = vec![];
        for _ in 0..5 {
            end = month.end_from(anchor, end);
            ends.push(end);
        }
        assert_eq!(
            ends,
            [
                at(2026, 2, 28),
                at(2026, 3, 31),
                at(2026, 4, 30),
                at(2026, 5, 31),
                at(2026, 6, 30)
            ]
        );
        let leap = at(2028, 1, 31);
        assert_eq!(month.end_from(leap, leap), at(2028, 2, 29));
        assert_eq!(month.end_from(leap, at(2028, 2, 29)), at(2028, 3, 31));
        assert_eq!(month.start_before(anchor, at(2026, 4, 30)), at(2026, 3, 31));
        assert_eq!(month.start_before(anchor, at(2026, 3, 31)), at(2026, 2, 28));
    }

    #[test]
    fn a_year_anchored_on_29_february_comes_back_in_leap_years() {
        let year = Period::new(1, PeriodUnit::Year).unwrap();
        let anchor = at(2028, 2, 29);
        let y1 = year.end_from(anchor, anchor);
        let y2 = year.end_from(anchor, y1);
        let y4 = year.end_from(anchor, year.end_from(anchor, y2));
        assert_eq!(
            (y1, y2, y4),
            (at(2029, 2, 28), at(2030, 2, 28), at(2032, 2, 29))
        );
    }

    #[test]
    fn a_drifted_end_rejoins_the_grid_without_a_short_period() {
        let month = Period::new(1, PeriodUnit::Month).unwrap();
        // Renewed before anchors were kept: 31 Jan → 28 Feb → 28 Mar.
        assert_eq!(
            month.end_from(at(2026, 1, 31), at(2026, 3, 28)),
            at(2026, 4, 30)
        );
    }

    #[test]
    fn an_end_off_the_grid_for_another_reason_keeps_plain_periods() {
        let month = Period::new(1, PeriodUnit::Month).unwrap();
        // Started over after expiry at another time of day, before anchors were kept.
        let restarted = Utc.with_ymd_and_hms(2026, 6, 5, 14, 0, 0).unwrap();
        let plain = Utc.with_ymd_and_hms(2026, 7, 5, 14, 0, 0).unwrap();
        assert_eq!(
            month.end_from(at(2026, 1, 5), restarted),
            plain,
            "not 5 Aug 10:30"
        );
        let year = Period::new(1, PeriodUnit::Year).unwrap();
        assert_eq!(
            year.end_from(at(2026, 1, 5), restarted),
            year.add_to(restarted)
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

        /// Issue 15: ten years of renewals from a random start land every end on the
        /// anchor's day, or on the last day of a month too short for it, at the
        /// anchor's time, one period apart; and each refund step back is exact.
        #[test]
        fn ten_years_of_renewals_keep_the_anchor_day(
            secs in 0i64..4_000_000_000, count in 1u32..=3, unit in 1u8..3
        ) {
            let unit = [PeriodUnit::Day, PeriodUnit::Month, PeriodUnit::Year][unit as usize];
            let period = Period::new(count, unit).unwrap();
            let anchor = Utc.timestamp_opt(secs, 0).unwrap();
            let horizon = anchor.checked_add_months(Months::new(120)).unwrap();
            let mut start = anchor;
            let mut n = 0;
            while start < horizon {
                let end = period.end_from(anchor, start);
                n += 1;
                prop_assert_eq!(end.time(), anchor.time());
                let months = (end.year() - anchor.year()) * 12 + end.month() as i32 - anchor.month() as i32;
                prop_assert_eq!(months as u32, n * period.months().unwrap(), "{} periods", n);
                let last_day = end.with_day(1).unwrap().checked_add_months(Months::new(1)).unwrap()
                    .checked_sub_days(Days::new(1)).unwrap().day();
                prop_assert_eq!(end.day(), anchor.day().min(last_day), "end {}", end);
                prop_assert_eq!(period.start_before(anchor, end), start);
                start = end;
            }
        }

        #[test]
        fn day_periods_are_reversible(secs in 0i64..4_000_000_000, count in 1u32..=1000) {
            let start = Utc.timestamp_opt(secs, 0).unwrap();
            let period = Period::new(count, PeriodUnit::Day).unwrap();
            prop_assert_eq!(period.sub_from(period.add_to(start)), start);
        }
    }
}
