//! Pure translations of a pod spec into what the driver takes: quantities, resources, the
//! downward API's field paths, `$(VAR)` expansion, environments, and the restart decision.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use strata_driver::pod::{ContainerResourceSpec, ContainerResources, HostPortMapping, PortProtocol};

/// A quantity in thousandths of its unit (`100m` cpu is 100; `1Ki` is 1,024,000), as
/// apimachinery's `MilliValue`. `None` for what does not parse.
pub fn milli(q: &Quantity) -> Option<i128> {
    strata_client::quantity::parse_milli(&q.0)
}

fn resource(c: &Container, which: &str, name: &str) -> Option<i128> {
    let r = c.resources.as_ref()?;
    let m = if which == "limits" { r.limits.as_ref()? } else { r.requests.as_ref()? };
    milli(m.get(name)?)
}

/// A container's cpu (millicpu) and memory (bytes) requests and limits; a missing request
/// defaults to the limit, as the API server's defaulting does.
pub fn resource_spec(c: &Container) -> ContainerResourceSpec {
    let cpu_limit = resource(c, "limits", "cpu").map(|v| v.max(0) as u64);
    let mem_limit = resource(c, "limits", "memory").map(|v| (v / 1000).max(0) as u64);
    ContainerResourceSpec {
        cpu_request_millis: resource(c, "requests", "cpu").map(|v| v.max(0) as u64).or(cpu_limit),
        cpu_limit_millis: cpu_limit,
        memory_request_bytes: resource(c, "requests", "memory").map(|v| (v / 1000).max(0) as u64).or(mem_limit),
        memory_limit_bytes: mem_limit,
    }
}

/// The cgroup settings of a container, as kubelet computes them: shares from the cpu request
/// (at least 2), a CFS quota from the cpu limit (period 100 ms), the memory limit.
pub fn container_resources(c: &Container) -> ContainerResources {
    let r = resource_spec(c);
    ContainerResources {
        cpu_shares: Some(r.cpu_request_millis.map(|m| (m * 1024 / 1000).max(2)).unwrap_or(2)),
        cpu_quota_us: r.cpu_limit_millis.map(|m| (m as i64 * 100).max(1000)),
        cpu_period_us: r.cpu_limit_millis.map(|_| 100_000),
        memory_limit_bytes: r.memory_limit_bytes,
        pids_limit: None,
        oom_score_adj: None,
    }
}

/// The pod's requests and limits as a whole (`ContainerResourceSpec::of_pod`): what a
/// VM-isolated pod's guest is sized from.
pub fn pod_resources(pod: &Pod) -> ContainerResourceSpec {
    let Some(s) = pod.spec.as_ref() else { return ContainerResourceSpec::default() };
    let app: Vec<_> = s.containers.iter().map(resource_spec).collect();
    let init: Vec<_> = s.init_containers.iter().flatten().map(resource_spec).collect();
    ContainerResourceSpec::of_pod(&app, &init)
}

/// Every container of the pod, init containers first (for the QoS class).
pub fn all_containers(pod: &Pod) -> Vec<&Container> {
    let Some(spec) = pod.spec.as_ref() else { return Vec::new() };
    spec.init_containers.iter().flatten().chain(spec.containers.iter()).collect()
}

/// The pod's ephemeral containers as containers (the same fields; `targetContainerName`
/// aside, which only says whose process namespace a debugger wants to share).
pub fn ephemeral_containers(pod: &Pod) -> Vec<Container> {
    let Some(spec) = pod.spec.as_ref() else { return Vec::new() };
    spec.ephemeral_containers
        .iter()
        .flatten()
        .map(|e| Container {
            name: e.name.clone(),
            image: e.image.clone(),
            command: e.command.clone(),
            args: e.args.clone(),
            env: e.env.clone(),
            env_from: e.env_from.clone(),
            working_dir: e.working_dir.clone(),
            volume_mounts: e.volume_mounts.clone(),
            image_pull_policy: e.image_pull_policy.clone(),
            security_context: e.security_context.clone(),
            stdin: e.stdin,
            stdin_once: e.stdin_once,
            tty: e.tty,
            termination_message_path: e.termination_message_path.clone(),
            termination_message_policy: e.termination_message_policy.clone(),
            ..Default::default()
        })
        .collect()
}

/// What the pod's fields resolve to for the downward API (`fieldRef`).
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Option<String>,
    pub host_ip: String,
}

