//! Durations as operators write them: `250ms`, `30s`, `2m`, `1h`, `1d`.

use std::time::Duration;

pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 2m, 1h or 1d"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{text:?} is not a duration like 30s, 2m, 1h or 1d")),
    };
    Ok(Duration::from_secs(secs))
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
    fn rejects_malformed() {
        for bad in ["", "5", "m", "1w", "-1d", "1.5h", "1 d"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
