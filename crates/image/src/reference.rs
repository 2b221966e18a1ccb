//! Image reference parsing and name normalization.
//!
//! Docker semantics: `busybox` is `docker.io/library/busybox:latest`; a first path component
//! with a `.` or `:` or equal to `localhost` is a registry host and is kept as written
//! (`127.0.0.1:5000/busybox` -> `127.0.0.1:5000/busybox:latest`).
//! Names stored in image records are always fully normalized strings.

use oci_spec::distribution::Reference;

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
    pub fn parse(reference: &str) -> Result<ImageRef> {
        let parsed = Reference::try_from(reference.trim()).map_err(|e| Error::InvalidReference {
            reference: reference.to_string(),
            reason: e.to_string(),
        })?;
        Ok(ImageRef {
            registry: parsed.registry().to_string(),
            repository: parsed.repository().to_string(),
            tag: parsed.tag().map(str::to_string),
            digest: parsed.digest().map(str::to_string),
        })
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
        for bad in ["", "Busybox", "busybox:", "a@sha256:12", "::"] {
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
