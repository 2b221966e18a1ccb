//! A pod's name resolution as kubelet sets it up (pkg/kubelet/network/dns and the sandbox
//! config): its `resolv.conf` from `dnsPolicy` and `dnsConfig` over the node's, within libc's
//! limits; its hostname and DNS domain (`hostname`, `subdomain`, `setHostnameAsFQDN`); its
//! `/etc/hosts` names and `hostAliases`. Pure: the caller reads the node's resolv.conf and
//! records the events returned.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use strata_driver::pod::DnsConfig;

/// libc's limits, as kubelet applies them: nameservers, search domains, characters of the
/// search line; a search domain longer than a DNS subdomain (253) is dropped.
pub const MAX_NAMESERVERS: usize = 3;
pub const MAX_SEARCHES: usize = 32;
pub const MAX_SEARCH_CHARS: usize = 2048;
const MAX_DOMAIN: usize = 253;

/// The kernel's limit on a hostname (the FQDN with `setHostnameAsFQDN`).
const MAX_FQDN: usize = 64;

/// The node's `resolv.conf` as kubelet parses it: every `nameserver`, the last `search` line
/// (without `.` and trailing dots), the options (a later one replaces an earlier of the same name).
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut c = DnsConfig::default();
    for line in text.lines() {
        if line.starts_with(['#', ';']) {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.first().copied() {
            Some("nameserver") if f.len() >= 2 => c.servers.push(f[1].to_string()),
            Some("search") => c.searches = f[1..].iter().filter(|s| **s != ".").map(|s| s.trim_end_matches('.').to_string()).collect(),
            Some("options") => {
                for o in &f[1..] {
                    let name = o.split(':').next().unwrap_or(o);
                    c.options.retain(|e| e.split(':').next() != Some(name));
                    c.options.push(o.to_string());
                }
            }
            _ => {}
        }
    }
    c
}

/// The node's DNS settings that a pod's resolution starts from.
#[derive(Clone, Debug, Default)]
pub struct NodeDns {
    /// kubelet's `--cluster-dns`.
    pub cluster_dns: Vec<IpAddr>,
    /// kubelet's `--cluster-domain` (empty: none).
    pub cluster_domain: String,
    /// The node's `resolv.conf`, parsed.
    pub host: DnsConfig,
}

/// A pod's DNS settings and the Warning events kubelet records while forming them:
/// (reason, message).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodDns {
    pub config: DnsConfig,
    pub events: Vec<(&'static str, String)>,
}

/// `name_namespace(uid)`, as kubelet names a pod in messages (`format.Pod`).
pub fn pod_label(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!("{}_{}({})", m.name.as_deref().unwrap_or(""), m.namespace.as_deref().unwrap_or(""), m.uid.as_deref().unwrap_or(""))
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !list.contains(&i) {
            list.push(i);
        }
    }
}

/// The pod's `resolv.conf` settings (kubelet's `GetPodDNS`).
pub fn pod_dns(pod: &Pod, node: &NodeDns) -> PodDns {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let mut events = Vec::new();
    // ClusterFirst on the node's network is Default; an unknown policy is ClusterFirst.
    let cluster = match policy {
        "None" => None,
        "Default" => Some(false),
        "ClusterFirst" if host_network => Some(false),
        _ => Some(true),
    };
    let mut config = match cluster {
        None => DnsConfig::default(),
        Some(true) if !node.cluster_dns.is_empty() => {
            let mut searches = Vec::new();
            if !node.cluster_domain.is_empty() {
                let d = &node.cluster_domain;
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            }
            push_unique(&mut searches, node.host.searches.iter().cloned());
            DnsConfig { servers: node.cluster_dns.iter().map(|ip| ip.to_string()).collect(), searches, options: vec!["ndots:5".into()] }
        }
        Some(true) => {
            let msg = "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.";
            events.push(("MissingClusterDNS", format!("pod: \"{}\". {msg}", pod_label(pod))));
            node.host.clone()
        }
        Some(false) => node.host.clone(),
    };
    if let Some(d) = spec.and_then(|s| s.dns_config.as_ref()) {
        let (mut servers, mut searches) = (Vec::new(), Vec::new());
        push_unique(&mut servers, config.servers.drain(..).chain(d.nameservers.iter().flatten().cloned()));
        push_unique(&mut searches, config.searches.drain(..).chain(d.searches.iter().flatten().cloned()));
        config.servers = servers;
        config.searches = searches;
        // The pod's options replace the node's of the same name (sorted: upstream's order is a Go map's).
        let mut options: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
        for o in &config.options {
            let (k, v) = o.split_once(':').unwrap_or((o, ""));
            options.insert(k.to_string(), v.to_string());
        }
        for o in d.options.iter().flatten() {
            options.insert(o.name.clone().unwrap_or_default(), o.value.clone().unwrap_or_default());
        }
        config.options = options.into_iter().map(|(k, v)| if v.is_empty() { k } else { format!("{k}:{v}") }).collect();
    }
    // kubelet's limits, with its events.
    if config.servers.len() > MAX_NAMESERVERS {
        config.servers.truncate(MAX_NAMESERVERS);
        events.push((
            "DNSConfigForming",
            format!("Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}", config.servers.join(" ")),
        ));
    }
    let mut exceeded = false;
    if config.searches.len() > MAX_SEARCHES {
        config.searches.truncate(MAX_SEARCHES);
        exceeded = true;
    }
    let before = config.searches.len();
    config.searches.retain(|s| s.len() <= MAX_DOMAIN);
    exceeded |= config.searches.len() != before;
    let line = config.searches.join(" ").len();
    if line > MAX_SEARCH_CHARS {
        let mut cut = 0;
        while !config.searches.is_empty() && line - cut > MAX_SEARCH_CHARS {
            cut += config.searches.pop().map_or(0, |s| s.len() + 1);
        }
        exceeded = true;
    }
    if exceeded {
        events.push((
            "DNSConfigForming",
            format!("Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}", config.searches.join(" ")),
        ));
    }
    PodDns { config, events }
}

