//! Exact numbers of the wire protocol: client timestamps, time differences, radii and bounds.
//!
//! Every number a client sends is kept as the text it sent (to be echoed byte for byte) and
//! parsed into exact integers, never through a float: a timestamp has up to 19 significant
//! digits, which an `f64` cannot hold. Nothing here allocates except the formatting helpers.

use std::cmp::Ordering;
use std::fmt;

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// A POSIX time with nanosecond precision, compared exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Whole seconds since the epoch.
    pub secs: u64,
    /// Nanoseconds past `secs`, always below one second.
    pub nanos: u32,
}

impl Timestamp {
    /// Parses the protocol's timestamp: one or more ASCII digits, optionally a dot and 1 to 9
    /// digits. Seconds beyond `u64::MAX` are rejected as out of range.
    pub fn parse(text: &[u8]) -> Option<Timestamp> {
        let (whole, frac) = split_decimal(text)?;
        let secs = parse_u64(whole)?;
        let nanos = match frac {
            None => 0,
            Some(f) if f.len() <= 9 => {
                let mut n = 0u32;
                for &d in f {
                    n = n * 10 + u32::from(d - b'0');
                }
                n * 10u32.pow(9 - f.len() as u32)
            }
            Some(_) => return None,
        };
        Some(Timestamp { secs, nanos })
    }

    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }

    /// The time as signed nanoseconds since the epoch (exact: `i128` holds any `u64` seconds).
    pub fn as_nanos(self) -> i128 {
        i128::from(self.secs) * NANOS_PER_SEC + i128::from(self.nanos)
    }

    /// Whether this timestamp is more than `max_ahead_secs` ahead of `now`. A report stamped
    /// that far in the future would, under newest-wins, pin its client's location until that
    /// time, so an IAMAT that far ahead is invalid and a peer's AT line that far ahead is
    /// dropped. Exact: compared in integer nanoseconds, whatever the magnitudes.
    pub fn too_far_ahead(self, now: Timestamp, max_ahead_secs: u64) -> bool {
        self.as_nanos() - now.as_nanos() > i128::from(max_ahead_secs) * NANOS_PER_SEC
    }

    /// The inverse of [`Timestamp::as_nanos`], for values in range.
    pub fn from_nanos(nanos: i128) -> Option<Timestamp> {
        if nanos < 0 {
            return None;
        }
        let secs = u64::try_from(nanos / NANOS_PER_SEC).ok()?;
        Some(Timestamp {
            secs,
            nanos: (nanos % NANOS_PER_SEC) as u32,
        })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.secs, self.nanos)
    }
}

/// A signed difference of two times in nanoseconds, printed as the protocol wants it:
/// an explicit sign and exactly nine fractional digits (`+0.263873386`, `-12.000000000`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeDiff(pub i128);

impl TimeDiff {
    /// `later - earlier`, exactly.
    pub fn between(later: Timestamp, earlier: Timestamp) -> TimeDiff {
        TimeDiff(later.as_nanos() - earlier.as_nanos())
    }

    /// Parses the protocol's form: a mandatory sign, digits, a dot and exactly nine digits.
    pub fn parse(text: &[u8]) -> Option<TimeDiff> {
        let (negative, rest) = match text.split_first()? {
            (b'+', rest) => (false, rest),
            (b'-', rest) => (true, rest),
            _ => return None,
        };
        let (whole, frac) = split_decimal(rest)?;
        let frac = frac.filter(|f| f.len() == 9)?;
        let secs = i128::from(parse_u64(whole)?);
        let nanos = i128::from(parse_u64(frac)?);
        let magnitude = secs * NANOS_PER_SEC + nanos;
        Some(TimeDiff(if negative { -magnitude } else { magnitude }))
    }
}

impl fmt::Display for TimeDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { '-' } else { '+' };
        let abs = self.0.unsigned_abs();
        // Every difference between two 64-bit-second times but the most extreme fits 64 bits,
        // where division and printing are far cheaper than in 128.
        match u64::try_from(abs) {
            Ok(abs) => write!(
                f,
                "{sign}{}.{:09}",
                abs / 1_000_000_000,
                abs % 1_000_000_000
            ),
            Err(_) => write!(
                f,
                "{sign}{}.{:09}",
                abs / 1_000_000_000,
                abs % 1_000_000_000
            ),
        }
    }
}

