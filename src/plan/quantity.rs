//! Owns comparing Kubernetes resource quantities by value, because the API server rewrites them
//! into canonical form ("1024Mi" is stored as "1Gi", "0.5" as "500m") and a textual comparison
//! would report every such field as drift.

/// A quantity as `mantissa × 10^exp10 × 2^exp2`, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quantity {
    mantissa: i128,
    exp10: i32,
    exp2: u32,
}

/// Parses the Kubernetes quantity syntax: a signed decimal number and an optional suffix —
/// binary (`Ki` … `Ei`), decimal SI (`n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E`) or a decimal
/// exponent (`e3`, `E-2`).
fn parse(text: &str) -> Option<Quantity> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    // 30 digits keep every later scaling inside i128 for realistic quantities.
    if digits.len() > 30 {
        return None;
    }
    let mut mantissa: i128 = digits.parse().ok()?;
    if negative {
        mantissa = -mantissa;
    }
    let frac_len = i32::try_from(fraction.len()).ok()?;
    let (exp10, exp2) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        exponent => {
            let digits = exponent
                .strip_prefix('e')
                .or_else(|| exponent.strip_prefix('E'))?;
            let value: i32 = digits.parse().ok()?;
            if value.abs() > 40 {
                return None;
            }
            (value, 0)
        }
    };
    Some(Quantity {
        mantissa,
        exp10: exp10 - frac_len,
        exp2,
    })
}

/// `value × 10^up10 × 2^up2`, or `None` on overflow.
fn scale(value: i128, up10: u32, up2: u32) -> Option<i128> {
    let value = value.checked_mul(10i128.checked_pow(up10)?)?;
    value.checked_mul(2i128.checked_pow(up2)?)
}

/// Whether two quantity strings denote the same amount. `false` when either does not parse or
/// the comparison would overflow, so callers fall back to textual equality.
pub(super) fn equal(a: &str, b: &str) -> bool {
    let (Some(a), Some(b)) = (parse(a), parse(b)) else {
        return false;
    };
    // Bring both to the smaller exponents; only multiplications, so the comparison is exact.
    let exp10 = a.exp10.min(b.exp10);
    let exp2 = a.exp2.min(b.exp2);
    let left = scale(a.mantissa, (a.exp10 - exp10) as u32, a.exp2 - exp2);
    let right = scale(b.mantissa, (b.exp10 - exp10) as u32, b.exp2 - exp2);
    matches!((left, right), (Some(l), Some(r)) if l == r)
}

/// JSON pointer tokens under which values are quantities: container `resources.limits` /
/// `requests`, pod `overhead`, ResourceQuota `hard`, LimitRange limits, `emptyDir.sizeLimit`.
pub(super) fn is_quantity_field(pointer: &str) -> bool {
    let mut tokens = pointer.rsplit('/');
    let last = tokens.next().unwrap_or_default();
    let parent = tokens.next().unwrap_or_default();
    last == "sizeLimit"
        || matches!(
            parent,
            "limits"
                | "requests"
                | "overhead"
                | "hard"
                | "max"
                | "min"
                | "default"
                | "defaultRequest"
                | "maxLimitRequestRatio"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms_compare_equal() {
        for (a, b) in [
            ("1024Mi", "1Gi"),
            ("0.5", "500m"),
            ("0.25", "250m"),
            ("1", "1000m"),
            ("1k", "1000"),
            ("1e3", "1k"),
            ("1E-3", "1m"),
            ("1.5Gi", "1536Mi"),
            ("129M", "129e6"),
            ("+2", "2"),
            ("100M", "0.1G"),
            ("1Ki", "1024"),
            ("0", "0m"),
        ] {
            assert!(equal(a, b), "{a} == {b}");
            assert!(equal(b, a), "{b} == {a}");
        }
    }

    #[test]
    fn different_amounts_and_garbage_do_not() {
        for (a, b) in [
            ("1Gi", "1G"),
            ("500m", "0.49"),
            ("1", "-1"),
            ("1Mi", "1M"),
            ("abc", "abc"),
            ("", ""),
            (".", "0"),
            ("1..2", "12"),
            ("1x", "1"),
            ("1e999", "1e999"),
        ] {
            assert!(!equal(a, b), "{a} != {b}");
        }
    }

    #[test]
    fn quantity_fields_are_recognised_by_position() {
        for pointer in [
            "/spec/template/spec/containers/0/resources/limits/cpu",
            "/spec/template/spec/containers/0/resources/requests/memory",
            "/spec/hard/requests.cpu",
            "/spec/limits/0/max/memory",
            "/spec/template/spec/volumes/0/emptyDir/sizeLimit",
            "/spec/overhead/cpu",
        ] {
            assert!(is_quantity_field(pointer), "{pointer}");
        }
        for pointer in [
            "/data/limits",
            "/spec/replicas",
            "/data/cpu",
            "/spec/limits",
        ] {
            assert!(!is_quantity_field(pointer), "{pointer}");
        }
    }
}
