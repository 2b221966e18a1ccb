//! Image reference parsing and name normalization.
//!
//! Docker semantics: `busybox` is `docker.io/library/busybox:latest`; a first path component
//! with a `.` or `:` or equal to `localhost` is a registry host and is kept as written
//! (`127.0.0.1:5000/busybox` -> `127.0.0.1:5000/busybox:latest`).
//! Names stored in image records are always fully normalized strings.

use crate::error::{Error, Result};

/// A parsed, normalized image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (with port), e.g. `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Manifest digest when the reference was `name@sha256:...`.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parse with Docker normalization rules.
    ///
    /// Hand-written after the distribution grammar (`name[:tag][@digest]`) rather than a
    /// regex: building the reference regex costs ~40 ms per process, which every `strata run`
    /// would pay.
    pub fn parse(reference: &str) -> Result<ImageRef> {
        let reference = reference.trim();
        let bad = |reason: &str| Error::InvalidReference { reference: reference.to_string(), reason: reason.to_string() };
        let (rest, digest) = match reference.split_once('@') {
            Some((r, d)) => {
                validate_digest(d).map_err(|why| bad(&why))?;
                (r, Some(d.to_string()))
            }
            None => (reference, None),
        };
        // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !valid_tag(tag) {
                    return Err(bad("invalid tag"));
                }
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() || name.len() > 255 {
            return Err(bad("invalid reference format"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                if !valid_host(first) {
                    return Err(bad("invalid registry host"));
                }
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" { "docker.io".to_string() } else { registry };
        if !path.split('/').all(valid_path_component) {
            return Err(bad("repository name must be lowercase alphanumerics separated by '.', '_', '__' or '-'"));
        }
        let repository = if registry == "docker.io" && !path.contains('/') { format!("library/{path}") } else { path };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(ImageRef { registry, repository, tag, digest })
    }

    /// Parse, but qualify a name without a registry host with `localhost/` instead of
    /// `docker.io/library/` (used for names of imported OCI layouts and `--tag`).
    pub fn parse_local(reference: &str) -> Result<ImageRef> {
        let reference = reference.trim();
        if has_registry_host(reference) {
            ImageRef::parse(reference)
        } else {
            ImageRef::parse(&format!("localhost/{reference}"))
        }
    }

    /// `registry/repository`.
    pub fn repo_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The stored name: `registry/repository@digest` when pinned by digest, otherwise
    /// `registry/repository:tag`.
    pub fn name(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{}", self.repo_name(), d),
            (None, Some(t)) => format!("{}:{}", self.repo_name(), t),
            (None, None) => format!("{}:latest", self.repo_name()),
        }
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// True when the user wrote no registry host (so `localhost/` is a candidate too).
    pub fn is_short(reference: &str) -> bool {
        !has_registry_host(reference.trim())
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__' or '-'+, followed by an alphanumeric.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !b.get(i).is_some_and(|x| alnum(*x)) {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let w = |c: char| c.is_ascii_alphanumeric() || c == '_';
    t.len() <= 128 && t.chars().next().is_some_and(w) && t.chars().all(|c| w(c) || c == '.' || c == '-')
}

/// `host[:port]`: DNS labels of `[a-zA-Z0-9-]`, or a bracketed IPv6 address.
fn valid_host(h: &str) -> bool {
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, tail)) => {
                if ip.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                (None, tail.strip_prefix(':'))
            }
            None => return false,
        }
    } else {
        match h.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(h), None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
    let host_ok = host.is_none_or(|host| {
        !host.is_empty()
            && host.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-') && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    });
    port_ok && host_ok
}

/// `algorithm:encoded`; sha256 and sha512 must have the right hex length.
fn validate_digest(d: &str) -> std::result::Result<(), String> {
    let (alg, enc) = d.split_once(':').ok_or("invalid digest: missing ':'")?;
    let hex_len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(format!("unsupported digest algorithm {alg:?}")),
    };
    if enc.len() != hex_len || !enc.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
        return Err(format!("invalid {alg} digest"));
    }
    Ok(())
}

/// Does the first path component name a registry host (Docker's rule)?
fn has_registry_host(reference: &str) -> bool {
    match reference.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// Normalize a user-supplied reference to the stored name form.
pub fn normalize(reference: &str) -> Result<String> {
    Ok(ImageRef::parse(reference)?.name())
}

/// Hosts that are spoken to over plain HTTP without being listed as insecure.
pub(crate) fn is_loopback_host(registry: &str) -> bool {
    let host = host_without_port(registry);
    if host == "localhost" || host == "::1" {
        return true;
    }
    match host.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

fn host_without_port(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        // [::1]:5000
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
        _ => registry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(normalize(input).expect(input), expected, "normalizing {input}");
    }

    #[test]
    fn docker_normalization() {
        check("busybox", "docker.io/library/busybox:latest");
        check("busybox:1.36", "docker.io/library/busybox:1.36");
        check("user/app", "docker.io/user/app:latest");
        check("docker.io/busybox", "docker.io/library/busybox:latest");
        check("index.docker.io/library/busybox:1", "docker.io/library/busybox:1");
        check("127.0.0.1:5000/busybox:latest", "127.0.0.1:5000/busybox:latest");
        check("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox:latest");
        check("localhost/app", "localhost/app:latest");
        check("quay.io/a/b/c:v1", "quay.io/a/b/c:v1");
        check("my-registry.example.com:443/team__x/app.name-v2:1.0_rc-3", "my-registry.example.com:443/team__x/app.name-v2:1.0_rc-3");
        check("[::1]:5000/app", "[::1]:5000/app:latest");
        let d = format!("sha256:{}", "b".repeat(64));
        check(&format!("busybox:1.36@{d}"), &format!("docker.io/library/busybox@{d}"));
        let d = format!("sha256:{}", "a".repeat(64));
        check(&format!("busybox@{d}"), &format!("docker.io/library/busybox@{d}"));
    }

    #[test]
    fn local_qualification() {
        assert_eq!(ImageRef::parse_local("app:v1").expect("parse").name(), "localhost/app:v1");
        assert_eq!(ImageRef::parse_local("x/app").expect("parse").name(), "localhost/x/app:latest");
        assert_eq!(
            ImageRef::parse_local("127.0.0.1:5000/app").expect("parse").name(),
            "127.0.0.1:5000/app:latest"
        );
    }

    #[test]
    fn invalid_references() {
        for bad in ["", "Busybox", "busybox:", "a@sha256:12", "::", "a//b", "a_-b", "-a", "a:b:c", "host:99x/a", "a@md5:00", "x/Y"] {
            let err = normalize(bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidReference { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in ["127.0.0.1:5000", "127.1.2.3", "localhost:5000", "localhost", "[::1]:5000", "::1"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["docker.io", "10.0.0.1:5000", "localhost.example.com", "128.0.0.1"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
