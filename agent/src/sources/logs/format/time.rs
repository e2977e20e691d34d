//! Timestamps as logs write them, parsed by hand: these parsers run for every line, and
//! a general date library costs more than the rest of the pipeline.
//!
//! Classic syslog lines carry no year; [`YearGuess`] infers it from a reference date and
//! from the order of lines, so that a file that crosses New Year stays in order.

use vedetta_common::Timestamp;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil year and month of a timestamp.
pub fn year_month(at: Timestamp) -> (i64, u32) {
    let days = at.0.div_euclid(86_400 * 1_000_000_000);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32)
}

pub fn month_number(name: &[u8]) -> Option<u32> {
    Some(match name {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    })
}

fn digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 9 {
        return None;
    }
    bytes.iter().try_fold(0u32, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// Nanoseconds since the epoch of a civil date and time with an offset from UTC.
fn to_timestamp(
    year: i64,
    month: u32,
    day: u32,
    hms: (u32, u32, u32),
    nanos: u32,
    offset_s: i64,
) -> Option<Timestamp> {
    let (hour, minute, second) = hms;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second)
        - offset_s;
    seconds
        .checked_mul(1_000_000_000)?
        .checked_add(i64::from(nanos))
        .map(Timestamp)
}

/// `HH:MM:SS` at the start of `bytes`.
fn clock(bytes: &[u8]) -> Option<(u32, u32, u32)> {
    if bytes.len() < 8 || bytes[2] != b':' || bytes[5] != b':' {
        return None;
    }
    Some((
        digits(&bytes[0..2])?,
        digits(&bytes[3..5])?,
        digits(&bytes[6..8])?,
    ))
}

/// Infers the missing year of classic syslog timestamps.
#[derive(Debug, Clone)]
pub struct YearGuess {
    reference: (i64, u32),
    last: Option<(i64, u32)>,
}

impl YearGuess {
    /// `reference` is "now" for live logs, or the file's modification time for replay.
    pub fn new(reference: Timestamp) -> Self {
        Self {
            reference: year_month(reference),
            last: None,
        }
    }

    fn year_for(&mut self, month: u32) -> i64 {
        let year = match self.last {
            // Lines go forward in time: December then January is a new year, and a
            // line slightly out of order around New Year belongs to the previous one.
            Some((year, last)) if last >= 11 && month <= 2 => year + 1,
            Some((year, last)) if last <= 2 && month >= 11 => year - 1,
            Some((year, _)) => year,
            // A month after the reference month is last year's (logs are not from
            // the future).
            None if month > self.reference.1 => self.reference.0 - 1,
            None => self.reference.0,
        };
        self.last = Some((year, month));
        year
    }
}

/// `Nov 20 00:01:03` (day may be space-padded); returns the time and the bytes used.
pub fn parse_classic(
    bytes: &[u8],
    offset_s: i64,
    years: &mut YearGuess,
) -> Option<(Timestamp, usize)> {
    if bytes.len() < 15 || bytes[3] != b' ' || bytes[6] != b' ' {
        return None;
    }
    let month = month_number(&bytes[0..3])?;
    let day_text = if bytes[4] == b' ' {
        &bytes[5..6]
    } else {
        &bytes[4..6]
    };
    let day = digits(day_text)?;
    let hms = clock(&bytes[7..15])?;
    let year = years.year_for(month);
    Some((to_timestamp(year, month, day, hms, 0, offset_s)?, 15))
}