/// The pod's hostname (for its UTS namespace) and the names of its own line in `/etc/hosts`
/// (kubelet's `GeneratePodHostNameAndDomain` and `GetNodenameForKernel`): `hostname` or the
/// pod's name, cut to 63 characters; with a `subdomain`, the FQDN
/// `<hostname>.<subdomain>.<namespace>.svc.<cluster domain>` first on the line, and the
/// kernel's hostname with `setHostnameAsFQDN`.
pub fn hostname(pod: &Pod, cluster_domain: &str) -> Result<(String, Vec<String>), String> {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut host = spec.and_then(|s| s.hostname.clone()).filter(|h| !h.is_empty()).unwrap_or(name);
    if host.len() > 63 {
        host.truncate(63);
        host = host.trim_end_matches(['-', '.']).to_string();
    }
    let Some(sub) = spec.and_then(|s| s.subdomain.as_deref()).filter(|s| !s.is_empty()) else {
        return Ok((host.clone(), vec![host]));
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let fqdn = format!("{host}.{sub}.{ns}.svc.{cluster_domain}");
    let kernel = if spec.and_then(|s| s.set_hostname_as_fqdn).unwrap_or(false) {
        if fqdn.len() > MAX_FQDN {
            return Err(format!(
                "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long ({MAX_FQDN} characters is the max, {} characters requested)",
                fqdn.len()
            ));
        }
        fqdn.clone()
    } else {
        host.clone()
    };
    Ok((kernel, vec![fqdn, host]))
}

/// The pod's `hostAliases` as (address, names); an alias whose address does not parse is
/// refused (the API server validates them).
pub fn host_aliases(pod: &Pod) -> Result<Vec<(IpAddr, Vec<String>)>, String> {
    let mut out = Vec::new();
    for a in pod.spec.iter().flat_map(|s| s.host_aliases.iter().flatten()) {
        let ip: IpAddr = a.ip.parse().map_err(|_| format!("hostAliases: invalid IP address {:?}", a.ip))?;
        out.push((ip, a.hostnames.clone().unwrap_or_default()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "namespace": "ns1", "uid": "u1"}, "spec": v})).expect("pod")
    }

    fn node(cluster_dns: &[&str]) -> NodeDns {
        NodeDns {
            cluster_dns: cluster_dns.iter().map(|s| s.parse().expect("ip")).collect(),
            cluster_domain: "cluster.local".into(),
            host: parse_resolv_conf("# comment\nnameserver 10.0.0.2\nsearch corp.example. .\nsearch home.example\noptions ndots:2 rotate\noptions ndots:3\n"),
        }
    }

    #[test]
    fn the_nodes_resolv_conf() {
        let h = node(&[]).host;
        assert_eq!(h.servers, ["10.0.0.2"]);
        assert_eq!(h.searches, ["home.example"]);
        assert_eq!(h.options, ["rotate", "ndots:3"]);
    }

    #[test]
    fn policies() {
        let n = node(&["10.96.0.10"]);
        let cf = pod_dns(&pod(serde_json::json!({"containers": []})), &n);
        assert_eq!(cf.config.servers, ["10.96.0.10"]);
        assert_eq!(cf.config.searches, ["ns1.svc.cluster.local", "svc.cluster.local", "cluster.local", "home.example"]);
        assert_eq!(cf.config.options, ["ndots:5"]);
        assert!(cf.events.is_empty());
        // ClusterFirst on the host network is Default; ClusterFirstWithHostNet is the cluster's.
        let host_cf = pod_dns(&pod(serde_json::json!({"containers": [], "hostNetwork": true})), &n);
        assert_eq!(host_cf.config, n.host);
        let host_cfwhn = pod_dns(&pod(serde_json::json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})), &n);
        assert_eq!(host_cfwhn.config.servers, ["10.96.0.10"]);
        assert_eq!(pod_dns(&pod(serde_json::json!({"containers": [], "dnsPolicy": "Default"})), &n).config, n.host);
        // None: only the pod's.
        let none = pod_dns(&pod(serde_json::json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "options": [{"name": "edns0"}]}})), &n);
        assert_eq!(none.config, DnsConfig { servers: vec!["1.1.1.1".into()], searches: vec![], options: vec!["edns0".into()] });
        // Without a cluster DNS address: Default, and kubelet's event.
        let missing = pod_dns(&pod(serde_json::json!({"containers": []})), &node(&[]));
        assert_eq!(missing.config, n.host);
        assert_eq!(
            missing.events,
            [("MissingClusterDNS", "pod: \"p_ns1(u1)\". kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.".to_string())]
        );
    }

    #[test]
    fn dns_config_merges_and_limits() {
        let n = node(&["10.96.0.10"]);
        let p = pod(serde_json::json!({"containers": [], "dnsConfig": {
            "nameservers": ["10.96.0.10", "192.0.2.1"], "searches": ["svc.cluster.local", "extra.example"],
            "options": [{"name": "ndots", "value": "1"}, {"name": "edns0"}]}}));
        let d = pod_dns(&p, &n);
        assert_eq!(d.config.servers, ["10.96.0.10", "192.0.2.1"]);
        assert_eq!(d.config.searches, ["ns1.svc.cluster.local", "svc.cluster.local", "cluster.local", "home.example", "extra.example"]);
        assert_eq!(d.config.options, ["edns0", "ndots:1"]);
        // Over the limits: cut, one event each.
        let searches: Vec<String> = (0..40).map(|i| format!("s{i}.example")).collect();
        let p = pod(serde_json::json!({"containers": [], "dnsConfig": {"nameservers": ["1.1.1.1", "1.1.1.2", "1.1.1.3"], "searches": searches}}));
        let d = pod_dns(&p, &n);
        assert_eq!(d.config.servers, ["10.96.0.10", "1.1.1.1", "1.1.1.2"]);
        assert_eq!(d.config.searches.len(), MAX_SEARCHES);
        assert_eq!(d.events.len(), 2);
        assert_eq!(d.events[0].1, "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: 10.96.0.10 1.1.1.1 1.1.1.2");
        assert!(d.events[1].1.ends_with(&d.config.searches.join(" ")));
        // The search line's characters: domains dropped from the end until it fits.
        let long: Vec<String> = (0..20).map(|i| format!("{i:02}{}", "x".repeat(200))).collect();
        let p = pod(serde_json::json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {"searches": long}}));
        let d = pod_dns(&p, &n);
        assert!(d.config.searches.join(" ").len() <= MAX_SEARCH_CHARS);
        assert_eq!(d.config.searches.len(), 10);
        assert_eq!(d.events.len(), 1);
    }

    #[test]
    fn hostnames() {
        let h = |v| hostname(&pod(v), "cluster.local");
        assert_eq!(h(serde_json::json!({"containers": []})), Ok(("p".into(), vec!["p".into()])));
        assert_eq!(h(serde_json::json!({"containers": [], "hostname": "web-0", "subdomain": "sub"})), Ok(("web-0".into(), vec!["web-0.sub.ns1.svc.cluster.local".into(), "web-0".into()])));
        let fqdn = h(serde_json::json!({"containers": [], "hostname": "web-0", "subdomain": "sub", "setHostnameAsFQDN": true})).expect("fqdn");
        assert_eq!(fqdn.0, "web-0.sub.ns1.svc.cluster.local");
        let long = h(serde_json::json!({"containers": [], "hostname": "a".repeat(40), "subdomain": "sub", "setHostnameAsFQDN": true}));
        assert!(long.is_err_and(|e| e.contains("is too long (64 characters is the max, 66 characters requested)")));
    }
}
