//! Timestamp identifiers (TIDs) and a monotonic generator for them.

use crate::error::{char_at, string_traits, Error, ErrorKind};
use std::time::{SystemTime, UNIX_EPOCH};

/// The base32-sortable alphabet: ASCII order equals numeric order.
const ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

/// Length of a TID string.
pub const TID_LEN: usize = 13;

/// Largest timestamp a TID can hold: 53 bits of microseconds.
pub const MAX_TID_TIMESTAMP: u64 = (1 << 53) - 1;

/// Largest clock identifier a TID can hold: 10 bits.
pub const MAX_TID_CLOCK_ID: u16 = (1 << 10) - 1;

fn digit_value(b: u8) -> Option<u64> {
    match b {
        b'2'..=b'7' => Some(u64::from(b - b'2')),
        b'a'..=b'z' => Some(u64::from(b - b'a') + 6),
        _ => None,
    }
}

/// A TID, e.g. `3jzfcijpj2z2a`: a 64-bit integer (top bit 0, then 53 bits
/// of microseconds since the UNIX epoch, then a 10-bit clock identifier)
/// written as 13 characters of base32-sortable.
///
/// Spec: <https://atproto.com/specs/tid>. Build it with [`Tid::parse`],
/// [`Tid::from_parts`], [`Tid::from_u64`] or a [`TidClock`].
///
/// `Ord` is the string order, which is also numeric (and so time) order:
/// that is how TIDs compare (see [`Tid::compare`]).
///
/// Like the spec's syntax rule, `parse` accepts a first character up to `j`
/// (4 significant bits), so a parsed TID may have the 64th bit set even
/// though the spec says it is always 0; such a TID still round-trips through
/// [`Tid::as_u64`] and [`Tid::from_u64`], and its [`Tid::timestamp_micros`]
/// then has 54 bits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tid(String);

pub(crate) fn check(s: &str) -> Result<(), String> {
    let bytes = s.as_bytes();
    if let Some(i) = bytes.iter().position(|&b| digit_value(b).is_none()) {
        return Err(format!(
            "{:?} is not allowed (expected base32-sortable characters 234567a-z)",
            char_at(s, i)
        ));
    }
    if bytes.len() != TID_LEN {
        return Err(format!(
            "expected exactly {TID_LEN} characters, found {}",
            bytes.len()
        ));
    }
    if digit_value(bytes[0]).is_some_and(|v| v >= 16) {
        return Err(format!(
            "first character must be one of 234567abcdefghij (top bit 0), found {:?}",
            char::from(bytes[0])
        ));
    }
    Ok(())
}

fn encode(v: u64) -> String {
    (0..TID_LEN)
        .map(|i| {
            let shift = 60 - 5 * i;
            char::from(ALPHABET[((v >> shift) & 0x1f) as usize])
        })
        .collect()
}

impl Tid {
    /// Parses and validates a TID.
    pub fn parse(s: &str) -> Result<Self, Error> {
        check(s)
            .map(|()| Tid(s.to_owned()))
            .map_err(|reason| Error::new(ErrorKind::Tid, s, reason))
    }

    /// Builds a TID from a timestamp (microseconds since the UNIX epoch) and
    /// a clock identifier. Only the low 53 bits of the timestamp (enough
    /// until the year 2255) and the low 10 bits of the clock identifier are
    /// kept, as the format has no room for more.
    pub fn from_parts(timestamp_micros: u64, clock_id: u16) -> Tid {
        let v =
            ((timestamp_micros & MAX_TID_TIMESTAMP) << 10) | u64::from(clock_id & MAX_TID_CLOCK_ID);
        Tid(encode(v))
    }

    /// Builds a TID from its 64-bit integer form. Every `u64` has a
    /// 13-character form that passes [`Tid::parse`], so this cannot fail;
    /// TIDs made by [`Tid::from_parts`] and [`TidClock`] always have the top
    /// bit 0, as the spec asks.
    pub fn from_u64(v: u64) -> Tid {
        Tid(encode(v))
    }

    /// The 64-bit integer this TID encodes.
    pub fn as_u64(&self) -> u64 {
        self.0
            .bytes()
            .fold(0u64, |acc, b| (acc << 5) | digit_value(b).unwrap_or(0))
    }

    /// Microseconds since the UNIX epoch.
    pub fn timestamp_micros(&self) -> u64 {
        self.as_u64() >> 10
    }

    /// The 10-bit clock identifier.
    pub fn clock_id(&self) -> u16 {
        (self.as_u64() & u64::from(MAX_TID_CLOCK_ID)) as u16
    }

    /// The TID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares two TIDs: plain string order, which is also time order.
    pub fn compare(&self, other: &Tid) -> std::cmp::Ordering {
        self.cmp(other)
    }
}

string_traits!(Tid);