/// Splits `digits[.digits]` into its whole and fractional digit runs. Both runs must be
/// non-empty ASCII digits; anything else (signs, exponents, a bare dot) is `None`.
pub(crate) fn split_decimal(text: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (whole, frac) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => (&text[..dot], Some(&text[dot + 1..])),
        None => (text, None),
    };
    let all_digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if !all_digits(whole) || frac.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    Some((whole, frac))
}

/// Parses ASCII digits (already checked) into a `u64`, `None` on overflow.
pub(crate) fn parse_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Compares a non-negative decimal (`whole[.frac]`, digits only) with the integer `limit`,
/// exactly, whatever the number of digits.
pub(crate) fn cmp_decimal(whole: &[u8], frac: Option<&[u8]>, limit: u64) -> Ordering {
    let significant = {
        let start = whole.iter().position(|&d| d != b'0').unwrap_or(whole.len());
        &whole[start..]
    };
    let limit_text = limit.to_string();
    let by_whole = significant
        .len()
        .cmp(&limit_text.len())
        .then_with(|| significant.cmp(limit_text.as_bytes()));
    match by_whole {
        Ordering::Equal if frac.is_some_and(|f| f.iter().any(|&d| d != b'0')) => Ordering::Greater,
        other => other,
    }
}

/// A WHATSAT radius in kilometres: greater than 0 and at most 50, kept exactly in metres
/// rounded down to the millimetre (finer than any provider can use).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Radius {
    /// The radius in millimetres, 1..=50_000_000.
    pub millimetres: u64,
}

impl Radius {
    /// The most a client may ask for, in kilometres.
    pub const MAX_KM: u64 = 50;

    /// Parses `digits[.digits]`, rejecting zero and anything above 50 km.
    pub fn parse(text: &[u8]) -> Option<Radius> {
        let (whole, frac) = split_decimal(text)?;
        if cmp_decimal(whole, frac, Self::MAX_KM) == Ordering::Greater {
            return None;
        }
        let is_zero = whole
            .iter()
            .chain(frac.unwrap_or_default())
            .all(|&d| d == b'0');
        if is_zero {
            return None;
        }
        let km = parse_u64(whole)?;
        let mut mm = km * 1_000_000;
        for (i, &d) in frac.unwrap_or_default().iter().take(6).enumerate() {
            mm += u64::from(d - b'0') * 10u64.pow(5 - i as u32);
        }
        // A radius such as 0.0000001 km is positive but below a millimetre: keep it positive.
        Some(Radius {
            millimetres: mm.max(1),
        })
    }

    /// The radius in metres, as providers take it.
    pub fn metres(self) -> f64 {
        self.millimetres as f64 / 1000.0
    }
}

