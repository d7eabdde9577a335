//! Durations and numbers for people: parsing durations with a unit (`40ms`, `5s`, `2m`, `1h`)
//! and formatting latencies, elapsed times and counts. A leaf: it imports nothing of the crate.

use std::time::Duration;

/// Parses a duration with a unit: `us` (or `µs`), `ms`, `s`, `m` (or `min`), `h`; a bare `0`
/// is zero. The error says what was wrong and what would be accepted.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let value: f64 = num.parse().map_err(|_| {
        format!("bad duration '{text}'; expected a number and a unit, such as 40ms, 5s, 2m, 1h")
    })?;
    let scale = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "bad duration '{text}': unknown unit '{unit}'; expected us, ms, s, m or h"
            ))
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("bad duration '{text}': too large"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A latency for people: µs, ms or s.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us}µs"),
        1_000..=999_999 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// Elapsed seconds for people: `12.3s`, `4m05s`, `27h46m`.
pub(crate) fn fmt_secs(us: u64) -> String {
    let s = us / 1_000_000;
    if s < 60 {
        format!("{:.1}s", us as f64 / 1e6)
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    }
}

/// A count that fits a narrow column: `999`, `12.3k`, `1.00M`.
pub(crate) fn fmt_count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_units() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration(" 1.5s "), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5").unwrap_err().contains("unknown unit ''"));
        assert!(parse_duration("5 parsecs")
            .unwrap_err()
            .contains("expected us, ms"));
        assert!(parse_duration("ms").unwrap_err().contains("such as 40ms"));
        assert!(parse_duration("99999999999h")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn numbers_format_for_narrow_columns() {
        assert_eq!(fmt_us(999), "999µs");
        assert_eq!(fmt_us(1_500), "1.5ms");
        assert_eq!(fmt_us(2_340_000), "2.34s");
        assert_eq!(fmt_secs(12_300_000), "12.3s");
        assert_eq!(fmt_secs(245_000_000), "4m05s");
        assert_eq!(fmt_secs(100_000_000_000), "27h46m");
        assert_eq!(fmt_count(9_999), "9999");
        assert_eq!(fmt_count(12_345), "12.3k");
        assert_eq!(fmt_count(1_000_000), "1.00M");
    }
}

#[cfg(test)]
mod proptests {
    //! Property tests of durations: no text panics the parser, whole numbers with a unit parse
    //! exactly, and the formatters take any count.

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in any::<String>()) {
            if let Ok(d) = parse_duration(&text) {
                prop_assert!(d <= Duration::from_secs(1_000_000_000));
            }
        }

        #[test]
        fn whole_numbers_parse_exactly(n in 0u64..=1_000_000, unit in 0usize..5) {
            let (name, one) = [
                ("us", Duration::from_micros(1)),
                ("ms", Duration::from_millis(1)),
                ("s", Duration::from_secs(1)),
                ("m", Duration::from_secs(60)),
                ("h", Duration::from_secs(3600)),
            ][unit];
            let parsed = parse_duration(&format!("{n}{name}"));
            match one * n as u32 {
                d if d > Duration::from_secs(1_000_000_000) => prop_assert!(parsed.is_err()),
                d => prop_assert_eq!(parsed, Ok(d)),
            }
        }

        #[test]
        fn numbers_past_a_billion_seconds_are_refused(n in 1_000_000_001u64..) {
            let err = parse_duration(&format!("{n}s")).unwrap_err();
            prop_assert!(err.contains("too large"), "{}", err);
        }

        #[test]
        fn formatting_takes_any_count(n in any::<u64>()) {
            prop_assert!(!fmt_us(n).is_empty());
            prop_assert!(!fmt_secs(n).is_empty());
            prop_assert!(!fmt_count(n).is_empty());
        }
    }
}
