//! Cluster IPs of Services, as kube-apiserver's service REST storage allocates them: a
//! `ClusterIP`, `NodePort` or `LoadBalancer` Service created without one gets a free address of
//! the service range (kubeadm's default, 10.96.0.0/12, whose first address is the
//! `default/kubernetes` Service's), with `clusterIPs`, `ipFamilies` and `ipFamilyPolicy` to
//! match; a requested one must be in the range and free. An update keeps the address (it is
//! immutable). Nothing routes these addresses on the nodes (no service proxy): they name the
//! Service, in containers' service environment variables and `kubectl get svc`.

use std::net::Ipv4Addr;

use serde_json::{json, Value};
use strata_store::Store;

use crate::resources::Resource;
use crate::status::{ApiError, Cause};

/// The service range: 10.96.0.0/12.
const BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const BITS: u32 = 12;
const RANGE: &str = "10.96.0.0/12";

fn size() -> u32 {
    1 << (32 - BITS)
}

fn in_range(ip: Ipv4Addr) -> bool {
    let n = u32::from(ip);
    n & !(size() - 1) == BASE
}

fn wants_ip(svc: &Value) -> bool {
    svc["spec"]["type"].as_str() != Some("ExternalName")
}

fn invalid(r: &Resource, svc: &Value, message: String) -> ApiError {
    let ips = svc["spec"]["clusterIPs"].as_array().cloned().unwrap_or_else(|| vec![svc["spec"]["clusterIP"].clone()]);
    let shown = ips.iter().map(|v| format!("{:?}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(", ");
    let c = Cause { reason: "FieldValueInvalid", field: "spec.clusterIPs".into(), message: format!("Invalid value: []string{{{shown}}}: {message}") };
    ApiError::invalid(r, svc["metadata"]["name"].as_str().unwrap_or(""), vec![c])
}

/// The cluster IPs the stored Services hold.
async fn used(store: &dyn Store, r: &Resource) -> Result<std::collections::HashSet<u32>, ApiError> {
    let page = store.list(&r.key_prefix(), None, 0).await?;
    Ok(page
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter_map(|s| s["spec"]["clusterIP"].as_str().and_then(|ip| ip.parse::<Ipv4Addr>().ok()))
        .map(u32::from)
        .collect())
}

/// A new Service's cluster IP: allocated when missing, checked when requested.
pub async fn allocate(store: &dyn Store, r: &Resource, svc: &mut Value) -> Result<(), ApiError> {
    if !wants_ip(svc) {
        return Ok(());
    }
    let requested = svc["spec"]["clusterIP"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .map(str::to_string)
        .or_else(|| svc["spec"]["clusterIPs"][0].as_str().filter(|ip| !ip.is_empty()).map(str::to_string));
    let ip = match requested.as_deref() {
        Some("None") => {
            svc["spec"]["clusterIP"] = json!("None");
            svc["spec"]["clusterIPs"] = json!(["None"]);
            return Ok(());
        }
        Some(text) => {
            let ip: Ipv4Addr = text.parse().map_err(|_| invalid(r, svc, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string()))?;
            if !in_range(ip) {
                return Err(invalid(r, svc, format!("failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {RANGE}")));
            }
            if used(store, r).await?.contains(&u32::from(ip)) {
                return Err(invalid(r, svc, format!("failed to allocate IP {ip}: provided IP is already allocated")));
            }
            ip
        }
        None => {
            let taken = used(store, r).await?;
            // A random start, then the next free address (the network's first two and the
            // broadcast address excluded; the first is the kubernetes Service's).
            let span = size() - 3;
            let start = rand::random::<u32>() % span;
            let free = (0..span).map(|i| BASE + 2 + (start + i) % span).find(|n| !taken.contains(n));
            match free {
                Some(n) => Ipv4Addr::from(n),
                None => return Err(invalid(r, svc, "failed to allocate a serviceIP: range is full".to_string())),
            }
        }
    };
    svc["spec"]["clusterIP"] = json!(ip.to_string());
    svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
    if svc["spec"]["ipFamilies"].is_null() {
        svc["spec"]["ipFamilies"] = json!(["IPv4"]);
    }
    if svc["spec"]["ipFamilyPolicy"].is_null() {
        svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
    }
    Ok(())
}

/// An update keeps the Service's cluster IP (a request without one gets the stored one).
pub fn keep_on_update(new: &mut Value, old: &Value) {
    for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        let unset = new["spec"][f].is_null() || new["spec"][f] == "";
        if unset && !old["spec"][f].is_null() && new["spec"].is_object() {
            new["spec"][f] = old["spec"][f].clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range() {
        assert!(in_range("10.96.0.1".parse().expect("ip")));
        assert!(in_range("10.111.255.254".parse().expect("ip")));
        assert!(!in_range("10.112.0.1".parse().expect("ip")));
        assert!(!in_range("10.95.255.255".parse().expect("ip")));
    }

    #[test]
    fn updates_keep_the_address() {
        let old = json!({"spec": {"clusterIP": "10.96.3.4", "clusterIPs": ["10.96.3.4"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}});
        let mut new = json!({"spec": {"clusterIP": "", "ports": []}});
        keep_on_update(&mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.96.3.4");
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.96.3.4"]));
    }
}
