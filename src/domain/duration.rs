//! Durations as operators write them: `250ms`, `30s`, `2m`, `1h`, `1d`.

use std::time::Duration;

/// The longest duration a setting may have. Longer is a mistake, and past 64 bits
/// of seconds the number would wrap around to a short one.
pub const LONGEST: Duration = Duration::from_secs(100 * 365 * 86_400 + 25 * 86_400);

pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let malformed = || format!("{text:?} is not a duration like 30s, 2m, 1h or 1d");
    let too_long = || format!("{text:?} is longer than 100 years");
    if digits.is_empty() {
        return Err(malformed());
    }
    let n: u64 = digits.parse().map_err(|_| too_long())?;
    let per_unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(malformed()),
    };
    let d = n
        .checked_mul(per_unit_ms)
        .map(Duration::from_millis)
        .filter(|d| *d <= LONGEST)
        .ok_or_else(too_long)?;
    Ok(d)
}

pub fn parse_list(text: &str) -> Result<Vec<Duration>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_list("1d,3d,5d").unwrap().len(), 3);
    }

    #[test]
    fn a_century_is_the_longest() {
        assert_eq!(parse("36525d").unwrap(), LONGEST);
        for long in [
            "36526d",
            "18446744073709551615ms",
            "99999999999999999999999s",
        ] {
            assert!(parse(long).unwrap_err().contains("100 years"), "{long}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "5", "m", "1w", "-1d", "1.5h", "1 d"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
