//! Kubernetes resource quantities (`"256Mi"`, `"1.5Gi"`, `"500m"`, `"1e3"`) as exact integers.
//!
//! The grammar is Kubernetes' (`k8s.io/apimachinery/pkg/api/resource`):
//!
//! ```text
//! quantity ::= [sign] number [suffix]
//! number   ::= digits | digits "." [digits] | "." digits
//! suffix   ::= Ki | Mi | Gi | Ti | Pi | Ei          (powers of 1024)
//!            | n | u | m | "" | k | M | G | T | P | E  (powers of 1000)
//!            | ("e" | "E") [sign] digits              (powers of ten)
//! ```
//!
//! Values are computed exactly (no floating point) and, like Kubernetes' `Value()` and
//! `MilliValue()`, rounded up to the next whole unit.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Why a quantity string could not be turned into a number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string was empty.
    #[error("quantity is empty (expected e.g. \"256Mi\", \"1.5Gi\" or \"500m\")")]
    Empty,
    /// The numeric part is missing or malformed.
    #[error("quantity {0:?} does not start with a valid number (expected e.g. \"256Mi\", \"1.5Gi\" or \"500m\")")]
    InvalidNumber(String),
    /// The suffix is not one Kubernetes knows.
    #[error("quantity {quantity:?} has an unknown suffix {suffix:?} (expected one of Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E, or an exponent such as e3)")]
    InvalidSuffix {
        /// The whole quantity.
        quantity: String,
        /// The part after the number.
        suffix: String,
    },
    /// The quantity is below zero where only non-negative values make sense.
    #[error("quantity {0:?} is negative")]
    Negative(String),
    /// The quantity does not fit in 64 bits in the requested unit.
    #[error("quantity {0:?} is too large")]
    OutOfRange(String),
}

/// A parsed quantity: `sign * digits * 10^exp10 * 2^exp2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Parsed {
    negative: bool,
    digits: u128,
    exp10: i64,
    exp2: u32,
}

/// Most digits kept in the mantissa; more would overflow `u128` arithmetic below.
const MAX_DIGITS: usize = 36;

fn parse(input: &str) -> Result<Parsed, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let bad_number = || QuantityError::InvalidNumber(input.to_string());
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut negative = false;
    if let Some(&c) = bytes.first() {
        if c == b'+' || c == b'-' {
            negative = c == b'-';
            pos = 1;
        }
    }
    let int_start = pos;
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    let int_part = &s[int_start..pos];
    let mut frac_part = "";
    if pos < bytes.len() && bytes[pos] == b'.' {
        pos += 1;
        let frac_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        frac_part = &s[frac_start..pos];
    }
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(bad_number());
    }
    let suffix = &s[pos..];

    // Significant digits: drop leading zeros of the integer part and trailing zeros of the fraction.
    let frac_trimmed = frac_part.trim_end_matches('0');
    let mut all: String = String::with_capacity(int_part.len() + frac_trimmed.len());
    all.push_str(int_part);
    all.push_str(frac_trimmed);
    let significant = all.trim_start_matches('0');
    let mut exp10: i64 = -(frac_trimmed.len() as i64);
    // Trailing zeros of an integer-only mantissa move into the exponent so long round numbers fit.
    let significant = if frac_trimmed.is_empty() {
        let t = significant.trim_end_matches('0');
        exp10 += (significant.len() - t.len()) as i64;
        t
    } else {
        significant
    };
    if significant.len() > MAX_DIGITS {
        return Err(QuantityError::OutOfRange(input.to_string()));
    }
    let digits: u128 = if significant.is_empty() {
        0
    } else {
        significant.parse().map_err(|_| bad_number())?
    };

    let (suffix_exp10, exp2) = match suffix {
        "" => (0, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        other => {
            let invalid = || QuantityError::InvalidSuffix {
                quantity: input.to_string(),
                suffix: other.to_string(),
            };
            let rest = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or_else(invalid)?;
            let digits_part = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits_part.is_empty()
                || digits_part.len() > 6
                || !digits_part.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(invalid());
            }
            let e: i64 = rest.parse().map_err(|_| invalid())?;
            (e, 0)
        }
    };
    exp10 += suffix_exp10;
    Ok(Parsed {
        negative: negative && digits != 0,
        digits,
        exp10,
        exp2,
    })
}

