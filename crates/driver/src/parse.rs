//! Parsing user-facing values (memory sizes, CPU counts, port mappings, signals) with the
//! errors and limits Docker users know.

use std::net::IpAddr;
use std::str::FromStr;

use crate::{Error, PortMapping};

/// Smallest memory limit accepted, as Docker's.
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;

/// `64m`, `1g`, `512k`, `1048576`, `64mb`, `1GiB` -> bytes (binary units).
pub fn parse_memory(s: &str) -> Result<u64, Error> {
    let bad = || Error::InvalidArgument(format!("invalid memory value {s:?}: expected a number with an optional unit b, k, m or g (e.g. 64m)"));
    let bytes = strata_image::parse_size(s).ok_or_else(bad)?;
    if bytes == 0 {
        return Err(bad());
    }
    if bytes < MIN_MEMORY {
        return Err(Error::InvalidArgument(format!(
            "invalid memory value {s:?}: the minimum memory limit is 6m"
        )));
    }
    Ok(bytes)
}

/// `0.5`, `2` -> CPUs; between 0.01 and the number of CPUs on this host.
pub fn parse_cpus(s: &str) -> Result<f64, Error> {
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|_| Error::InvalidArgument(format!("invalid cpus value {s:?}: expected a number such as 0.5 or 2")))?;
    let max = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    if !n.is_finite() || n < 0.01 || n > max {
        return Err(Error::InvalidArgument(format!(
            "invalid cpus value {s:?}: the range of CPUs is from 0.01 to {max} (CPUs available)"
        )));
    }
    Ok(n)
}

/// `TERM`, `SIGTERM`, `15`, `kill` -> signal number.
pub fn parse_signal(s: &str) -> Result<i32, Error> {
    let bad = || Error::InvalidArgument(format!("invalid signal {s:?}"));
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map(|sig| sig as i32).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    nix::sys::signal::Signal::from_str(&name).map(|sig| sig as i32).map_err(|_| bad())
}

impl FromStr for PortMapping {
    type Err = Error;

    /// `[ip:]host_port:container_port[/tcp]`, or `container_port` alone (same host port).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::InvalidArgument(format!("invalid port mapping {s:?}: {why}"));
        let (spec, proto) = match s.rsplit_once('/') {
            Some((spec, proto)) => (spec, proto),
            None => (s, "tcp"),
        };
        if proto != "tcp" {
            return Err(bad("only tcp ports can be published"));
        }
        let port = |p: &str| -> Result<u16, Error> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad(&format!("{p:?} is not a port number (1-65535)"))),
            }
        };
        // An IPv6 host address is written in brackets: [::1]:8080:80.
        let (ip, rest) = if let Some(stripped) = spec.strip_prefix('[') {
            let (ip, rest) = stripped.split_once("]:").ok_or_else(|| bad("unterminated IPv6 address"))?;
            (Some(ip), rest)
        } else {
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.len() {
                1 | 2 => (None, spec),
                3 => (Some(parts[0]), &spec[parts[0].len() + 1..]),
                _ => return Err(bad("expected [ip:]host_port:container_port")),
            }
        };
        let host_ip = match ip {
            Some(ip) => Some(ip.parse::<IpAddr>().map_err(|_| bad(&format!("{ip:?} is not an IP address")))?),
            None => None,
        };
        let (host_port, container_port) = match rest.split_once(':') {
            Some((h, c)) => (port(h)?, port(c)?),
            None => {
                let p = port(rest)?;
                (p, p)
            }
        };
        Ok(PortMapping { host_ip, host_port, container_port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory() {
        assert_eq!(parse_memory("64m").expect("64m"), 64 << 20);
        assert_eq!(parse_memory("1G").expect("1G"), 1 << 30);
        assert_eq!(parse_memory("8MiB").expect("8MiB"), 8 << 20);
        assert_eq!(parse_memory("10485760").expect("bytes"), 10 << 20);
        for bad in ["", "abc", "-5m", "64x", "1k", "0"] {
            let e = parse_memory(bad).expect_err(bad).to_string();
            assert!(e.starts_with("invalid memory value"), "{bad}: {e}");
        }
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("0.5").expect("0.5"), 0.5);
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("1000").expect_err("too many").to_string().contains("range of CPUs"));
        assert!(parse_cpus("x").is_err());
    }

    #[test]
    fn ports() {
        let p: PortMapping = "8080:80".parse().expect("plain");
        assert_eq!((p.host_ip, p.host_port, p.container_port), (None, 8080, 80));
        let p: PortMapping = "127.0.0.1:8080:80/tcp".parse().expect("ip");
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().expect("ip")));
        let p: PortMapping = "[::1]:8080:80".parse().expect("v6");
        assert_eq!(p.host_ip, Some("::1".parse().expect("ip")));
        assert_eq!("53".parse::<PortMapping>().expect("single").host_port, 53);
        for bad in ["8080:80/udp", "0:80", "a:b", "1.2.3:80:80", "99999:80", "1:2:3:4"] {
            assert!(bad.parse::<PortMapping>().is_err(), "{bad}");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM").expect("TERM"), libc::SIGTERM);
        assert_eq!(parse_signal("sigkill").expect("kill"), libc::SIGKILL);
        assert_eq!(parse_signal("9").expect("9"), 9);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