/// Hands out strictly increasing [`Tid`]s for one clock identifier.
///
/// Each TID is later than the previous one even when the time given goes
/// backwards or repeats: the timestamp is then bumped to one microsecond
/// past the last one. [`TidClock::now`] is the only place in this crate that
/// reads a clock; [`TidClock::next_at`] takes the time as an argument so it
/// can be tested and replayed.
#[derive(Clone, Debug)]
pub struct TidClock {
    clock_id: u16,
    last: Option<u64>,
}

impl TidClock {
    /// A new generator. Only the low 10 bits of `clock_id` are used.
    pub fn new(clock_id: u16) -> TidClock {
        TidClock {
            clock_id: clock_id & MAX_TID_CLOCK_ID,
            last: None,
        }
    }

    /// The clock identifier put in every TID.
    pub fn clock_id(&self) -> u16 {
        self.clock_id
    }

    /// The next TID for the time `now_micros` (microseconds since the UNIX
    /// epoch), strictly greater than every TID this generator returned
    /// before. Past the largest timestamp a TID can hold (year 2255) it
    /// keeps returning that largest timestamp.
    pub fn next_at(&mut self, now_micros: u64) -> Tid {
        let mut ts = now_micros.min(MAX_TID_TIMESTAMP);
        if let Some(last) = self.last {
            if ts <= last {
                ts = last.saturating_add(1).min(MAX_TID_TIMESTAMP);
            }
        }
        self.last = Some(ts);
        Tid::from_parts(ts, self.clock_id)
    }

    /// The next TID for the current system time. This reads
    /// [`SystemTime::now`]: it is the only function in this crate that reads
    /// a clock. A system time before 1970 counts as 0.
    pub fn now(&mut self) -> Tid {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.next_at(micros)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(s: &str, ok: bool) {
        assert_eq!(Tid::parse(s).is_ok(), ok, "{s:?}: {:?}", Tid::parse(s));
    }

    #[test]
    fn accepts_and_rejects() {
        check("3jzfcijpj2z2a", true);
        check("2222222222222", true);
        check("jzzzzzzzzzzzz", true);
        check("kzzzzzzzzzzzz", false);
        check("3jzfcijpj2z21", false);
        check("3JZFCIJPJ2Z2A", false);
        check("3jzfcijpj2z2", false);
        check("", false);
        check("3jzfcijpj2z2é", false);
    }

    #[test]
    fn round_trip_from_parts() {
        let t = Tid::from_parts(1_700_000_000_123_456, 42);
        assert_eq!(t.timestamp_micros(), 1_700_000_000_123_456);
        assert_eq!(t.clock_id(), 42);
        assert_eq!(Tid::parse(t.as_str()).unwrap(), t);
        assert_eq!(Tid::from_u64(t.as_u64()), t);
        let max = Tid::from_parts(MAX_TID_TIMESTAMP, MAX_TID_CLOCK_ID);
        assert_eq!(max.as_str(), "bzzzzzzzzzzzz");
        assert_eq!(max.as_u64(), u64::MAX >> 1);
        assert_eq!(Tid::from_parts(0, 0).as_str(), "2222222222222");
        // Masking: out-of-range parts are cut to 53 and 10 bits.
        assert_eq!(Tid::from_parts(u64::MAX, u16::MAX), max);
        // Every u64 encodes to something `parse` accepts.
        let all_ones = Tid::from_u64(u64::MAX);
        assert_eq!(all_ones.as_str(), "jzzzzzzzzzzzz");
        assert_eq!(Tid::parse("jzzzzzzzzzzzz").unwrap().as_u64(), u64::MAX);
    }

    #[test]
    fn known_value() {
        let t = Tid::parse("3jzfcijpj2z2a").unwrap();
        assert_eq!(Tid::from_u64(t.as_u64()), t);
        assert_eq!(Tid::from_parts(t.timestamp_micros(), t.clock_id()), t);
    }

    #[test]
    fn order_is_time_order() {
        let a = Tid::from_parts(1000, 1023);
        let b = Tid::from_parts(1001, 0);
        assert!(a < b);
        assert_eq!(a.compare(&b), std::cmp::Ordering::Less);
        assert!(a.as_u64() < b.as_u64());
    }

    #[test]
    fn clock_is_monotonic_when_time_goes_backwards() {
        let mut clock = TidClock::new(7);
        let a = clock.next_at(5_000_000);
        let b = clock.next_at(5_000_000);
        let c = clock.next_at(1_000);
        let d = clock.next_at(5_000_010);
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        assert_eq!(c.timestamp_micros(), 5_000_002);
        assert_eq!(d.timestamp_micros(), 5_000_010);
        assert!([&a, &b, &c, &d].iter().all(|t| t.clock_id() == 7));
    }

    #[test]
    fn clock_now_increases() {
        let mut clock = TidClock::new(1);
        let mut prev = clock.now();
        for _ in 0..1000 {
            let next = clock.now();
            assert!(next > prev);
            prev = next;
        }
    }
}