/// `10^n` if it fits in `u128`.
fn pow10(n: u32) -> Option<u128> {
    10u128.checked_pow(n)
}

/// The non-negative value of `p` times `10^scale10`, rounded up.
fn scaled_ceil(input: &str, p: Parsed, scale10: i64) -> Result<u64, QuantityError> {
    if p.negative {
        return Err(QuantityError::Negative(input.to_string()));
    }
    if p.digits == 0 {
        return Ok(0);
    }
    let too_large = || QuantityError::OutOfRange(input.to_string());
    let numerator = p
        .digits
        .checked_mul(1u128 << p.exp2)
        .ok_or_else(too_large)?;
    let exp = p.exp10 + scale10;
    let value: u128 = if exp >= 0 {
        let factor = u32::try_from(exp)
            .ok()
            .and_then(pow10)
            .ok_or_else(too_large)?;
        numerator.checked_mul(factor).ok_or_else(too_large)?
    } else {
        match u32::try_from(-exp).ok().and_then(pow10) {
            Some(den) => numerator.div_ceil(den),
            // The divisor is larger than any u128 numerator: a positive remainder rounds up to 1.
            None => 1,
        }
    };
    u64::try_from(value).map_err(|_| too_large())
}

/// Parses a quantity into bytes (or plain units), rounding a fraction up: `"256Mi"` is
/// 268435456, `"1.5Gi"` is 1610612736, `"1e3"` is 1000, `"500m"` is 1.
pub fn parse_quantity_bytes(s: &str) -> Result<u64, QuantityError> {
    scaled_ceil(s, parse(s)?, 0)
}

/// Parses a quantity into thousandths (millicores for CPU), rounding up: `"500m"` is 500,
/// `"2"` is 2000, `"0.25"` is 250.
pub fn parse_quantity_millis(s: &str) -> Result<u64, QuantityError> {
    scaled_ceil(s, parse(s)?, 3)
}

/// Whether `s` is a syntactically valid quantity (of any sign and size).
pub fn is_valid_quantity(s: &str) -> bool {
    parse(s).is_ok()
}

/// Compares two quantities by value. Errors if either does not parse.
pub fn compare_quantities(a: &str, b: &str) -> Result<std::cmp::Ordering, QuantityError> {
    let pa = parse(a)?;
    let pb = parse(b)?;
    // Compare sign first, then magnitudes on a common scale.
    let sign = |p: &Parsed| -> i8 {
        if p.digits == 0 {
            0
        } else if p.negative {
            -1
        } else {
            1
        }
    };
    let (sa, sb) = (sign(&pa), sign(&pb));
    if sa != sb || sa == 0 {
        return Ok(sa.cmp(&sb));
    }
    let magnitude =
        compare_magnitude(pa, pb).ok_or_else(|| QuantityError::OutOfRange(format!("{a} / {b}")))?;
    Ok(if sa < 0 {
        magnitude.reverse()
    } else {
        magnitude
    })
}

fn compare_magnitude(a: Parsed, b: Parsed) -> Option<std::cmp::Ordering> {
    // a.digits * 2^a.exp2 * 10^a.exp10  vs  b.digits * 2^b.exp2 * 10^b.exp10
    let na = a.digits.checked_mul(1u128 << a.exp2)?;
    let nb = b.digits.checked_mul(1u128 << b.exp2)?;
    let min = a.exp10.min(b.exp10);
    let ea = u32::try_from(a.exp10 - min).ok()?;
    let eb = u32::try_from(b.exp10 - min).ok()?;
    // Whichever side needs a factor too big to represent is the larger one (both are non-zero).
    match (
        pow10(ea).and_then(|f| na.checked_mul(f)),
        pow10(eb).and_then(|f| nb.checked_mul(f)),
    ) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        (None, Some(_)) => Some(std::cmp::Ordering::Greater),
        (Some(_), None) => Some(std::cmp::Ordering::Less),
        (None, None) => None,
    }
}

