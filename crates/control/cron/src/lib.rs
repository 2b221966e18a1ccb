//! Cron schedules exactly as Kubernetes reads a CronJob's `spec.schedule`: the grammar and
//! error messages of robfig/cron v3's `ParseStandard` (five fields: minute, hour, day of month,
//! month, day of week; `*`, `?`, ranges, steps, lists, month and weekday names; the `@yearly`,
//! `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly` macros and `@every
//! DURATION`; a `TZ=`/`CRON_TZ=` prefix), and its `Next`: day of month and day of week are ORed
//! when both are restricted (neither starred), ANDed otherwise.
//!
//! Why not a cron crate: the API server must refuse exactly what kube-apiserver refuses and say
//! it the same way (`end of range (61) above maximum (59): 61`), and the crates on crates.io
//! accept more (seconds, years, `L`, `W`, `#`) or read day fields differently.
//!
//! Times are matched on the wall clock of the schedule's zone: an instant matches when its wall
//! time (at second 0) does. A wall time skipped by a DST change never runs, one repeated by it
//! runs twice (as robfig's). The search gives up after five years (robfig's zero time: `None`).

pub mod duration;
pub mod zone;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};
pub use zone::{Zone, ZoneError};

/// A schedule that does not parse; the message is robfig/cron's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

#[derive(Clone, Debug)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Spec { minute: u64, hour: u64, dom: u64, month: u64, dow: u64, zone: Option<Zone> },
    /// `@every`: a constant delay in whole seconds.
    Every(i64),
}

const STAR: u64 = 1 << 63;

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds { min: 0, max: 59, names: &[] };
const HOURS: Bounds = Bounds { min: 0, max: 23, names: &[] };
const DOM: Bounds = Bounds { min: 1, max: 31, names: &[] };
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[("jan", 1), ("feb", 2), ("mar", 3), ("apr", 4), ("may", 5), ("jun", 6), ("jul", 7), ("aug", 8), ("sep", 9), ("oct", 10), ("nov", 11), ("dec", 12)],
};
const DOW: Bounds = Bounds { min: 0, max: 6, names: &[("sun", 0), ("mon", 1), ("tue", 2), ("wed", 3), ("thu", 4), ("fri", 5), ("sat", 6)] };

fn err<T>(msg: String) -> Result<T, ParseError> {
    Err(ParseError(msg))
}

/// Parse a schedule as robfig/cron v3's `ParseStandard`.
pub fn parse_standard(spec: &str) -> Result<Schedule, ParseError> {
    if spec.is_empty() {
        return err("empty spec string".into());
    }
    let mut spec = spec;
    let mut zone = None;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let eq = spec.find('=').unwrap_or(0);
        let end = spec.find(' ').unwrap_or(spec.len());
        let name = spec.get(eq + 1..end).unwrap_or("");
        match Zone::load(name) {
            Ok(z) => zone = Some(z),
            Err(e) => return err(format!("provided bad location {name}: {e}")),
        }
        spec = spec.get(end..).unwrap_or("").trim();
    }
    if spec.starts_with('@') {
        return descriptor(spec, zone);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return err(format!("expected exactly 5 fields, found {}: [{}]", fields.len(), fields.join(" ")));
    }
    let minute = field(fields[0], &MINUTES)?;
    let hour = field(fields[1], &HOURS)?;
    let dom = field(fields[2], &DOM)?;
    let month = field(fields[3], &MONTHS)?;
    let dow = field(fields[4], &DOW)?;
    Ok(Schedule { kind: Kind::Spec { minute, hour, dom, month, dow, zone } })
}

fn all(b: &Bounds) -> u64 {
    bits(b.min, b.max, 1) | STAR
}

fn descriptor(d: &str, zone: Option<Zone>) -> Result<Schedule, ParseError> {
    let spec = |minute, hour, dom, month, dow| Schedule { kind: Kind::Spec { minute, hour, dom, month, dow, zone: zone.clone() } };
    Ok(match d {
        "@yearly" | "@annually" => spec(1, 1, 1 << 1, 1 << 1, all(&DOW)),
        "@monthly" => spec(1, 1, 1 << 1, all(&MONTHS), all(&DOW)),
        "@weekly" => spec(1, 1, all(&DOM), all(&MONTHS), 1),
        "@daily" | "@midnight" => spec(1, 1, all(&DOM), all(&MONTHS), all(&DOW)),
        "@hourly" => spec(1, all(&HOURS), all(&DOM), all(&MONTHS), all(&DOW)),
        _ => match d.strip_prefix("@every ") {
            Some(dur) => {
                let nanos = duration::parse(dur).map_err(|e| ParseError(format!("failed to parse duration {d}: {e}")))?;
                // robfig: less than a second is a second; fractions of a second are dropped.
                let secs = if nanos < 1_000_000_000 { 1 } else { (nanos / 1_000_000_000) as i64 };
                Schedule { kind: Kind::Every(secs) }
            }
            None => return err(format!("unrecognized descriptor: {d}")),
        },
    })
}

