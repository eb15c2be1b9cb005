//! Owns the human duration syntax of `reckon.yaml` ("30s", "5m", "1h30m", "250ms").
//!
//! Go's `time.ParseDuration` spelling without fractions or the µs/ns units: intervals and
//! timeouts below a millisecond mean nothing for a reconciler, and a fraction ("1.5h") is easy
//! to mistype. Serialisation writes the same syntax back so a loaded file round-trips.

use std::time::Duration;

/// Parses `"<n><unit>"` repeated, units `ms`, `s`, `m`, `h`, largest first, each at most once
/// (so "1h30m" but not "30m1h" or "1m1m", which are more likely mistakes than intent).
pub fn parse(text: &str) -> Result<Duration, String> {
    const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];
    let invalid =
        |why: &str| format!("invalid duration {text:?}: {why} (examples: 30s, 5m, 1h30m)");
    if text.is_empty() {
        return Err(invalid("empty"));
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    // Index into UNITS of the last unit seen: the next one must be strictly smaller.
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid("expected a number"));
        }
        let (number, tail) = rest.split_at(digits);
        let letters = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(letters);
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                invalid("missing unit")
            } else {
                invalid(&format!("unknown unit {unit:?}"))
            });
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err(invalid("units must appear once each, largest first"));
        }
        last_unit = Some(index);
        let value: u64 = number.parse().map_err(|_| invalid("number too large"))?;
        total_ms = value
            .checked_mul(UNITS[index].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| invalid("too large"))?;
        rest = tail;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration in the syntax `parse` reads, largest units first ("1h30m", "0s").
pub fn format(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// serde adapter: `#[serde(with = "duration")]`.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(de)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// serde adapter: `#[serde(with = "duration")]`.
pub fn serialize<S: serde::Serializer>(duration: &Duration, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&format(*duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_combined_units() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1m30s500ms"), Ok(Duration::from_millis(90_500)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed_input_with_the_reason() {
        for (text, why) in [
            ("", "empty"),
            ("5", "missing unit"),
            ("5x", "unknown unit \"x\""),
            ("5 m", "missing unit"),
            ("m", "expected a number"),
            ("-5s", "expected a number"),
            ("1.5h", "missing unit"),
            ("30m1h", "largest first"),
            ("1m1m", "largest first"),
            ("99999999999999999999s", "number too large"),
            ("9999999999999999h", "too large"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(err.contains(&format!("{text:?}")), "{err}");
        }
    }

    #[test]
    fn format_round_trips_through_parse() {
        for ms in [0u64, 1, 999, 1000, 61_000, 3_600_000, 5_400_250, 90_061_001] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
    }
}
