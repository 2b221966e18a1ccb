//! IANA time zones as Go's `time.LoadLocation` finds them for kube-apiserver and
//! kube-controller-manager: TZif files under the system zoneinfo directories (their POSIX TZ
//! footer rule covers times past the last listed transition), `UTC`, and `Local` (the `TZ`
//! variable, else `/etc/localtime`, else UTC).

use std::sync::Arc;

/// Where Go looks for zoneinfo files on Linux (after `$ZONEINFO`).
const DIRS: &[&str] = &["/usr/share/zoneinfo", "/usr/share/lib/zoneinfo", "/usr/lib/locale/TZ", "/etc/zoneinfo"];

/// A time zone: offsets from UTC at any instant.
#[derive(Clone, Debug)]
pub struct Zone {
    name: String,
    tz: Arc<tz::TimeZone>,
}

/// Why a zone could not be loaded; the messages are Go's (`time.LoadLocation`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZoneError {
    #[error("unknown time zone {0}")]
    Unknown(String),
    #[error("time: invalid location name")]
    InvalidName,
    #[error("malformed time zone information")]
    Malformed,
}

impl Zone {
    pub fn utc() -> Zone {
        Zone { name: "UTC".into(), tz: Arc::new(tz::TimeZone::utc()) }
    }

    /// The process's local zone, as Go's `time.Local`: `$TZ` (empty is UTC, an unknown name is
    /// UTC), else `/etc/localtime`, else UTC.
    pub fn local() -> Zone {
        let tz = match std::env::var("TZ") {
            Ok(v) if v.is_empty() => None,
            Ok(v) => Zone::load(v.strip_prefix(':').unwrap_or(&v)).ok().map(|z| z.tz),
            Err(_) => std::fs::read("/etc/localtime").ok().and_then(|b| tz::TimeZone::from_tz_data(&b).ok()).map(Arc::new),
        };
        Zone { name: "Local".into(), tz: tz.unwrap_or_else(|| Arc::new(tz::TimeZone::utc())) }
    }

    /// A zone by its IANA name (`Europe/Paris`), from the system zoneinfo. `UTC` and the empty
    /// name are UTC, `Local` the local zone, as in Go.
    pub fn load(name: &str) -> Result<Zone, ZoneError> {
        if name.is_empty() || name == "UTC" {
            return Ok(Zone::utc());
        }
        if name == "Local" {
            return Ok(Zone::local());
        }
        if name.contains("..") || name.starts_with('/') || name.starts_with('\\') {
            return Err(ZoneError::InvalidName);
        }
        let dirs: Vec<String> = std::env::var("ZONEINFO").ok().filter(|d| !d.is_empty()).into_iter().chain(DIRS.iter().map(|d| d.to_string())).collect();
        for dir in dirs {
            let path = std::path::Path::new(&dir).join(name);
            if !path.is_file() {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else { continue };
            return match tz::TimeZone::from_tz_data(&bytes) {
                Ok(tz) => Ok(Zone { name: name.to_string(), tz: Arc::new(tz) }),
                Err(_) => Err(ZoneError::Malformed),
            };
        }
        Err(ZoneError::Unknown(name.to_string()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Seconds east of UTC at the instant `unix` (seconds since the epoch).
    pub fn offset(&self, unix: i64) -> i64 {
        self.tz.find_local_time_type(unix).map(|t| i64::from(t.ut_offset())).unwrap_or(0)
    }

    /// The instants (0, 1, or 2 in an overlap, earliest first) whose wall clock reads `local`
    /// (seconds since the epoch of the wall clock as if it were UTC). None in a gap.
    pub fn instants(&self, local: i64) -> Vec<i64> {
        let mut offsets: Vec<i64> = [-86_400, -10_800, 0, 10_800, 86_400].iter().map(|d| self.offset(local + d)).collect();
        offsets.sort_unstable();
        offsets.dedup();
        let mut out: Vec<i64> = offsets.into_iter().map(|o| local - o).filter(|t| self.offset(*t) == local - t).collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_system_zones_and_refuses_unknown_ones() {
        let paris = Zone::load("Europe/Paris").expect("Europe/Paris in the system zoneinfo");
        // 2026-07-01T00:00:00Z: CEST, +2h; 2026-01-01T00:00:00Z: CET, +1h.
        assert_eq!(paris.offset(1_782_864_000), 7200);
        assert_eq!(paris.offset(1_767_225_600), 3600);
        let err = |n: &str| Zone::load(n).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(err("Mars/Olympus"), "unknown time zone Mars/Olympus");
        assert_eq!(err("America"), "unknown time zone America");
        assert_eq!(err("../etc/passwd"), "time: invalid location name");
        assert_eq!(Zone::load("UTC").expect("utc").offset(0), 0);
    }

    #[test]
    fn wall_clock_to_instants_in_gaps_and_overlaps() {
        let ny = Zone::load("America/New_York").expect("New York");
        // 2026-03-08 02:30 does not exist (clocks go 02:00 -> 03:00).
        let gap = chrono::NaiveDate::from_ymd_opt(2026, 3, 8).and_then(|d| d.and_hms_opt(2, 30, 0)).expect("date").and_utc().timestamp();
        assert!(ny.instants(gap).is_empty());
        // 2026-11-01 01:30 happens twice (EDT, then EST an hour later).
        let twice = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).and_then(|d| d.and_hms_opt(1, 30, 0)).expect("date").and_utc().timestamp();
        let i = ny.instants(twice);
        assert_eq!(i.len(), 2);
        assert_eq!((i[0] - twice, i[1] - twice), (4 * 3600, 5 * 3600));
    }
}
