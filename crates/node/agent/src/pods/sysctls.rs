//! Pod sysctls (`securityContext.sysctls`), admitted as kubelet's sysctl allowlist does: a
//! sysctl must be one of kubelet's safe ones available on this kernel (or allowed as unsafe by
//! the node's configuration) and may not be one of the node's namespaces' (network with
//! `hostNetwork`, IPC with `hostIPC`). The tables are generated from kubelet's sources
//! (`table.rs`, scripts/gen-k8s-sysctls.py). Pure.

mod table;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

/// The kernel namespace a sysctl belongs to (component-helpers' `sysctl.Namespace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    Ipc,
    Net,
}

impl Namespace {
    /// Upstream's name, as its messages show it.
    fn as_str(self) -> &'static str {
        match self {
            Namespace::Ipc => "IPC",
            Namespace::Net => "Net",
        }
    }
}

/// kubelet's reason for a pod refused for its sysctls.
pub const FORBIDDEN_REASON: &str = "SysctlForbidden";

/// A sysctl name with `.` separators: a name written with `/` (`net/ipv4/ip_forward`) has its
/// `/` and `.` swapped, as upstream's `NormalizeName`.
pub fn normalize(name: &str) -> String {
    let first = name.find(['.', '/']);
    match first.map(|i| &name[i..=i]) {
        Some("/") => name.chars().map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        }).collect(),
        _ => name.to_string(),
    }
}

/// The namespace of a (normalized) sysctl, `None` when it is not known to be namespaced.
pub fn namespace_of(name: &str) -> Option<Namespace> {
    if let Some((_, ns)) = table::NAMES.iter().find(|(n, _)| *n == name) {
        return Some(*ns);
    }
    table::PREFIXES.iter().find(|(p, _)| name.strip_prefix(p).is_some_and(|r| r.starts_with('.'))).map(|(_, ns)| *ns)
}

/// `(major, minor)` of a kernel release such as `6.1.0-13-amd64`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The node's allowlist: kubelet's safe sysctls that `kernel_release` namespaces, plus the
/// `unsafe_allowed` patterns (exact names, or prefixes ending in `*`). Names map to their
/// namespace; patterns whose namespace is unknown are refused, as kubelet refuses them at start.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    names: BTreeMap<String, Namespace>,
    prefixes: Vec<(String, Namespace)>,
}

impl Allowlist {
    pub fn new(kernel_release: &str, unsafe_allowed: &[String]) -> Result<Allowlist, String> {
        let kernel = kernel_version(kernel_release);
        let mut a = Allowlist::default();
        let safe = table::SAFE.iter().filter(|(_, min)| min.is_empty() || kernel.is_some_and(|k| kernel_version(min).is_some_and(|m| k >= m)));
        for pattern in safe.map(|(n, _)| n.to_string()).chain(unsafe_allowed.iter().cloned()) {
            let normalized = normalize(&pattern);
            let (name, prefixed) = match normalized.find('*') {
                Some(i) => (normalized[..i].to_string(), true),
                None => (normalized.clone(), false),
            };
            let ns = namespace_of(&name).ok_or_else(|| format!("the sysctls {name:?} are not known to be namespaced"))?;
            if prefixed {
                a.prefixes.push((name, ns));
            } else {
                a.names.insert(name, ns);
            }
        }
        Ok(a)
    }

    /// Why `sysctl` may not be set in a pod with these host namespaces (kubelet's words).
    fn check(&self, sysctl: &str, host_network: bool, host_ipc: bool) -> Result<(), String> {
        let sysctl = normalize(sysctl);
        let ns = self.names.get(&sysctl).copied().or_else(|| self.prefixes.iter().find(|(p, _)| sysctl.starts_with(p.as_str())).map(|(_, ns)| *ns));
        match ns {
            Some(ns @ Namespace::Ipc) if host_ipc => Err(format!("{sysctl:?} not allowed with host {} enabled", ns.as_str())),
            Some(ns @ Namespace::Net) if host_network => Err(format!("{sysctl:?} not allowed with host {} enabled", ns.as_str())),
            Some(_) => Ok(()),
            None => Err(format!("{sysctl:?} not allowlisted")),
        }
    }

