//! Time formats, from the `jiff` crate: RFC 3339 timestamps (session events, egress logs),
//! the compact UTC stamp that starts a session id, and the dates providers send in
//! `Retry-After` (HTTP-date) and rate-limit reset headers (RFC 3339).

use std::time::{SystemTime, UNIX_EPOCH};

use jiff::fmt::rfc2822::DateTimeParser;
use jiff::Timestamp;

/// Milliseconds since the epoch as a [`Timestamp`]; times past jiff's range (the year 9999)
/// are shown as its last instant.
fn from_unix_ms(unix_ms: u64) -> Timestamp {
    i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(Timestamp::MAX)
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Formats milliseconds since the epoch as RFC 3339 UTC: `2026-11-26T21:45:01.123Z`.
pub fn format_timestamp(unix_ms: u64) -> String {
    format!("{:.3}", from_unix_ms(unix_ms))
}

/// The current time as an event timestamp (RFC 3339, UTC, milliseconds).
pub fn timestamp_now() -> String {
    format_timestamp(unix_ms_now())
}

/// Whole seconds since the epoch as RFC 3339 UTC: `2026-11-26T21:45:01Z`.
pub fn format_rfc3339_secs(unix_secs: u64) -> String {
    format!("{:.0}", from_unix_ms(unix_secs.saturating_mul(1000)))
}

/// Milliseconds since the epoch as a compact UTC stamp that sorts by time:
/// `20261126T214501Z` (the start of a session id).
pub fn compact_utc(unix_ms: u64) -> String {
    from_unix_ms(unix_ms).strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// An HTTP-date in the IMF-fixdate form (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110); the
/// weekday is not checked against the date. The obsolete RFC 850 and asctime forms are not
/// accepted.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    static PARSER: DateTimeParser = DateTimeParser::new().relaxed_weekday(true);
    let ts = PARSER.parse_timestamp(s.trim()).ok()?;
    SystemTime::try_from(ts).ok()
}

/// An RFC 3339 timestamp (`2024-05-01T12:00:30Z`; fractions and offsets accepted).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let ts: Timestamp = s.trim().parse().ok()?;
    SystemTime::try_from(ts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_timestamp(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            format_timestamp(1_795_729_501_007),
            "2026-11-26T21:45:01.007Z"
        );
        assert_eq!(format_rfc3339_secs(1_795_729_501), "2026-11-26T21:45:01Z");
        assert_eq!(compact_utc(1_795_729_501_007), "20261126T214501Z");
        // Past the year 9999: the last instant jiff knows, never a panic.
        assert!(format_timestamp(u64::MAX).starts_with("9999-12-"));
        assert!(timestamp_now().ends_with('Z'));
    }

    #[test]
    fn dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(
            parse_rfc3339("1994-11-06T08:49:37.5Z"),
            Some(UNIX_EPOCH + Duration::from_millis(784_111_777_500))
        );
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_rfc3339("1994-13-06T08:49:37Z"), None);
    }

    #[test]
    fn dates_in_the_forms_providers_send() {
        // `UTC` for `GMT`, a wrong weekday: accepted, as before.
        assert_eq!(
            parse_http_date("Mon, 06 Nov 1994 08:49:37 UTC"),
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(
            parse_rfc3339("1994-11-06T08:49:37+00:00"),
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(
            parse_rfc3339("1994-11-06T09:49:37+01:00"),
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(
            parse_rfc3339(" 1994-11-06T08:49:37z "),
            parse_rfc3339("1994-11-06T08:49:37Z")
        );
        for bad in [
            "",
            "soon",
            "1994-11-06",
            "1994-11-06T08:49:37",
            "Sun, 06 Nov 1994",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }
}
