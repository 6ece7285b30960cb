//! When to try again and how long to wait: the retry policy, exponential backoff with jitter, and the
//! server's own instructions (`Retry-After`, the `ratelimit-*` headers).
//!
//! Everything here is a pure function of its inputs (the clock and the random number are passed in),
//! so it is tested without a server or a timer.
//!
//! Header formats:
//! - `Retry-After` (RFC 9110 §10.2.3): delay seconds, or an HTTP-date in any of the three forms
//!   recipients must accept (IMF-fixdate, RFC 850, asctime).
//! - `ratelimit-limit`, `ratelimit-remaining`, `ratelimit-reset`, `ratelimit-policy`: the headers the
//!   reference PDS and Bluesky's services send (draft-ietf-httpapi-ratelimit-headers). Bluesky sends
//!   `ratelimit-reset` as a unix time in seconds, the IETF draft as seconds from now; a value above
//!   1,000,000,000 is read as a unix time, anything smaller as a delay.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use butterfly_syntax::Datetime;
use reqwest::header::HeaderMap;

/// How a call is retried. `Default`: 4 attempts, backoff from 250 ms doubling up to 10 s, and at most
/// 60 s of waiting for a single `Retry-After` or rate-limit reset.
///
/// What is retried:
/// - Queries (GET) and procedures marked idempotent: transport failures (connect, reset, timeout),
///   5xx responses and 429.
/// - Other procedures (POST): only when the request cannot have had an effect. That is a failure to
///   connect (nothing was sent), a 429, and a 503 (the server declined the request). A timeout, a
///   reset after the request was sent, or another 5xx is ambiguous: the write may have happened. The
///   call fails and the caller decides (a retried `createRecord` without an rkey could create the
///   record twice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Requests per call, the first included. 1 turns retries off.
    pub max_attempts: u32,
    /// The backoff before the first retry; each later retry doubles it.
    pub initial_backoff: Duration,
    /// The backoff never grows beyond this.
    pub max_backoff: Duration,
    /// The longest the client waits when a server says when to come back (`Retry-After`, or
    /// `ratelimit-remaining: 0` with `ratelimit-reset`). A longer wait fails the call at once with
    /// [`Error::RateLimited`](crate::Error::RateLimited), which carries the wait.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            max_wait: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all: every failure is returned at once.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (1 for the first retry), given a random number.
    ///
    /// The exponential step is `initial_backoff * 2^(retry - 1)`, capped at `max_backoff`; the result is
    /// uniformly spread over the upper half of the step ("equal jitter"), so clients that failed
    /// together do not come back together, yet every wait is at least half the step.
    pub fn backoff(&self, retry: u32, random: u64) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        let step = self
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        let step_nanos = u64::try_from(step.as_nanos()).unwrap_or(u64::MAX);
        let half = step_nanos / 2;
        let spread = step_nanos - half;
        let jitter = if spread == 0 {
            0
        } else {
            random % (spread + 1)
        };
        Duration::from_nanos(half + jitter)
    }
}

/// A random number for [`RetryPolicy::backoff`]'s jitter, from the standard library's
/// per-process random hash keys: different on every call, not for cryptography.
pub fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// Reads a `Retry-After` value: delay seconds or an HTTP-date. A date in the past means no wait.
/// `None` for anything else.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        // Absurdly long numbers saturate; the caller's max_wait turns them into an error.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = parse_http_date(value)?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `Retry-After` header of a response, if present and readable.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now)
}

