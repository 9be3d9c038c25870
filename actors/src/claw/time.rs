//! One time library for RFC 3339, durations, cron and time zones: every place that reads or
//! writes a time (the CLI, the fleet's `run_at`, later cron schedules with time zones) goes
//! through this module, and this module goes through [`jiff`]. Times are [`UnixMillis`].
//!
//! - [`parse_rfc3339`] / [`format_rfc3339`]: an RFC 3339 time to Unix milliseconds and back
//!   (`2024-05-01T12:00:00.123Z`).
//! - [`parse_duration`]: a friendly span such as `90s`, `10m`, `1h30m`, `1d`, `250ms`.
//! - [`resolve_when`]: what a user types for "when": `now`, `+<duration>` or an RFC 3339 time.
//! - [`TimeError`]: why a text was refused; it echoes at most a short prefix of the text.
//!
//! jiff is built with its bundled time zone database as a fallback (`tzdb-bundle-always`), so
//! zone-aware code needs nothing from the host: the system's `/usr/share/zoneinfo` is still
//! preferred where it exists.

use std::time::Duration;

use jiff::fmt::friendly::SpanParser;
use jiff::{Span, SpanRelativeTo, Timestamp};

use crate::UnixMillis;

/// At most this many characters of a refused text appear in a [`TimeError`], then `…`.
const EXCERPT_CHARS: usize = 64;

/// Longest duration text [`parse_duration`] reads, in bytes (`1 day, 2 hours, 30 minutes` is
/// 26); longer text is refused before it reaches jiff, whose messages may quote it.
const MAX_DURATION_LEN: usize = 64;

/// The shape of an RFC 3339 `date-time` before its fraction and offset: `d` is an ASCII digit,
/// `T` the date/time separator (`T`, `t` or a space).
const DATE_TIME_SHAPE: &[u8; 19] = b"dddd-dd-ddTdd:dd:dd";

/// The friendly-format span parser (`1h30m`, `2 hours 30 minutes`, `1d`).
static SPANS: SpanParser = SpanParser::new();

/// Why a time or duration text was refused. Each variant keeps the offending text as an
/// excerpt: at most 64 characters, then `…`, so a huge value never ends up in a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The text is empty or only white space.
    #[error("no {what} given")]
    Empty {
        /// What was expected: `time` or `duration`.
        what: &'static str,
    },
    /// The text is not shaped like an RFC 3339 time: `YYYY-MM-DDTHH:MM:SS`, an optional
    /// fraction, then `Z` or `±HH:MM` (hour at most 23).
    #[error("{input:?} is not an RFC 3339 time (like 2026-05-01T12:00:00Z)")]
    NotRfc3339 {
        /// An excerpt of the text.
        input: String,
    },
    /// The text is shaped like RFC 3339 but names no instant jiff can represent: a day the
    /// month lacks, hour 24, or a time outside years -9999..=9999 (jiff's range ends at
    /// `9999-12-30T22:00:00Z`).
    #[error("{input:?} is not a valid time: {reason}")]
    InvalidTime {
        /// An excerpt of the text.
        input: String,
        /// What jiff found wrong.
        reason: String,
    },
    /// The text is not a duration in jiff's friendly format.
    #[error("{input:?} is not a duration (like 90s, 10m, 1h30m, 1d): {reason}")]
    NotDuration {
        /// An excerpt of the text.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The duration uses months or years, which have no fixed length.
    #[error(
        "{input:?}: months and years have no fixed length; use weeks, days, hours, minutes or seconds"
    )]
    CalendarUnits {
        /// An excerpt of the text.
        input: String,
    },
    /// The duration is negative (`-1h`, `1h ago`); durations here only count forward.
    #[error("{input:?} is negative; only forward durations are allowed")]
    NegativeDuration {
        /// An excerpt of the text.
        input: String,
    },
    /// The resulting time overflows or lies outside the range an RFC 3339 time can carry.
    #[error("{input:?} is out of range")]
    OutOfRange {
        /// An excerpt of the text.
        input: String,
    },
}

