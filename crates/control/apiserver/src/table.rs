//! The `meta.k8s.io/v1 Table` form of lists and objects, which `kubectl get` asks for and
//! prints as is: per-kind columns like the Kubernetes printers, with `NAME` and `AGE`.

use serde_json::{json, Value};

use crate::k8s_printers::Column;

fn age(obj: &Value) -> String {
    since(&obj["metadata"]["creationTimestamp"]).unwrap_or_else(|| "<unknown>".into())
}

/// How long ago a timestamp was, as kubectl's `translateTimestampSince` (None if it is not one).
fn since(ts: &Value) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(ts.as_str()?).ok()?;
    Some(human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()))
}

/// A duration as apimachinery's `duration.HumanDuration` writes it: `42s`, `3m20s`, `15m`,
/// `5h10m`, `20h`, `3d4h`, `30d`, `2y10d`, `9y`.
fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let with_rest = |n: i64, unit: &str, rest: i64, rest_unit: &str| if rest == 0 { format!("{n}{unit}") } else { format!("{n}{unit}{rest}{rest_unit}") };
    match hours {
        _ if minutes < 10 => with_rest(minutes, "m", seconds % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        0..=7 => with_rest(hours, "h", minutes % 60, "m"),
        8..=47 => format!("{hours}h"),
        48..=191 => with_rest(hours / 24, "d", hours % 24, "h"),
        _ if hours < 24 * 365 * 2 => format!("{}d", hours / 24),
        _ if hours < 24 * 365 * 8 => with_rest(hours / 24 / 365, "y", (hours / 24) % 365, "d"),
        _ => format!("{}y", hours / 24 / 365),
    }
}

/// A label selector as `metav1.FormatLabelSelector` prints it: requirements sorted by key, a set's
/// values sorted; `<none>` when empty, `<error>` for an unknown operator.
fn label_selector(sel: &Value) -> String {
    let mut parts: Vec<(String, String)> = sel["matchLabels"].as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), format!("{k}={}", v.as_str().unwrap_or("")))).collect()).unwrap_or_default();
    for e in items(&sel["matchExpressions"]) {
        let key = s(&e["key"]);
        let mut values: Vec<String> = items(&e["values"]).iter().map(s).collect();
        values.sort();
        let part = match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            _ => return "<error>".to_string(),
        };
        parts.push((key, part));
    }
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    if parts.is_empty() {
        "<none>".to_string()
    } else {
        parts.into_iter().map(|(_, p)| p).collect::<Vec<_>>().join(",")
    }
}

/// At most three entries, then "+ N more..." (kubectl's printers); `none` when empty.
fn first_three(list: Vec<String>, none: &str) -> String {
    match list.len() {
        0 => none.to_string(),
        1..=3 => list.join(","),
        n => format!("{} + {} more...", list[..3].join(","), n - 3),
    }
}

/// The elements of a JSON array (none for anything else).
fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn count(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len())
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// Access modes as kubectl prints them (`RWO,ROX,RWX,RWOP`).
fn access_modes(v: &Value) -> String {
    let short = |m: &str| match m {
        "ReadWriteOnce" => "RWO".to_string(),
        "ReadOnlyMany" => "ROX".to_string(),
        "ReadWriteMany" => "RWX".to_string(),
        "ReadWriteOncePod" => "RWOP".to_string(),
        other => other.to_string(),
    };
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).map(short).collect::<Vec<_>>().join(",")).unwrap_or_default()
}

/// strata's own kind's columns (after the VirtualMachine printer of KubeVirt's `kubectl get vm`).
#[rustfmt::skip]
static VIRTUAL_MACHINE: &[Column] = &[
    Column { name: "Name", ty: "string", format: "name", priority: 0, description: "" },
    Column { name: "Status", ty: "string", format: "", priority: 0, description: "The printable status of the machine." },
    Column { name: "Node", ty: "string", format: "", priority: 0, description: "The node the machine runs on." },
    Column { name: "IP", ty: "string", format: "", priority: 0, description: "The machine's address." },
    Column { name: "Accelerator", ty: "string", format: "", priority: 0, description: "kvm, or tcg where the node has no KVM." },
    Column { name: "Age", ty: "string", format: "", priority: 0, description: "" },
    Column { name: "Run-Strategy", ty: "string", format: "", priority: 1, description: "When the machine should run." },
    Column { name: "CPU", ty: "integer", format: "", priority: 1, description: "Virtual CPUs." },
    Column { name: "Memory", ty: "string", format: "", priority: 1, description: "Guest memory." },
    Column { name: "Restarts", ty: "integer", format: "", priority: 1, description: "Times the machine was restarted." },
];

/// kube-aggregator's APIService columns (its registry's own ConvertToTable).
#[rustfmt::skip]
static API_SERVICE: &[Column] = &[
    Column { name: "Name", ty: "string", format: "name", priority: 0, description: "" },
    Column { name: "Service", ty: "string", format: "", priority: 0, description: "The reference to the service that hosts this API endpoint." },
    Column { name: "Available", ty: "string", format: "", priority: 0, description: "Whether this service is available." },
    Column { name: "Age", ty: "string", format: "", priority: 0, description: "" },
];

/// apiserver's default table convertor, for a built-in kind without a printer (Roles, LimitRanges,
/// CustomResourceDefinitions ...): the creation time itself, not an age.
#[rustfmt::skip]
static DEFAULT: &[Column] = &[
    Column { name: "Name", ty: "string", format: "name", priority: 0, description: "" },
    Column { name: "Created At", ty: "date", format: "", priority: 0, description: "" },
];

/// A custom kind's columns when its definition declares none (the CRD handler's default).
#[rustfmt::skip]
static CUSTOM: &[Column] = &[
    Column { name: "Name", ty: "string", format: "name", priority: 0, description: "" },
    Column { name: "Age", ty: "string", format: "", priority: 0, description: "" },
];

