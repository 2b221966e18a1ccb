//! `resource.Quantity` as the API server needs it for admission (RuntimeClass overhead,
//! LimitRange, ResourceQuota): parsing to an exact number of thousandths, comparing, adding,
//! and writing a sum back in apimachinery's canonical form (the suffix family of the first
//! operand: `500m`, `2`, `1k`, `300Mi`), which is what quota status and denials show.

use serde_json::Value;

/// Upstream's message for a string that is not a quantity.
pub const SYNTAX: &str = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// How a quantity was written: its suffix family decides how a result is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `Ki`, `Mi`, `Gi`, ...
    BinarySI,
    /// `m`, `k`, `M`, `G`, ... and plain numbers.
    DecimalSI,
    /// `1e3`.
    DecimalExponent,
}

/// A quantity in thousandths of a unit (rounded up past the milli scale, as `MilliValue`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    pub milli: i128,
    pub format: Format,
}

impl Quantity {
    pub const ZERO: Quantity = Quantity { milli: 0, format: Format::DecimalSI };

    /// Parse a quantity string (`100m`, `0.5`, `128Mi`, `1G`, `1e3`, `-1`); `None` when it does
    /// not parse.
    pub fn parse(s: &str) -> Option<Quantity> {
        let s = s.trim();
        let (neg, s) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (num, suffix) = s.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let digits = format!("{int_part}{frac_part}");
        let mantissa: i128 = digits.trim_start_matches('0').parse().or_else(|e| if digits.chars().all(|c| c == '0') { Ok(0) } else { Err(e) }).ok()?;
        let (mul, pow10, format): (i128, i32, Format) = match suffix {
            "" => (1, 0, Format::DecimalSI),
            "n" => (1, -9, Format::DecimalSI),
            "u" => (1, -6, Format::DecimalSI),
            "m" => (1, -3, Format::DecimalSI),
            "k" => (1, 3, Format::DecimalSI),
            "M" => (1, 6, Format::DecimalSI),
            "G" => (1, 9, Format::DecimalSI),
            "T" => (1, 12, Format::DecimalSI),
            "P" => (1, 15, Format::DecimalSI),
            "E" => (1, 18, Format::DecimalSI),
            "Ki" => (1 << 10, 0, Format::BinarySI),
            "Mi" => (1 << 20, 0, Format::BinarySI),
            "Gi" => (1 << 30, 0, Format::BinarySI),
            "Ti" => (1 << 40, 0, Format::BinarySI),
            "Pi" => (1 << 50, 0, Format::BinarySI),
            "Ei" => (1 << 60, 0, Format::BinarySI),
            e if e.len() > 1 && (e.starts_with('e') || e.starts_with('E')) => {
                let exp: i32 = e[1..].parse().ok()?;
                if !(-30..=30).contains(&exp) {
                    return None;
                }
                (1, exp, Format::DecimalExponent)
            }
            _ => return None,
        };
        // milli = mantissa * mul * 10^(pow10 + 3 - frac_len), rounded up.
        let shift = pow10 + 3 - frac_part.len() as i32;
        let mut v = mantissa.checked_mul(mul)?;
        if shift >= 0 {
            v = v.checked_mul(10i128.checked_pow(shift as u32)?)?;
        } else {
            let d = 10i128.checked_pow((-shift) as u32)?;
            v = (v + d - 1) / d;
        }
        // Kubernetes quantities are bounded (2^63-1 units); beyond that is not a quantity.
        if v > i128::from(i64::MAX) * 1000 {
            return None;
        }
        Some(Quantity { milli: if neg { -v } else { v }, format })
    }

    /// A JSON value as a quantity (a string, or a number as JSON clients may send).
    pub fn of(v: &Value) -> Option<Quantity> {
        match v {
            Value::String(s) => Quantity::parse(s),
            Value::Number(n) => Quantity::parse(&n.to_string()),
            _ => None,
        }
    }

    /// Whole units, rounded up (`Value()`).
    pub fn value(&self) -> i128 {
        if self.milli >= 0 {
            (self.milli + 999) / 1000
        } else {
            self.milli / 1000
        }
    }

}

impl std::ops::Add for Quantity {
    type Output = Quantity;

    /// The sum, in the first operand's format (a zero takes the other's, as apimachinery's
    /// `Add` does).
    fn add(self, other: Quantity) -> Quantity {
        let format = if self.milli == 0 && self.format == Format::DecimalSI { other.format } else { self.format };
        Quantity { milli: self.milli + other.milli, format }
    }
}

impl std::fmt::Display for Quantity {
    /// apimachinery's canonical form: binary suffixes for a BinarySI whole number of bytes
    /// that is a multiple of 1024 (or below it), else the largest exact decimal suffix, `m`
    /// for fractions.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (neg, m) = (self.milli < 0, self.milli.unsigned_abs());
        let sign = if neg { "-" } else { "" };
        if m == 0 {
            return write!(f, "0");
        }
        if m % 1000 == 0 {
            let units = m / 1000;
            if self.format == Format::BinarySI && units >= 1024 {
                let mut n = units;
                let mut i = 0;
                while n % 1024 == 0 && i < 6 {
                    n /= 1024;
                    i += 1;
                }
                if i > 0 {
                    return write!(f, "{sign}{n}{}", ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][i]);
                }
            }
            let mut n = units;
            let mut i = 0;
            while n % 1000 == 0 && i < 6 {
                n /= 1000;
                i += 1;
            }
            if self.format == Format::DecimalExponent {
                return if i == 0 { write!(f, "{sign}{n}") } else { write!(f, "{sign}{n}e{}", i * 3) };
            }
            return write!(f, "{sign}{n}{}", ["", "k", "M", "G", "T", "P", "E"][i]);
        }
        write!(f, "{sign}{m}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn parses_compares_adds_and_prints_canonically() {
        assert_eq!(q("250m").milli, 250);
        assert_eq!(q("0.5").milli, 500);
        assert_eq!(q("1").milli, 1000);
        assert_eq!(q("1Ki").milli, 1024 * 1000);
        assert_eq!(q("1e3").milli, 1_000_000);
        assert_eq!(q("-1").milli, -1000);
        assert_eq!(q("1n").milli, 1);
        assert_eq!(q("0").milli, 0);
        for bad in ["", "m", "1.2.3", "1x", "abc", "1e99", "--1"] {
            assert!(Quantity::parse(bad).is_none(), "{bad}");
        }
        assert_eq!((q("250m") + q("500m")).to_string(), "750m");
        assert_eq!((q("500m") + q("500m")).to_string(), "1");
        assert_eq!((q("100Mi") + q("20Mi")).to_string(), "120Mi");
        assert_eq!(q("1Gi").to_string(), "1Gi");
        assert_eq!(q("1000").to_string(), "1k");
        assert_eq!(q("2").to_string(), "2");
        assert_eq!((Quantity::ZERO + q("64Mi")).to_string(), "64Mi");
        assert_eq!(q("1500Mi").to_string(), "1500Mi");
        assert_eq!((q("512") + q("0")).to_string(), "512");
        assert_eq!(q("100").value(), 100);
        assert_eq!(q("100m").value(), 1);
    }
}