/// A downward API `fieldRef` value, or why it cannot be had.
pub fn field_ref(f: &ObjectFieldSelector, facts: &PodFacts) -> Result<String, String> {
    let m = &facts.pod.metadata;
    let spec = facts.pod.spec.as_ref();
    let path = f.field_path.as_str();
    let subscript = |prefix: &str| path.strip_prefix(prefix).and_then(|r| r.strip_prefix("['")).and_then(|r| r.strip_suffix("']"));
    if let Some(k) = subscript("metadata.labels") {
        return Ok(m.labels.as_ref().and_then(|l| l.get(k)).cloned().unwrap_or_default());
    }
    if let Some(k) = subscript("metadata.annotations") {
        return Ok(m.annotations.as_ref().and_then(|l| l.get(k)).cloned().unwrap_or_default());
    }
    let map_text = |l: &Option<BTreeMap<String, String>>| {
        l.iter().flatten().map(|(k, v)| format!("{k}=\"{}\"\n", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))).collect::<String>()
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_text(&m.labels),
        "metadata.annotations" => map_text(&m.annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone().unwrap_or_default(),
        other => return Err(format!("unsupported fieldRef {other:?}")),
    })
}

/// A downward API `resourceFieldRef` value for `container` (the one named in the selector,
/// else `default`): a limit falls back to the node's allocatable, as kubelet's.
pub fn resource_field_ref(r: &ResourceFieldSelector, pod: &Pod, default: Option<&Container>, allocatable: &BTreeMap<String, Quantity>) -> Result<String, String> {
    let c = match &r.container_name {
        Some(n) if !n.is_empty() => all_containers(pod).into_iter().find(|c| &c.name == n).ok_or_else(|| format!("no container {n:?} for resourceFieldRef"))?,
        _ => default.ok_or("resourceFieldRef needs a containerName here")?,
    };
    let (which, name) = r.resource.split_once('.').ok_or_else(|| format!("unsupported resource {:?}", r.resource))?;
    let value = match which {
        "limits" => resource(c, "limits", name).or_else(|| allocatable.get(name).and_then(milli)),
        "requests" => resource(c, "requests", name).or_else(|| resource(c, "limits", name)),
        _ => None,
    };
    let value = match (which, name, value) {
        (_, _, Some(v)) => v,
        ("requests", _, None) => 0,
        _ => return Err(format!("unsupported resource {:?}", r.resource)),
    };
    let divisor = r.divisor.as_ref().and_then(milli).filter(|d| *d > 0).unwrap_or(1000);
    // Rounded up, at least 1 for a non-zero value (kubelet's ExtractContainerResourceValue).
    let n = (value + divisor - 1) / divisor;
    Ok(n.to_string())
}

/// The services' environment variables of a container in namespace `ns`, as kubelet makes
/// them: those of every service of the namespace (with `enableServiceLinks`, the default) and of
/// the API server's `default/kubernetes` service (always; a service of the namespace with the same
/// name wins). Services without a cluster IP (headless) have none. Per service `NAME` (upper
/// case, `-` as `_`): `NAME_SERVICE_HOST`, `NAME_SERVICE_PORT` (the first port),
/// `NAME_SERVICE_PORT_<PORT NAME>` per named port, and Docker's link variables `NAME_PORT`
/// (the first port) and `NAME_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]` per port.
pub fn service_env<'a>(services: impl IntoIterator<Item = &'a Service>, ns: &str, enable_links: bool) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    for svc in services {
        let Some(name) = svc.metadata.name.as_deref() else { continue };
        let ip_set = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).is_some_and(|ip| !ip.is_empty() && ip != "None");
        if !ip_set {
            continue;
        }
        let svc_ns = svc.metadata.namespace.as_deref().unwrap_or("");
        if svc_ns == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(svc);
        } else if svc_ns == ns && enable_links {
            chosen.insert(name, svc);
        }
    }
    let mut out = Vec::new();
    for (name, svc) in chosen {
        let Some(spec) = svc.spec.as_ref() else { continue };
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let prefix = env_name(name);
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((format!("{prefix}_SERVICE_PORT_{}", env_name(pn)), p.port.to_string()));
            }
        }
        let host_port = |port: i32| if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "TCP".into());
            let url = format!("{}://{}", proto.to_lowercase(), host_port(p.port));
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.push((pp.clone(), url));
            out.push((format!("{pp}_PROTO"), proto.to_lowercase()));
            out.push((format!("{pp}_PORT"), p.port.to_string()));
            out.push((format!("{pp}_ADDR"), ip.clone()));
        }
    }
    out
}

fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// A volume mount's `subPath`, or its `subPathExpr` expanded with the container's environment
/// (kubelet's `ExpandContainerVolumeMounts`); an empty one is none. A path that is absolute or
/// steps up (`..`) is refused with kubelet's CreateContainerConfigError message.
pub fn sub_path(m: &k8s_openapi::api::core::v1::VolumeMount, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    let sub = match (m.sub_path.as_deref().filter(|s| !s.is_empty()), m.sub_path_expr.as_deref().filter(|s| !s.is_empty())) {
        (Some(s), _) => s.to_string(),
        (None, Some(e)) => expand(e, env),
        (None, None) => return Ok(None),
    };
    if sub.is_empty() {
        return Ok(None);
    }
    let path = std::path::Path::new(&sub);
    if path.is_absolute() {
        return Err(format!("error SubPath `{sub}` must not be an absolute path"));
    }
    if path.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(format!("unable to provision SubPath `{sub}`: must not contain '..'"));
    }
    Ok(Some(sub))
}

/// `$(VAR)` expansion as kubelet's (`$$` escapes; an undefined variable stays as written).
pub fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    match env(name) {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&s[i..i + 3 + end]),
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The registry host of an image reference (`docker.io` for short names), as Docker reads it.
pub fn registry_host(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first.to_string(),
        _ => "docker.io".to_string(),
    }
}

/// The (username, password) pairs the pod's `imagePullSecrets` hold for `image`'s registry, in
/// order: `kubernetes.io/dockerconfigjson` (`auths`) and `kubernetes.io/dockercfg` secrets, with
/// `username`/`password` or `auth` (base64 `user:pass`).
pub fn pull_credentials(pod: &Pod, secrets: &std::collections::HashMap<String, Option<k8s_openapi::api::core::v1::Secret>>, image: &str) -> Vec<(String, String)> {
    use base64::Engine as _;
    let host = registry_host(image);
    let same = |key: &str| {
        let k = key.trim_start_matches("https://").trim_start_matches("http://");
        let k = k.split('/').next().unwrap_or(k);
        k == host || (host == "docker.io" && matches!(k, "index.docker.io" | "registry-1.docker.io"))
    };
    let mut out = Vec::new();
    for r in pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()) {
        let Some(Some(secret)) = secrets.get(&r.name) else { continue };
        let data = secret.data.clone().unwrap_or_default();
        let auths: Option<serde_json::Value> = if let Some(v) = data.get(".dockerconfigjson") {
            serde_json::from_slice::<serde_json::Value>(&v.0).ok().map(|j| j["auths"].clone())
        } else {
            data.get(".dockercfg").and_then(|v| serde_json::from_slice(&v.0).ok())
        };
        let Some(serde_json::Value::Object(auths)) = auths else { continue };
        for (key, entry) in auths {
            if !same(&key) {
                continue;
            }
            let (mut user, mut pass) = (entry["username"].as_str().unwrap_or("").to_string(), entry["password"].as_str().unwrap_or("").to_string());
            if user.is_empty() {
                if let Some(decoded) = entry["auth"].as_str().and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok()) {
                    if let Some((u, p)) = String::from_utf8_lossy(&decoded).split_once(':') {
                        user = u.to_string();
                        pass = p.to_string();
                    }
                }
            }
            if !user.is_empty() {
                out.push((user, pass));
            }
        }
    }
    out
}

/// The pod's host ports for its sandbox (kubelet's port mappings: the `hostPort`s of its
/// containers, not of its init containers), TCP and UDP; the driver forwards no SCTP, so SCTP
/// ports are left out.
pub fn host_ports(pod: &Pod) -> Vec<HostPortMapping> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let protocol = match p.protocol.as_deref() {
                None | Some("TCP") => PortProtocol::Tcp,
                Some("UDP") => PortProtocol::Udp,
                Some(_) => return None,
            };
            let host_port = u16::try_from(p.host_port?).ok().filter(|h| *h > 0)?;
            Some(HostPortMapping { container_port: u16::try_from(p.container_port).ok()?, host_port, host_ip: p.host_ip.as_deref().and_then(|i| i.parse().ok()), protocol })
        })
        .collect()
}

/// Whether two host port mappings claim the same port: the same protocol and number on the
/// same address, or on every address for either (upstream's `HostPortInfo`).
pub fn host_ports_conflict(a: &HostPortMapping, b: &HostPortMapping) -> bool {
    let every = |ip: &Option<std::net::IpAddr>| ip.is_none_or(|i| i.is_unspecified());
    a.protocol == b.protocol && a.host_port == b.host_port && (every(&a.host_ip) || every(&b.host_ip) || a.host_ip == b.host_ip)
}

