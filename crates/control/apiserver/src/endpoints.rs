//! Endpoints (core/v1) and EndpointSlices (discovery.k8s.io/v1) defaulted and validated as
//! kube-apiserver does: a port's protocol defaults to TCP; addresses must be valid IPs of the
//! slice's family and not special ones (unspecified, loopback, link-local, link-local
//! multicast), because whatever follows an endpoint — a proxy, the API server dialling a
//! webhook's service — must not be pointed at the node or the server itself; names, ports and
//! counts are checked as upstream's `ValidateEndpoints` and `ValidateEndpointSlice` check them.
//! [`non_special_ip`] is also a Service's externalIPs rule.

use std::net::IpAddr;

use serde_json::{json, Value};

use crate::object::{dns_label_errors, dns_subdomain_errors, label_key_errors, label_value_errors};
use crate::status::Cause;

/// Port protocols an endpoint may name.
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
/// Limits of an EndpointSlice (`maxEndpoints`, `maxAddresses`, `maxPorts`, `maxTopologyLabels`).
const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 100;
const MAX_TOPOLOGY_LABELS: usize = 16;
/// The address types a new slice may have; an existing one may also keep the deprecated `IP`.
const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
const ADDRESS_TYPES_ON_UPDATE: &[&str] = &["FQDN", "IP", "IPv4", "IPv6"];

fn too_many(field: &str, n: usize, max: usize) -> Cause {
    Cause { reason: "FieldValueTooMany", field: field.into(), message: format!("Too many: {n}: must have at most {max} items") }
}

/// An address as Go's `net.ParseIP` reads it (an IPv4-mapped IPv6 address is its IPv4 one).
fn parse_ip(s: &str) -> Option<IpAddr> {
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        v4 => Some(v4),
    }
}

/// `ValidateEndpointIP` (formerly `ValidateNonSpecialIP`): an address that is none of
/// unspecified, loopback, link-local or link-local multicast.
pub fn non_special_ip(ip: &str, field: &str, causes: &mut Vec<Cause>) {
    let Some(parsed) = parse_ip(ip) else {
        causes.push(Cause::invalid(field, &json!(ip), "must be a valid IP address"));
        return;
    };
    let (link_local, link_local_multicast) = match parsed {
        IpAddr::V4(v4) => (v4.is_link_local(), v4.octets()[..3] == [224, 0, 0]),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xffc0 == 0xfe80, first & 0xff0f == 0xff02)
        }
    };
    if parsed.is_unspecified() {
        causes.push(Cause::invalid(field, &json!(ip), &format!("may not be unspecified ({ip})")));
    }
    if parsed.is_loopback() {
        causes.push(Cause::invalid(field, &json!(ip), "may not be in the loopback range (127.0.0.0/8, ::1/128)"));
    }
    if link_local {
        causes.push(Cause::invalid(field, &json!(ip), "may not be in the link-local range (169.254.0.0/16, fe80::/10)"));
    }
    if link_local_multicast {
        causes.push(Cause::invalid(field, &json!(ip), "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"));
    }
}

fn dns_label(value: &str, field: &str, causes: &mut Vec<Cause>) {
    causes.extend(dns_label_errors(value).into_iter().map(|m| Cause::invalid(field, &json!(value), &m)));
}

/// A port's protocol defaults to TCP (`SetDefaults_EndpointPort`); a slice's port name to "".
fn default_ports(ports: Option<&mut Value>, name_too: bool) {
    for p in ports.and_then(Value::as_array_mut).into_iter().flatten() {
        if p.is_object() && p["protocol"].is_null() {
            p["protocol"] = json!("TCP");
        }
        if name_too && p.is_object() && p["name"].is_null() {
            p["name"] = json!("");
        }
    }
}

