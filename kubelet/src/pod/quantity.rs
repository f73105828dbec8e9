//! Resource quantities (`"500m"`, `"128Mi"`, `"1e3"`) as exact numbers.
//!
//! Owns the parsing of the Kubernetes `Quantity` string format exactly as upstream's
//! `resource.ParseQuantity` accepts it, and the two readings the kubelet uses: `MilliValue`
//! (CPU) and `Value` (bytes), both rounded up like upstream. Never formats quantities back and
//! never interprets which resource a quantity belongs to.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Upstream `ErrFormatWrong`'s regular expression, quoted in format errors.
const FORMAT: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// Nano-units per unit: quantities are held as exact multiples of 10⁻⁹.
const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// A parsed quantity, exact to 10⁻⁹ (finer fractions round up, as upstream rounds up to its
/// nano scale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ParsedQuantity {
    nanos: i128,
}

/// Why a quantity string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string does not have the quantity shape.
    #[error("quantity {quantity:?}: quantities must match the regular expression '{FORMAT}'")]
    Format {
        /// The offending string.
        quantity: String,
    },
    /// The suffix is not a known SI, binary-SI or exponent suffix.
    #[error("quantity {quantity:?}: unable to parse quantity's suffix")]
    Suffix {
        /// The offending string.
        quantity: String,
    },
    /// The value does not fit the kubelet's range (about ±1.7·10²⁹).
    #[error("quantity {quantity:?}: value out of range")]
    Overflow {
        /// The offending string.
        quantity: String,
    },
}

impl ParsedQuantity {
    /// Zero.
    pub const ZERO: Self = Self { nanos: 0 };

    /// Parses a quantity string exactly as upstream `resource.ParseQuantity` does.
    ///
    /// # Errors
    /// [`QuantityError`] naming the string when its shape or suffix is wrong or it overflows.
    pub fn parse(quantity: &str) -> Result<Self, QuantityError> {
        let parts = split(quantity).ok_or_else(|| QuantityError::Format {
            quantity: quantity.to_owned(),
        })?;
        let (exponent10, exponent2) =
            interpret_suffix(parts.suffix).ok_or_else(|| QuantityError::Suffix {
                quantity: quantity.to_owned(),
            })?;
        let overflow = || QuantityError::Overflow {
            quantity: quantity.to_owned(),
        };
        let denominator = parts.denominator.trim_end_matches('0');
        let digits = format!("{}{}", parts.numerator, denominator);
        let digits = digits.trim_start_matches('0');
        let mut mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| overflow())?
        };
        mantissa = mantissa
            .checked_mul(1_i128.checked_shl(exponent2).ok_or_else(overflow)?)
            .ok_or_else(overflow)?;
        let denominator_len = i64::try_from(denominator.len()).map_err(|_| overflow())?;
        let power = i64::from(exponent10) - denominator_len + 9;
        let nanos = if mantissa == 0 {
            0
        } else if power >= 0 {
            let factor = u32::try_from(power)
                .ok()
                .and_then(|p| 10_i128.checked_pow(p))
                .ok_or_else(overflow)?;
            mantissa.checked_mul(factor).ok_or_else(overflow)?
        } else {
            match u32::try_from(-power)
                .ok()
                .and_then(|p| 10_i128.checked_pow(p))
            {
                Some(divisor) => div_ceil(mantissa, divisor),
                // Smaller than any nano-unit: a positive value rounds up to one.
                None => 1,
            }
        };
        Ok(Self {
            nanos: if parts.negative { -nanos } else { nanos },
        })
    }

    /// Parses an API [`Quantity`].
    ///
    /// # Errors
    /// As [`ParsedQuantity::parse`].
    pub fn from_quantity(quantity: &Quantity) -> Result<Self, QuantityError> {
        Self::parse(&quantity.0)
    }

    /// A whole number of units.
    #[must_use]
    pub fn from_units(units: i64) -> Self {
        Self {
            nanos: i128::from(units) * NANOS_PER_UNIT,
        }
    }

    /// A whole number of thousandths (millicores).
    #[must_use]
    pub fn from_millis(millis: i64) -> Self {
        Self {
            nanos: i128::from(millis) * 1_000_000,
        }
    }

    /// Upstream `MilliValue`: the value in thousandths, rounded up, saturating at `i64`.
    #[must_use]
    pub fn milli_value(self) -> i64 {
        saturate(div_ceil(self.nanos, 1_000_000))
    }

    /// Upstream `Value`: the value in units, rounded up, saturating at `i64`.
    #[must_use]
    pub fn value(self) -> i64 {
        saturate(div_ceil(self.nanos, NANOS_PER_UNIT))
    }

    /// Is this exactly zero?
    #[must_use]
    pub fn is_zero(self) -> bool {
        self.nanos == 0
    }

    /// Is this strictly greater than zero?
    #[must_use]
    pub fn is_positive(self) -> bool {
        self.nanos > 0
    }

    /// The sum, saturating.
    #[must_use]
    pub fn saturating_add(self, other: Self) -> Self {
        Self {
            nanos: self.nanos.saturating_add(other.nanos),
        }
    }
}