/// Parses an HTTP-date (RFC 9110 §5.6.7) in any of its three forms:
/// `Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94 08:49:37 GMT` and `Sun Nov  6 08:49:37 1994`.
/// The day name is not checked against the date. The calendar checks (a day that exists, an hour
/// below 24, no leap second) are [`Datetime::parse`]'s.
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = text.split_ascii_whitespace().collect();
    let (day, month, year, time) = match parts.as_slice() {
        [day_name, day, month, year, time, "GMT"] if day_name.ends_with(',') => {
            (*day, *month, parse_number(year, 4)?, *time)
        }
        [day_name, date, time, "GMT"] if day_name.ends_with(',') => {
            let mut fields = date.split('-');
            let (day, month, short_year) = (fields.next()?, fields.next()?, fields.next()?);
            if fields.next().is_some() {
                return None;
            }
            let short_year = parse_number(short_year, 2)?;
            // RFC 9110: a two-digit year more than 50 years ahead is in the past century; with no
            // clock here, 70 and later are 19xx (no HTTP-date predates 1970).
            let year = if short_year >= 70 {
                1900 + short_year
            } else {
                2000 + short_year
            };
            (day, month, year, *time)
        }
        [_day_name, month, day, time, year] => (*day, *month, parse_number(year, 4)?, *time),
        _ => return None,
    };
    let month = match month {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    if day.is_empty() || day.len() > 2 {
        return None;
    }
    let day = parse_number(day, day.len())?;
    let mut clock = time.split(':');
    let hour = parse_number(clock.next()?, 2)?;
    let minute = parse_number(clock.next()?, 2)?;
    let second = parse_number(clock.next()?, 2)?;
    if clock.next().is_some() {
        return None;
    }
    let rfc3339 = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z");
    let micros = Datetime::parse(&rfc3339).ok()?.timestamp_micros();
    // Before 1970 is `None`: no HTTP-date predates it.
    let seconds = u64::try_from(micros / 1_000_000).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// A number of exactly `digits` ASCII digits.
fn parse_number(text: &str, digits: usize) -> Option<u32> {
    if text.len() != digits || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// What a response's `ratelimit-*` headers say about the host's budget.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// `ratelimit-limit`: requests allowed in the window.
    pub limit: Option<u64>,
    /// `ratelimit-remaining`: requests left in the window.
    pub remaining: Option<u64>,
    /// `ratelimit-reset`, as an instant: when the window starts again.
    pub reset: Option<SystemTime>,
    /// `ratelimit-policy`, as sent (e.g. `3000;w=300`).
    pub policy: Option<String>,
}

/// A unix time in seconds, as opposed to a delay: anything after 2001-09-09.
const UNIX_TIME_THRESHOLD: u64 = 1_000_000_000;

impl RateLimitInfo {
    /// Reads the `ratelimit-*` headers; `None` when the response has none of them. Unreadable values
    /// are left out.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<RateLimitInfo> {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
        };
        let number = |name: &str| text(name).and_then(|value| value.parse::<u64>().ok());
        // A reset too far out for `SystemTime` is unreadable, like any other bad value.
        let reset = number("ratelimit-reset").and_then(|value| {
            let start = if value >= UNIX_TIME_THRESHOLD {
                UNIX_EPOCH
            } else {
                now
            };
            start.checked_add(Duration::from_secs(value))
        });
        let info = RateLimitInfo {
            limit: number("ratelimit-limit"),
            remaining: number("ratelimit-remaining"),
            reset,
            policy: text("ratelimit-policy").map(str::to_owned),
        };
        (info != RateLimitInfo::default()).then_some(info)
    }

    /// When the budget is used up (`remaining` is 0), how long until it resets. `None` while requests
    /// remain, when the reset time is unknown, or when it has already passed.
    pub fn exhausted_for(&self, now: SystemTime) -> Option<Duration> {
        if self.remaining != Some(0) {
            return None;
        }
        let wait = self.reset?.duration_since(now).ok()?;
        (!wait.is_zero()).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn at(unix_seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix_seconds)
    }

    #[test]
    fn backoff_stays_within_the_upper_half_of_each_step() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
        };
        let steps = [100, 200, 400, 800, 1000, 1000, 1000];
        for (index, step_ms) in steps.iter().enumerate() {
            let retry = index as u32 + 1;
            let step = Duration::from_millis(*step_ms);
            for random in [0, 1, 7, 12_345_678, u64::MAX / 3, u64::MAX] {
                let wait = policy.backoff(retry, random);
                assert!(
                    wait >= step / 2,
                    "retry {retry}: {wait:?} < half of {step:?}"
                );
                assert!(wait <= step, "retry {retry}: {wait:?} > {step:?}");
            }
            assert_eq!(policy.backoff(retry, 0), step / 2);
        }
        // Huge retry counts neither overflow nor exceed the cap.
        assert!(policy.backoff(u32::MAX, u64::MAX) <= Duration::from_secs(1));
        // Different random numbers give different waits.
        assert_ne!(policy.backoff(3, 1), policy.backoff(3, 987_654_321));
    }

    #[test]
    fn jitter_seeds_differ() {
        let seeds: std::collections::HashSet<u64> = (0..16).map(|_| jitter_seed()).collect();
        assert!(seeds.len() > 1);
    }

    fn check_retry_after(value: &str, expected: Option<Duration>) {
        let now = at(784_111_770); // Sun, 06 Nov 1994 08:49:30 GMT
        assert_eq!(parse_retry_after(value, now), expected, "{value:?}");
    }

    #[test]
    fn retry_after_seconds_dates_and_garbage() {
        check_retry_after("1", Some(Duration::from_secs(1)));
        check_retry_after(" 120 ", Some(Duration::from_secs(120)));
        check_retry_after("0", Some(Duration::ZERO));
        check_retry_after(
            "99999999999999999999999",
            Some(Duration::from_secs(u64::MAX)),
        );
        let seven = Some(Duration::from_secs(7));
        check_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", seven);
        check_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", seven);
        check_retry_after("Sun Nov  6 08:49:37 1994", seven);
        // In the past: no wait.
        check_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", Some(Duration::ZERO));
        for garbage in [
            "",
            "soon",
            "-1",
            "1.5",
            "0x10",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49 GMT",
        ] {
            check_retry_after(garbage, None);
        }
    }

    #[test]
    fn http_dates_match_known_unix_times() {
        for (text, unix) in [
            ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
            ("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_777),
            ("Tue, 29 Feb 2000 12:00:00 GMT", 951_825_600),
            ("Sat, 01 Jan 2000 00:00:00 GMT", 946_684_800),
            ("Wed, 21 Oct 2015 07:28:00 GMT", 1_445_412_480),
            ("Friday, 31-Dec-99 23:59:59 GMT", 946_684_799),
            ("Mon Jan  1 00:00:00 2024", 1_704_067_200),
        ] {
            assert_eq!(parse_http_date(text), Some(at(unix)), "{text}");
        }
        assert_eq!(parse_http_date("Thu, 29 Feb 2001 00:00:00 GMT"), None);
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                *name,
                HeaderValue::from_str(value).expect("test header is valid"),
            );
        }
        map
    }

    #[test]
    fn ratelimit_headers() {
        let now = at(1_700_000_000);
        let info = RateLimitInfo::from_headers(
            &headers(&[
                ("ratelimit-limit", "3000"),
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "1700000030"),
                ("ratelimit-policy", "3000;w=300"),
            ]),
            now,
        )
        .expect("headers present");
        assert_eq!(info.limit, Some(3000));
        assert_eq!(info.remaining, Some(0));
        assert_eq!(info.reset, Some(at(1_700_000_030)));
        assert_eq!(info.policy.as_deref(), Some("3000;w=300"));
        assert_eq!(info.exhausted_for(now), Some(Duration::from_secs(30)));

        // A small reset is a delay (the IETF draft's form).
        let info = RateLimitInfo::from_headers(
            &headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "12")]),
            now,
        )
        .expect("headers present");
        assert_eq!(info.exhausted_for(now), Some(Duration::from_secs(12)));

        // Budget left, reset passed, reset unknown: no wait.
        let left = RateLimitInfo::from_headers(
            &headers(&[
                ("ratelimit-remaining", "5"),
                ("ratelimit-reset", "1700000030"),
            ]),
            now,
        )
        .expect("headers present");
        assert_eq!(left.exhausted_for(now), None);
        let passed = RateLimitInfo::from_headers(
            &headers(&[
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "1699999990"),
            ]),
            now,
        )
        .expect("headers present");
        assert_eq!(passed.exhausted_for(now), None);
        let unknown = RateLimitInfo::from_headers(
            &headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "soon")]),
            now,
        )
        .expect("headers present");
        assert_eq!(unknown.reset, None);
        assert_eq!(unknown.exhausted_for(now), None);

        assert_eq!(
            RateLimitInfo::from_headers(&headers(&[("content-type", "a/b")]), now),
            None
        );

        // A reset beyond what the clock can represent is left out, not a panic.
        let far = RateLimitInfo::from_headers(
            &headers(&[
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "18446744073709551615"),
            ]),
            now,
        )
        .expect("headers present");
        assert_eq!(far.remaining, Some(0));
        assert_eq!(far.reset, None);
        assert_eq!(far.exhausted_for(now), None);
    }
}