/// A WHATSAT bound: the most results wanted, 1 to 20.
pub fn parse_bound(text: &[u8]) -> Option<usize> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if cmp_decimal(text, None, 20) == Ordering::Greater {
        return None;
    }
    let n = parse_u64(text)? as usize;
    (n >= 1).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_too_far_ahead_is_told_apart_exactly() {
        let now = Timestamp::parse(b"1700000000.5").unwrap();
        let at = |t: &[u8]| Timestamp::parse(t).unwrap();
        // Exactly at the bound is allowed; one nanosecond past it is not.
        assert!(!at(b"1700003600.5").too_far_ahead(now, 3600));
        assert!(at(b"1700003600.500000001").too_far_ahead(now, 3600));
        // The past, however far, is never "ahead".
        assert!(!at(b"0").too_far_ahead(now, 0));
        assert!(!now.too_far_ahead(now, 0));
        // The largest timestamp the grammar accepts, and a bound of u64::MAX seconds.
        let max = at(b"18446744073709551615.999999999");
        assert!(max.too_far_ahead(now, 3600));
        assert!(!max.too_far_ahead(now, u64::MAX));
    }

    #[test]
    fn timestamps_parse_exactly() {
        let t = Timestamp::parse(b"1621464827.959498503").unwrap();
        assert_eq!(
            t,
            Timestamp {
                secs: 1621464827,
                nanos: 959498503
            }
        );
        assert_eq!(
            Timestamp::parse(b"0").unwrap(),
            Timestamp { secs: 0, nanos: 0 }
        );
        assert_eq!(
            Timestamp::parse(b"12.5").unwrap(),
            Timestamp {
                secs: 12,
                nanos: 500_000_000
            }
        );
        assert_eq!(Timestamp::parse(b"007.000000001").unwrap().nanos, 1);
        assert_eq!(
            Timestamp::parse(b"18446744073709551615").unwrap().secs,
            u64::MAX
        );
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        for bad in [
            &b""[..],
            b".5",
            b"5.",
            b"-1",
            b"+1",
            b"1e9",
            b"nan",
            b"inf",
            b"1.1234567890",
            b"1..2",
            b"1.2.3",
            b"18446744073709551616",
            b"\xd9\xa1", // Arabic-Indic digit one: not an ASCII digit
        ] {
            assert_eq!(
                Timestamp::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn timestamps_order_by_seconds_then_nanoseconds() {
        let a = Timestamp::parse(b"1621464827.959498503").unwrap();
        let b = Timestamp::parse(b"1621464827.959498504").unwrap();
        let c = Timestamp::parse(b"1621464828").unwrap();
        assert!(a < b && b < c);
        assert_eq!(Timestamp::parse(b"5.1"), Timestamp::parse(b"5.100000000"));
    }

    #[test]
    fn time_differences_print_with_sign_and_nine_digits() {
        let t = Timestamp {
            secs: 1621464827,
            nanos: 959498503,
        };
        let later = Timestamp {
            secs: 1621464828,
            nanos: 223371889,
        };
        assert_eq!(TimeDiff::between(later, t).to_string(), "+0.263873386");
        assert_eq!(TimeDiff::between(t, later).to_string(), "-0.263873386");
        assert_eq!(TimeDiff(0).to_string(), "+0.000000000");
        assert_eq!(TimeDiff(-12_000_000_000).to_string(), "-12.000000000");
        assert_eq!(
            TimeDiff::parse(b"-12.000000000"),
            Some(TimeDiff(-12_000_000_000))
        );
        assert_eq!(
            TimeDiff::parse(b"+0.263873386"),
            Some(TimeDiff(263_873_386))
        );
        assert_eq!(TimeDiff::parse(b"0.263873386"), None);
        assert_eq!(TimeDiff::parse(b"+0.26387338"), None);
        // Both sides of the 64-bit boundary of the magnitude print the same way.
        let max = Timestamp {
            secs: u64::MAX,
            nanos: 999_999_999,
        };
        let extreme = TimeDiff::between(Timestamp::default(), max);
        assert_eq!(extreme.to_string(), "-18446744073709551615.999999999");
        assert_eq!(
            TimeDiff::parse(extreme.to_string().as_bytes()),
            Some(extreme)
        );
        let edge = TimeDiff(i128::from(u64::MAX));
        assert_eq!(edge.to_string(), "+18446744073.709551615");
        assert_eq!(TimeDiff(edge.0 + 1).to_string(), "+18446744073.709551616");
    }

    #[test]
    fn time_differences_are_exact_for_nineteen_digit_timestamps() {
        let client = Timestamp::parse(b"9999999999.999999999").unwrap();
        let server = Timestamp::parse(b"10000000000.000000001").unwrap();
        assert_eq!(
            TimeDiff::between(server, client).to_string(),
            "+0.000000002"
        );
    }

    #[test]
    fn radius_is_positive_and_at_most_fifty() {
        assert_eq!(Radius::parse(b"10").unwrap().millimetres, 10_000_000);
        assert_eq!(Radius::parse(b"50").unwrap().millimetres, 50_000_000);
        assert_eq!(Radius::parse(b"50.000").unwrap().millimetres, 50_000_000);
        assert_eq!(Radius::parse(b"0.5").unwrap().millimetres, 500_000);
        assert_eq!(Radius::parse(b"0.0000001").unwrap().millimetres, 1);
        assert_eq!(Radius::parse(b"0050").unwrap().millimetres, 50_000_000);
        for bad in [
            &b"0"[..],
            b"0.0",
            b"50.0000001",
            b"51",
            b"-1",
            b"+5",
            b"1e1",
            b".5",
            b"5.",
            b"",
        ] {
            assert_eq!(
                Radius::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(Radius::parse(&[b'9'; 40]), None);
    }

    #[test]
    fn bound_is_one_to_twenty() {
        assert_eq!(parse_bound(b"1"), Some(1));
        assert_eq!(parse_bound(b"20"), Some(20));
        assert_eq!(parse_bound(b"007"), Some(7));
        for bad in [
            &b"0"[..],
            b"21",
            b"-1",
            b"+1",
            b"1.0",
            b"",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_bound(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
