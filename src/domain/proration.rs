//! What a tariff change now is worth to the viewer: the unused part of what they
//! paid. Each paid period is prorated by time (to the microsecond) and its share
//! rounded up to the minor unit, in the viewer's favour; the shares add up.
//!
//! A monthly tariff bought for 299.00 on a 30-day period with 10 days left is
//! worth ceil(29900 × 10/30) = 9967 minor units (99.67): the yearly tariff at
//! 2990.00 then charges 2990.00 − 99.67 = 2890.33.

use chrono::{DateTime, Utc};

/// A period a payment paid, and what is left of that payment (net of refunds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaidPeriod {
    pub net_minor: i64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The unused part of `paid` at `at`, in minor units: for each period, its net
/// amount × the part of it after `at` (all of it if it starts later), rounded up.
pub fn unused_minor(paid: &[PaidPeriod], at: DateTime<Utc>) -> i64 {
    paid.iter().map(|p| unused_share(p, at, p.end)).sum()
}

/// One period's unused part at `at`, counting its time only up to `until` (the
/// subscription's end: a refund may have given the rest back), rounded up.
pub fn unused_share(p: &PaidPeriod, at: DateTime<Utc>, until: DateTime<Utc>) -> i64 {
    let micros = |from: DateTime<Utc>, to: DateTime<Utc>| -> i128 {
        i128::from((to - from).num_microseconds().unwrap_or(i64::MAX).max(0))
    };
    let whole = micros(p.start, p.end);
    let left = micros(p.start.max(at), p.end.min(until));
    if whole == 0 || left == 0 || p.net_minor <= 0 {
        return 0;
    }
    let share = (i128::from(p.net_minor) * left + whole - 1) / whole;
    i64::try_from(share).unwrap_or(p.net_minor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 4, d, 12, 0, 0).unwrap()
    }

    #[test]
    fn the_contracts_worked_example() {
        let paid = [PaidPeriod {
            net_minor: 29900,
            start: day(1),
            end: day(1) + Duration::days(30),
        }];
        let credit = unused_minor(&paid, day(21));
        assert_eq!(credit, 9967);
        assert_eq!(299_000 - credit, 289_033);
    }

    #[test]
    fn a_period_paid_ahead_counts_whole_and_a_past_one_not_at_all() {
        let current = PaidPeriod {
            net_minor: 29900,
            start: day(1),
            end: day(11),
        };
        let ahead = PaidPeriod {
            net_minor: 29900,
            start: day(11),
            end: day(21),
        };
        assert_eq!(unused_minor(&[current, ahead], day(6)), 14950 + 29900);
        assert_eq!(unused_minor(&[current, ahead], day(21)), 0);
    }

    #[test]
    fn a_partly_refunded_payment_counts_what_is_left_of_it() {
        let p = PaidPeriod {
            net_minor: 10000,
            start: day(1),
            end: day(11),
        };
        assert_eq!(unused_minor(&[p], day(6)), 5000);
    }

    #[test]
    fn time_given_back_by_a_refund_is_not_credited() {
        let ahead = PaidPeriod {
            net_minor: 29900,
            start: day(11),
            end: day(21),
        };
        // The subscription ends on day 11 now: the period paid ahead was given back.
        assert_eq!(unused_share(&ahead, day(6), day(11)), 0);
        assert_eq!(unused_share(&ahead, day(6), day(16)), 14950);
    }

    proptest! {
        /// Never more than was paid, never less than the exact share, and never
        /// more when asked later.
        #[test]
        fn the_credit_is_the_exact_share_rounded_up(
            net in 1i64..10_000_000,
            len in 1i64..400 * 86_400,
            used in 0i64..400 * 86_400,
            later in 0i64..86_400,
        ) {
            let p = PaidPeriod { net_minor: net, start: day(1), end: day(1) + Duration::seconds(len) };
            let at = day(1) + Duration::seconds(used);
            let credit = unused_minor(&[p], at);
            prop_assert!((0..=net).contains(&credit));
            let left = (len - used).max(0);
            // credit - 1 < net × left / len <= credit
            prop_assert!(i128::from(credit) * i128::from(len) >= i128::from(net) * i128::from(left));
            prop_assert!(i128::from(credit - 1) * i128::from(len) < i128::from(net) * i128::from(left));
            prop_assert!(unused_minor(&[p], at + Duration::seconds(later)) <= credit);
        }
    }
}
