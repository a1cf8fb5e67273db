//! Wall-clock timestamps for the spool, state and logs: RFC 3339 UTC text, without a date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64
}

/// Milliseconds since the epoch for a TOML datetime (as `rfc3339` writes, or any full one).
pub fn from_datetime(dt: &toml::value::Datetime) -> Option<u64> {
    let date = dt.date?;
    let time = dt.time.unwrap_or(toml::value::Time { hour: 0, minute: 0, second: 0, nanosecond: 0 });
    let offset_min: i64 = match dt.offset {
        None | Some(toml::value::Offset::Z) => 0,
        Some(toml::value::Offset::Custom { minutes }) => minutes as i64,
    };
    let days = days_from_civil(date.year as i64, date.month as i64, date.day as i64);
    let secs = days * 86_400 + time.hour as i64 * 3600 + time.minute as i64 * 60 + time.second as i64 - offset_min * 60;
    (secs >= 0).then(|| secs as u64 * 1000 + (time.nanosecond / 1_000_000) as u64)
}

/// `2026-11-21T23:46:48.123Z`: fixed width, always with milliseconds (TOML and JSON datetimes).
pub fn rfc3339(ms: u64) -> String {
    // Digits written by hand: `record` renders two of these per pending intent, and format!'s
    // padding machinery made them a sixth of its CPU time.
    let (y, mo, d, h, mi, s) = civil(ms / 1000);
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, (y as u64).min(9999));
    put(5, 2, mo as u64);
    put(8, 2, d as u64);
    put(11, 2, h as u64);
    put(14, 2, mi as u64);
    put(17, 2, s as u64);
    put(20, 3, ms % 1000);
    String::from_utf8(b.to_vec()).expect("ASCII digits")
}

/// Reads back exactly what `rfc3339` writes.
pub fn parse_rfc3339_ms(v: &str) -> Option<u64> {
    let b = v.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = &v[r];
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    let (y, mo, d, h, mi, s, ms) =
        (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
    (secs >= 0).then(|| secs as u64 * 1000 + ms as u64)
}

/// `20261121T234648.123Z`: a timestamp usable in file names (run ids, corrupt-file suffixes).
pub fn compact(ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms / 1000);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.{:03}Z", ms % 1000)
}

/// `2026-11-21 23:46:48`: a timestamp for people.
pub fn human(ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms / 1000);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// (year, month, day, hour, minute, second) in UTC; Howard Hinnant's civil-from-days.
fn civil(secs: u64) -> (i64, i64, i64, i64, i64, i64) {
    let days = (secs / 86_400) as i64;
    let rem = (secs % 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(human(0), "1970-01-01 00:00:00");
        assert_eq!(human(1_709_251_199_000), "2024-02-29 23:59:59");
        assert_eq!(compact(1_795_219_200_123), "20261121T000000.123Z");
        assert_eq!(rfc3339(1_795_219_200_123), "2026-11-21T00:00:00.123Z");
    }

    #[test]
    fn datetime_round_trips() {
        for ms in [0, 1, 10, 951_782_400_000, 1_795_219_200_123, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339_ms(&rfc3339(ms)), Some(ms));
            let as_toml: toml::value::Datetime = rfc3339(ms).parse().unwrap();
            assert_eq!(from_datetime(&as_toml), Some(ms));
        }
    }
}
