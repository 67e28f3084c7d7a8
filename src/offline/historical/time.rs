//! Timestamps as microseconds since the Unix epoch, in UTC: parsing the
//! text forms entity files use, and formatting for PostgreSQL's COPY and
//! for CSV output.

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// PostgreSQL's binary timestamps count from 2000-01-01.
pub(super) const PG_EPOCH_OFFSET_MICROS: i64 = 10_957 * MICROS_PER_DAY;

/// Days since 1970-01-01 of a date in the proleptic Gregorian calendar.
pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    // Months counted from March, so that the leap day comes last.
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day counted from 1970-01-01: (year, month, day).
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A small cursor over the bytes of a timestamp.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, count: usize) -> Option<u32> {
        let slice = self.bytes.get(self.at..self.at + count)?;
        let mut value = 0u32;
        for b in slice {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(b - b'0');
        }
        self.at += count;
        Some(value)
    }

    fn eat(&mut self, expected: u8) -> bool {
        if self.bytes.get(self.at) == Some(&expected) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

/// What a timestamp must look like, for error messages.
pub(super) const TIMESTAMP_FORMS: &str = "expected RFC 3339 (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00) or \
     `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC";

/// Parses `YYYY-MM-DD`, optionally followed by `T` or a space and
/// `HH:MM[:SS[.fraction]]`, optionally followed by `Z` or an offset
/// (`+HH:MM`, `+HHMM`, `+HH`). No offset means UTC. Digits of the fraction
/// past microseconds are dropped.
pub(super) fn parse_timestamp(text: &str) -> Result<i64, String> {
    parse(text.trim()).ok_or_else(|| format!("{text:?} is not a timestamp ({TIMESTAMP_FORMS})"))
}

fn parse(text: &str) -> Option<i64> {
    let mut c = Cursor {
        bytes: text.as_bytes(),
        at: 0,
    };
    let year = i64::from(c.digits(4)?);
    if !c.eat(b'-') {
        return None;
    }
    let month = c.digits(2)?;
    if !c.eat(b'-') {
        return None;
    }
    let day = c.digits(2)?;
    if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut micros_of_day = 0i64;
    if !c.done() {
        if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
            return None;
        }
        let hour = c.digits(2)?;
        if !c.eat(b':') {
            return None;
        }
        let minute = c.digits(2)?;
        let mut second = 0;
        let mut fraction = 0i64;
        if c.eat(b':') {
            second = c.digits(2)?;
            if c.eat(b'.') {
                let mut count = 0;
                while let Some(b) = c.peek().filter(u8::is_ascii_digit) {
                    if count < 6 {
                        fraction = fraction * 10 + i64::from(b - b'0');
                    }
                    count += 1;
                    c.at += 1;
                }
                if count == 0 {
                    return None;
                }
                for _ in count..6 {
                    fraction *= 10;
                }
            }
        }
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        micros_of_day = (i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second))
            * MICROS_PER_SECOND
            + fraction;
        // The zone.
        if !c.done() {
            if c.eat(b'Z') || c.eat(b'z') {
            } else {
                let sign = match c.peek()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                c.at += 1;
                let hours = c.digits(2)?;
                let minutes = if c.done() {
                    0
                } else {
                    c.eat(b':');
                    c.digits(2)?
                };
                if hours > 23 || minutes > 59 {
                    return None;
                }
                micros_of_day -=
                    sign * (i64::from(hours) * 3600 + i64::from(minutes) * 60) * MICROS_PER_SECOND;
            }
            if !c.done() {
                return None;
            }
        }
    }
    Some(days_from_civil(year, month, day) * MICROS_PER_DAY + micros_of_day)
}

/// Splits microseconds since the epoch into a date, a time of day and the
/// microseconds of the second.
fn parts(micros: i64) -> ((i64, u32, u32), (i64, i64, i64), i64) {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let of_day = micros.rem_euclid(MICROS_PER_DAY);
    let seconds = of_day / MICROS_PER_SECOND;
    (
        civil_from_days(days),
        (seconds / 3600, seconds / 60 % 60, seconds % 60),
        of_day % MICROS_PER_SECOND,
    )
}

/// `2024-05-01T12:00:00Z`, or `2024-05-01T12:00:00.123456Z` when the
/// fraction is not zero.
pub(super) fn format_rfc3339(micros: i64) -> String {
    let ((y, mo, d), (h, mi, s), fraction) = parts(micros);
    if fraction == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{fraction:06}Z")
    }
}

/// `2024-05-01 12:00:00.123456+00`, as PostgreSQL reads a timestamptz.
pub(super) fn format_postgres(micros: i64, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let ((y, mo, d), (h, mi, s), fraction) = parts(micros);
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{fraction:06}+00"
    );
}

/// Whether a timestamp lies in years 1 to 9999, which every store and
/// format here can hold.
pub(super) fn in_range(micros: i64) -> bool {
    const MIN: i64 = -62_135_596_800 * MICROS_PER_SECOND; // 0001-01-01
    const MAX: i64 = 253_402_300_800 * MICROS_PER_SECOND; // 10000-01-01
    (MIN..MAX).contains(&micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-719_162, -1, 0, 1, 59, 60, 10_957, 19_844, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 1, 1), 10_957);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }

    #[test]
    fn parses_the_forms() {
        let noon = 1_714_564_800 * MICROS_PER_SECOND; // 2024-05-01 12:00:00 UTC
        for text in [
            "2024-05-01T12:00:00Z",
            "2024-05-01 12:00:00",
            "2024-05-01t12:00:00z",
            "2024-05-01T14:00:00+02:00",
            "2024-05-01T14:00:00+0200",
            "2024-05-01T10:00:00-02",
            "2024-05-01 12:00:00+00:00",
            "2024-05-01 12:00",
            " 2024-05-01T12:00:00.000Z ",
        ] {
            assert_eq!(parse_timestamp(text), Ok(noon), "{text}");
        }
        assert_eq!(
            parse_timestamp("2024-05-01 12:00:00.1234567"),
            Ok(noon + 123_456)
        );
        assert_eq!(
            parse_timestamp("2024-05-01"),
            Ok(noon - 12 * 3600 * 1_000_000)
        );
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-02-30",
            "2023-02-29 00:00:00",
            "2024-05-01 24:00:00",
            "2024-05-01T12:00:00.",
            "2024-05-01T12:00:00 UTC",
            "2024-05-01T12:00:00+2",
            "1714564800",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats() {
        let t = 1_714_564_800 * MICROS_PER_SECOND + 5;
        assert_eq!(format_rfc3339(t), "2024-05-01T12:00:00.000005Z");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999Z");
        let mut out = Vec::new();
        format_postgres(t, &mut out);
        assert_eq!(out, b"2024-05-01 12:00:00.000005+00");
        assert_eq!(parse_timestamp(&format_rfc3339(-1)), Ok(-1));
    }
}
