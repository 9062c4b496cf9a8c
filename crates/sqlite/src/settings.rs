//! The session settings the embedded backend acts on (today `statement_timeout`), from the
//! startup packet (`options=-c name=value`, or `name=value` as a startup parameter) and from
//! `SET` / `RESET` / `SHOW`.

use std::time::Duration;

use pgbastion_gateway::ClientInfo;

/// The only setting with an effect; every other `SET` is accepted and ignored.
pub const STATEMENT_TIMEOUT: &str = "statement_timeout";

/// A setting value PostgreSQL would refuse (SQLSTATE 22023).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for parameter \"{name}\": \"{value}\"")]
pub struct InvalidValue {
    /// The parameter.
    pub name: String,
    /// The value given.
    pub value: String,
}

/// PostgreSQL's limit for millisecond settings (`INT_MAX`).
const MAX_MILLIS: f64 = i32::MAX as f64;

/// Parses a `statement_timeout` value as PostgreSQL does: a number of milliseconds, or a
/// number with a unit (`us`, `ms`, `s`, `min`, `h`, `d`); 0 disables the timeout.
pub fn parse_timeout(value: &str) -> Result<Option<Duration>, InvalidValue> {
    let invalid = || InvalidValue {
        name: STATEMENT_TIMEOUT.to_owned(),
        value: value.to_owned(),
    };
    let text = value.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let per_unit = match unit.trim() {
        "us" => 0.001,
        "" | "ms" => 1.0,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return Err(invalid()),
    };
    let millis = (number * per_unit).round();
    if !(0.0..=MAX_MILLIS).contains(&millis) {
        return Err(invalid());
    }
    // In range and rounded, so the conversion is exact.
    let millis = millis as u64;
    Ok((millis > 0).then(|| Duration::from_millis(millis)))
}

/// A timeout as `SHOW` prints it: `0`, or the largest unit that divides it (`200ms`, `1s`,
/// `5min`).
pub fn format_timeout(timeout: Option<Duration>) -> String {
    let Some(timeout) = timeout else {
        return "0".to_owned();
    };
    let millis = timeout.as_millis();
    let units = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("min", 60_000),
        ("s", 1_000),
    ];
    units
        .iter()
        .find(|(_, size)| millis % size == 0)
        .map_or_else(
            || format!("{millis}ms"),
            |(unit, size)| format!("{}{unit}", millis / size),
        )
}

/// The `statement_timeout` a client asked for at startup: a `-c statement_timeout=...` (or
/// `--statement_timeout=...`) in `options`, or a `statement_timeout` startup parameter.
pub fn startup_timeout(client: Option<&ClientInfo>) -> Result<Option<Duration>, InvalidValue> {
    let Some(client) = client else {
        return Ok(None);
    };
    let from_options = client
        .parameter("options")
        .and_then(|options| option_value(options, STATEMENT_TIMEOUT));
    match from_options.or_else(|| client.parameter(STATEMENT_TIMEOUT).map(str::to_owned)) {
        Some(value) => parse_timeout(&value),
        None => Ok(None),
    }
}

/// The last value of `name` in a startup `options` string (`-c name=value`, `-cname=value`,
/// `--name=value`).
fn option_value(options: &str, name: &str) -> Option<String> {
    let mut words = options.split_ascii_whitespace();
    let mut found = None;
    while let Some(word) = words.next() {
        let setting = match word {
            "-c" => words.next(),
            _ => word.strip_prefix("-c").or_else(|| word.strip_prefix("--")),
        };
        if let Some((key, value)) = setting.and_then(|s| s.split_once('=')) {
            if key.replace('-', "_") == name {
                found = Some(value.to_owned());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(value: &str) -> Option<u128> {
        parse_timeout(value)
            .ok()
            .map(|t| t.map_or(0, |d| d.as_millis()))
    }

    #[test]
    fn timeouts_parse_with_postgres_units() {
        let cases = [
            ("200", Some(200)),
            ("0", Some(0)),
            ("1s", Some(1000)),
            ("1.5s", Some(1500)),
            ("2 min", Some(120_000)),
            ("1h", Some(3_600_000)),
            ("1d", Some(86_400_000)),
            ("1500us", Some(2)),
            ("soon", None),
            ("-1", None),
            ("1 fortnight", None),
            ("99999999999", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(millis(value), expected, "{value:?}");
        }
    }

    #[test]
    fn timeouts_show_in_the_largest_whole_unit() {
        let cases = [
            (0, "0"),
            (200, "200ms"),
            (1000, "1s"),
            (90_000, "90s"),
            (120_000, "2min"),
        ];
        for (ms, shown) in cases {
            let timeout = (ms > 0).then(|| Duration::from_millis(ms));
            assert_eq!(format_timeout(timeout), shown);
        }
    }

    #[test]
    fn startup_options_set_the_timeout() {
        let cases = [
            ("-c statement_timeout=100", Some("100")),
            ("-cstatement_timeout=1s -c work_mem=4MB", Some("1s")),
            ("--statement-timeout=5", Some("5")),
            ("-c work_mem=4MB", None),
        ];
        for (options, expected) in cases {
            assert_eq!(
                option_value(options, STATEMENT_TIMEOUT).as_deref(),
                expected,
                "{options}"
            );
        }
    }
}
