//! Discovery documents: `/api`, `/apis` (plain and the aggregated `apidiscovery.k8s.io/v2`
//! form kubectl asks for first), `/api/v1`, `/apis/<group>[/<version>]` and `/version`.

use serde_json::{json, Value};

use crate::resources::{self, Resource};

/// The Kubernetes version strata's API corresponds to (kubectl picks its client by this).
pub const KUBE_VERSION: &str = "v1.32.0";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": KUBE_VERSION,
        "gitCommit": "strata",
        "gitTreeState": "clean",
        "buildDate": "2026-11-24T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn api_versions() -> Value {
    json!({ "kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}] })
}

fn group_json(group: &str) -> Value {
    let versions: Vec<Value> = resources::group_versions(group).into_iter().map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v })).collect();
    let preferred = versions.first().cloned().unwrap_or_else(|| json!({ "groupVersion": format!("{group}/v1"), "version": "v1" }));
    json!({ "name": group, "versions": versions, "preferredVersion": preferred })
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = resources::groups().into_iter().filter(|g| !g.is_empty()).map(group_json).collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

pub fn api_group(group: &str) -> Option<Value> {
    resources::group_version(group)?;
    let mut g = group_json(group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

fn resource_json(r: &Resource) -> Value {
    let mut v = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs(),
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if let Some(hash) = storage_version_hash(r) {
        v["storageVersionHash"] = json!(hash);
    }
    v
}

/// A stored kind's `storageVersionHash`, as upstream's `discovery.StorageVersionHash`: the first
/// eight bytes of the SHA-256 of `group/version/Kind` of the version it is stored at, in base64
/// (the same for every version a kind is served at). None for the kinds never stored (reviews,
/// component statuses).
fn storage_version_hash(r: &Resource) -> Option<String> {
    use base64::Engine;
    use sha2::Digest;
    if !crate::resources::is_stored(r) {
        return None;
    }
    let (group, version) = match crate::crd::definition(r) {
        Some(d) => (d.group.clone(), d.storage.clone()),
        // The kinds served at two versions are stored at one (convert.rs).
        None => match (r.group, r.kind) {
            ("autoscaling", "HorizontalPodAutoscaler") => ("autoscaling".into(), "v2".into()),
            ("events.k8s.io", "Event") => (String::new(), "v1".into()),
            _ => (r.group.to_string(), r.version.to_string()),
        },
    };
    let digest = sha2::Sha256::digest(format!("{group}/{version}/{}", r.kind).as_bytes());
    Some(base64::engine::general_purpose::STANDARD.encode(&digest[..8]))
}

fn subresource_json(r: &Resource, sub: &str) -> Value {
    let (kind, verbs): (&str, &[&str]) = match sub {
        "scale" => ("Scale", &["get", "patch", "update"]),
        "binding" => ("Binding", &["create"]),
        "eviction" => ("Eviction", &["create"]),
        "log" => ("Pod", &["get"]),
        "exec" => ("PodExecOptions", &["create", "get"]),
        "attach" => ("PodAttachOptions", &["create", "get"]),
        "portforward" => ("PodPortForwardOptions", &["create", "get"]),
        "proxy" if r.kind == "Service" => ("ServiceProxyOptions", &["create", "delete", "get", "patch", "update"]),
        "proxy" => ("PodProxyOptions", &["create", "delete", "get", "patch", "update"]),
        "console" => ("VirtualMachineConsoleOptions", &["get"]),
        "token" => ("TokenRequest", &["create"]),
        "finalize" => (r.kind, &["update"]),
        _ => (r.kind, &["get", "patch", "update"]),
    };
    let mut v = json!({ "name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs });
    if sub == "scale" {
        // Scale lives in autoscaling/v1 whatever group its parent is in.
        v["group"] = json!("autoscaling");
        v["version"] = json!("v1");
    }
    if sub == "eviction" {
        // kubectl drain finds the Eviction's group and version here.
        v["group"] = json!("policy");
        v["version"] = json!("v1");
    }
    if sub == "token" {
        v["group"] = json!("authentication.k8s.io");
        v["version"] = json!("v1");
    }
    v
}

/// `APIResourceList` for one group/version, or `None` if not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let rs: Vec<&Resource> = resources::discoverable().filter(|r| r.group == group && r.version == version).collect();
    if rs.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in rs {
        list.push(resource_json(r));
        for sub in r.subresources {
            list.push(subresource_json(r, sub));
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list }))
}

/// The media type of aggregated discovery documents.
pub const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
pub const AGGREGATED_V2BETA1: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Which aggregated version (if any) an Accept header asks for, most preferred first.
pub fn wants_aggregated(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let p: String = part.chars().filter(|c| !c.is_whitespace()).collect();
        if p.contains("g=apidiscovery.k8s.io") && p.contains("as=APIGroupDiscoveryList") {
            if p.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if p.contains("v=v2") {
                return Some("v2");
            }
        }
    }
    None
}

/// Aggregated discovery for the legacy core group (`/api`) or the named groups (`/apis`).
pub fn aggregated(core: bool, version: &str) -> Value {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .filter(|g| g.is_empty() == core)
        .map(|g| {
            let versions: Vec<Value> = resources::group_versions(g).into_iter().map(|v| aggregated_version(g, v)).collect();
            json!({ "metadata": { "name": g }, "versions": versions })
        })
        .collect();
    json!({ "kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"), "metadata": {}, "items": groups })
}