/// A comma-separated list of ranges (empty items ignored, as Go's `strings.FieldsFunc`).
fn field(f: &str, b: &Bounds) -> Result<u64, ParseError> {
    let mut out = 0;
    for expr in f.split(',').filter(|e| !e.is_empty()) {
        out |= range(expr, b)?;
    }
    Ok(out)
}

/// `number | number "-" number [ "/" number ]`, `*` or `?` for the whole range.
fn range(expr: &str, b: &Bounds) -> Result<u64, ParseError> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_high.len() == 1;
    let (start, mut end, mut extra);
    if low_high[0] == "*" || low_high[0] == "?" {
        (start, end, extra) = (b.min as u64, b.max as u64, STAR);
    } else {
        start = int_or_name(low_high[0], b)?;
        end = match low_high.len() {
            1 => start,
            2 => int_or_name(low_high[1], b)?,
            _ => return err(format!("too many hyphens: {expr}")),
        };
        extra = 0;
    }
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = int(range_and_step[1])?;
            // "N/step" means "N-max/step".
            if single {
                end = b.max as u64;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
        _ => return err(format!("too many slashes: {expr}")),
    };
    if start < b.min as u64 {
        return err(format!("beginning of range ({start}) below minimum ({}): {expr}", b.min));
    }
    if end > b.max as u64 {
        return err(format!("end of range ({end}) above maximum ({}): {expr}", b.max));
    }
    if start > end {
        return err(format!("beginning of range ({start}) beyond end of range ({end}): {expr}"));
    }
    if step == 0 {
        return err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(bits(start as u32, end as u32, step) | extra)
}

fn bits(min: u32, max: u32, step: u64) -> u64 {
    (min..=max).step_by(step.min(64) as usize).fold(0, |acc, i| acc | (1u64 << i))
}

fn int_or_name(expr: &str, b: &Bounds) -> Result<u64, ParseError> {
    let lower = expr.to_ascii_lowercase();
    if let Some((_, v)) = b.names.iter().find(|(n, _)| *n == lower) {
        return Ok(u64::from(*v));
    }
    int(expr)
}

/// Go's `strconv.Atoi` with robfig's messages.
fn int(expr: &str) -> Result<u64, ParseError> {
    let digits = expr.strip_prefix(['+', '-']).unwrap_or(expr);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return err(format!("failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: invalid syntax"));
    }
    let n: i64 = match expr.parse() {
        Ok(n) => n,
        Err(_) => return err(format!("failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: value out of range")),
    };
    if n < 0 {
        return err(format!("negative number ({n}) not allowed: {expr}"));
    }
    Ok(n as u64)
}

/// How far a zone's offset can change around one wall time (the largest DST shift is 2 h).
const WINDOW: i64 = 3 * 3600;

impl Schedule {
    /// The zone a `TZ=`/`CRON_TZ=` prefix named, if any.
    pub fn zone(&self) -> Option<&Zone> {
        match &self.kind {
            Kind::Spec { zone, .. } => zone.as_ref(),
            Kind::Every(_) => None,
        }
    }

    /// The first activation strictly after `after` (robfig's `Next`), on the wall clock of the
    /// schedule's own zone or else `local`; `None` if nothing matches within five years.
    pub fn next(&self, after: DateTime<Utc>, local: &Zone) -> Option<DateTime<Utc>> {
        let (minute, hour, dom, month, dow, zone) = match &self.kind {
            Kind::Every(secs) => return DateTime::from_timestamp(after.timestamp() + secs, 0),
            Kind::Spec { minute, hour, dom, month, dow, zone } => (*minute, *hour, *dom, *month, *dow, zone.as_ref().unwrap_or(local)),
        };
        let m = Matcher { minute, hour, dom, month, dow };
        // The upcoming whole second.
        let s = after.timestamp() + 1;
        let wall = s + zone.offset(s);
        let limit = DateTime::from_timestamp(wall, 0)?.year() + 5;
        // Instants after `s` may read a wall time up to WINDOW before wall(s) (an overlap), and
        // the earliest match may come after a later wall time's: look at a window of wall times.
        let mut cursor = DateTime::from_timestamp(wall - WINDOW, 0)?.naive_utc();
        let mut best: Option<i64> = None;
        let mut stop: Option<i64> = None;
        while let Some(found) = m.next_wall(cursor, limit) {
            let local_secs = found.and_utc().timestamp();
            if stop.is_some_and(|st| local_secs > st) {
                break;
            }
            for t in zone.instants(local_secs) {
                if t >= s && best.is_none_or(|b| t < b) {
                    best = Some(t);
                    stop = Some(local_secs + WINDOW);
                }
            }
            cursor = found + chrono::Duration::minutes(1);
        }
        DateTime::from_timestamp(best?, 0)
    }
}

