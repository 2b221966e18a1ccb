//! Go's duration syntax (`time.ParseDuration`): `300ms`, `1.5h`, `2h45m`, `-1s`, a bare `0`.
//! Kubernetes reads it in CronJob `@every` schedules, the `timeout` query parameter, the
//! `duration` format of CRD schemas and its components' flags; strata reads it the same way.

use std::time::Duration;

/// Go's `time.ParseDuration`, in nanoseconds (errors as Go words them).
pub fn parse(s: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest.bytes().take_while(|c| c.is_ascii_digit() || *c == b'.').count();
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(invalid());
        }
        rest = &rest[num_len..];
        let unit_len = rest.bytes().take_while(|c| !(c.is_ascii_digit() || *c == b'.')).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {s:?}"));
        }
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        let v: f64 = num.parse().map_err(|_| invalid())?;
        total += v * scale;
    }
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    Ok(if neg { -(total as i128) } else { total as i128 })
}

/// A non-negative Go duration (flags, timeouts): `40s`, `500ms`, `1h30m`, `0`.
pub fn parse_std(s: &str) -> Result<Duration, String> {
    let nanos = parse(s)?;
    u64::try_from(nanos).map(Duration::from_nanos).map_err(|_| format!("negative duration {s:?} not allowed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_syntax() {
        assert_eq!(parse("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse("300ms"), Ok(300_000_000));
        assert_eq!(parse("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse(".5s"), Ok(500_000_000));
        assert_eq!(parse("-2s"), Ok(-2_000_000_000));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("abc"), Err("time: invalid duration \"abc\"".into()));
        assert_eq!(parse("10"), Err("time: missing unit in duration \"10\"".into()));
        assert_eq!(parse("5d"), Err("time: unknown unit \"d\" in duration \"5d\"".into()));
        assert_eq!(parse(""), Err("time: invalid duration \"\"".into()));
        assert_eq!(parse_std("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_std("-1h").is_err());
    }
}