impl fmt::Display for ParsedQuantity {
    /// Nano-unit precision in plain decimal (`0.5`, `128`), for messages and tests.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let units = abs / 1_000_000_000;
        let fraction = abs % 1_000_000_000;
        if fraction == 0 {
            write!(f, "{sign}{units}")
        } else {
            let fraction = format!("{fraction:09}");
            write!(f, "{sign}{units}.{}", fraction.trim_end_matches('0'))
        }
    }
}

/// Reads `name` from a resource list (`requests`/`limits`).
///
/// # Errors
/// When the entry exists but is not a valid quantity.
pub fn lookup(
    list: Option<&BTreeMap<String, Quantity>>,
    name: &str,
) -> Result<Option<ParsedQuantity>, QuantityError> {
    list.and_then(|list| list.get(name))
        .map(ParsedQuantity::from_quantity)
        .transpose()
}

/// Reads `name` from a resource list, treating a missing or invalid entry as absent. For
/// decisions that cannot fail (QoS class, status); the API server validates quantities.
#[must_use]
pub fn lookup_lenient(
    list: Option<&BTreeMap<String, Quantity>>,
    name: &str,
) -> Option<ParsedQuantity> {
    lookup(list, name).ok().flatten()
}

fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// `ceil(a / b)` for `b > 0`.
fn div_ceil(a: i128, b: i128) -> i128 {
    -((-a).div_euclid(b))
}

struct Parts<'a> {
    negative: bool,
    numerator: &'a str,
    denominator: &'a str,
    suffix: &'a str,
}

