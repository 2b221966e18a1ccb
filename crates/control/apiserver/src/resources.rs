//! The kinds the API server serves: one static table of built-in kinds plus the live set of
//! kinds CustomResourceDefinitions define ([`crate::crd`]), read on every request; discovery,
//! routing, storage keys, OpenAPI and the Table printer all derive from them.

/// One resource type (a kind at a group/version).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resource {
    /// API group; "" is the legacy core group served under `/api`.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural used in URLs (`deployments`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served (`status`, `scale`, ...).
    pub subresources: &'static [&'static str],
    /// Defined by a CustomResourceDefinition: no built-in defaulting, validation, schema table
    /// or printer applies, whatever its kind is called ([`Resource::builtin`]).
    pub custom: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `pods` for the core group (the "resource" of a Status error).
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Storage key prefix: `/registry/<group or core>/<plural>/` (a kind that is a view of
    /// another group's objects, [`STORED_WITH`], uses that group's).
    pub fn key_prefix(&self) -> String {
        let stored = STORED_WITH.iter().find(|(g, p, _)| !self.custom && *g == self.group && *p == self.plural).map_or(self.group, |(_, _, s)| *s);
        let g = if stored.is_empty() { "core" } else { stored };
        format!("/registry/{g}/{}/", self.plural)
    }

    /// Key of one object (`namespace` ignored for cluster-scoped kinds).
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }

    /// Prefix for listing: one namespace, or all.
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/", self.key_prefix()),
            _ => self.key_prefix(),
        }
    }

    /// The kind, for choosing built-in behaviour (validation, printers, schemas, field
    /// selectors): "" for a custom kind, which may share a built-in kind's name.
    pub fn builtin(&self) -> &'static str {
        if self.custom {
            ""
        } else {
            self.kind
        }
    }

    pub fn verbs(&self) -> &'static [&'static str] {
        if REVIEWS.iter().any(|r| r.group == self.group && r.plural == self.plural) {
            return &["create"];
        }
        if !self.custom && self.group.is_empty() && self.plural == COMPONENT_STATUSES.plural {
            return &["get", "list"];
        }
        &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    }
}

macro_rules! res {
    ($g:expr, $v:expr, $kind:expr, $plural:expr, $singular:expr, $ns:expr, [$($short:expr),*], [$($cat:expr),*], [$($sub:expr),*]) => {
        Resource {
            group: $g,
            version: $v,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            subresources: &[$($sub),*],
            custom: false,
        }
    };
}

/// Kinds stored with another group's objects: (group, plural, storage group). events.k8s.io
/// Events are core Events seen through [`crate::convert`], as upstream stores them.
pub static STORED_WITH: &[(&str, &str, &str)] = &[("events.k8s.io", "events", "")];