/// kubelet's `runAsNonRoot` check (`verifyRunAsNonRoot`) of container `c` whose image runs as
/// `image_user` (its config's `User`: `uid[:gid]` or `name[:group]`; empty is root): with
/// `runAsNonRoot` (the container's, else the pod's), a `runAsUser` of 0, an image user 0, or a
/// user name that cannot be verified is refused with kubelet's message.
pub fn verify_run_as_non_root(pod: &Pod, c: &Container, image_user: &str) -> Result<(), String> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    if !sc.and_then(|s| s.run_as_non_root).or(psc.and_then(|s| s.run_as_non_root)).unwrap_or(false) {
        return Ok(());
    }
    let pod_name = super::dns::pod_label(pod);
    if let Some(uid) = sc.and_then(|s| s.run_as_user).or(psc.and_then(|s| s.run_as_user)) {
        if uid == 0 {
            return Err(format!("container's runAsUser breaks non-root policy (pod: \"{pod_name}\", container: {})", c.name));
        }
        return Ok(());
    }
    let user = image_user.split(':').next().unwrap_or("");
    match user.parse::<u32>() {
        Ok(0) => Err(format!("container has runAsNonRoot and image will run as root (pod: \"{pod_name}\", container: {})", c.name)),
        Ok(_) => Ok(()),
        Err(_) if user.is_empty() => Err(format!("container has runAsNonRoot and image will run as root (pod: \"{pod_name}\", container: {})", c.name)),
        Err(_) => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: \"{pod_name}\", container: {})",
            c.name
        )),
    }
}