/// RFC 3339 / ISO 8601 with a mandatory offset: `2026-11-20T00:01:03.123456+01:00` or
/// `...Z`. Returns the time and the bytes used.
pub fn parse_iso(bytes: &[u8]) -> Option<(Timestamp, usize)> {
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b' ')
    {
        return None;
    }
    let year = i64::from(digits(&bytes[0..4])?);
    let month = digits(&bytes[5..7])?;
    let day = digits(&bytes[8..10])?;
    let hms = clock(&bytes[11..19])?;
    let mut at = 19;
    let mut nanos = 0u32;
    if bytes.get(at) == Some(&b'.') {
        let start = at + 1;
        let mut end = start;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        let fraction = &bytes[start..end.min(start + 9)];
        nanos = digits(fraction)? * 10u32.pow(9 - fraction.len() as u32);
        at = end;
    }
    let offset_s = match bytes.get(at) {
        Some(b'Z') => {
            at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) if bytes.len() >= at + 6 && bytes[at + 3] == b':' => {
            let hours = i64::from(digits(&bytes[at + 1..at + 3])?);
            let minutes = i64::from(digits(&bytes[at + 4..at + 6])?);
            let offset = hours * 3600 + minutes * 60;
            at += 6;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    Some((to_timestamp(year, month, day, hms, nanos, offset_s)?, at))
}

/// Apache/nginx `10/Oct/2026:13:55:36 -0700` (inside the brackets).
pub fn parse_access(bytes: &[u8]) -> Option<Timestamp> {
    if bytes.len() < 26
        || bytes[2] != b'/'
        || bytes[6] != b'/'
        || bytes[11] != b':'
        || bytes[20] != b' '
    {
        return None;
    }
    let day = digits(&bytes[0..2])?;
    let month = month_number(&bytes[3..6])?;
    let year = i64::from(digits(&bytes[7..11])?);
    let hms = clock(&bytes[12..20])?;
    let sign = bytes[21];
    let hours = i64::from(digits(&bytes[22..24])?);
    let minutes = i64::from(digits(&bytes[24..26])?);
    let offset = hours * 3600 + minutes * 60;
    let offset = match sign {
        b'+' => offset,
        b'-' => -offset,
        _ => return None,
    };
    to_timestamp(year, month, day, hms, 0, offset)
}

/// A UTC offset written `+01:00`, `-0500` or `Z`, in seconds.
pub fn parse_offset(text: &str) -> Result<i64, String> {
    let bytes = text.trim().as_bytes();
    let invalid = || format!("invalid UTC offset {text:?}: expected e.g. +01:00, -05:00 or Z");
    if bytes == b"Z" {
        return Ok(0);
    }
    let (sign, rest) = bytes.split_first().ok_or_else(invalid)?;
    let rest: Vec<u8> = rest.iter().copied().filter(|b| *b != b':').collect();
    if rest.len() != 4 {
        return Err(invalid());
    }
    let hours = i64::from(digits(&rest[0..2]).ok_or_else(invalid)?);
    let minutes = i64::from(digits(&rest[2..4]).ok_or_else(invalid)?);
    if hours > 14 || minutes > 59 {
        return Err(invalid());
    }
    match sign {
        b'+' => Ok(hours * 3600 + minutes * 60),
        b'-' => Ok(-(hours * 3600 + minutes * 60)),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc3339(at: Timestamp) -> String {
        at.to_rfc3339()
    }

    #[test]
    fn civil_dates_round_trip() {
        for (year, month) in [
            (1900, 3),
            (1969, 12),
            (1970, 1),
            (2000, 2),
            (2024, 2),
            (2026, 11),
            (2200, 12),
        ] {
            let days = days_from_civil(year, month, 1);
            assert_eq!(
                year_month(Timestamp(days * 86_400 * 1_000_000_000)),
                (year, month)
            );
            let last_day = Timestamp((days + 27) * 86_400 * 1_000_000_000 + 86_399_999_999_999);
            assert_eq!(year_month(last_day), (year, month));
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn classic_syslog_infers_the_year_across_new_year() {
        let reference = Timestamp::parse_rfc3339("2026-01-15T00:00:00Z").expect("reference");
        let mut years = YearGuess::new(reference);
        let (dec, used) = parse_classic(b"Dec 31 23:59:59 host x", 0, &mut years).expect("dec");
        assert_eq!(used, 15);
        assert_eq!(rfc3339(dec), "2025-12-31T23:59:59Z");
        let (jan, _) = parse_classic(b"Jan  1 00:00:01 host x", 0, &mut years).expect("jan");
        assert_eq!(rfc3339(jan), "2026-01-01T00:00:01Z");
        let mut years = YearGuess::new(reference);
        let (jan, _) = parse_classic(b"Jan  2 10:00:00", 3600, &mut years).expect("jan");
        assert_eq!(rfc3339(jan), "2026-01-02T09:00:00Z");
        assert!(parse_classic(b"Foo  2 10:00:00", 0, &mut years).is_none());
        assert!(parse_classic(b"Jan 32 10:00:00", 0, &mut years).is_none());
        assert!(parse_classic(b"Jan  2 1O:00:00", 0, &mut years).is_none());
    }

    #[test]
    fn iso_and_access_times() {
        let (at, used) = parse_iso(b"2026-11-20T00:01:03.123456+01:00 host").expect("iso");
        assert_eq!(used, 32);
        assert_eq!(rfc3339(at), "2026-11-19T23:01:03.123456Z");
        let (at, _) = parse_iso(b"2026-11-20T00:01:03Z").expect("zulu");
        assert_eq!(rfc3339(at), "2026-11-20T00:01:03Z");
        assert!(
            parse_iso(b"2026-11-20T00:01:03").is_none(),
            "an offset is required"
        );
        assert!(parse_iso(b"2026-13-20T00:01:03Z").is_none());
        let at = parse_access(b"10/Oct/2026:13:55:36 -0700").expect("access");
        assert_eq!(rfc3339(at), "2026-10-10T20:55:36Z");
        assert_eq!(parse_offset("+01:00"), Ok(3600));
        assert_eq!(parse_offset("-0530"), Ok(-19_800));
        assert!(parse_offset("01:00").is_err());
    }
}