/// Every served resource.
pub static RESOURCES: &[Resource] = &[
    res!("", "v1", "Namespace", "namespaces", "namespace", false, ["ns"], [], ["status", "finalize"]),
    res!("", "v1", "Pod", "pods", "pod", true, ["po"], ["all"], ["status", "binding", "eviction", "ephemeralcontainers", "log", "exec", "attach", "portforward", "proxy"]),
    res!("", "v1", "Node", "nodes", "node", false, ["no"], [], ["status"]),
    res!("", "v1", "Service", "services", "service", true, ["svc"], ["all"], ["status", "proxy"]),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", true, ["ep"], [], []),
    res!("", "v1", "ConfigMap", "configmaps", "configmap", true, ["cm"], [], []),
    res!("", "v1", "Secret", "secrets", "secret", true, [], [], []),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, ["sa"], [], ["token"]),
    res!("", "v1", "Event", "events", "event", true, ["ev"], [], []),
    res!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", true, ["rc"], ["all"], ["status", "scale"]),
    res!("", "v1", "LimitRange", "limitranges", "limitrange", true, ["limits"], [], []),
    res!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", true, ["quota"], [], ["status"]),
    res!("", "v1", "PodTemplate", "podtemplates", "podtemplate", true, [], [], []),
    res!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true, ["pvc"], [], ["status"]),
    res!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", false, ["pv"], [], ["status"]),
    res!("apps", "v1", "Deployment", "deployments", "deployment", true, ["deploy"], ["all"], ["status", "scale"]),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, ["rs"], ["all"], ["status", "scale"]),
    res!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, ["ds"], ["all"], ["status"]),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, ["sts"], ["all"], ["status", "scale"]),
    res!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true, [], [], []),
    res!("batch", "v1", "Job", "jobs", "job", true, [], ["all"], ["status"]),
    res!("batch", "v1", "CronJob", "cronjobs", "cronjob", true, ["cj"], ["all"], ["status"]),
    res!("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", true, ["hpa"], ["all"], ["status"]),
    res!("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", true, ["hpa"], ["all"], ["status"]),
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, [], [], []),
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, [], [], []),
    res!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, [], [], []),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", false, [], [], []),
    res!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", true, [], [], []),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", false, [], [], []),
    res!("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest", false, ["csr"], [], ["status", "approval"]),
    // Stored and discoverable; strata runs no aggregator, so nothing is proxied to their services.
    res!("apiregistration.k8s.io", "v1", "APIService", "apiservices", "apiservice", false, [], ["api-extensions"], ["status"]),
    res!("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", "customresourcedefinition", false, ["crd", "crds"], ["api-extensions"], ["status"]),
    res!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", false, ["sc"], [], []),
    res!("storage.k8s.io", "v1", "CSIDriver", "csidrivers", "csidriver", false, [], [], []),
    res!("storage.k8s.io", "v1", "CSINode", "csinodes", "csinode", false, [], [], []),
    res!("storage.k8s.io", "v1", "CSIStorageCapacity", "csistoragecapacities", "csistoragecapacity", true, [], [], []),
    res!("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", "volumeattachment", false, [], [], ["status"]),
    res!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true, ["ing"], [], ["status"]),
    res!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", false, [], [], []),
    res!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", true, ["netpol"], [], []),
    res!("events.k8s.io", "v1", "Event", "events", "event", true, ["ev"], [], []),
    res!("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", "validatingwebhookconfiguration", false, [], ["api-extensions"], []),
    res!("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", "mutatingwebhookconfiguration", false, [], ["api-extensions"], []),
    res!("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", "validatingadmissionpolicy", false, [], ["api-extensions"], ["status"]),
    res!("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", "validatingadmissionpolicybinding", false, [], ["api-extensions"], []),
    // API Priority and Fairness objects are stored and served; strata does not queue requests by them.
    res!("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema", "flowschemas", "flowschema", false, [], [], ["status"]),
    res!("flowcontrol.apiserver.k8s.io", "v1", "PriorityLevelConfiguration", "prioritylevelconfigurations", "prioritylevelconfiguration", false, [], [], ["status"]),
    res!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", true, ["pdb"], [], ["status"]),
    res!("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", "runtimeclass", false, [], [], []),
    res!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", false, ["pc"], [], []),
    res!("strata.dev", "v1", "VirtualMachine", "virtualmachines", "virtualmachine", true, ["vm"], ["all"], ["status", "console", "log"]),
];

/// The review kinds (`reviews.rs`): create-only, never stored, routed before this table is
/// consulted; listed in discovery only.
pub static REVIEWS: &[Resource] = &[
    res!("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", "selfsubjectaccessreview", false, [], [], []),
    res!("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", "selfsubjectrulesreview", false, [], [], []),
    res!("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", "subjectaccessreview", false, [], [], []),
    res!("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", "localsubjectaccessreview", true, [], [], []),
    res!("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview", false, [], [], []),
    res!("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", "tokenreview", false, [], [], []),
];

/// ComponentStatus (`kubectl get componentstatuses`, deprecated upstream since v1.19 and still
/// served): computed on each read (`componentstatus.rs`), never stored, routed before this
/// table is consulted; read-only.
pub static COMPONENT_STATUSES: Resource = res!("", "v1", "ComponentStatus", "componentstatuses", "componentstatus", false, ["cs"], [], []);