/// What to do with a container whose last attempt exited with `code`, by restart policy.
pub fn should_restart(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({"metadata": {"namespace": ns, "name": name}, "spec": {"clusterIP": ip, "ports": ports}})).expect("service")
    }

    #[test]
    fn service_environment_as_kubelets() {
        let services = [
            service("ns1", "foo-svc", "10.0.0.7", serde_json::json!([{"port": 8765, "name": "http-port"}, {"port": 53, "protocol": "UDP", "name": "dns"}])),
            service("ns1", "headless", "None", serde_json::json!([{"port": 80}])),
            service("ns2", "other", "10.0.0.8", serde_json::json!([{"port": 80}])),
            service("default", "kubernetes", "10.0.0.1", serde_json::json!([{"port": 443, "name": "https"}])),
        ];
        let env: BTreeMap<String, String> = service_env(&services, "ns1", true).into_iter().collect();
        let want = [
            ("FOO_SVC_SERVICE_HOST", "10.0.0.7"),
            ("FOO_SVC_SERVICE_PORT", "8765"),
            ("FOO_SVC_SERVICE_PORT_HTTP_PORT", "8765"),
            ("FOO_SVC_SERVICE_PORT_DNS", "53"),
            ("FOO_SVC_PORT", "tcp://10.0.0.7:8765"),
            ("FOO_SVC_PORT_8765_TCP", "tcp://10.0.0.7:8765"),
            ("FOO_SVC_PORT_8765_TCP_PROTO", "tcp"),
            ("FOO_SVC_PORT_8765_TCP_PORT", "8765"),
            ("FOO_SVC_PORT_8765_TCP_ADDR", "10.0.0.7"),
            ("FOO_SVC_PORT_53_UDP", "udp://10.0.0.7:53"),
            ("FOO_SVC_PORT_53_UDP_PROTO", "udp"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.0.0.1:443"),
        ];
        for (k, v) in want {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in {env:?}");
        }
        assert!(!env.keys().any(|k| k.starts_with("HEADLESS_") || k.starts_with("OTHER_")), "{env:?}");
        // Without service links only the API server's service.
        let env = service_env(&services, "ns1", false);
        assert!(env.iter().all(|(k, _)| k.starts_with("KUBERNETES_")) && !env.is_empty(), "{env:?}");
    }

    #[test]
    fn sub_path_expressions_expand_and_refuse_escapes() {
        let m = |sub: Option<&str>, expr: Option<&str>| k8s_openapi::api::core::v1::VolumeMount {
            name: "v".into(),
            mount_path: "/m".into(),
            sub_path: sub.map(str::to_string),
            sub_path_expr: expr.map(str::to_string),
            ..Default::default()
        };
        let env = |n: &str| match n {
            "POD_NAME" => Some("p1".to_string()),
            "UP" => Some("..".to_string()),
            "ABS" => Some("/tmp".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(sub_path(&m(None, None), &env), Ok(None));
        assert_eq!(sub_path(&m(Some("a/b"), None), &env), Ok(Some("a/b".into())));
        assert_eq!(sub_path(&m(None, Some("logs/$(POD_NAME)")), &env), Ok(Some("logs/p1".into())));
        assert_eq!(sub_path(&m(None, Some("$(UP)")), &env), Err("unable to provision SubPath `..`: must not contain '..'".into()));
        assert_eq!(sub_path(&m(None, Some("$(ABS)")), &env), Err("error SubPath `/tmp` must not be an absolute path".into()));
        // An annotation not there yet expands to nothing: an absolute path until it is set.
        assert_eq!(sub_path(&m(None, Some("$(EMPTY)/$(POD_NAME)")), &env), Err("error SubPath `/p1` must not be an absolute path".into()));
        assert_eq!(sub_path(&m(Some("../x"), None), &env), Err("unable to provision SubPath `../x`: must not contain '..'".into()));
    }

    #[test]
    fn host_ports_of_containers() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {
            "initContainers": [{"name": "i", "ports": [{"containerPort": 1, "hostPort": 1001}]}],
            "containers": [
                {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}, {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"}]},
                {"name": "b", "ports": [{"containerPort": 443, "hostPort": 8443, "hostIP": "127.0.0.1", "protocol": "TCP"}, {"containerPort": 9, "hostPort": 9999, "protocol": "SCTP"}]}
            ]}}))
        .expect("pod");
        assert_eq!(
            host_ports(&pod),
            vec![
                HostPortMapping { container_port: 80, host_port: 8080, host_ip: None, protocol: PortProtocol::Tcp },
                HostPortMapping { container_port: 53, host_port: 5353, host_ip: None, protocol: PortProtocol::Udp },
                HostPortMapping { container_port: 443, host_port: 8443, host_ip: Some("127.0.0.1".parse().expect("ip")), protocol: PortProtocol::Tcp },
            ]
        );
    }

    #[test]
    fn host_ports_conflict_on_the_same_port_and_overlapping_addresses() {
        let m = |port: u16, ip: Option<&str>| HostPortMapping { container_port: 80, host_port: port, host_ip: ip.map(|i| i.parse().expect("ip")), protocol: PortProtocol::Tcp };
        let udp = |port: u16, ip: Option<&str>| HostPortMapping { protocol: PortProtocol::Udp, ..m(port, ip) };
        assert!(!host_ports_conflict(&m(8080, None), &udp(8080, None)), "TCP and UDP on one port");
        assert!(host_ports_conflict(&udp(8080, None), &udp(8080, Some("127.0.0.1"))));
        assert!(host_ports_conflict(&m(8080, None), &m(8080, None)));
        assert!(host_ports_conflict(&m(8080, None), &m(8080, Some("127.0.0.1"))), "every address covers one");
        assert!(host_ports_conflict(&m(8080, Some("0.0.0.0")), &m(8080, Some("127.0.0.1"))));
        assert!(host_ports_conflict(&m(8080, Some("127.0.0.1")), &m(8080, Some("127.0.0.1"))));
        assert!(!host_ports_conflict(&m(8080, Some("127.0.0.1")), &m(8080, Some("127.0.0.2"))), "two addresses");
        assert!(!host_ports_conflict(&m(8080, None), &m(8081, None)), "two ports");
    }

    fn q(s: &str) -> Option<i128> {
        milli(&Quantity(s.into()))
    }

    #[test]
    fn run_as_non_root() {
        let pod = |psc: serde_json::Value, csc: serde_json::Value| -> (Pod, Container) {
            let p: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
                "spec": {"securityContext": psc, "containers": [{"name": "c", "securityContext": csc}]}})).expect("pod");
            let c = p.spec.as_ref().expect("spec").containers[0].clone();
            (p, c)
        };
        let (p, c) = pod(serde_json::json!({}), serde_json::json!({}));
        assert_eq!(verify_run_as_non_root(&p, &c, ""), Ok(()));
        let (p, c) = pod(serde_json::json!({"runAsNonRoot": true}), serde_json::json!({}));
        assert_eq!(verify_run_as_non_root(&p, &c, ""), Err("container has runAsNonRoot and image will run as root (pod: \"p_ns(u)\", container: c)".into()));
        assert_eq!(verify_run_as_non_root(&p, &c, "0:0"), Err("container has runAsNonRoot and image will run as root (pod: \"p_ns(u)\", container: c)".into()));
        assert_eq!(verify_run_as_non_root(&p, &c, "1000:1000"), Ok(()));
        assert_eq!(
            verify_run_as_non_root(&p, &c, "app"),
            Err("container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root (pod: \"p_ns(u)\", container: c)".into())
        );
        // The container's settings win over the pod's.
        let (p, c) = pod(serde_json::json!({"runAsNonRoot": true, "runAsUser": 1000}), serde_json::json!({"runAsUser": 0}));
        assert_eq!(verify_run_as_non_root(&p, &c, ""), Err("container's runAsUser breaks non-root policy (pod: \"p_ns(u)\", container: c)".into()));
        let (p, c) = pod(serde_json::json!({"runAsNonRoot": true}), serde_json::json!({"runAsNonRoot": false}));
        assert_eq!(verify_run_as_non_root(&p, &c, ""), Ok(()));
        let (p, c) = pod(serde_json::json!({"runAsNonRoot": true, "runAsUser": 1000}), serde_json::json!({}));
        assert_eq!(verify_run_as_non_root(&p, &c, ""), Ok(()));
    }

    #[test]
    fn quantities() {
        assert_eq!(q("100m"), Some(100));
        assert_eq!(q("1"), Some(1000));
        assert_eq!(q("0.5"), Some(500));
        assert_eq!(q("1Ki"), Some(1024 * 1000));
        assert_eq!(q("64Mi"), Some(64 * 1024 * 1024 * 1000));
        assert_eq!(q("1G"), Some(1_000_000_000_000));
        assert_eq!(q("1e3"), Some(1_000_000));
        assert_eq!(q("x"), None);
        assert_eq!(q("1Qi"), None);
    }

    #[test]
    fn pull_secrets() {
        use base64::Engine as _;
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(registry_host("library/busybox:1"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:5000/busybox"), "127.0.0.1:5000");
        let cfg = serde_json::json!({"auths": {"127.0.0.1:5000": {"username": "u", "password": "p"}, "other:1": {"username": "x", "password": "y"}}});
        let cfg2 = serde_json::json!({"https://127.0.0.1:5000/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("a:b:c")}});
        let secret = |key: &str, v: &serde_json::Value| -> k8s_openapi::api::core::v1::Secret {
            let mut data = BTreeMap::new();
            data.insert(key.to_string(), k8s_openapi::ByteString(serde_json::to_vec(v).expect("json")));
            k8s_openapi::api::core::v1::Secret { data: Some(data), ..Default::default() }
        };
        let mut secrets = std::collections::HashMap::new();
        secrets.insert("one".to_string(), Some(secret(".dockerconfigjson", &cfg)));
        secrets.insert("two".to_string(), Some(secret(".dockercfg", &cfg2)));
        secrets.insert("gone".to_string(), None);
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [], "imagePullSecrets": [{"name": "gone"}, {"name": "one"}, {"name": "two"}]}})).expect("pod");
        assert_eq!(pull_credentials(&pod, &secrets, "127.0.0.1:5000/busybox:latest"), vec![("u".to_string(), "p".to_string()), ("a".to_string(), "b:c".to_string())]);
        assert!(pull_credentials(&pod, &secrets, "busybox").is_empty());
    }

    #[test]
    fn expansion() {
        let env = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("a$(A)b", &env), "axb");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(A", &env), "$(A");
        assert_eq!(expand("ü$(A)", &env), "üx");
    }

    #[test]
    fn resources() {
        let c: Container = serde_json::from_value(serde_json::json!({"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}})).expect("container");
        let r = container_resources(&c);
        assert_eq!(r.cpu_shares, Some(512));
        assert_eq!(r.cpu_quota_us, Some(50_000));
        assert_eq!(r.memory_limit_bytes, Some(64 << 20));
        let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]}})).expect("pod");
        let sel = ResourceFieldSelector { container_name: Some("c".into()), resource: "limits.memory".into(), divisor: Some(Quantity("1Mi".into())) };
        assert_eq!(resource_field_ref(&sel, &pod, None, &BTreeMap::new()).as_deref(), Ok("64"));
        let mut alloc = BTreeMap::new();
        alloc.insert("cpu".to_string(), Quantity("2".into()));
        let sel = ResourceFieldSelector { container_name: Some("c".into()), resource: "limits.cpu".into(), divisor: None };
        assert_eq!(resource_field_ref(&sel, &pod, None, &alloc).as_deref(), Ok("2"));
    }
}
