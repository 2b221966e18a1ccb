//! The kinds the API server serves: one static table, from which discovery, routing, storage
//! keys and the Table printer all derive.

/// One resource type (a kind at a group/version).
#[derive(Clone, Debug)]
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

    /// Storage key prefix: `/registry/<group or core>/<plural>/`.
    pub fn key_prefix(&self) -> String {
        let g = if self.group.is_empty() { "core" } else { self.group };
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

    pub fn verbs(&self) -> &'static [&'static str] {
        if REVIEWS.iter().any(|r| r.group == self.group && r.plural == self.plural) {
            return &["create"];
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
        }
    };
}

/// Every served resource.
pub static RESOURCES: &[Resource] = &[
    res!("", "v1", "Namespace", "namespaces", "namespace", false, ["ns"], [], ["status"]),
    res!("", "v1", "Pod", "pods", "pod", true, ["po"], ["all"], ["status", "binding", "log", "exec", "attach", "portforward"]),
    res!("", "v1", "Node", "nodes", "node", false, ["no"], [], ["status"]),
    res!("", "v1", "Service", "services", "service", true, ["svc"], ["all"], ["status"]),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", true, ["ep"], [], []),
    res!("", "v1", "ConfigMap", "configmaps", "configmap", true, ["cm"], [], []),
    res!("", "v1", "Secret", "secrets", "secret", true, [], [], []),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, ["sa"], [], ["token"]),
    res!("", "v1", "Event", "events", "event", true, ["ev"], [], []),
    res!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true, ["pvc"], [], ["status"]),
    res!("apps", "v1", "Deployment", "deployments", "deployment", true, ["deploy"], ["all"], ["status", "scale"]),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, ["rs"], ["all"], ["status", "scale"]),
    res!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, ["ds"], ["all"], ["status"]),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, ["sts"], ["all"], ["status", "scale"]),
    res!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true, [], [], []),
    res!("batch", "v1", "Job", "jobs", "job", true, [], ["all"], ["status"]),
    res!("batch", "v1", "CronJob", "cronjobs", "cronjob", true, ["cj"], ["all"], ["status"]),
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, [], [], []),
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, [], [], []),
    res!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, [], [], []),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", false, [], [], []),
    res!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", true, [], [], []),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", false, [], [], []),
    res!("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest", false, ["csr"], [], ["status", "approval"]),
    res!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", false, ["pc"], [], []),
    res!("strata.dev", "v1", "VirtualMachine", "virtualmachines", "virtualmachine", true, ["vm"], ["all"], ["status", "console"]),
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

/// Every kind discovery lists: the served table and the review kinds.
pub fn discoverable() -> impl Iterator<Item = &'static Resource> {
    RESOURCES.iter().chain(REVIEWS.iter())
}

/// Look up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Groups in discovery order (core first), each with its versions.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in discoverable() {
        if !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// The preferred (only) version of a group.
pub fn group_version(group: &str) -> Option<&'static str> {
    discoverable().find(|r| r.group == group).map(|r| r.version)
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
}