fn protocol(p: &Value, field: &str, causes: &mut Vec<Cause>) {
    match p["protocol"].as_str() {
        None | Some("") => causes.push(Cause::required(field, "")),
        Some(proto) if !PROTOCOLS.contains(&proto) => causes.push(Cause::not_supported(field, &p["protocol"], PROTOCOLS)),
        Some(_) => {}
    }
}

fn port_number(p: &Value, field: &str, causes: &mut Vec<Cause>) {
    if !p["port"].as_i64().is_some_and(|n| (1..=65535).contains(&n)) {
        causes.push(Cause::invalid(field, &p["port"], "must be between 1 and 65535, inclusive"));
    }
}

/// Endpoints: defaults, then `validateEndpointSubsets`.
pub fn validate_endpoints(obj: &mut Value, causes: &mut Vec<Cause>) {
    for subset in obj["subsets"].as_array_mut().into_iter().flatten() {
        default_ports(subset.get_mut("ports"), false);
    }
    for (i, subset) in obj["subsets"].as_array().into_iter().flatten().enumerate() {
        let at = format!("subsets[{i}]");
        let count = |k: &str| subset[k].as_array().map_or(0, Vec::len);
        if count("addresses") == 0 && count("notReadyAddresses") == 0 {
            causes.push(Cause::required(&at, "must specify `addresses` or `notReadyAddresses`"));
        }
        for list in ["addresses", "notReadyAddresses"] {
            for (j, a) in subset[list].as_array().into_iter().flatten().enumerate() {
                endpoint_address(a, &format!("{at}.{list}[{j}]"), causes);
            }
        }
        let ports = subset["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
        for (j, p) in ports.iter().enumerate() {
            let pat = format!("{at}.ports[{j}]");
            let name = p["name"].as_str().unwrap_or("");
            if name.is_empty() && ports.len() > 1 {
                causes.push(Cause::required(&format!("{pat}.name"), ""));
            } else if !name.is_empty() {
                dns_label(name, &format!("{pat}.name"), causes);
            }
            port_number(p, &format!("{pat}.port"), causes);
            protocol(p, &format!("{pat}.protocol"), causes);
        }
    }
}

/// An update of Endpoints: an address's nodeName may not change
/// (`validateEpAddrNodeNameTransition`).
pub fn validate_endpoints_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let lists = |o: &Value| -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (i, subset) in o["subsets"].as_array().into_iter().flatten().enumerate() {
            for list in ["addresses", "notReadyAddresses"] {
                for (j, a) in subset[list].as_array().into_iter().flatten().enumerate() {
                    out.push((format!("subsets[{i}].{list}[{j}]"), a.clone()));
                }
            }
        }
        out
    };
    let old_nodes: std::collections::HashMap<&str, &str> = old["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| ["addresses", "notReadyAddresses"].into_iter().flat_map(move |k| s[k].as_array().into_iter().flatten()))
        .filter_map(|a| Some((a["ip"].as_str()?, a["nodeName"].as_str()?)))
        .collect();
    for (at, a) in lists(new) {
        let (ip, node) = (a["ip"].as_str().unwrap_or(""), a["nodeName"].as_str());
        if let Some(node) = node {
            if old_nodes.get(ip).is_some_and(|was| *was != node) {
                causes.push(Cause::forbidden(&format!("{at}.nodeName"), &format!("Cannot change NodeName for {ip} to {node}")));
            }
        }
    }
}