/// Upstream `parseQuantityString`: sign, digits, optional `.digits`, then a suffix made of
/// `eEinumkKMGTP` letters, an optional sign and digits.
fn split(quantity: &str) -> Option<Parts<'_>> {
    let bytes = quantity.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let mut pos = 0;
    let mut negative = false;
    match bytes.first() {
        Some(b'-') => {
            negative = true;
            pos += 1;
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    let digits_end = |from: usize| {
        bytes[from..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .map_or(bytes.len(), |offset| from + offset)
    };
    let numerator_start = pos;
    pos = digits_end(pos);
    let numerator = &quantity[numerator_start..pos];
    let mut denominator = "";
    if bytes.get(pos) == Some(&b'.') {
        let start = pos + 1;
        pos = digits_end(start);
        denominator = &quantity[start..pos];
    }
    // Like upstream, a number without digits ("-", ".") is zero rather than an error.
    let suffix_start = pos;
    while pos < bytes.len() && b"eEinumkKMGTP".contains(&bytes[pos]) {
        pos += 1;
    }
    if matches!(bytes.get(pos), Some(b'-' | b'+')) {
        pos += 1;
    }
    if digits_end(pos) != bytes.len() {
        return None;
    }
    Some(Parts {
        negative,
        numerator,
        denominator,
        suffix: &quantity[suffix_start..],
    })
}

/// Upstream `suffixHandler.interpret`: decimal SI, binary SI, then `e`/`E` exponents.
/// Returns (power of ten, power of two).
fn interpret_suffix(suffix: &str) -> Option<(i32, u32)> {
    let decimal = match suffix {
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "" => Some(0),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(exponent) = decimal {
        return Some((exponent, 0));
    }
    let binary = match suffix {
        "Ki" => Some(10),
        "Mi" => Some(20),
        "Gi" => Some(30),
        "Ti" => Some(40),
        "Pi" => Some(50),
        "Ei" => Some(60),
        _ => None,
    };
    if let Some(exponent) = binary {
        return Some((0, exponent));
    }
    let exponent = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))?;
    if exponent.is_empty() {
        return None;
    }
    exponent.parse::<i32>().ok().map(|e| (e, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_read_as_millicores() {
        for (input, millis) in [
            ("500m", 500),
            ("1", 1000),
            ("0.5", 500),
            ("1.5", 1500),
            ("2.", 2000),
            (".25", 250),
            ("100m", 100),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("1k", 1_000_000),
            ("0", 0),
            ("000", 0),
            ("+2", 2000),
            ("-1", -1000),
            ("250000u", 250),
            ("1n", 1),
            ("0.0001", 1),
        ] {
            assert_eq!(
                ParsedQuantity::parse(input).map(ParsedQuantity::milli_value),
                Ok(millis),
                "{input}"
            );
        }
    }

    #[test]
    fn memory_quantities_read_as_bytes() {
        for (input, bytes) in [
            ("128Mi", 128 * 1024 * 1024),
            ("1Gi", 1 << 30),
            ("1G", 1_000_000_000),
            ("1e3", 1000),
            ("1.5Ki", 1536),
            ("0.5", 1),
            ("100m", 1),
            ("1Ei", 1 << 60),
            ("1E", 1_000_000_000_000_000_000),
            ("12e6", 12_000_000),
            ("1Ki", 1024),
            ("1k", 1000),
        ] {
            assert_eq!(
                ParsedQuantity::parse(input).map(ParsedQuantity::value),
                Ok(bytes),
                "{input}"
            );
        }
    }

    #[test]
    fn malformed_quantities_are_rejected_with_upstream_messages() {
        for input in ["", "abc", "1..5", "1 Gi", "--1", "1Mi5", "1e", "5%"] {
            assert!(ParsedQuantity::parse(input).is_err(), "{input}");
        }
        assert_eq!(
            ParsedQuantity::parse("1Gb").map_err(|e| e.to_string()),
            Err(
                "quantity \"1Gb\": quantities must match the regular expression \
                 '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                    .to_owned()
            )
        );
        assert_eq!(
            ParsedQuantity::parse("1KiB"),
            Err(QuantityError::Format {
                quantity: "1KiB".to_owned()
            })
        );
        assert_eq!(
            ParsedQuantity::parse("1kM"),
            Err(QuantityError::Suffix {
                quantity: "1kM".to_owned()
            })
        );
    }

    #[test]
    fn equal_values_in_different_spellings_compare_equal() {
        assert_eq!(ParsedQuantity::parse("1"), ParsedQuantity::parse("1000m"));
        assert_eq!(ParsedQuantity::parse("1Ki"), ParsedQuantity::parse("1024"));
        assert_eq!(ParsedQuantity::parse("1e3"), ParsedQuantity::parse("1k"));
        assert!(ParsedQuantity::parse("0.1").unwrap() < ParsedQuantity::parse("200m").unwrap());
    }

    #[test]
    fn empty_numbers_are_zero_like_upstream() {
        for input in [".", "-", "+", "0.", "-0"] {
            assert_eq!(
                ParsedQuantity::parse(input),
                Ok(ParsedQuantity::ZERO),
                "{input}"
            );
        }
    }

    #[test]
    fn display_prints_plain_decimal() {
        assert_eq!(ParsedQuantity::parse("500m").unwrap().to_string(), "0.5");
        assert_eq!(ParsedQuantity::parse("2Ki").unwrap().to_string(), "2048");
        assert_eq!(ParsedQuantity::parse("-1.5").unwrap().to_string(), "-1.5");
    }

    #[test]
    fn huge_values_overflow_instead_of_wrapping() {
        assert!(matches!(
            ParsedQuantity::parse("1e40"),
            Err(QuantityError::Overflow { .. })
        ));
        assert_eq!(
            ParsedQuantity::parse("1E18").unwrap().value(),
            1_000_000_000_000_000_000
        );
        assert_eq!(ParsedQuantity::parse("1e20").unwrap().value(), i64::MAX);
    }
}