/// The columns of `kind` ("" for a custom kind): upstream's printer (generated from
/// printers.go), or one of the above. The Name and Age columns without a description carry
/// ObjectMeta's, as upstream's.
fn columns(kind: &str) -> &'static [Column] {
    match kind {
        "" => CUSTOM,
        "VirtualMachine" => VIRTUAL_MACHINE,
        "APIService" => API_SERVICE,
        _ => crate::k8s_printers::columns(kind).unwrap_or(DEFAULT),
    }
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = json!(s(&o["metadata"]["name"]));
    let st = &o["status"];
    let sp = &o["spec"];
    let mut c = vec![name];
    match kind {
        "Pod" => c.extend(pod_cells(o)),
        "Deployment" => {
            let (names, images) = containers(&sp["template"]);
            // selector.String(): empty, not <none>, for no selector.
            let selector = if sp["selector"].is_object() { label_selector(&sp["selector"]) } else { String::new() };
            c.extend([
                json!(format!("{}/{}", int(&st["readyReplicas"]), sp["replicas"].as_i64().unwrap_or(1))),
                json!(int(&st["updatedReplicas"])),
                json!(int(&st["availableReplicas"])),
                json!(age(o)),
                json!(names),
                json!(images),
                json!(if selector == "<none>" { String::new() } else { selector }),
            ]);
        }
        "ReplicaSet" | "ReplicationController" => {
            let (names, images) = containers(&sp["template"]);
            // A ReplicationController's selector is a plain map.
            let selector = if kind == "ReplicaSet" { label_selector(&sp["selector"]) } else { label_selector(&json!({ "matchLabels": sp["selector"] })) };
            c.extend([
                json!(sp["replicas"].as_i64().unwrap_or(1)),
                json!(int(&st["replicas"])),
                json!(int(&st["readyReplicas"])),
                json!(age(o)),
                json!(names),
                json!(images),
                json!(selector),
            ]);
        }
        "StatefulSet" => {
            let (names, images) = containers(&sp["template"]);
            c.extend([json!(format!("{}/{}", int(&st["readyReplicas"]), sp["replicas"].as_i64().unwrap_or(1))), json!(age(o)), json!(names), json!(images)]);
        }
        "DaemonSet" => {
            let (names, images) = containers(&sp["template"]);
            c.extend([
                json!(int(&st["desiredNumberScheduled"])),
                json!(int(&st["currentNumberScheduled"])),
                json!(int(&st["numberReady"])),
                json!(int(&st["updatedNumberScheduled"])),
                json!(int(&st["numberAvailable"])),
                json!(label_selector(&json!({ "matchLabels": sp["template"]["spec"]["nodeSelector"] }))),
                json!(age(o)),
                json!(names),
                json!(images),
                json!(label_selector(&sp["selector"])),
            ]);
        }
        "Service" => {
            let ports: Vec<String> = sp["ports"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| {
                    let protocol = p["protocol"].as_str().unwrap_or("TCP");
                    match int(&p["nodePort"]) {
                        0 => format!("{}/{protocol}", int(&p["port"])),
                        node_port => format!("{}:{node_port}/{protocol}", int(&p["port"])),
                    }
                })
                .collect();
            let ty = sp["type"].as_str().unwrap_or("ClusterIP");
            let external: Vec<String> = sp["externalIPs"].as_array().into_iter().flatten().map(s).collect();
            // getServiceExternalIP: a balancer's addresses (sorted, deduplicated) before the external IPs.
            let external = match ty {
                "ClusterIP" | "NodePort" if external.is_empty() => "<none>".to_string(),
                "ClusterIP" | "NodePort" => external.join(","),
                "LoadBalancer" => {
                    let mut lb: Vec<String> = st["loadBalancer"]["ingress"].as_array().into_iter().flatten().filter_map(|i| i["ip"].as_str().filter(|ip| !ip.is_empty()).or(i["hostname"].as_str())).filter(|a| !a.is_empty()).map(str::to_string).collect();
                    lb.sort();
                    lb.dedup();
                    lb.extend(external);
                    if lb.is_empty() { "<pending>".to_string() } else { lb.join(",") }
                }
                "ExternalName" => s(&sp["externalName"]),
                _ => "<unknown>".to_string(),
            };
            c.extend([
                json!(ty),
                json!(sp["clusterIPs"][0].as_str().or(sp["clusterIP"].as_str()).unwrap_or("<none>")),
                json!(external),
                json!(if ports.is_empty() { "<none>".into() } else { ports.join(",") }),
                json!(age(o)),
                json!(label_selector(&json!({ "matchLabels": sp["selector"] }))),
            ]);
        }
        "ConfigMap" => c.extend([json!(count(&o["data"]) + count(&o["binaryData"])), json!(age(o))]),
        "Secret" => c.extend([json!(o["type"].as_str().unwrap_or("Opaque")), json!(count(&o["data"]) + count(&o["stringData"])), json!(age(o))]),
        "Namespace" => c.extend([json!(st["phase"].as_str().unwrap_or("Active")), json!(age(o))]),
        "Node" => {
            let ready = st["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Ready")).map(|c| c["status"] == "True");
            let mut status = match ready {
                Some(true) => "Ready",
                Some(false) => "NotReady",
                None => "Unknown",
            }
            .to_string();
            if sp["unschedulable"] == true {
                status.push_str(",SchedulingDisabled");
            }
            // Roles as upstream's printer: `node-role.kubernetes.io/ROLE` labels and `kubernetes.io/role`.
            let mut roles: Vec<String> = o["metadata"]["labels"]
                .as_object()
                .map(|l| {
                    l.iter()
                        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
                            Some(r) if !r.is_empty() => Some(r.to_string()),
                            _ if k == "kubernetes.io/role" => v.as_str().filter(|v| !v.is_empty()).map(str::to_string),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            roles.sort();
            roles.dedup();
            let address = |t: &str| {
                st["addresses"].as_array().and_then(|a| a.iter().find(|a| a["type"] == t)).and_then(|a| a["address"].as_str()).unwrap_or("<none>").to_string()
            };
            let info = &st["nodeInfo"];
            let or_unknown = |v: &Value| v.as_str().filter(|v| !v.is_empty()).unwrap_or("<unknown>").to_string();
            c.extend([
                json!(status),
                json!(if roles.is_empty() { "<none>".to_string() } else { roles.join(",") }),
                json!(age(o)),
                json!(s(&info["kubeletVersion"])),
                json!(address("InternalIP")),
                json!(address("ExternalIP")),
                json!(or_unknown(&info["osImage"])),
                json!(or_unknown(&info["kernelVersion"])),
                json!(or_unknown(&info["containerRuntimeVersion"])),
            ]);
        }
        // printComponentStatus: the Healthy condition's status, message and error.
        "ComponentStatus" => {
            let healthy = o["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Healthy");
            let status = match healthy {
                Some(c) if c["status"] == "True" => "Healthy",
                Some(_) => "Unhealthy",
                None => "Unknown",
            };
            let text = |k: &str| healthy.and_then(|c| c[k].as_str()).unwrap_or("").to_string();
            c.extend([json!(status), json!(text("message")), json!(text("error"))]);
        }
        // kubectl's formatEndpoints / formatEndpointSlice: three entries, then "+ N more...".
        "Endpoints" => {
            let mut list = Vec::new();
            for ss in o["subsets"].as_array().into_iter().flatten() {
                let addrs: Vec<&str> = ss["addresses"].as_array().into_iter().flatten().filter_map(|a| a["ip"].as_str()).collect();
                match ss["ports"].as_array().filter(|p| !p.is_empty()) {
                    Some(ports) => {
                        for p in ports {
                            list.extend(addrs.iter().map(|a| format!("{a}:{}", int(&p["port"]))));
                        }
                    }
                    None => list.extend(addrs.iter().map(|a| a.to_string())),
                }
            }
            c.extend([json!(first_three(list, "<none>")), json!(age(o))]);
        }
        "EndpointSlice" => {
            let ports: Vec<String> = o["ports"].as_array().into_iter().flatten().map(|p| p["port"].as_i64().map_or("<unset>".to_string(), |n| n.to_string())).collect();
            let addrs: Vec<String> = o["endpoints"].as_array().into_iter().flatten().flat_map(|e| e["addresses"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string))).collect();
            let ports = if ports.is_empty() { "<unset>".to_string() } else { ports.join(",") };
            c.extend([json!(s(&o["addressType"])), json!(ports), json!(first_three(addrs, "<unset>")), json!(age(o))]);
        }
        "Job" => {
            let done = int(&st["succeeded"]);
            let completions = match (sp["completions"].as_i64(), int(&sp["parallelism"])) {
                (Some(want), _) => format!("{done}/{want}"),
                (None, p) if p > 1 => format!("{done}/1 of {p}"),
                (None, _) => format!("{done}/1"),
            };
            let time = |field: &str| st[field].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            let duration = match (time("startTime"), time("completionTime")) {
                (None, _) => String::new(),
                (Some(start), None) => human_duration((chrono::Utc::now() - start.with_timezone(&chrono::Utc)).num_seconds()),
                (Some(start), Some(end)) => human_duration((end - start).num_seconds()),
            };
            let condition = |t: &str| items(&st["conditions"]).iter().any(|c| c["type"] == t && c["status"] == "True");
            let status = if condition("Complete") {
                "Complete"
            } else if condition("Failed") {
                "Failed"
            } else if o["metadata"]["deletionTimestamp"].is_string() {
                "Terminating"
            } else if condition("Suspended") {
                "Suspended"
            } else if condition("FailureTarget") {
                "FailureTarget"
            } else {
                "Running"
            };
            let (names, images) = containers(&sp["template"]);
            c.extend([json!(status), json!(completions), json!(duration), json!(age(o)), json!(names), json!(images), json!(label_selector(&sp["selector"]))]);
        }
        "CronJob" => c.extend([
            json!(s(&sp["schedule"])),
            json!(sp["timeZone"].as_str().unwrap_or("<none>")),
            // printBoolPtr: a string, as upstream's printer writes it.
            json!(match sp["suspend"].as_bool() {
                Some(true) => "True",
                Some(false) => "False",
                None => "<unset>",
            }),
            json!(st["active"].as_array().map_or(0, Vec::len)),
            json!(since(&st["lastScheduleTime"]).unwrap_or_else(|| "<none>".into())),
            json!(age(o)),
            json!(containers(&sp["jobTemplate"]["spec"]["template"]).0),
            json!(containers(&sp["jobTemplate"]["spec"]["template"]).1),
            json!(label_selector(&sp["jobTemplate"]["spec"]["selector"])),
        ]),
        "Event" => {
            // printEvent: first seen falls back to eventTime, last seen to first seen; a series
            // gives both the last time and the count; the name comes last.
            let first = since(&o["firstTimestamp"]).or_else(|| since(&o["eventTime"])).unwrap_or_else(|| "<unknown>".into());
            let series = &o["series"];
            let last = if series.is_object() { since(&series["lastObservedTime"]).unwrap_or_else(|| "<unknown>".into()) } else { since(&o["lastTimestamp"]).unwrap_or_else(|| first.clone()) };
            let count = if series.is_object() { int(&series["count"]) } else { o["count"].as_i64().filter(|n| *n != 0).unwrap_or(1) };
            let involved = &o["involvedObject"];
            let kind = s(&involved["kind"]).to_lowercase();
            let target = match involved["name"].as_str().filter(|n| !n.is_empty()) {
                Some(name) => format!("{kind}/{name}"),
                None => kind,
            };
            let or = |a: &Value, b: &Value| a.as_str().filter(|v| !v.is_empty()).or(b.as_str()).unwrap_or("").to_string();
            let (component, host) = (or(&o["source"]["component"], &o["reportingComponent"]), or(&o["source"]["host"], &o["reportingInstance"]));
            let source = if host.is_empty() { component } else { format!("{component}, {host}") };
            let name = c.remove(0);
            c.extend([
                json!(last),
                json!(s(&o["type"])),
                json!(s(&o["reason"])),
                json!(target),
                json!(s(&involved["fieldPath"])),
                json!(source),
                json!(s(&o["message"]).trim()),
                json!(first),
                json!(count),
                name,
            ]);
        }
        "VirtualMachine" => {
            let or_none = |v: &Value| v.as_str().filter(|v| !v.is_empty()).unwrap_or("<none>").to_string();
            let status = if o["metadata"]["deletionTimestamp"].is_string() { "Terminating".to_string() } else { or_none(&st["printableStatus"]) };
            c.extend([
                json!(status),
                json!(or_none(&st["nodeName"])),
                json!(or_none(&st["ipAddress"])),
                json!(or_none(&st["accelerator"])),
                json!(age(o)),
                json!(s(&sp["runStrategy"])),
                json!(int(&sp["cpu"])),
                json!(s(&sp["memory"])),
                json!(int(&st["restartCount"])),
            ]);
        }
        "PersistentVolume" => {
            let claim = if sp["claimRef"].is_object() { format!("{}/{}", s(&sp["claimRef"]["namespace"]), s(&sp["claimRef"]["name"])) } else { String::new() };
            c.extend([
                json!(s(&sp["capacity"]["storage"])),
                json!(access_modes(&sp["accessModes"])),
                json!(s(&sp["persistentVolumeReclaimPolicy"])),
                json!(s(&st["phase"])),
                json!(claim),
                json!(s(&sp["storageClassName"])),
                json!(sp["volumeAttributesClassName"].as_str().unwrap_or("<unset>")),
                json!(s(&st["reason"])),
                json!(age(o)),
                json!(s(&sp["volumeMode"])),
            ]);
        }
        "PersistentVolumeClaim" => {
            let bound = st["phase"] == "Bound";
            let phase = if o["metadata"]["deletionTimestamp"].is_string() { "Terminating".to_string() } else { s(&st["phase"]) };
            c.extend([
                json!(phase),
                json!(s(&sp["volumeName"])),
                json!(if bound { s(&st["capacity"]["storage"]) } else { String::new() }),
                json!(if bound { access_modes(&st["accessModes"]) } else { String::new() }),
                json!(sp["storageClassName"].as_str().unwrap_or("<unset>")),
                json!(sp["volumeAttributesClassName"].as_str().unwrap_or("<unset>")),
                json!(age(o)),
                json!(s(&sp["volumeMode"])),
            ]);
        }
        "StorageClass" => {
            // As upstream's printer: the default class's name says so.
            if o["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true" {
                c[0] = json!(format!("{} (default)", s(&o["metadata"]["name"])));
            }
            c.extend([
                json!(s(&o["provisioner"])),
                json!(o["reclaimPolicy"].as_str().unwrap_or("Delete")),
                json!(o["volumeBindingMode"].as_str().unwrap_or("Immediate")),
                json!(o["allowVolumeExpansion"].as_bool().unwrap_or(false).to_string()),
                json!(age(o)),
            ]);
        }
        "ControllerRevision" => {
            // As upstream's printer: the controller as `kind.group/name`.
            let controller = o["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
                .map(|r| {
                    let group = s(&r["apiVersion"]).rsplit_once('/').map(|(g, _)| g.to_string()).unwrap_or_default();
                    let kind = s(&r["kind"]).to_lowercase();
                    let gk = if group.is_empty() { kind } else { format!("{kind}.{group}") };
                    format!("{gk}/{}", s(&r["name"]))
                })
                .unwrap_or_else(|| "<none>".into());
            c.extend([json!(controller), json!(int(&o["revision"])), json!(age(o))]);
        }
        "PodDisruptionBudget" => {
            let bound = |v: &Value| match v {
                Value::Null => "N/A".to_string(),
                Value::String(x) => x.clone(),
                other => other.to_string(),
            };
            c.extend([json!(bound(&sp["minAvailable"])), json!(bound(&sp["maxUnavailable"])), json!(int(&st["disruptionsAllowed"])), json!(age(o))]);
        }
        "RuntimeClass" => c.extend([json!(s(&o["handler"])), json!(age(o))]),
        "PodTemplate" => {
            let (names, images) = containers(&o["template"]);
            let mut labels: Vec<String> = o["template"]["metadata"]["labels"].as_object().map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect()).unwrap_or_default();
            labels.sort();
            c.extend([json!(names), json!(images), json!(if labels.is_empty() { "<none>".to_string() } else { labels.join(",") })]);
        }
        "Ingress" => {
            let class = o["spec"]["ingressClassName"].as_str().unwrap_or("<none>").to_string();
            let hosts: Vec<String> = sp["rules"].as_array().into_iter().flatten().filter_map(|r| r["host"].as_str()).filter(|h| !h.is_empty()).map(str::to_string).collect();
            let hosts = if hosts.is_empty() { "*".to_string() } else { first_three(hosts, "*") };
            let addrs: Vec<String> = st["loadBalancer"]["ingress"].as_array().into_iter().flatten().filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str())).map(str::to_string).collect();
            let ports = if sp["tls"].as_array().is_some_and(|t| !t.is_empty()) { "80, 443" } else { "80" };
            c.extend([json!(class), json!(hosts), json!(addrs.join(",")), json!(ports), json!(age(o))]);
        }
        "IngressClass" => {
            let p = &sp["parameters"];
            let params = if p.is_object() {
                let group = p["apiGroup"].as_str().map(|g| format!(".{g}")).unwrap_or_default();
                format!("{}{group}/{}", s(&p["kind"]), s(&p["name"]))
            } else {
                "<none>".to_string()
            };
            c.extend([json!(s(&sp["controller"])), json!(params), json!(age(o))]);
        }
        "NetworkPolicy" => c.extend([json!(label_selector(&sp["podSelector"])), json!(age(o))]),
        "HorizontalPodAutoscaler" => {
            let r = &sp["scaleTargetRef"];
            let min = sp["minReplicas"].as_i64().map_or_else(|| "<unset>".to_string(), |m| m.to_string());
            c.extend([
                json!(format!("{}/{}", s(&r["kind"]), s(&r["name"]))),
                json!(crate::autoscaling::targets(o)),
                json!(min),
                json!(int(&sp["maxReplicas"])),
                json!(int(&st["currentReplicas"])),
                json!(age(o)),
            ]);
        }
        "CSIDriver" => {
            let b = |v: &Value| json!(v.as_bool().unwrap_or(false));
            let tokens: Vec<String> = sp["tokenRequests"].as_array().into_iter().flatten().map(|t| s(&t["audience"])).collect();
            let modes: Vec<String> = sp["volumeLifecycleModes"].as_array().into_iter().flatten().map(s).collect();
            c.extend([
                b(&sp["attachRequired"]),
                b(&sp["podInfoOnMount"]),
                b(&sp["storageCapacity"]),
                json!(if tokens.is_empty() { "<unset>".to_string() } else { tokens.join(",") }),
                b(&sp["requiresRepublish"]),
                json!(modes.join(",")),
                json!(age(o)),
            ]);
        }
        "CSINode" => c.extend([json!(sp["drivers"].as_array().map_or(0, Vec::len)), json!(age(o))]),
        "Lease" => c.extend([json!(s(&sp["holderIdentity"])), json!(age(o))]),
        "ServiceAccount" => c.extend([json!(o["secrets"].as_array().map_or(0, Vec::len)), json!(age(o))]),
        "RoleBinding" | "ClusterRoleBinding" => {
            let subjects = |k: &str| -> String {
                let names = items(&o["subjects"]).iter().filter(|x| x["kind"] == k);
                let names: Vec<String> = if k == "ServiceAccount" { names.map(|x| format!("{}/{}", s(&x["namespace"]), s(&x["name"]))).collect() } else { names.map(|x| s(&x["name"])).collect() };
                names.join(", ")
            };
            c.extend([
                json!(format!("{}/{}", s(&o["roleRef"]["kind"]), s(&o["roleRef"]["name"]))),
                json!(age(o)),
                json!(subjects("User")),
                json!(subjects("Group")),
                json!(subjects("ServiceAccount")),
            ]);
        }
        "FlowSchema" => {
            let dangling = items(&st["conditions"]).iter().find(|x| x["type"] == "Dangling").map_or("?".to_string(), |x| s(&x["status"]));
            c.extend([
                json!(s(&sp["priorityLevelConfiguration"]["name"])),
                json!(int(&sp["matchingPrecedence"])),
                json!(sp["distinguisherMethod"]["type"].as_str().unwrap_or("<none>")),
                json!(age(o)),
                json!(dangling),
            ]);
        }
        "PriorityLevelConfiguration" => {
            let (limited, queuing) = (&sp["limited"], &sp["limited"]["limitResponse"]["queuing"]);
            let number = |present: bool, v: &Value| if present { json!(int(v)) } else { json!("<none>") };
            c.extend([
                json!(s(&sp["type"])),
                number(limited.is_object(), &limited["nominalConcurrencyShares"]),
                number(queuing.is_object(), &queuing["queues"]),
                number(queuing.is_object(), &queuing["handSize"]),
                number(queuing.is_object(), &queuing["queueLengthLimit"]),
                json!(age(o)),
            ]);
        }
        "APIService" => {
            let svc = &sp["service"];
            let service = if svc.is_object() { format!("{}/{}", s(&svc["namespace"]), s(&svc["name"])) } else { "Local".to_string() };
            let available = match items(&st["conditions"]).iter().find(|x| x["type"] == "Available") {
                None => "Unknown".to_string(),
                Some(x) if x["status"] == "True" => "True".to_string(),
                Some(x) => match x["reason"].as_str().filter(|r| !r.is_empty()) {
                    Some(reason) => format!("{} ({reason})", s(&x["status"])),
                    None => s(&x["status"]),
                },
            };
            c.extend([json!(service), json!(available), json!(age(o))]);
        }
        "VolumeAttachment" => c.extend([
            json!(s(&sp["attacher"])),
            json!(sp["source"]["persistentVolumeName"].as_str().unwrap_or("")),
            json!(s(&sp["nodeName"])),
            json!(st["attached"].as_bool().unwrap_or(false)),
            json!(age(o)),
        ]),
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => c.extend([json!(o["webhooks"].as_array().map_or(0, Vec::len)), json!(age(o))]),
        "ValidatingAdmissionPolicy" => {
            let pk = &o["spec"]["paramKind"];
            let param_kind = if pk.is_object() { format!("{}/{}", s(&pk["apiVersion"]), s(&pk["kind"])) } else { "<unset>".to_string() };
            c.extend([json!(o["spec"]["validations"].as_array().map_or(0, Vec::len)), json!(param_kind), json!(age(o))]);
        }
        "ValidatingAdmissionPolicyBinding" => {
            // As upstream's printer: namespace/name, */name when no namespace, else the selector.
            let pr = &o["spec"]["paramRef"];
            let param = match (pr["name"].as_str().filter(|n| !n.is_empty()), pr["namespace"].as_str().filter(|n| !n.is_empty())) {
                _ if !pr.is_object() => "<unset>".to_string(),
                (Some(n), Some(ns)) => format!("{ns}/{n}"),
                (Some(n), None) => format!("*/{n}"),
                (None, _) if pr["selector"].is_object() => label_selector(&pr["selector"]),
                (None, _) => "<unset>".to_string(),
            };
            c.extend([json!(s(&o["spec"]["policyName"])), json!(param), json!(age(o))]);
        }
        "ResourceQuota" => {
            // As upstream's printer: "name: used/hard" by resource name, limits.* apart.
            let mut names: Vec<&String> = st["hard"].as_object().map(|h| h.keys().collect()).unwrap_or_default();
            names.sort();
            let (mut req, mut lim) = (Vec::new(), Vec::new());
            for n in names {
                let used = st["used"][n.as_str()].as_str().map(str::to_string).unwrap_or_else(|| "0".into());
                let entry = format!("{n}: {used}/{}", s(&st["hard"][n.as_str()]));
                if n.split('.').next() == Some("limits") && n.contains('.') {
                    lim.push(entry);
                } else {
                    req.push(entry);
                }
            }
            c.extend([json!(age(o)), json!(req.join(", ")), json!(lim.join(", "))]);
        }
        "PriorityClass" => c.extend([json!(int(&o["value"])), json!(o["globalDefault"].as_bool().unwrap_or(false)), json!(age(o)), json!(s(&o["preemptionPolicy"]))]),
        "CertificateSigningRequest" => {
            // As upstream's printer: the condition types in order, "Issued" once signed.
            let mut conds: Vec<String> = st["conditions"].as_array().into_iter().flatten().filter_map(|c| c["type"].as_str().map(str::to_string)).collect();
            if st["certificate"].as_str().is_some_and(|c| !c.is_empty()) {
                conds.push("Issued".into());
            }
            let condition = if conds.is_empty() { "Pending".to_string() } else { conds.join(",") };
            let duration = match sp["expirationSeconds"].as_i64() {
                Some(secs) => {
                    let (h, m) = (secs / 3600, (secs % 3600) / 60);
                    if h >= 48 { format!("{}d", h / 24) } else if h > 0 { format!("{h}h{m}m") } else { format!("{m}m") }
                }
                None => "<none>".into(),
            };
            c.extend([json!(age(o)), json!(s(&sp["signerName"])), json!(s(&sp["username"])), json!(duration), json!(condition)]);
        }
        "" => c.push(json!(age(o))),
        // The default convertor: the creation time (RFC 3339, UTC).
        _ => c.push(json!(chrono::DateTime::parse_from_rfc3339(&s(&o["metadata"]["creationTimestamp"])).map_or(String::new(), |t| t.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%SZ").to_string()))),
    }
    c
}

/// The wide Containers and Images cells of a pod template: names and images, comma-separated.
fn containers(template: &Value) -> (String, String) {
    let cs = items(&template["spec"]["containers"]);
    (cs.iter().map(|c| s(&c["name"])).collect::<Vec<_>>().join(","), cs.iter().map(|c| s(&c["image"])).collect::<Vec<_>>().join(","))
}

/// A Pod's cells after NAME, as kubectl's pod printer computes them: READY counts running ready
/// containers (and started restartable init containers, i.e. sidecars); STATUS is the most
/// telling reason — `status.reason`, `SchedulingGated`, the first unfinished init container's
/// (`Init:1/3`, `Init:CrashLoopBackOff`, `Init:Error`), else the last app container with a
/// waiting or terminated reason (`ImagePullBackOff`, `CrashLoopBackOff`, `Completed`, `Error`,
/// `ExitCode:N`), `NotReady` for a completed container beside running ones, `Terminating`; RESTARTS
/// adds the time since the latest restart (`3 (42s ago)`); then AGE and the wide columns IP, NODE,
/// NOMINATED NODE and READINESS GATES.
fn pod_cells(o: &Value) -> Vec<Value> {
    let (st, sp) = (&o["status"], &o["spec"]);
    let has_condition = |t: &str, f: &dyn Fn(&Value) -> bool| items(&st["conditions"]).iter().any(|c| c["type"] == t && f(c));
    let phase = st["phase"].as_str().unwrap_or("");
    let mut reason = st["reason"].as_str().filter(|r| !r.is_empty()).unwrap_or(phase).to_string();
    if has_condition("PodScheduled", &|c| c["reason"] == "SchedulingGated") {
        reason = "SchedulingGated".into();
    }
    let init_specs = items(&sp["initContainers"]);
    // Sidecars: init containers with restartPolicy Always run beside the app containers.
    let sidecar = |name: &Value| init_specs.iter().any(|c| c["name"] == *name && c["restartPolicy"] == "Always");
    let total = items(&sp["containers"]).len() + init_specs.iter().filter(|c| c["restartPolicy"] == "Always").count();
    let mut ready = 0;
    // (restarts, the latest finishedAt of a previous run) over all containers and over sidecars only.
    let (mut restarts, mut last) = (0i64, None::<chrono::DateTime<chrono::FixedOffset>>);
    let (mut sidecar_restarts, mut sidecar_last) = (0i64, None::<chrono::DateTime<chrono::FixedOffset>>);
    let finished_at = |c: &Value| c["lastState"]["terminated"]["finishedAt"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let exit_reason = |t: &Value| match (t["reason"].as_str().filter(|r| !r.is_empty()), int(&t["signal"]), int(&t["exitCode"])) {
        (Some(r), _, _) => r.to_string(),
        (None, 0, code) => format!("ExitCode:{code}"),
        (None, signal, _) => format!("Signal:{signal}"),
    };
    let mut initializing = false;
    for (i, c) in items(&st["initContainerStatuses"]).iter().enumerate() {
        restarts += int(&c["restartCount"]);
        last = last.max(finished_at(c));
        let is_sidecar = sidecar(&c["name"]);
        if is_sidecar {
            sidecar_restarts += int(&c["restartCount"]);
            sidecar_last = sidecar_last.max(finished_at(c));
        }
        let (terminated, waiting) = (&c["state"]["terminated"], &c["state"]["waiting"]);
        if terminated.is_object() && int(&terminated["exitCode"]) == 0 {
            continue;
        }
        if is_sidecar && c["started"] == true {
            ready += usize::from(c["ready"] == true);
            continue;
        }
        reason = if terminated.is_object() {
            format!("Init:{}", exit_reason(terminated))
        } else if let Some(w) = waiting["reason"].as_str().filter(|w| !w.is_empty() && *w != "PodInitializing") {
            format!("Init:{w}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }
    if !initializing || has_condition("Initialized", &|c| c["status"] == "True") {
        (restarts, last) = (sidecar_restarts, sidecar_last);
        let mut running = false;
        for c in items(&st["containerStatuses"]).iter().rev() {
            restarts += int(&c["restartCount"]);
            last = last.max(finished_at(c));
            let (terminated, waiting) = (&c["state"]["terminated"], &c["state"]["waiting"]);
            if let Some(w) = waiting["reason"].as_str().filter(|w| !w.is_empty()) {
                reason = w.to_string();
            } else if terminated.is_object() {
                reason = exit_reason(terminated);
            } else if c["ready"] == true && c["state"]["running"].is_object() {
                running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && running {
            reason = if has_condition("Ready", &|c| c["status"] == "True") { "Running" } else { "NotReady" }.into();
        }
    }
    if o["metadata"]["deletionTimestamp"].is_string() {
        if st["reason"] == "NodeLost" {
            reason = "Unknown".into();
        } else if !matches!(phase, "Succeeded" | "Failed") {
            reason = "Terminating".into();
        }
    }
    let restarts = match last {
        Some(at) if restarts != 0 => format!("{restarts} ({} ago)", since(&json!(at.to_rfc3339())).unwrap_or_default()),
        _ => restarts.to_string(),
    };
    let or_none = |v: &Value| v.as_str().filter(|v| !v.is_empty()).unwrap_or("<none>").to_string();
    let gates = items(&sp["readinessGates"]);
    let gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let met = gates.iter().filter(|g| has_condition(g["conditionType"].as_str().unwrap_or(""), &|c| c["status"] == "True")).count();
        format!("{met}/{}", gates.len())
    };
    vec![
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(age(o)),
        json!(or_none(if st["podIPs"][0]["ip"].is_string() { &st["podIPs"][0]["ip"] } else { &st["podIP"] })),
        json!(or_none(&sp["nodeName"])),
        json!(or_none(&st["nominatedNodeName"])),
        json!(gates),
    ]
}

/// Render objects as a Table. `list_meta` carries resourceVersion/continue of the list.
pub fn table(kind: &str, objects: &[Value], list_meta: Value) -> Value {
    let meta_doc = |field: &str| crate::k8s_docs::doc("ObjectMeta", field).unwrap_or("");
    let defs: Vec<Value> = columns(kind)
        .iter()
        .map(|c| {
            let description = match (c.description, c.name) {
                ("", "Name") => meta_doc("name"),
                ("", "Age" | "Created At") => meta_doc("creationTimestamp"),
                (d, _) => d,
            };
            json!({ "name": c.name, "type": c.ty, "format": c.format, "description": description, "priority": c.priority })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({
                "cells": cells(kind, o),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"].clone(),
                }
            });
            if kind == "Pod" {
                // Upstream marks finished pods' rows, so a client can tell them apart.
                let finished = match o["status"]["phase"].as_str() {
                    Some("Succeeded") => Some(("Succeeded", "The pod has completed successfully.")),
                    Some("Failed") => Some(("Failed", "The pod failed.")),
                    _ => None,
                };
                if let Some((reason, message)) = finished {
                    row["conditions"] = json!([{ "type": "Completed", "status": "True", "reason": reason, "message": message }]);
                }
            }
            row
        })
        .collect();
    json!({ "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": defs, "rows": rows })
}

/// The Table of objects of `r`: a built-in kind's printer, or a custom kind's
/// `additionalPrinterColumns` (`Name` and `Age` when it declares none), as upstream.
pub fn for_resource(r: &crate::resources::Resource, objects: &[Value], list_meta: Value) -> Value {
    if crate::convert::converted(r) {
        // Printed from the stored form (one printer per kind, as upstream's internal types).
        let stored: Vec<Value> = objects
            .iter()
            .map(|o| {
                let mut o = o.clone();
                crate::convert::storage_form(&mut o);
                o
            })
            .collect();
        return table(r.kind, &stored, list_meta);
    }
    if !r.custom {
        return table(r.kind, objects, list_meta);
    }
    let columns = crate::crd::definition(r).and_then(|d| d.version(r.version).map(|v| v.columns.clone())).unwrap_or_default();
    if columns.is_empty() {
        return table("", objects, list_meta);
    }
    let mut defs = vec![json!({ "name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names", "priority": 0 })];
    let mut paths = Vec::new();
    for c in &columns {
        let ty = c["type"].as_str().unwrap_or("string");
        defs.push(json!({
            "name": c["name"], "type": ty, "format": c["format"].as_str().unwrap_or(""),
            "description": c["description"].as_str().unwrap_or(""), "priority": c["priority"].as_i64().unwrap_or(0),
        }));
        paths.push((crate::jsonpath::parse(c["jsonPath"].as_str().unwrap_or("")).unwrap_or_default(), ty));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![json!(s(&o["metadata"]["name"]))];
            for (steps, ty) in &paths {
                cells.push(custom_cell(&crate::jsonpath::eval(steps, o), ty));
            }
            json!({ "cells": cells, "object": { "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"].clone() } })
        })
        .collect();
    json!({ "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": defs, "rows": rows })
}

/// One printer-column cell (upstream's CRD table convertor): nothing found is null; a `date`
/// column shows the time since the timestamp; several results are joined with commas.
fn custom_cell(found: &[&Value], ty: &str) -> Value {
    match found {
        [] => Value::Null,
        [one] if ty == "date" => match one.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
            Some(_) => json!(age(&json!({ "metadata": { "creationTimestamp": one } }))),
            None => Value::Null,
        },
        [one] => match (ty, one) {
            ("integer", Value::Number(n)) if n.is_i64() || n.is_u64() => (*one).clone(),
            ("number", Value::Number(_)) | ("boolean", Value::Bool(_)) | ("string", Value::String(_)) => (*one).clone(),
            ("string", Value::Null) => Value::Null,
            ("string", other) => json!(other.to_string()),
            _ => Value::Null,
        },
        many => json!(many.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect::<Vec<_>>().join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// READY, STATUS and RESTARTS of a pod with these spec and status fields.
    fn printed(spec: Value, status: Value) -> (String, String, String) {
        let pod = json!({ "metadata": { "name": "p", "creationTimestamp": "2020-01-01T00:00:00Z" }, "spec": spec, "status": status });
        let c = pod_cells(&pod);
        (s(&c[0]), s(&c[1]), s(&c[2]))
    }

    fn two_containers() -> Value {
        json!({ "containers": [{ "name": "a" }, { "name": "b" }] })
    }

    fn running(name: &str, ready: bool) -> Value {
        json!({ "name": name, "ready": ready, "restartCount": 0, "state": { "running": { "startedAt": "2020-01-01T00:00:00Z" } } })
    }

    #[test]
    fn status_is_the_most_telling_container_reason() {
        let waiting = |reason: &str| json!({ "name": "b", "ready": false, "restartCount": 0, "state": { "waiting": { "reason": reason } } });
        let st = json!({ "phase": "Pending", "containerStatuses": [running("a", true), waiting("ImagePullBackOff")] });
        assert_eq!(printed(two_containers(), st), ("1/2".into(), "ImagePullBackOff".into(), "0".into()));
        let st = json!({ "phase": "Pending", "containerStatuses": [waiting("ContainerCreating"), waiting("ContainerCreating")] });
        assert_eq!(printed(two_containers(), st).1, "ContainerCreating");
        // Terminated: its reason, else the signal or the exit code.
        for (terminated, want) in [
            (json!({ "exitCode": 0, "reason": "Completed" }), "Completed"),
            (json!({ "exitCode": 1, "reason": "Error" }), "Error"),
            (json!({ "exitCode": 137, "reason": "OOMKilled" }), "OOMKilled"),
            (json!({ "exitCode": 2 }), "ExitCode:2"),
            (json!({ "exitCode": 143, "signal": 15 }), "Signal:15"),
        ] {
            let st = json!({ "phase": "Failed", "containerStatuses": [{ "name": "a", "ready": false, "restartCount": 0, "state": { "terminated": terminated } }] });
            assert_eq!(printed(json!({ "containers": [{ "name": "a" }] }), st).1, want);
        }
        // A pod-level reason (an agent's rejection, an eviction) wins over the phase.
        assert_eq!(printed(two_containers(), json!({ "phase": "Failed", "reason": "OutOfpods" })).1, "OutOfpods");
        assert_eq!(printed(two_containers(), json!({ "phase": "Pending" })), ("0/2".into(), "Pending".into(), "0".into()));
        let gated = json!({ "phase": "Pending", "conditions": [{ "type": "PodScheduled", "status": "False", "reason": "SchedulingGated" }] });
        assert_eq!(printed(two_containers(), gated).1, "SchedulingGated");
    }

    #[test]
    fn a_completed_container_beside_a_running_one_is_running_or_not_ready() {
        let done = json!({ "name": "b", "ready": false, "restartCount": 0, "state": { "terminated": { "exitCode": 0, "reason": "Completed" } } });
        let st = |ready: &str| json!({ "phase": "Running", "conditions": [{ "type": "Ready", "status": ready }], "containerStatuses": [running("a", true), done.clone()] });
        assert_eq!(printed(two_containers(), st("True")).1, "Running");
        assert_eq!(printed(two_containers(), st("False")).1, "NotReady");
    }

    #[test]
    fn init_containers_show_progress_and_failures_and_sidecars_count_as_containers() {
        let spec = json!({ "initContainers": [{ "name": "i1" }, { "name": "i2" }, { "name": "side", "restartPolicy": "Always" }], "containers": [{ "name": "a" }] });
        let done = json!({ "name": "i1", "ready": false, "restartCount": 0, "state": { "terminated": { "exitCode": 0, "reason": "Completed" } } });
        let init = |second: Value| json!({ "phase": "Pending", "initContainerStatuses": [done.clone(), second], "containerStatuses": [{ "name": "a", "ready": false, "state": { "waiting": { "reason": "PodInitializing" } } }] });
        let st = init(json!({ "name": "i2", "ready": false, "restartCount": 0, "state": { "running": {} } }));
        assert_eq!(printed(spec.clone(), st), ("0/2".into(), "Init:1/3".into(), "0".into()));
        let st = init(json!({ "name": "i2", "ready": false, "restartCount": 4, "state": { "waiting": { "reason": "CrashLoopBackOff" } } }));
        assert_eq!(printed(spec.clone(), st).1, "Init:CrashLoopBackOff");
        let st = init(json!({ "name": "i2", "ready": false, "restartCount": 0, "state": { "terminated": { "exitCode": 3, "reason": "Error" } } }));
        assert_eq!(printed(spec.clone(), st).1, "Init:Error");
        let st = init(json!({ "name": "i2", "ready": false, "restartCount": 0, "state": { "terminated": { "exitCode": 3 } } }));
        assert_eq!(printed(spec.clone(), st).1, "Init:ExitCode:3");
        // Initialized, with the sidecar started and ready: it counts in READY.
        let st = json!({
            "phase": "Running",
            "conditions": [{ "type": "Initialized", "status": "True" }, { "type": "Ready", "status": "True" }],
            "initContainerStatuses": [done.clone(), { "name": "i2", "ready": false, "restartCount": 0, "state": { "terminated": { "exitCode": 0, "reason": "Completed" } } },
                { "name": "side", "ready": true, "started": true, "restartCount": 0, "state": { "running": {} } }],
            "containerStatuses": [running("a", true)],
        });
        assert_eq!(printed(spec, st), ("2/2".into(), "Running".into(), "0".into()));
    }

    #[test]
    fn restarts_say_how_long_ago_the_last_one_ended() {
        let ended = (chrono::Utc::now() - chrono::Duration::seconds(42)).to_rfc3339();
        let st = json!({ "phase": "Running", "containerStatuses": [{ "name": "a", "ready": false, "restartCount": 3,
            "state": { "waiting": { "reason": "CrashLoopBackOff" } }, "lastState": { "terminated": { "exitCode": 1, "reason": "Error", "finishedAt": ended } } }] });
        let (_, status, restarts) = printed(json!({ "containers": [{ "name": "a" }] }), st);
        assert_eq!(status, "CrashLoopBackOff");
        assert!(restarts == "3 (42s ago)" || restarts == "3 (43s ago)", "{restarts}");
    }

    #[test]
    fn deleted_pods_are_terminating_unless_finished_or_their_node_is_lost() {
        let pod = |phase: &str, reason: &str| json!({ "metadata": { "name": "p", "deletionTimestamp": "2020-01-01T00:00:00Z" }, "spec": two_containers(), "status": { "phase": phase, "reason": reason } });
        assert_eq!(pod_cells(&pod("Running", ""))[1], "Terminating");
        assert_eq!(pod_cells(&pod("Succeeded", ""))[1], "Succeeded");
        assert_eq!(pod_cells(&pod("Running", "NodeLost"))[1], "Unknown");
    }

    #[test]
    fn wide_columns_and_finished_rows_as_upstream() {
        let pod = json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "a" }], "nodeName": "n1", "readinessGates": [{ "conditionType": "x/ok" }, { "conditionType": "x/lb" }] },
            "status": { "phase": "Succeeded", "podIP": "10.0.0.5", "nominatedNodeName": "", "conditions": [{ "type": "x/ok", "status": "True" }] } });
        let t = table("Pod", &[pod], json!({}));
        let names: Vec<&str> = t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"]);
        let wide: Vec<i64> = t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["priority"].as_i64().unwrap()).collect();
        assert_eq!(wide, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(t["rows"][0]["cells"].as_array().unwrap()[5..], [json!("10.0.0.5"), json!("n1"), json!("<none>"), json!("1/2")]);
        assert_eq!(t["rows"][0]["conditions"], json!([{ "type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully." }]));
    }

    #[test]
    fn every_served_kind_has_a_cell_per_column() {
        let obj = json!({ "metadata": { "name": "x", "creationTimestamp": "2020-01-01T00:00:00Z" } });
        for r in crate::resources::RESOURCES {
            let t = table(r.builtin(), &[obj.clone()], json!({}));
            let (defs, cells) = (t["columnDefinitions"].as_array().unwrap(), t["rows"][0]["cells"].as_array().unwrap());
            assert_eq!(defs.len(), cells.len(), "{}: columns {defs:?} cells {cells:?}", r.kind);
            let named: Vec<usize> = defs.iter().enumerate().filter(|(_, d)| d["format"] == "name").map(|(i, _)| i).collect();
            // (Upstream's VolumeAttachment printer marks its Attacher column a name too.)
            assert!(!named.is_empty(), "{}: a name column", r.kind);
            assert_eq!(cells[named[0]], "x", "{}: the first name column holds the name", r.kind);
            // Described (upstream leaves a few others empty: RuntimeClass's Handler reads a key ObjectMeta lacks).
            assert!(defs.iter().filter(|d| ["Name", "Age", "Created At"].contains(&d["name"].as_str().unwrap_or(""))).all(|d| d["description"].as_str().is_some_and(|d| !d.is_empty())), "{}: {defs:?}", r.kind);
        }
    }

    fn header(kind: &str, wide: bool) -> Vec<String> {
        let t = table(kind, &[], json!({}));
        t["columnDefinitions"].as_array().unwrap().iter().filter(|c| wide || c["priority"] == 0).map(|c| s(&c["name"])).collect()
    }

    #[test]
    fn columns_are_upstreams_printers() {
        assert_eq!(header("Event", false), ["Last Seen", "Type", "Reason", "Object", "Message"]);
        assert_eq!(header("Lease", false), ["Name", "Holder", "Age"]);
        assert_eq!(header("Deployment", true), ["Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"]);
        assert_eq!(header("DaemonSet", false), ["Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Node Selector", "Age"]);
        assert_eq!(header("Job", false), ["Name", "Status", "Completions", "Duration", "Age"]);
        assert_eq!(header("RoleBinding", true), ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]);
        // Kinds whose storage uses the default convertor, whatever printers.go has.
        assert_eq!(header("ClusterRole", false), ["Name", "Created At"]);
        assert_eq!(header("CSIStorageCapacity", false), ["Name", "Created At"]);
        assert_eq!(header("", false), ["Name", "Age"]);
    }

    fn row(kind: &str, o: Value) -> Vec<Value> {
        table(kind, &[o], json!({}))["rows"][0]["cells"].as_array().unwrap().clone()
    }

    #[test]
    fn cells_as_upstreams_printers() {
        let ago = |secs: i64| (chrono::Utc::now() - chrono::Duration::seconds(secs)).to_rfc3339();
        let lease = json!({ "metadata": { "name": "kube-scheduler" }, "spec": { "holderIdentity": "strata-1_ab" } });
        assert_eq!(row("Lease", lease)[1], "strata-1_ab");
        let template = json!({ "spec": { "containers": [{ "name": "web", "image": "nginx:1" }, { "name": "log", "image": "busybox" }] } });
        let selector = json!({ "matchLabels": { "b": "2", "a": "1" }, "matchExpressions": [{ "key": "aa", "operator": "In", "values": ["z", "y"] }] });
        let deploy = json!({ "metadata": { "name": "web" }, "spec": { "replicas": 3, "selector": selector, "template": template }, "status": { "readyReplicas": 2 } });
        assert_eq!(row("Deployment", deploy)[1..], [json!("2/3"), json!(0), json!(0), json!("<unknown>"), json!("web,log"), json!("nginx:1,busybox"), json!("a=1,aa in (y,z),b=2")]);
        let job = |status: Value| row("Job", json!({ "metadata": { "name": "j" }, "spec": { "parallelism": 3, "template": template }, "status": status }));
        assert_eq!(job(json!({ "startTime": ago(200) }))[1..4], [json!("Running"), json!("0/1 of 3"), json!("3m20s")]);
        let done = json!({ "startTime": "2020-01-01T00:00:00Z", "completionTime": "2020-01-01T00:00:42Z", "succeeded": 1, "conditions": [{ "type": "Complete", "status": "True" }] });
        assert_eq!(job(done)[1..4], [json!("Complete"), json!("1/1 of 3"), json!("42s")]);
        let event = json!({ "metadata": { "name": "web.1" }, "type": "Normal", "reason": "Scheduled", "message": " Assigned \n", "involvedObject": { "kind": "Pod", "name": "web", "fieldPath": "spec.containers{a}" },
            "firstTimestamp": ago(600), "lastTimestamp": ago(30), "count": 4, "source": { "component": "default-scheduler" }, "reportingInstance": "n1" });
        assert_eq!(row("Event", event), [json!("30s"), json!("Normal"), json!("Scheduled"), json!("pod/web"), json!("spec.containers{a}"), json!("default-scheduler, n1"), json!("Assigned"), json!("10m"), json!(4), json!("web.1")]);
        let binding = json!({ "metadata": { "name": "b" }, "roleRef": { "kind": "ClusterRole", "name": "view" },
            "subjects": [{ "kind": "User", "name": "ann" }, { "kind": "ServiceAccount", "namespace": "ns", "name": "sa" }, { "kind": "User", "name": "bob" }] });
        assert_eq!(row("RoleBinding", binding)[1..], [json!("ClusterRole/view"), json!("<unknown>"), json!("ann, bob"), json!(""), json!("ns/sa")]);
        let svc = json!({ "metadata": { "name": "s" }, "spec": { "type": "NodePort", "clusterIPs": ["10.0.0.9"], "ports": [{ "port": 80, "nodePort": 30080, "protocol": "TCP" }], "selector": { "app": "web" } } });
        assert_eq!(row("Service", svc)[1..], [json!("NodePort"), json!("10.0.0.9"), json!("<none>"), json!("80:30080/TCP"), json!("<unknown>"), json!("app=web")]);
        assert_eq!(row("Role", json!({ "metadata": { "name": "r", "creationTimestamp": "2020-01-01T01:02:03+01:00" } }))[1], "2020-01-01T00:02:03Z");
    }

    #[test]
    fn durations_read_as_apimachinerys() {
        for (secs, want) in [(-5, "<invalid>"), (-1, "0s"), (119, "119s"), (120, "2m"), (200, "3m20s"), (599, "9m59s"), (600, "10m"), (10_799, "179m"), (10_800, "3h"), (18_600, "5h10m"), (28_800, "8h"), (172_799, "47h"), (172_800, "2d"), (187_200, "2d4h"), (691_200, "8d"), (63_072_000, "2y"), (63_936_000, "2y10d"), (252_288_000, "8y")] {
            assert_eq!(human_duration(secs), want, "{secs} s");
        }
    }
}
