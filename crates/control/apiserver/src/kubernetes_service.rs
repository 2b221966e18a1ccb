//! The `default/kubernetes` Service with its Endpoints and EndpointSlice, as kube-apiserver's
//! bootstrap controller keeps them (`pkg/controlplane/controller/kubernetesservice`): the first
//! address of the service range, port 443 (`https`) to the API server's secure port, endpoints at
//! the advertised address. In-cluster clients and upstream's e2e framework find the API server
//! through them. Created when missing and the endpoints corrected, at start and every 10 s.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use strata_store::Store;

/// The Service's cluster IP: the first address of kubeadm's default service range
/// (10.96.0.0/12). strata allocates no other cluster IPs yet.
pub const SERVICE_IP: &str = "10.96.0.1";
const NAME: &str = "kubernetes";
const NAMESPACE: &str = "default";
/// How often the objects are checked (kube-apiserver's `EndpointReconcilerInterval` default).
const INTERVAL: Duration = Duration::from_secs(10);

fn service(port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP", "clusterIP": SERVICE_IP, "clusterIPs": [SERVICE_IP],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
        },
        "status": {"loadBalancer": {}},
    })
}

fn endpoints(ip: IpAddr, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    })
}

fn endpoint_slice(ip: IpAddr, port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": NAME}},
        "addressType": if ip.is_ipv6() { "IPv6" } else { "IPv4" },
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    })
}

/// Create `obj` at its key when missing; with `fields`, rewrite those top-level fields of an
/// existing object that differ (the endpoints follow the server's address and port).
async fn ensure(store: &dyn Store, plural: &str, group: &str, obj: Value, fields: &[&str]) -> Result<(), strata_store::Error> {
    let Some(r) = crate::resources::find(group, "v1", plural) else { return Ok(()) };
    let key = r.key(Some(NAMESPACE), NAME);
    match store.get(&key).await? {
        None => {
            let mut obj = obj;
            obj["metadata"]["uid"] = json!(crate::object::uuid());
            obj["metadata"]["creationTimestamp"] = json!(crate::object::now());
            match store.create(&key, crate::object::for_storage(&obj)).await {
                Ok(_) | Err(strata_store::Error::AlreadyExists(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some(kv) => {
            let Ok(mut cur) = serde_json::from_slice::<Value>(&kv.value) else { return Ok(()) };
            if fields.iter().all(|f| cur[*f] == obj[*f]) {
                return Ok(());
            }
            for f in fields {
                cur[*f] = obj[*f].clone();
            }
            match store.update(&key, crate::object::for_storage(&cur), kv.mod_revision).await {
                // Someone wrote it meanwhile: the next round looks again.
                Ok(_) | Err(strata_store::Error::Conflict { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

/// One round: the Service, then its Endpoints and EndpointSlice at `ip`:`port`.
pub async fn reconcile(store: &dyn Store, ip: IpAddr, port: u16) -> Result<(), strata_store::Error> {
    ensure(store, "services", "", service(port), &[]).await?;
    ensure(store, "endpoints", "", endpoints(ip, port), &["subsets"]).await?;
    ensure(store, "endpointslices", "discovery.k8s.io", endpoint_slice(ip, port), &["addressType", "endpoints", "ports"]).await
}

/// Keep them for the life of the process.
pub async fn run(store: Arc<dyn Store>, ip: IpAddr, port: u16) {
    loop {
        if let Err(e) = reconcile(store.as_ref(), ip, port).await {
            tracing::warn!(error = %e, "keeping the default/kubernetes Service");
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