/// At most [`EXCERPT_CHARS`] characters of `text`, then `…` if anything was cut.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Parse an RFC 3339 time into Unix milliseconds.
///
/// Accepted: `YYYY-MM-DD`, a `T`, `t` or space, `HH:MM:SS`, an optional fraction of any
/// number of digits (truncated to milliseconds, toward the past), then `Z`, `z` or a numeric
/// offset `±HH:MM` (hour at most 23). Surrounding white space is ignored. A leap second
/// (`23:59:60`) counts as `23:59:59`, keeping its fraction. Nothing else: no `2024-05-01`,
/// no `12:00Z` without seconds, no `+02` or `+0200`, no basic format, no `[Zone]`
/// annotation, no comma fraction (all of which jiff's own parser would take).
///
/// # Errors
/// [`TimeError::Empty`], [`TimeError::NotRfc3339`] for any other shape, and
/// [`TimeError::InvalidTime`] for a day the month lacks, an hour or minute out of range, or
/// a time outside jiff's range (years -9999..=9999, ending at `9999-12-30T22:00:00Z`).
/// Every time it returns, [`format_rfc3339`] can write.
pub fn parse_rfc3339(text: &str) -> Result<UnixMillis, TimeError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(TimeError::Empty { what: "time" });
    }
    let normalized = rfc3339_shape(text).ok_or_else(|| TimeError::NotRfc3339 {
        input: excerpt(text),
    })?;
    let invalid = |e: jiff::Error| TimeError::InvalidTime {
        input: excerpt(text),
        reason: e.to_string(),
    };
    // `normalized` is at most 29 ASCII bytes, so jiff's message cannot carry a huge value.
    let ms = normalized
        .parse::<Timestamp>()
        .map_err(invalid)?
        .as_millisecond();
    // jiff's parser reaches 999 ms further than `from_millisecond` does; refuse that last
    // second so every time parsed here can be formatted back.
    Timestamp::from_millisecond(ms).map_err(invalid)?;
    Ok(ms)
}

/// Check that `text` has the RFC 3339 `date-time` shape and return it with its fraction cut
/// to milliseconds, ready for jiff (which checks the calendar and converts). `None` if the
/// shape is wrong. Cutting the digits (rather than rounding the parsed instant) keeps times
/// before 1970 truncated toward the past: `1969-12-31T23:59:59.9995Z` is `-1`.
fn rfc3339_shape(text: &str) -> Option<String> {
    let head = text.as_bytes().get(..DATE_TIME_SHAPE.len())?;
    let shaped = head
        .iter()
        .zip(DATE_TIME_SHAPE)
        .all(|(&c, &want)| match want {
            b'd' => c.is_ascii_digit(),
            b'T' => matches!(c, b'T' | b't' | b' '),
            _ => c == want,
        });
    if !shaped {
        return None;
    }
    // The head is ASCII, so this slices at a character boundary.
    let (head, rest) = text.split_at(DATE_TIME_SHAPE.len());
    let (fraction, offset) = match rest.strip_prefix('.') {
        Some(digits_on) => {
            let digits = digits_on.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            (&digits_on[..digits.min(3)], &digits_on[digits..])
        }
        None => ("", rest),
    };
    let offset_ok = match offset.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            // Two ASCII digits compare like the numbers they spell.
            digits.iter().all(u8::is_ascii_digit) && [*h1, *h2] <= *b"23" && [*m1, *m2] <= *b"59"
        }
        _ => false,
    };
    if !offset_ok {
        return None;
    }
    let dot = if fraction.is_empty() { "" } else { "." };
    Some(format!("{head}{dot}{fraction}{offset}"))
}

/// Unix milliseconds as an RFC 3339 UTC time with exactly three fractional digits and `Z`:
/// `2024-05-01T12:00:00.123Z`.
///
/// Years before 0 print in the extended form `-000001-12-31T23:59:59.000Z` (not RFC 3339). A
/// value outside jiff's range (years -9999..=9999) prints as `<unix ms N: out of range>`
/// rather than a made-up date.
pub fn format_rfc3339(ms: UnixMillis) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => format!("<unix ms {ms}: out of range>"),
    }
}