/// `validateEndpointAddress`: a valid IP, a hostname that is a DNS label, a nodeName that is a
/// DNS subdomain; only then the IP's range.
fn endpoint_address(a: &Value, at: &str, causes: &mut Vec<Cause>) {
    let before = causes.len();
    let ip = a["ip"].as_str().unwrap_or("");
    if parse_ip(ip).is_none() {
        causes.push(Cause::invalid(&format!("{at}.ip"), &json!(ip), "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
    }
    if let Some(host) = a["hostname"].as_str().filter(|h| !h.is_empty()) {
        dns_label(host, &format!("{at}.hostname"), causes);
    }
    if let Some(node) = a["nodeName"].as_str() {
        causes.extend(dns_subdomain_errors(node).into_iter().map(|m| Cause::invalid(&format!("{at}.nodeName"), &json!(node), &m)));
    }
    if causes.len() == before {
        non_special_ip(ip, &format!("{at}.ip"), causes);
    }
}

/// An EndpointSlice: defaults, then `ValidateEndpointSlice` but for which address types are
/// supported, which [`validate_slice_create`] and [`validate_slice_update`] tell.
pub fn validate_slice(obj: &mut Value, causes: &mut Vec<Cause>) {
    default_ports(obj.get_mut("ports"), true);
    let ty = obj["addressType"].as_str().unwrap_or("").to_string();
    if ty.is_empty() {
        causes.push(Cause::required("addressType", ""));
    }
    let endpoints = obj["endpoints"].as_array().map(Vec::as_slice).unwrap_or_default();
    if endpoints.len() > MAX_ENDPOINTS {
        causes.push(too_many("endpoints", endpoints.len(), MAX_ENDPOINTS));
    } else {
        for (i, e) in endpoints.iter().enumerate() {
            slice_endpoint(e, &ty, &format!("endpoints[{i}]"), causes);
        }
    }
    let ports = obj["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
    if ports.len() > MAX_PORTS {
        causes.push(too_many("ports", ports.len(), MAX_PORTS));
        return;
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("ports[{i}]");
        let name = p["name"].as_str().unwrap_or("");
        if !name.is_empty() {
            dns_label(name, &format!("{at}.name"), causes);
        }
        if !names.insert(name) {
            causes.push(Cause::duplicate(&format!("{at}.name"), &json!(name)));
        }
        if !p["port"].is_null() {
            port_number(p, &format!("{at}.port"), causes);
        }
        protocol(p, &format!("{at}.protocol"), causes);
        if let Some(app) = p["appProtocol"].as_str() {
            causes.extend(label_key_errors(app).into_iter().map(|m| Cause::invalid(&format!("{at}.appProtocol"), &json!(app), &m)));
        }
    }
}

/// A new slice's address type is IPv4, IPv6 or FQDN.
pub fn validate_slice_create(obj: &Value, causes: &mut Vec<Cause>) {
    address_type(obj, ADDRESS_TYPES, causes);
}

/// An existing slice may keep the deprecated `IP` type; the type never changes.
pub fn validate_slice_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    address_type(new, ADDRESS_TYPES_ON_UPDATE, causes);
    if old["addressType"] != new["addressType"] {
        causes.push(Cause::invalid("addressType", &new["addressType"], "field is immutable"));
    }
}

fn address_type(obj: &Value, allowed: &[&str], causes: &mut Vec<Cause>) {
    if obj["addressType"].as_str().is_some_and(|t| !t.is_empty() && !allowed.contains(&t)) {
        causes.push(Cause::not_supported("addressType", &obj["addressType"], allowed));
    }
}

/// One endpoint of a slice: 1-100 addresses of the slice's type, its topology labels, its
/// hostname.
fn slice_endpoint(e: &Value, ty: &str, at: &str, causes: &mut Vec<Cause>) {
    let addresses = e["addresses"].as_array().map(Vec::as_slice).unwrap_or_default();
    let apath = format!("{at}.addresses");
    if addresses.is_empty() {
        causes.push(Cause::required(&apath, "must contain at least 1 address"));
    } else if addresses.len() > MAX_ADDRESSES {
        causes.push(too_many(&apath, addresses.len(), MAX_ADDRESSES));
    }
    for (j, a) in addresses.iter().enumerate() {
        let field = format!("{apath}[{j}]");
        let text = a.as_str().unwrap_or("");
        match ty {
            "IP" if parse_ip(text).is_none() => causes.push(Cause::invalid(&field, a, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")),
            "IPv4" | "IPv6" => {
                let family_ok = match text.parse::<IpAddr>() {
                    Ok(IpAddr::V4(_)) => ty == "IPv4",
                    Ok(IpAddr::V6(v6)) => ty == "IPv6" || (ty == "IPv4" && v6.to_ipv4_mapped().is_some()),
                    Err(_) => false,
                };
                if !family_ok {
                    causes.push(Cause::invalid(&field, a, if ty == "IPv4" { "must be a valid IPv4 address" } else { "must be a valid IPv6 address" }));
                }
                non_special_ip(text, &field, causes);
            }
            "FQDN" => fqdn(text, &field, causes),
            _ => {}
        }
    }
    let topology = e["deprecatedTopology"].as_object();
    if let Some(t) = topology {
        if t.len() > MAX_TOPOLOGY_LABELS {
            causes.push(too_many(&format!("{at}.deprecatedTopology"), t.len(), MAX_TOPOLOGY_LABELS));
        }
        for (k, v) in t {
            let field = format!("{at}.deprecatedTopology");
            causes.extend(label_key_errors(k).into_iter().map(|m| Cause::invalid(&field, &json!(k), &m)));
            let v = v.as_str().unwrap_or("");
            causes.extend(label_value_errors(v).into_iter().map(|m| Cause::invalid(&field, &json!(v), &m)));
        }
    }
    if let Some(host) = e["hostname"].as_str() {
        dns_label(host, &format!("{at}.hostname"), causes);
    }
}

/// `IsFullyQualifiedDomainName`: a DNS subdomain of at least two labels (a final dot allowed).
fn fqdn(name: &str, field: &str, causes: &mut Vec<Cause>) {
    let s = name.to_ascii_lowercase();
    let s = s.strip_suffix('.').unwrap_or(&s);
    if s.is_empty() {
        causes.push(Cause::required(field, ""));
        return;
    }
    if s.split('.').count() < 2 {
        causes.push(Cause::invalid(field, &json!(name), "should be a domain with at least two segments separated by dots"));
    }
    causes.extend(dns_subdomain_errors(s).into_iter().map(|m| Cause::invalid(field, &json!(name), &m)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(causes: &[Cause]) -> Vec<String> {
        causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn special_addresses_are_refused() {
        let check = |ip: &str| {
            let mut causes = Vec::new();
            non_special_ip(ip, "ip", &mut causes);
            messages(&causes)
        };
        assert_eq!(check("127.0.0.1"), ["ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)"]);
        assert_eq!(check("::1"), ["ip: Invalid value: \"::1\": may not be in the loopback range (127.0.0.0/8, ::1/128)"]);
        assert_eq!(check("::ffff:127.0.0.2").len(), 1);
        assert_eq!(check("0.0.0.0"), ["ip: Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)"]);
        assert_eq!(check("169.254.169.254"), ["ip: Invalid value: \"169.254.169.254\": may not be in the link-local range (169.254.0.0/16, fe80::/10)"]);
        assert_eq!(check("fe80::1").len(), 1);
        assert_eq!(check("224.0.0.251"), ["ip: Invalid value: \"224.0.0.251\": may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"]);
        assert_eq!(check("ff02::1").len(), 1);
        assert!(check("10.1.2.3").is_empty() && check("192.0.2.7").is_empty() && check("2001:db8::1").is_empty() && check("224.0.1.1").is_empty());
        assert_eq!(check("nope"), ["ip: Invalid value: \"nope\": must be a valid IP address"]);
    }

    #[test]
    fn endpoints_are_defaulted_and_validated_as_upstream() {
        let mut causes = Vec::new();
        let mut ok = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1", "hostname": "a", "nodeName": "n1"}], "ports": [{"port": 80}]}]});
        validate_endpoints(&mut ok, &mut causes);
        assert!(causes.is_empty(), "{:?}", messages(&causes));
        assert_eq!(ok["subsets"][0]["ports"][0]["protocol"], "TCP");
        // Headless: no ports is fine.
        validate_endpoints(&mut json!({"subsets": [{"notReadyAddresses": [{"ip": "10.0.0.2"}]}]}), &mut causes);
        assert!(causes.is_empty(), "{:?}", messages(&causes));

        let mut bad = json!({"subsets": [
            {"ports": [{"port": 80}]},
            {"addresses": [{"ip": "127.0.0.1"}, {"ip": "10.0.0.300"}, {"ip": "10.0.0.3", "hostname": "Not_A_Label"}],
             "ports": [{"port": 0, "name": "a"}, {"port": 81, "protocol": "HTTP"}]},
        ]});
        validate_endpoints(&mut bad, &mut causes);
        assert_eq!(messages(&causes), [
            "subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`",
            "subsets[1].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
            "subsets[1].addresses[1].ip: Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            "subsets[1].addresses[2].hostname: Invalid value: \"Not_A_Label\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            "subsets[1].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "subsets[1].ports[1].name: Required value",
            "subsets[1].ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        ]);

        // An address's node may not change.
        let old = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1", "nodeName": "n1"}]}]});
        let moved = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1", "nodeName": "n2"}]}]});
        let mut causes = Vec::new();
        validate_endpoints_update(&moved, &old, &mut causes);
        assert_eq!(messages(&causes), ["subsets[0].addresses[0].nodeName: Forbidden: Cannot change NodeName for 10.0.0.1 to n2"]);
    }

    #[test]
    fn endpoint_slices_are_defaulted_and_validated_as_upstream() {
        let mut causes = Vec::new();
        let mut ok = json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"], "hostname": "a"}], "ports": [{"port": 80}]});
        validate_slice(&mut ok, &mut causes);
        assert!(causes.is_empty(), "{:?}", messages(&causes));
        assert_eq!(ok["ports"][0], json!({"port": 80, "protocol": "TCP", "name": ""}));
        validate_slice(&mut json!({"addressType": "FQDN", "endpoints": [{"addresses": ["db.example.com."]}]}), &mut causes);
        assert!(causes.is_empty(), "{:?}", messages(&causes));

        let mut bad = json!({"addressType": "IPv4", "endpoints": [
            {"addresses": []},
            {"addresses": ["127.0.0.1", "2001:db8::1"]},
        ], "ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81, "appProtocol": "-bad"}]});
        validate_slice(&mut bad, &mut causes);
        let m = messages(&causes);
        assert_eq!(m[..4], [
            "endpoints[0].addresses: Required value: must contain at least 1 address".to_string(),
            "endpoints[1].addresses[0]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)".to_string(),
            "endpoints[1].addresses[1]: Invalid value: \"2001:db8::1\": must be a valid IPv4 address".to_string(),
            "ports[1].name: Duplicate value: \"a\"".to_string(),
        ], "{m:?}");
        assert!(m[4].starts_with("ports[1].appProtocol: Invalid value: \"-bad\""), "{m:?}");

        let mut causes = Vec::new();
        validate_slice_create(&json!({"addressType": "IP"}), &mut causes);
        assert_eq!(messages(&causes), ["addressType: Unsupported value: \"IP\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""]);
        let mut causes = Vec::new();
        validate_slice_update(&json!({"addressType": "IP"}), &json!({"addressType": "IP"}), &mut causes);
        assert!(causes.is_empty(), "{:?}", messages(&causes));
        validate_slice_update(&json!({"addressType": "IPv6"}), &json!({"addressType": "IPv4"}), &mut causes);
        assert_eq!(messages(&causes), ["addressType: Invalid value: \"IPv6\": field is immutable"]);
        let mut causes = Vec::new();
        validate_slice(&mut json!({"addressType": "FQDN", "endpoints": [{"addresses": ["localhost"]}]}), &mut causes);
        assert_eq!(messages(&causes), ["endpoints[0].addresses[0]: Invalid value: \"localhost\": should be a domain with at least two segments separated by dots"]);
    }
}