/// One version of a group in aggregated discovery.
fn aggregated_version(g: &str, v: &str) -> Value {
    let rs: Vec<Value> = resources::discoverable()
        .filter(|r| r.group == g && r.version == v)
        .map(|r| {
            let mut e = json!({
                "resource": r.plural,
                "responseKind": { "group": r.group, "version": r.version, "kind": r.kind },
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": r.verbs(),
            });
            if !r.short_names.is_empty() {
                e["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                e["categories"] = json!(r.categories);
            }
            let subs: Vec<Value> = r
                .subresources
                .iter()
                .map(|s| {
                    let sj = subresource_json(r, s);
                    let (g, v) = match *s {
                        "scale" => ("autoscaling", "v1"),
                        "token" => ("authentication.k8s.io", "v1"),
                        "eviction" => ("policy", "v1"),
                        _ => (r.group, r.version),
                    };
                    json!({ "subresource": s, "responseKind": { "group": g, "version": v, "kind": sj["kind"] }, "verbs": sj["verbs"] })
                })
                .collect();
            if !subs.is_empty() {
                e["subresources"] = json!(subs);
            }
            e
        })
        .collect();
    json!({ "version": v, "resources": rs, "freshness": "Current" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_version_hashes_are_upstreams() {
        // Values kube-apiserver v1.32 publishes (kubectl get --raw /api/v1 and /apis/apps/v1).
        let pods = resources::find("", "v1", "pods").expect("pods");
        assert_eq!(resource_json(pods)["storageVersionHash"], "xPOwRZ+Yhw8=");
        let deployments = resources::find("apps", "v1", "deployments").expect("deployments");
        assert_eq!(resource_json(deployments)["storageVersionHash"], "8aSe+NMegvE=");
        let v1 = resources::find("autoscaling", "v1", "horizontalpodautoscalers").expect("hpa v1");
        let v2 = resources::find("autoscaling", "v2", "horizontalpodautoscalers").expect("hpa v2");
        assert_eq!(resource_json(v1)["storageVersionHash"], resource_json(v2)["storageVersionHash"]);
        let review = resources::REVIEWS.iter().find(|r| r.kind == "TokenReview").expect("review");
        assert!(resource_json(review)["storageVersionHash"].is_null());
    }

    #[test]
    fn accept_negotiation() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(wants_aggregated(kubectl), Some("v2"));
        assert_eq!(wants_aggregated("application/json"), None);
        let core = aggregated(true, "v2");
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        assert!(resource_list("apps", "v1").is_some() && resource_list("apps", "v9").is_none());
        let core_list = resource_list("", "v1").expect("core");
        let token = core_list["resources"].as_array().and_then(|a| a.iter().find(|r| r["name"] == "serviceaccounts/token")).expect("token");
        assert_eq!((&token["kind"], &token["group"], &token["verbs"]), (&json!("TokenRequest"), &json!("authentication.k8s.io"), &json!(["create"])));
    }
}