/// Parse a non-negative duration in jiff's friendly format: `90s`, `10m`, `2h`, `1h30m`,
/// `1d`, `1d2h`, `1w`, `250ms`, `1.5h`, `1 hour 30 minutes`, `01:30:00`. A day is 24 hours
/// and a week 7 days. `0s` is a zero duration. Surrounding white space is ignored.
///
/// # Errors
/// [`TimeError::Empty`]; [`TimeError::NotDuration`] for anything jiff's friendly format
/// refuses (including ISO 8601 `PT1H`, a unit-less number, values too big for jiff's spans,
/// an explicit `+`, text over 64 bytes); [`TimeError::NegativeDuration`] for `-1h` or
/// `1h ago`; [`TimeError::CalendarUnits`] for months or years.
pub fn parse_duration(text: &str) -> Result<Duration, TimeError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(TimeError::Empty { what: "duration" });
    }
    let not_duration = |reason: String| TimeError::NotDuration {
        input: excerpt(text),
        reason,
    };
    if text.len() > MAX_DURATION_LEN {
        return Err(not_duration(format!(
            "longer than {MAX_DURATION_LEN} bytes"
        )));
    }
    if text.starts_with('+') {
        return Err(not_duration("a duration has no sign".to_owned()));
    }
    let span: Span = SPANS
        .parse_span(text)
        .map_err(|e| not_duration(e.to_string()))?;
    if span.is_negative() {
        return Err(TimeError::NegativeDuration {
            input: excerpt(text),
        });
    }
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(TimeError::CalendarUnits {
            input: excerpt(text),
        });
    }
    let signed = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|e| not_duration(e.to_string()))?;
    Duration::try_from(signed).map_err(|_| TimeError::NegativeDuration {
        input: excerpt(text),
    })
}

