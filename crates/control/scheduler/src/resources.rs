//! Resource amounts: what a pod requests (as upstream's `resourcehelper.PodRequests` computes
//! it: containers summed, init containers as a running maximum with restartable (sidecar) init
//! containers accumulating, pod overhead added) and what a node can hold (`allocatable`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use strata_client::quantity;

/// CPU a container without a CPU request is counted with when scoring (upstream's
/// `DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// Memory a container without a memory request is counted with when scoring (200 MiB).
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// An amount of each resource the scheduler accounts for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Only meaningful for a node's allocatable (`pods`).
    pub pods: i64,
    /// Extended resources (`example.com/gpu`, `hugepages-2Mi`, ...), by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// From a `ResourceList` (requests, limits, allocatable, overhead).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list {
            r.set(name, &q.0);
        }
        r
    }

    fn set(&mut self, name: &str, q: &str) {
        match name {
            "cpu" => self.milli_cpu = quantity::milli(q),
            "memory" => self.memory = quantity::value(q),
            "ephemeral-storage" => self.ephemeral_storage = quantity::value(q),
            "pods" => self.pods = quantity::value(q),
            other if is_scalar(other) => {
                self.scalar.insert(other.to_string(), quantity::value(q));
            }
            _ => {}
        }
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Each resource the larger of the two.
    pub fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        self.pods = self.pods.max(o.pods);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0 && self.memory == 0 && self.ephemeral_storage == 0 && self.scalar.values().all(|v| *v == 0)
    }
}

/// Extended resources and huge pages count like cpu and memory; other names (`pods`, unknown
/// `kubernetes.io/` names) do not.
fn is_scalar(name: &str) -> bool {
    name.starts_with("hugepages-") || name.starts_with("attachable-volumes-") || (name.contains('/') && !name.starts_with("kubernetes.io/"))
}

/// A container's requests; a resource with a limit but no request requests its limit (the
/// API server's defaulting does the same, so objects written by other servers agree).
fn container_requests(c: &Container, non_zero: bool) -> Resources {
    let mut r = Resources::default();
    if let Some(res) = &c.resources {
        if let Some(limits) = &res.limits {
            for (k, q) in limits {
                r.set(k, &q.0);
            }
        }
        if let Some(req) = &res.requests {
            for (k, q) in req {
                r.set(k, &q.0);
            }
        }
    }
    if non_zero {
        let has = |name: &str| c.resources.as_ref().is_some_and(|res| res.requests.as_ref().is_some_and(|m| m.contains_key(name)) || res.limits.as_ref().is_some_and(|m| m.contains_key(name)));
        if !has("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU;
        }
        if !has("memory") {
            r.memory = DEFAULT_MEMORY;
        }
    }
    r
}

/// What a pod requests: app containers summed, then the init containers' peak (each
/// non-restartable one with the sidecars started before it; sidecars accumulate and also add
/// to the app containers), then the overhead. `non_zero` counts a container without a CPU or
/// memory request as [`DEFAULT_MILLI_CPU`] / [`DEFAULT_MEMORY`] (what scoring uses).
pub fn pod_requests(spec: &PodSpec, non_zero: bool) -> Resources {
    let mut reqs = Resources::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_zero));
    }
    let mut sidecars = Resources::default();
    let mut init = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c, non_zero);
        let this = if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            sidecars.add(&r);
            sidecars.clone()
        } else {
            let mut t = r;
            t.add(&sidecars);
            t
        };
        init.max(&this);
    }
    reqs.max(&init);
    if let Some(o) = &spec.overhead {
        reqs.add(&Resources::from_list(o));
    }
    reqs
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn c(cpu: &str, mem: &str, always: bool) -> Container {
        let mut req = BTreeMap::new();
        if !cpu.is_empty() {
            req.insert("cpu".to_string(), Quantity(cpu.into()));
        }
        if !mem.is_empty() {
            req.insert("memory".to_string(), Quantity(mem.into()));
        }
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements { requests: Some(req), ..Default::default() }),
            restart_policy: always.then(|| "Always".to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn init_containers_and_overhead_as_upstream() {
        // Two app containers (1 + 1 cpu), an init container of 3 cpu: the peak is 3.
        let spec = PodSpec { containers: vec![c("1", "1Gi", false), c("1", "", false)], init_containers: Some(vec![c("3", "", false)]), ..Default::default() };
        let r = pod_requests(&spec, false);
        assert_eq!((r.milli_cpu, r.memory), (3000, 1 << 30));
        // A sidecar (500m) runs alongside the apps and the init containers after it.
        let spec = PodSpec {
            containers: vec![c("1", "", false)],
            init_containers: Some(vec![c("500m", "", true), c("2", "", false)]),
            overhead: Some([("cpu".to_string(), Quantity("250m".into()))].into()),
            ..Default::default()
        };
        let r = pod_requests(&spec, false);
        // max(1 + 0.5, 2 + 0.5) + 0.25
        assert_eq!(r.milli_cpu, 2750);
        // Scoring counts a container without requests as 100m / 200Mi.
        let spec = PodSpec { containers: vec![Container { name: "a".into(), ..Default::default() }], ..Default::default() };
        assert_eq!(pod_requests(&spec, true).milli_cpu, 100);
        assert_eq!(pod_requests(&spec, true).memory, 200 << 20);
        assert!(pod_requests(&spec, false).is_zero());
    }
}