/// Formats a byte count the way Kubernetes prints binary-SI quantities: the largest
/// suffix that divides it exactly (`268435456` → `"256Mi"`, `1000` → `"1000"`).
pub fn format_bytes(bytes: u64) -> String {
    const SUFFIXES: [(&str, u32); 6] = [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    if bytes != 0 {
        for (suffix, shift) in SUFFIXES {
            if bytes.trailing_zeros() >= shift {
                return format!("{}{suffix}", bytes >> shift);
            }
        }
    }
    bytes.to_string()
}

/// Formats thousandths as a decimal quantity: `500` → `"500m"`, `2000` → `"2"`.
pub fn format_millis(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// A [`Quantity`] holding `bytes`, formatted with [`format_bytes`].
pub fn quantity_from_bytes(bytes: u64) -> Quantity {
    Quantity(format_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Ordering;

    #[test]
    fn binary_suffixes() {
        assert_eq!(parse_quantity_bytes("256Mi"), Ok(268_435_456));
        assert_eq!(parse_quantity_bytes("1Ki"), Ok(1024));
        assert_eq!(parse_quantity_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_quantity_bytes("2Ti"), Ok(2 << 40));
        assert_eq!(parse_quantity_bytes("1Pi"), Ok(1 << 50));
        assert_eq!(parse_quantity_bytes("7Ei"), Ok(7 << 60));
        assert_eq!(parse_quantity_bytes("1.5Gi"), Ok(1_610_612_736));
        assert_eq!(parse_quantity_bytes(".5Ki"), Ok(512));
    }

    #[test]
    fn decimal_suffixes_and_exponents() {
        assert_eq!(parse_quantity_bytes("1k"), Ok(1000));
        assert_eq!(parse_quantity_bytes("1M"), Ok(1_000_000));
        assert_eq!(parse_quantity_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_quantity_bytes("1T"), Ok(1_000_000_000_000));
        assert_eq!(parse_quantity_bytes("1P"), Ok(1_000_000_000_000_000));
        assert_eq!(parse_quantity_bytes("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(parse_quantity_bytes("1e3"), Ok(1000));
        assert_eq!(parse_quantity_bytes("1E3"), Ok(1000));
        assert_eq!(parse_quantity_bytes("12e+2"), Ok(1200));
        assert_eq!(parse_quantity_bytes("1200e-2"), Ok(12));
        assert_eq!(parse_quantity_bytes("128974848"), Ok(128_974_848));
        assert_eq!(parse_quantity_bytes("+5"), Ok(5));
        assert_eq!(parse_quantity_bytes(" 64Mi "), Ok(64 << 20));
    }

    #[test]
    fn fractions_round_up() {
        assert_eq!(parse_quantity_bytes("500m"), Ok(1));
        assert_eq!(parse_quantity_bytes("0.1"), Ok(1));
        assert_eq!(parse_quantity_bytes("1e-30"), Ok(1));
        assert_eq!(parse_quantity_bytes("1e-300"), Ok(1));
        assert_eq!(parse_quantity_bytes("0"), Ok(0));
        assert_eq!(parse_quantity_bytes("0.000"), Ok(0));
        assert_eq!(parse_quantity_bytes("-0"), Ok(0));
    }

    #[test]
    fn millis() {
        assert_eq!(parse_quantity_millis("500m"), Ok(500));
        assert_eq!(parse_quantity_millis("2"), Ok(2000));
        assert_eq!(parse_quantity_millis("0.25"), Ok(250));
        assert_eq!(parse_quantity_millis("1.0005"), Ok(1001));
        assert_eq!(parse_quantity_millis("100u"), Ok(1));
        assert_eq!(parse_quantity_millis("1k"), Ok(1_000_000));
    }

    #[test]
    fn errors_are_clear() {
        assert_eq!(parse_quantity_bytes(""), Err(QuantityError::Empty));
        assert_eq!(
            parse_quantity_bytes("Mi"),
            Err(QuantityError::InvalidNumber("Mi".into()))
        );
        assert_eq!(
            parse_quantity_bytes("."),
            Err(QuantityError::InvalidNumber(".".into()))
        );
        assert_eq!(
            parse_quantity_bytes("1MB"),
            Err(QuantityError::InvalidSuffix {
                quantity: "1MB".into(),
                suffix: "MB".into()
            })
        );
        assert!(matches!(
            parse_quantity_bytes("1e"),
            Err(QuantityError::InvalidSuffix { .. })
        ));
        assert!(matches!(
            parse_quantity_bytes("1e+"),
            Err(QuantityError::InvalidSuffix { .. })
        ));
        assert!(matches!(
            parse_quantity_bytes("1e1.5"),
            Err(QuantityError::InvalidSuffix { .. })
        ));
        assert!(matches!(
            parse_quantity_bytes("1.2.3"),
            Err(QuantityError::InvalidSuffix { .. })
        ));
        assert_eq!(
            parse_quantity_bytes("-1Gi"),
            Err(QuantityError::Negative("-1Gi".into()))
        );
        assert_eq!(
            parse_quantity_bytes("16Ei"),
            Err(QuantityError::OutOfRange("16Ei".into()))
        );
        assert_eq!(
            parse_quantity_bytes("1e100"),
            Err(QuantityError::OutOfRange("1e100".into()))
        );
        assert!(parse_quantity_bytes("1e9999999").is_err());
        let msg = parse_quantity_bytes("1MB").unwrap_err().to_string();
        assert!(msg.contains("\"MB\""), "{msg}");
    }

    #[test]
    fn compare() {
        assert_eq!(compare_quantities("1Gi", "1024Mi"), Ok(Ordering::Equal));
        assert_eq!(compare_quantities("1G", "1Gi"), Ok(Ordering::Less));
        assert_eq!(compare_quantities("500m", "1"), Ok(Ordering::Less));
        assert_eq!(compare_quantities("-1", "0"), Ok(Ordering::Less));
        assert_eq!(compare_quantities("-2", "-1"), Ok(Ordering::Less));
        assert_eq!(compare_quantities("1e30", "1Ei"), Ok(Ordering::Greater));
        assert_eq!(compare_quantities("0", "-0"), Ok(Ordering::Equal));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_bytes(268_435_456), "256Mi");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(1536 << 20), "1536Mi");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_bytes(0), "0");
        assert_eq!(format_millis(500), "500m");
        assert_eq!(format_millis(2000), "2");
        assert_eq!(quantity_from_bytes(2048), Quantity("2Ki".into()));
    }

    proptest! {
        #[test]
        fn format_parse_roundtrip(bytes in any::<u64>()) {
            prop_assert_eq!(parse_quantity_bytes(&format_bytes(bytes)), Ok(bytes));
        }

        #[test]
        fn millis_roundtrip(millis in any::<u64>()) {
            prop_assert_eq!(parse_quantity_millis(&format_millis(millis)), Ok(millis));
        }

        #[test]
        fn suffix_roundtrip(n in 0u64..1_000_000, idx in 0usize..12) {
            let (suffix, factor): (&str, u128) = [
                ("", 1), ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40), ("Pi", 1 << 50),
                ("k", 1_000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000),
                ("P", 1_000_000_000_000_000), ("e2", 100),
            ][idx];
            let expected = u64::try_from(u128::from(n) * factor);
            let parsed = parse_quantity_bytes(&format!("{n}{suffix}"));
            match expected {
                Ok(v) => prop_assert_eq!(parsed, Ok(v)),
                Err(_) => prop_assert!(matches!(parsed, Err(QuantityError::OutOfRange(_)))),
            }
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = parse_quantity_bytes(&s);
            let _ = parse_quantity_millis(&s);
            let _ = compare_quantities(&s, "1Gi");
        }

        #[test]
        fn parse_never_panics_on_quantity_like(s in "[+-]?[0-9]{0,45}(\\.[0-9]{0,45})?([KMGTPE]i?|[numk]|[eE][+-]?[0-9]{1,7})?") {
            let _ = parse_quantity_bytes(&s);
            let _ = parse_quantity_millis(&s);
            let _ = compare_quantities(&s, &s);
        }
    }
}