struct Matcher {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
}

impl Matcher {
    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = self.dom & (1 << d.day()) != 0;
        let dow = self.dow & (1 << d.weekday().num_days_from_sunday()) != 0;
        if self.dom & STAR != 0 || self.dow & STAR != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first wall time at or after `t` (rounded up to a minute) that matches, on the
    /// calendar alone; `None` past the year `limit`.
    fn next_wall(&self, t: NaiveDateTime, limit: i32) -> Option<NaiveDateTime> {
        let mut t = t.with_nanosecond(0)?;
        if t.second() != 0 {
            t = t.with_second(0)? + chrono::Duration::minutes(1);
        }
        loop {
            if t.year() > limit {
                return None;
            }
            if self.month & (1 << t.month()) == 0 {
                let (y, m) = if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if self.hour & (1 << t.hour()) == 0 {
                t = t.date().and_hms_opt(t.hour(), 0, 0)? + chrono::Duration::hours(1);
                continue;
            }
            if self.minute & (1 << t.minute()) == 0 {
                t += chrono::Duration::minutes(1);
                continue;
            }
            return Some(t);
        }
    }
}

/// `t` on the wall clock of `zone`, as Go's `Format(time.RFC3339)` writes it (`Z` for UTC).
pub fn rfc3339_in(t: DateTime<Utc>, zone: &Zone) -> String {
    let off = zone.offset(t.timestamp());
    match chrono::FixedOffset::east_opt(off as i32) {
        Some(o) => t.with_timezone(&o).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    fn check_next(spec: &str, after: &str, want: &str) {
        let s = parse_standard(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let got = s.next(at(after), &Zone::utc()).map(|t| t.to_rfc3339());
        assert_eq!(got.as_deref(), Some(at(want).to_rfc3339().as_str()), "{spec} after {after}");
    }

    fn check_err(spec: &str, want: &str) {
        match parse_standard(spec) {
            Ok(_) => panic!("{spec:?} parsed"),
            Err(e) => assert_eq!(e.to_string(), want, "{spec:?}"),
        }
    }

    #[test]
    fn next_times_as_robfig() {
        check_next("*/1 * * * *", "2026-11-29T21:05:30Z", "2026-11-29T21:06:00Z");
        check_next("* * * * *", "2026-11-29T21:06:00Z", "2026-11-29T21:07:00Z");
        check_next("*/15 * * * *", "2026-11-29T21:05:30Z", "2026-11-29T21:15:00Z");
        check_next("5/15 * * * *", "2026-11-29T21:51:00Z", "2026-11-29T22:05:00Z");
        check_next("0 0 * * *", "2026-11-29T21:05:30Z", "2026-11-30T00:00:00Z");
        check_next("@hourly", "2026-11-29T21:05:30Z", "2026-11-29T22:00:00Z");
        check_next("@daily", "2026-12-31T21:05:30Z", "2027-01-01T00:00:00Z");
        check_next("@midnight", "2026-12-31T00:00:00Z", "2027-01-01T00:00:00Z");
        check_next("@weekly", "2026-11-29T21:05:30Z", "2026-12-06T00:00:00Z"); // Sundays
        check_next("@monthly", "2026-11-29T21:05:30Z", "2026-12-01T00:00:00Z");
        check_next("@yearly", "2026-11-29T21:05:30Z", "2027-01-01T00:00:00Z");
        check_next("@annually", "2026-11-29T21:05:30Z", "2027-01-01T00:00:00Z");
        check_next("@every 90s", "2026-11-29T21:05:30.5Z", "2026-11-29T21:07:00Z");
        check_next("30 9 * jan,FEB mon-fri", "2026-11-29T21:05:30Z", "2027-01-01T09:30:00Z");
        check_next("0 12 29 2 *", "2026-11-29T21:05:30Z", "2028-02-29T12:00:00Z");
        // Both day fields restricted: either matches (the 1st, or a Monday).
        check_next("0 0 1 * 1", "2026-11-29T21:05:30Z", "2026-11-30T00:00:00Z");
        check_next("0 0 1 * 1", "2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z");
        // One starred (even as */1): both must match.
        check_next("0 0 */1 * 1", "2026-11-29T21:05:30Z", "2026-11-30T00:00:00Z");
        check_next("0 0 ? * 3", "2026-11-30T00:00:00Z", "2026-12-02T00:00:00Z");
        // */2 on the day of month is not a star: ORed with the weekday.
        check_next("0 0 */2 * 1", "2026-11-29T21:05:30Z", "2026-11-30T00:00:00Z");
        // Never: the 30th of February.
        assert!(parse_standard("0 0 30 2 *").expect("parses").next(at("2026-01-01T00:00:00Z"), &Zone::utc()).is_none());
    }

    #[test]
    fn errors_as_robfig_words_them() {
        check_err("", "empty spec string");
        check_err("foo", "expected exactly 5 fields, found 1: [foo]");
        check_err("* * * *", "expected exactly 5 fields, found 4: [* * * *]");
        check_err("* * * * * *", "expected exactly 5 fields, found 6: [* * * * * *]");
        check_err("61 * * * *", "end of range (61) above maximum (59): 61");
        check_err("* 24 * * *", "end of range (24) above maximum (23): 24");
        check_err("* * 0 * *", "beginning of range (0) below minimum (1): 0");
        check_err("* * * 13 *", "end of range (13) above maximum (12): 13");
        check_err("* * * * 7", "end of range (7) above maximum (6): 7");
        check_err("5-2 * * * *", "beginning of range (5) beyond end of range (2): 5-2");
        check_err("*/0 * * * *", "step of range should be a positive number: */0");
        check_err("1-2-3 * * * *", "too many hyphens: 1-2-3");
        check_err("*/2/3 * * * *", "too many slashes: */2/3");
        check_err("x * * * *", "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax");
        check_err("* * * foo *", "failed to parse int from foo: strconv.Atoi: parsing \"foo\": invalid syntax");
        check_err("@fortnightly", "unrecognized descriptor: @fortnightly");
        check_err("@every 5d", "failed to parse duration @every 5d: time: unknown unit \"d\" in duration \"5d\"");
        check_err("@every 5", "failed to parse duration @every 5: time: missing unit in duration \"5\"");
        check_err("TZ=Mars/Olympus * * * * *", "provided bad location Mars/Olympus: unknown time zone Mars/Olympus");
        check_err("0 0 L * *", "failed to parse int from L: strconv.Atoi: parsing \"L\": invalid syntax");
        assert!(parse_standard("CRON_TZ=UTC * * * * *").is_ok());
        assert!(parse_standard("0 0 * * SUN").is_ok());
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        let paris = Zone::load("Europe/Paris").expect("Europe/Paris");
        let s = parse_standard("0 9 * * *").expect("parses");
        // 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer.
        assert_eq!(s.next(at("2026-11-29T21:05:30Z"), &paris), Some(at("2026-11-30T08:00:00Z")));
        assert_eq!(s.next(at("2026-07-01T00:00:00Z"), &paris), Some(at("2026-07-01T07:00:00Z")));
        // A TZ= prefix wins over the default zone.
        let tz = parse_standard("TZ=Europe/Paris 0 9 * * *").expect("parses");
        assert_eq!(tz.next(at("2026-11-29T21:05:30Z"), &Zone::utc()), Some(at("2026-11-30T08:00:00Z")));
        let ny = Zone::load("America/New_York").expect("New York");
        // 02:30 is skipped on 2026-03-08 (spring forward): the next run is the day after.
        let s = parse_standard("30 2 * * *").expect("parses");
        assert_eq!(s.next(at("2026-03-07T12:00:00Z"), &ny), Some(at("2026-03-09T06:30:00Z")));
        // 01:30 happens twice on 2026-11-01 (fall back): both run.
        let s = parse_standard("30 1 * * *").expect("parses");
        let first = s.next(at("2026-11-01T00:00:00Z"), &ny).expect("first");
        assert_eq!(first, at("2026-11-01T05:30:00Z"));
        assert_eq!(s.next(first, &ny), Some(at("2026-11-01T06:30:00Z")));
        assert_eq!(s.next(at("2026-11-01T06:30:00Z"), &ny), Some(at("2026-11-02T06:30:00Z")));
        // Every minute across the overlap: 01:59 EDT, then 01:00 EST.
        let s = parse_standard("* * * * *").expect("parses");
        assert_eq!(s.next(at("2026-11-01T05:59:00Z"), &ny), Some(at("2026-11-01T06:00:00Z")));
        assert_eq!(rfc3339_in(at("2026-11-30T08:00:00Z"), &paris), "2026-11-30T09:00:00+01:00");
        assert_eq!(rfc3339_in(at("2026-11-30T08:00:00Z"), &Zone::utc()), "2026-11-30T08:00:00Z");
    }
}
