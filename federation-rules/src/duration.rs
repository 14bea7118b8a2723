//! Durations as written in fedbroker configuration: `90s`, `15m`, `1h`, `1h30m`, `2d`.
//!
//! Deliberately small: whole numbers followed by one of the units `s`, `m`, `h`, `d`,
//! each unit at most once, largest first, optionally separated by spaces. A bare number
//! is rejected because `900` could mean seconds or minutes depending on who reads it.

/// Why [`parse_duration`] refused its input. Displays as the message the broker and the
/// provider show: `invalid duration `<input>`: <problem> (write e.g. ...)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {problem} (write e.g. `90s`, `15m`, `1h` or `1h30m`; units s, m, h, d)")]
pub struct DurationError {
    /// The text as given (untrimmed).
    pub input: String,
    pub problem: DurationProblem,
}

/// What is wrong with a duration's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationProblem {
    #[error("it is empty")]
    Empty,
    #[error("expected a whole number")]
    ExpectedNumber,
    #[error("number too large")]
    NumberTooLarge,
    #[error("missing unit after the number")]
    MissingUnit,
    #[error("unexpected `{0}`")]
    Unexpected(char),
    #[error("unknown unit `{0}`")]
    UnknownUnit(String),
    #[error("units must appear once each, largest first")]
    UnitOrder,
    #[error("too large")]
    TooLarge,
}

/// Parses a duration such as `90s`, `15m`, `1h` or `1h30m` into whole seconds.
///
/// Zero (`0s`) is accepted here; callers that need a positive value (a token lifetime)
/// check that themselves. The error names the input.
pub fn parse_duration(input: &str) -> Result<u64, DurationError> {
    let text = input.trim();
    let bad = |problem: DurationProblem| {
        Err(DurationError {
            input: input.to_owned(),
            problem,
        })
    };
    if text.is_empty() {
        return bad(DurationProblem::Empty);
    }

    let mut total: u64 = 0;
    // Rank of the last unit seen, to enforce "largest first, each once".
    let mut last_rank: Option<u8> = None;
    let mut rest = text;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits_len == 0 {
            return bad(DurationProblem::ExpectedNumber);
        }
        let (digits, after) = rest.split_at(digits_len);
        let Ok(number) = digits.parse::<u64>() else {
            return bad(DurationProblem::NumberTooLarge);
        };
        let unit_len = after
            .char_indices()
            .find(|(_, c)| !c.is_alphabetic())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after_unit) = after.split_at(unit_len);
        let (seconds_per_unit, rank) = match unit {
            "d" => (86_400u64, 3u8),
            "h" => (3_600, 2),
            "m" => (60, 1),
            "s" => (1, 0),
            "" => match after.chars().next() {
                None => return bad(DurationProblem::MissingUnit),
                Some(c) if c.is_whitespace() => return bad(DurationProblem::MissingUnit),
                Some(c) => return bad(DurationProblem::Unexpected(c)),
            },
            other => return bad(DurationProblem::UnknownUnit(other.to_owned())),
        };
        if let Some(previous) = last_rank
            && rank >= previous
        {
            return bad(DurationProblem::UnitOrder);
        }
        last_rank = Some(rank);
        let Some(total_next) = number
            .checked_mul(seconds_per_unit)
            .and_then(|seconds| total.checked_add(seconds))
        else {
            return bad(DurationProblem::TooLarge);
        };
        total = total_next;
        rest = after_unit;
    }
    Ok(total)
}

/// Writes whole seconds the way [`parse_duration`] reads them: `900` → `15m`,
/// `5400` → `1h30m`, `0` → `0s`.
pub fn format_duration(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = seconds;
    for (unit, size) in [('d', 86_400u64), ('h', 3_600), ('m', 60), ('s', 1)] {
        let count = rest / size;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push(unit);
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{format_duration, parse_duration};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn format_then_parse_round_trips(seconds in 0u64..10_000_000_000) {
            prop_assert_eq!(parse_duration(&format_duration(seconds)), Ok(seconds));
        }
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(90), "1m30s");
        assert_eq!(format_duration(900), "15m");
        assert_eq!(format_duration(5400), "1h30m");
        assert_eq!(format_duration(86_401), "1d1s");
    }

    #[test]
    fn parses_valid_durations() {
        let cases: &[(&str, u64)] = &[
            ("90s", 90),
            ("15m", 900),
            ("1h", 3600),
            ("1h30m", 5400),
            ("1h 30m", 5400),
            ("2d", 172_800),
            ("1d2h3m4s", 93_784),
            ("0s", 0),
            (" 5m ", 300),
            ("0090s", 90),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn rejects_invalid_durations() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("   ", "empty"),
            ("900", "missing unit"),
            ("15", "missing unit"),
            ("m", "expected a whole number"),
            ("-5m", "expected a whole number"),
            ("1.5h", "unexpected `.`"),
            ("10ms", "unknown unit `ms`"),
            ("5x", "unknown unit `x`"),
            ("30m1h", "largest first"),
            ("1h1h", "once each"),
            ("1hour", "unknown unit `hour`"),
            ("99999999999999999999s", "too large"),
            ("999999999999999999d", "too large"),
            ("1h 30", "missing unit"),
        ];
        for (input, want) in cases {
            let err = parse_duration(input).expect_err(input).to_string();
            assert!(err.contains(want), "input {input:?}: {err}");
            assert!(err.contains("invalid duration"), "input {input:?}: {err}");
        }
    }
}
