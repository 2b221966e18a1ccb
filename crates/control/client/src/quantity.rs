//! `resource.Quantity` strings (`100m`, `0.5`, `128Mi`, `1G`, `1e3`) as integers: CPU in
//! millicores, everything else in units, both rounded up as apimachinery's `MilliValue()` and
//! `Value()` round.

/// The quantity in thousandths of a unit (rounded up), or `None` when it does not parse.
pub fn parse_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (neg, s) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    if num.is_empty() || num == "." {
        return None;
    }
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    // value = digits / 10^frac_len * base^exp
    let digits: String = format!("{int_part}{frac_part}");
    let mantissa: i128 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    let mut den_pow10: i32 = frac_part.len() as i32;
    let (mul, pow10): (i128, i32) = match suffix {
        "" => (1, 0),
        "m" => (1, -3),
        "u" => (1, -6),
        "n" => (1, -9),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        e if e.starts_with('e') || e.starts_with('E') => (1, e[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    // milli: multiply by 1000
    den_pow10 -= pow10 + 3;
    let mut v = mantissa.checked_mul(mul)?;
    if den_pow10 < 0 {
        v = v.checked_mul(10i128.checked_pow((-den_pow10) as u32)?)?;
    } else if den_pow10 > 0 {
        let d = 10i128.checked_pow(den_pow10 as u32)?;
        v = (v + d - 1) / d;
    }
    Some(if neg { -v } else { v })
}

/// Millicores (CPU), rounded up; 0 when the string does not parse.
pub fn milli(s: &str) -> i64 {
    parse_milli(s).map_or(0, |v| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

/// Whole units (bytes, pods, devices), rounded up; 0 when the string does not parse.
pub fn value(s: &str) -> i64 {
    parse_milli(s).map_or(0, |v| {
        let units = if v >= 0 { (v + 999) / 1000 } else { v / 1000 };
        units.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(milli("100m"), 100);
        assert_eq!(milli("0.5"), 500);
        assert_eq!(milli("2"), 2000);
        assert_eq!(milli("1.0001"), 1001);
        assert_eq!(value("128Mi"), 128 << 20);
        assert_eq!(value("1G"), 1_000_000_000);
        assert_eq!(value("1e3"), 1000);
        assert_eq!(value("1.5Gi"), 3 << 29);
        assert_eq!(value("110"), 110);
        assert_eq!(value("500m"), 1);
        assert_eq!(value("junk"), 0);
        assert_eq!(parse_milli("12Q"), None);
    }
}