/// Whether objects of `r` are stored (not a review, not a computed status).
pub fn is_stored(r: &Resource) -> bool {
    !matches!(r.verbs(), ["create"] | ["get", "list"])
}

/// Every served kind: the built-in table, then the custom kinds of the moment.
pub fn served() -> Vec<&'static Resource> {
    RESOURCES.iter().chain(crate::crd::resources()).collect()
}

/// Every kind discovery lists: the served kinds and the review kinds.
pub fn discoverable() -> std::vec::IntoIter<&'static Resource> {
    let mut all = served();
    all.extend(REVIEWS.iter());
    all.push(&COMPONENT_STATUSES);
    all.into_iter()
}

/// Look up by group, version and plural (a built-in kind first, then the custom kinds).
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    // Every request looks its resource up (a scan of the table was ~1.5 % of the server's CPU
    // under a flood of writes): by plural first, a handful of entries each.
    static BY_PLURAL: std::sync::LazyLock<std::collections::HashMap<&'static str, Vec<&'static Resource>>> = std::sync::LazyLock::new(|| {
        let mut m: std::collections::HashMap<&'static str, Vec<&'static Resource>> = std::collections::HashMap::new();
        for r in RESOURCES {
            m.entry(r.plural).or_default().push(r);
        }
        m
    });
    BY_PLURAL
        .get(plural)
        .and_then(|rs| rs.iter().copied().find(|r| r.group == group && r.version == version))
        .or_else(|| crate::crd::find(group, version, plural))
}

/// Groups in discovery order: kube-aggregator's, by group priority ([`crate::apiservices::group_priority`]).
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in discoverable() {
        if !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    // As kube-aggregator lists them: by group priority, highest first, then by name.
    out.sort_by_key(|g| (std::cmp::Reverse(crate::apiservices::group_priority(g)), *g));
    out
}

/// The versions a group serves, preferred first (Kubernetes' version priority: GA before beta
/// before alpha, higher numbers first; custom groups may serve several).
pub fn group_versions(group: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in discoverable().filter(|r| r.group == group) {
        if !out.contains(&r.version) {
            out.push(r.version);
        }
    }
    out.sort_by(|a, b| version_priority(a, b));
    out
}

/// The preferred version of a group.
pub fn group_version(group: &str) -> Option<&'static str> {
    group_versions(group).into_iter().next()
}

/// Kubernetes' version ordering (apimachinery's `CompareKubeAwareVersionStrings`), most
/// preferred first: `v2` < `v1` < `v1beta2` < `v1beta1` < `v1alpha1` < anything else (by name).
pub fn version_priority(a: &str, b: &str) -> std::cmp::Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        if rest[..digits].starts_with('0') {
            return None;
        }
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((2, major, 0));
        }
        let (level, num) = if let Some(n) = tail.strip_prefix("beta") { (1, n) } else { (0, tail.strip_prefix("alpha")?) };
        if num.is_empty() || num.starts_with('0') || !num.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        Some((level, major, num.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_do_not_collide_across_namespaces_and_kinds() {
        let cm = find("", "v1", "configmaps").expect("cm");
        assert_eq!(cm.key(Some("default"), "a"), "/registry/core/configmaps/default/a");
        assert!(!cm.key(Some("default-x"), "a").starts_with(&cm.list_prefix(Some("default"))));
        let ns = find("", "v1", "namespaces").expect("ns");
        assert_eq!(ns.key(Some("ignored"), "default"), "/registry/core/namespaces/default");
        assert_eq!(find("apps", "v1", "deployments").expect("d").group_resource(), "deployments.apps");
    }

    #[test]
    fn kube_version_order() {
        let mut v = vec!["v1alpha1", "foo", "v1", "v2beta1", "v1beta2", "v11alpha2", "v2", "v10", "v1beta1", "bar", "v12alpha1"];
        v.sort_by(|a, b| version_priority(a, b));
        assert_eq!(v, ["v10", "v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v12alpha1", "v11alpha2", "v1alpha1", "bar", "foo"]);
    }
}