    /// Admit the pod's sysctls or say why not (the rejection's message, reason
    /// [`FORBIDDEN_REASON`]); admitted, the sysctls to set in its sandbox.
    pub fn admit(&self, pod: &Pod) -> Result<BTreeMap<String, String>, String> {
        let Some(spec) = pod.spec.as_ref() else { return Ok(BTreeMap::new()) };
        let sysctls = spec.security_context.as_ref().and_then(|s| s.sysctls.as_ref());
        let mut out = BTreeMap::new();
        for s in sysctls.into_iter().flatten() {
            self.check(&s.name, spec.host_network.unwrap_or(false), spec.host_ipc.unwrap_or(false)).map_err(|e| format!("forbidden sysctl: {e}"))?;
            out.insert(normalize(&s.name), s.value.clone());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(sysctls: &[(&str, &str)], host_network: bool, host_ipc: bool) -> Pod {
        let s: Vec<serde_json::Value> = sysctls.iter().map(|(n, v)| serde_json::json!({"name": n, "value": v})).collect();
        serde_json::from_value(serde_json::json!({"spec": {"containers": [], "hostNetwork": host_network, "hostIPC": host_ipc, "securityContext": {"sysctls": s}}})).expect("pod")
    }

    #[test]
    fn kubelets_allowlist() {
        let a = Allowlist::new("6.1.0-13-amd64", &[]).expect("allowlist");
        let ok = pod(&[("net.ipv4.ip_unprivileged_port_start", "1000"), ("kernel.shm_rmid_forced", "1"), ("net/ipv4/tcp_rmem", "4096 87380 6291456")], false, false);
        let admitted = a.admit(&ok).expect("safe sysctls");
        assert_eq!(admitted.get("net.ipv4.tcp_rmem").map(String::as_str), Some("4096 87380 6291456"));
        assert_eq!(a.admit(&pod(&[("kernel.msgmax", "1")], false, false)), Err("forbidden sysctl: \"kernel.msgmax\" not allowlisted".into()));
        assert_eq!(
            a.admit(&pod(&[("net.ipv4.tcp_syncookies", "1")], true, false)),
            Err("forbidden sysctl: \"net.ipv4.tcp_syncookies\" not allowed with host Net enabled".into())
        );
        assert_eq!(
            a.admit(&pod(&[("kernel.shm_rmid_forced", "1")], false, true)),
            Err("forbidden sysctl: \"kernel.shm_rmid_forced\" not allowed with host IPC enabled".into())
        );
        // A kernel older than the one that namespaced a sysctl does not offer it.
        let old = Allowlist::new("4.4.0", &[]).expect("allowlist");
        assert!(old.admit(&pod(&[("net.ipv4.tcp_fin_timeout", "30")], false, false)).is_err());
        assert!(old.admit(&pod(&[("net.ipv4.ip_local_reserved_ports", "30000")], false, false)).is_ok());
        // Unsafe sysctls the node allows, by name or prefix; unknown namespaces refused.
        let unsafe_ok = Allowlist::new("6.1.0", &["kernel.msg*".into(), "net.core.somaxconn".into()]).expect("allowlist");
        assert!(unsafe_ok.admit(&pod(&[("kernel.msgmax", "1"), ("net.core.somaxconn", "1024")], false, false)).is_ok());
        assert!(Allowlist::new("6.1.0", &["kernel.panic".into()]).is_err());
    }

    #[test]
    fn names_and_namespaces() {
        assert_eq!(normalize("net/ipv4/conf/eth0.100/forwarding"), "net.ipv4.conf.eth0/100.forwarding");
        assert_eq!(normalize("net.ipv4.ip_forward"), "net.ipv4.ip_forward");
        assert_eq!(namespace_of("net.core.somaxconn"), Some(Namespace::Net));
        assert_eq!(namespace_of("fs.mqueue.msg_max"), Some(Namespace::Ipc));
        assert_eq!(namespace_of("kernel.sem"), Some(Namespace::Ipc));
        assert_eq!(namespace_of("kernel.panic"), None);
        assert_eq!(namespace_of("network"), None);
    }
}