/// Resolve what a user typed for "when", relative to `now`:
///
/// - `now` or nothing (empty or white space): `None`, meaning "no explicit time". The caller
///   decides what that is; the CLI sends an empty `run_at`, so the *server's* clock picks the
///   moment (and a stage without a time follows the previous one). Use
///   `.unwrap_or(now)` where an instant is needed.
/// - `+<duration>`, any [`parse_duration`] form (`+90s`, `+10m`, `+1h30m`, `+1d`):
///   `Some(now + duration)`.
/// - anything else: an RFC 3339 time, `Some` of [`parse_rfc3339`].
///
/// # Errors
/// The errors of [`parse_duration`] and [`parse_rfc3339`], and [`TimeError::OutOfRange`] when
/// `now + duration` overflows or leaves the range [`format_rfc3339`] can write as a time.
pub fn resolve_when(text: &str, now: UnixMillis) -> Result<Option<UnixMillis>, TimeError> {
    let text = text.trim();
    if text.is_empty() || text == "now" {
        return Ok(None);
    }
    let Some(relative) = text.strip_prefix('+') else {
        return parse_rfc3339(text).map(Some);
    };
    let duration = parse_duration(relative)?;
    let out_of_range = || TimeError::OutOfRange {
        input: excerpt(text),
    };
    let at = i64::try_from(duration.as_millis())
        .ok()
        .and_then(|d| now.checked_add(d))
        .ok_or_else(out_of_range)?;
    Timestamp::from_millisecond(at).map_err(|_| out_of_range())?;
    Ok(Some(at))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    /// `2024-05-01T12:00:00Z`.
    const MAY_1: UnixMillis = 1_714_564_800_000;

    #[test]
    fn rfc3339_times_parse() {
        for (text, want) in [
            // The cases of the fleet's hand-written `parse_run_at` tests, same answers.
            ("1970-01-01T00:00:00Z", 0),
            ("2024-05-01T12:00:00.123Z", MAY_1 + 123),
            ("2024-05-01T14:00:00.123+02:00", MAY_1 + 123),
            ("2000-02-29T00:00:00.5Z", 951_782_400_500),
            ("1969-12-31T23:59:59.999Z", -1),
            // Separators, case, white space.
            ("2024-05-01t12:00:00z", MAY_1),
            ("2024-05-01 12:00:00Z", MAY_1),
            ("  2024-05-01T12:00:00Z\n", MAY_1),
            // Offsets.
            ("2024-05-01T12:00:00-00:00", MAY_1),
            ("2024-05-01T12:00:00+00:00", MAY_1),
            ("2024-05-01T06:30:00-05:30", MAY_1),
            ("2024-05-02T11:59:00+23:59", MAY_1),
            // Fractions: any number of digits, truncated to milliseconds toward the past.
            ("2024-05-01T12:00:00.12Z", MAY_1 + 120),
            ("2024-05-01T12:00:00.1239Z", MAY_1 + 123),
            ("2024-05-01T12:00:00.123999999999999Z", MAY_1 + 123),
            ("1969-12-31T23:59:59.9995Z", -1),
            ("1969-12-31T23:59:59.0001Z", -1_000),
            // A leap second counts as :59 and keeps its fraction.
            ("2016-12-31T23:59:60Z", 1_483_228_799_000),
            ("2016-12-31T23:59:60.5Z", 1_483_228_799_500),
            // The ends of the range.
            ("0000-01-01T00:00:00Z", -62_167_219_200_000),
            ("9999-12-30T22:00:00Z", 253_402_207_200_000),
        ] {
            assert_eq!(parse_rfc3339(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn bad_times_are_refused() {
        for bad in [
            // The cases of the fleet's hand-written `parse_run_at` tests.
            "",
            "tomorrow",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00+2:00",
            "2024-05-01T12:00:00Zjunk",
            "２024-05-01T12:00:00Z",
            // Out of range fields.
            "2024-04-31T00:00:00Z",
            "2024-05-00T00:00:00Z",
            "2024-05-01T12:60:00Z",
            "2024-05-01T12:00:61Z",
            "2024-05-01T12:00:00+24:00",
            "2024-05-01T12:00:00+02:60",
            // ISO 8601 / Temporal forms jiff itself would accept.
            "2024-05-01T12:00Z",
            "20240501T120000Z",
            "2024-05-01T12:00:00+02",
            "2024-05-01T12:00:00+0200",
            "2024-05-01T12:00:00+02:00:00",
            "2024-05-01T12:00:00,5Z",
            "2024-05-01T12:00:00Z[UTC]",
            "2024-05-01T12:00:00+02:00[Europe/Paris]",
            "+002024-05-01T12:00:00Z",
            "2024-05-01_12:00:00Z",
            // Past jiff's range.
            "9999-12-30T22:00:00.001Z",
            "9999-12-31T23:59:59Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn time_errors_say_what_went_wrong() {
        assert_eq!(parse_rfc3339(" "), Err(TimeError::Empty { what: "time" }));
        assert_eq!(
            parse_rfc3339("tomorrow"),
            Err(TimeError::NotRfc3339 {
                input: "tomorrow".into()
            })
        );
        let Err(TimeError::InvalidTime { input, reason }) = parse_rfc3339("2023-02-29T00:00:00Z")
        else {
            panic!("February 29 of 2023 is invalid");
        };
        assert_eq!(input, "2023-02-29T00:00:00Z");
        assert!(reason.contains("day"), "{reason}");
    }

    #[test]
    fn times_format_as_rfc3339_utc_with_milliseconds() {
        for (ms, want) in [
            // The cases of the CLI's hand-written `format_millis` test.
            (0, "1970-01-01T00:00:00.000Z"),
            (1_714_564_800_123, "2024-05-01T12:00:00.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (MAY_1 + 5, "2024-05-01T12:00:00.005Z"),
            (-62_167_219_200_000, "0000-01-01T00:00:00.000Z"),
            (253_402_207_200_000, "9999-12-30T22:00:00.000Z"),
            (
                253_402_207_200_001,
                "<unix ms 253402207200001: out of range>",
            ),
            (i64::MAX, "<unix ms 9223372036854775807: out of range>"),
        ] {
            assert_eq!(format_rfc3339(ms), want, "{ms}");
        }
    }

    #[test]
    fn formatted_times_parse_back() {
        for ms in [
            0,
            -1,
            1,
            MAY_1 + 999,
            951_782_400_000,
            -62_167_219_200_000,
            253_402_207_200_000,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Ok(ms), "{ms}");
        }
    }

    #[test]
    fn durations_parse() {
        let secs = Duration::from_secs;
        for (text, want) in [
            ("90s", secs(90)),
            ("10m", secs(600)),
            ("2h", secs(7_200)),
            ("1h30m", secs(5_400)),
            ("1d", secs(86_400)),
            ("1d2h", secs(93_600)),
            ("1w", secs(7 * 86_400)),
            ("250ms", Duration::from_millis(250)),
            ("1.5h", secs(5_400)),
            ("1h 30m", secs(5_400)),
            ("1 hour 30 minutes", secs(5_400)),
            ("2 days, 3 hours", secs(2 * 86_400 + 3 * 3_600)),
            ("01:30:00", secs(5_400)),
            ("05s", secs(5)),
            (" 10m\t", secs(600)),
            ("0s", Duration::ZERO),
            ("20000d", secs(20_000 * 86_400)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn bad_durations_are_refused() {
        let excerpt = |s: &str| s.to_owned();
        for (text, want) in [
            ("", TimeError::Empty { what: "duration" }),
            ("  ", TimeError::Empty { what: "duration" }),
            (
                "-1h",
                TimeError::NegativeDuration {
                    input: excerpt("-1h"),
                },
            ),
            (
                "1h ago",
                TimeError::NegativeDuration {
                    input: excerpt("1h ago"),
                },
            ),
            (
                "1mo",
                TimeError::CalendarUnits {
                    input: excerpt("1mo"),
                },
            ),
            (
                "1y2d",
                TimeError::CalendarUnits {
                    input: excerpt("1y2d"),
                },
            ),
        ] {
            assert_eq!(parse_duration(text), Err(want), "{text:?}");
        }
        for bad in [
            "xm",
            "5",
            "1h30",
            "+1h",
            "PT1H",
            "1 fortnight",
            "99999999999999999h",
            "2562047788015h",
            "7304485d",
            &"9".repeat(200),
        ] {
            assert!(
                matches!(parse_duration(bad), Err(TimeError::NotDuration { .. })),
                "{bad:?}: {:?}",
                parse_duration(bad)
            );
        }
    }

    #[test]
    fn when_resolves_now_relative_and_absolute() {
        for (text, want) in [
            ("now", None),
            ("", None),
            ("  now ", None),
            ("+90s", Some(MAY_1 + 90_000)),
            ("+10m", Some(MAY_1 + 600_000)),
            ("+2h", Some(MAY_1 + 7_200_000)),
            ("+1h30m", Some(MAY_1 + 5_400_000)),
            ("+1d", Some(MAY_1 + 86_400_000)),
            ("+1d2h", Some(MAY_1 + 93_600_000)),
            ("+250ms", Some(MAY_1 + 250)),
            ("+0s", Some(MAY_1)),
            ("2026-05-01T02:00:00Z", Some(1_777_600_800_000)),
            ("2024-05-01T14:00:00+02:00", Some(MAY_1)),
        ] {
            assert_eq!(resolve_when(text, MAY_1), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn bad_whens_are_refused() {
        for bad in [
            "+",
            "+xm",
            "+5",
            "+-5s",
            "++1h",
            "+1mo",
            "+99999999999999999h",
            "tomorrow",
            "Now",
            "2024-05-01",
        ] {
            assert!(resolve_when(bad, MAY_1).is_err(), "{bad:?}");
        }
        // Past the range an RFC 3339 time can carry, or past i64.
        let last = 253_402_207_200_000; // 9999-12-30T22:00:00Z
        assert_eq!(resolve_when("+1ms", last - 1), Ok(Some(last)));
        for now in [last, i64::MAX] {
            assert_eq!(
                resolve_when("+1ms", now),
                Err(TimeError::OutOfRange {
                    input: "+1ms".into()
                })
            );
        }
    }

    #[test]
    fn errors_echo_at_most_a_short_prefix() {
        let long = format!("{}{}", "é".repeat(64), "x".repeat(10_000));
        let cut = format!("{}…", "é".repeat(64));
        for result in [
            parse_rfc3339(&long).map(|_| ()),
            parse_duration(&long).map(|_| ()),
            resolve_when(&long, 0).map(|_| ()),
            resolve_when(&format!("+{long}"), 0).map(|_| ()),
            parse_rfc3339(&format!("2024-05-01T12:00:00.1{}Zx", "9".repeat(10_000))).map(|_| ()),
        ] {
            let message = result.unwrap_err().to_string();
            assert!(!message.contains('x'), "{message}");
            assert!(message.chars().count() < 400, "{message}");
        }
        assert_eq!(
            parse_rfc3339(&long),
            Err(TimeError::NotRfc3339 { input: cut })
        );
        assert_eq!(excerpt(&"a".repeat(64)), "a".repeat(64));
        assert_eq!(excerpt(&"a".repeat(65)), format!("{}…", "a".repeat(64)));
    }
}
