//! What the admin pages share: one HTML document around a page's body (the same head, style
//! sheet and self-refresh for every page), and how they write times.

use std::time::{Duration, SystemTime};

use maud::{html, Markup, PreEscaped, DOCTYPE};

/// Seconds between a page's refreshes.
pub const REFRESH_SECS: u64 = 5;

/// A whole page: `body` under a head titled `title`, with the shared style sheet and then
/// `style`, refreshing itself every [`REFRESH_SECS`].
pub fn document(title: &str, style: &'static str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(REFRESH_SECS);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) (PreEscaped(style)) }
            }
            body { (body) }
        }
    }
    .into_string()
}

/// The style sheet of the admin pages.
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin-bottom:1em}\
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
td.n{text-align:right}.up,.ready{color:#176f2c;font-weight:bold}\
.down,.stopping,.starting{color:#b3261e;font-weight:bold}\
.meta{color:#666}code{font-size:.9em}";

/// `t` as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(t: SystemTime) -> String {
    let at = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// How long before `now` the moment `then` was, in words.
pub fn ago(now: SystemTime, then: SystemTime) -> String {
    let d = now.duration_since(then).unwrap_or(Duration::ZERO).as_secs();
    match d {
        0..=59 => format!("{d} s ago"),
        60..=3599 => format!("{} min {} s ago", d / 60, d % 60),
        3600..=86_399 => format!("{} h {} min ago", d / 3600, d / 60 % 60),
        _ => format!("{} d {} h ago", d / 86_400, d / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_621_464_827);
        assert_eq!(utc(t), "2021-05-19 22:53:47 UTC");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc(leap), "2000-02-29 00:00:00 UTC");
    }
}
