//! ISO 6709 locations as clients write them: `+34.068930-118.445127`.
//!
//! Latitude then longitude, each with an explicit sign, back to back. Each number is digits
//! optionally followed by a dot and digits. Ranges are checked on the text, exactly, so
//! `+90.0000000000000000001` is refused even though it rounds to 90 as a float.

use std::cmp::Ordering;

use super::number::{cmp_decimal, split_decimal};

/// A parsed location, in decimal degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Location {
    /// Degrees north, -90..=90.
    pub latitude: f64,
    /// Degrees east, -180..=180.
    pub longitude: f64,
}

impl Location {
    /// Parses a location, or `None` for anything malformed or out of range.
    pub fn parse(text: &[u8]) -> Option<Location> {
        let first = *text.first()?;
        if first != b'+' && first != b'-' {
            return None;
        }
        // The longitude's sign is the first sign after the latitude's.
        let split = 1 + text[1..].iter().position(|&b| b == b'+' || b == b'-')?;
        let latitude = signed_degrees(&text[..split], 90)?;
        let longitude = signed_degrees(&text[split..], 180)?;
        Some(Location {
            latitude,
            longitude,
        })
    }
}

fn signed_degrees(text: &[u8], limit: u64) -> Option<f64> {
    let (sign, digits) = text.split_first()?;
    let (whole, frac) = split_decimal(digits)?;
    if cmp_decimal(whole, frac, limit) == Ordering::Greater {
        return None;
    }
    // Digits and one dot only, so this is valid UTF-8 and a valid float.
    let magnitude: f64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(if *sign == b'-' { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<(f64, f64)> {
        Location::parse(s.as_bytes()).map(|l| (l.latitude, l.longitude))
    }

    #[test]
    fn parses_signed_pairs() {
        assert_eq!(
            parse("+34.068930-118.445127"),
            Some((34.06893, -118.445127))
        );
        assert_eq!(parse("-33.8688+151.2093"), Some((-33.8688, 151.2093)));
        assert_eq!(parse("+34-118"), Some((34.0, -118.0)));
        assert_eq!(parse("+90+180"), Some((90.0, 180.0)));
        assert_eq!(parse("-90.000-180.0"), Some((-90.0, -180.0)));
        assert_eq!(parse("+0+0"), Some((0.0, 0.0)));
        assert_eq!(parse("+0090.0-0180"), Some((90.0, -180.0)));
    }

    #[test]
    fn refuses_malformed_or_out_of_range() {
        for bad in [
            "",
            "+",
            "34.068930-118.445127",
            "+34.068930",
            "+34.-118",
            "+34-118.",
            "+.5-118",
            "+34--118",
            "+34-118-1",
            "+34+-118",
            "+90.0000001+0",
            "+90.0000000000000000001+0",
            "+91+0",
            "+0+180.000001",
            "+0-181",
            "+1e1+0",
            "+nan+0",
            "+34,5-118",
            "+34.068930-118.445127x",
            "+ 34-118",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
