//! Stored objects brought up to what this strata writes, at start-up, before the server serves.
//!
//! kube-apiserver applies its defaults whenever it decodes an object from etcd, so a default a
//! release adds reaches every stored object at once. strata defaults an object when it is
//! written and serves it as stored, so a default added later is written into the objects
//! stored before it here instead.
//!
//! Pod templates got the full PodSpec defaults late ([`crate::validate::pod_spec_defaults`]:
//! `securityContext: {}`, `terminationMessagePolicy`, init containers', probes' and volumes'
//! defaults). A template stored without them would differ from the same template written now,
//! and a workload whose template differs from its current revision's rolls out. So a workload
//! and the objects that keep copies of its template to compare with it (a Deployment's
//! ReplicaSets, a DaemonSet's or StatefulSet's ControllerRevisions) are rewritten together, in
//! one transaction: no controller, strata's or a stock kube-controller-manager of another
//! server on the same etcd, sees one defaulted and the other not.

use std::collections::HashMap;

use serde_json::Value;
use strata_store::{Compare, Op, Store};

/// The kinds that hold a pod template: (group, plural, the template's PodSpec path).
const TEMPLATES: [(&str, &str, &[&str]); 9] = [
    ("apps", "deployments", &["spec", "template", "spec"]),
    ("apps", "replicasets", &["spec", "template", "spec"]),
    ("apps", "statefulsets", &["spec", "template", "spec"]),
    ("apps", "daemonsets", &["spec", "template", "spec"]),
    // The revision's data is the patch that restores the template.
    ("apps", "controllerrevisions", &["data", "spec", "template", "spec"]),
    ("", "replicationcontrollers", &["spec", "template", "spec"]),
    ("", "podtemplates", &["template", "spec"]),
    ("batch", "jobs", &["spec", "template", "spec"]),
    ("batch", "cronjobs", &["spec", "jobTemplate", "spec", "template", "spec"]),
];

/// Writes per transaction (etcd refuses more than 128 by default).
const MAX_OPS: usize = 100;

/// An object whose template gained defaults.
struct Changed {
    key: String,
    rev: u64,
    value: Vec<u8>,
    /// The uid of the workload it is rewritten with: its controller's, or its own.
    group: String,
    /// Where its template's PodSpec is.
    path: &'static [&'static str],
}

/// Give every stored pod template the defaults this strata writes; returns how many objects
/// were rewritten. An object changed meanwhile (by another server) is read again and retried.
pub async fn default_stored_templates(store: &dyn Store) -> Result<usize, strata_store::Error> {
    let mut uids = std::collections::HashSet::new();
    let mut changed = Vec::new();
    for (group, plural, path) in TEMPLATES {
        let Some(r) = crate::resources::find(group, "v1", plural) else { continue };
        for kv in store.list(&r.key_prefix(), None, 0).await?.items {
            let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else { continue };
            if let Some(uid) = obj["metadata"]["uid"].as_str() {
                uids.insert(uid.to_string());
            }
            if let Some((value, group)) = defaulted(obj, path) {
                changed.push(Changed { key: kv.key, rev: kv.mod_revision, value, group, path });
            }
        }
    }
    // A revision whose workload is not stored (an orphan) is a group of its own.
    for c in &mut changed {
        if !uids.contains(&c.group) {
            c.group = c.key.clone();
        }
    }
    let mut groups: HashMap<String, Vec<Changed>> = HashMap::new();
    for c in changed {
        groups.entry(c.group.clone()).or_default().push(c);
    }
    let mut written = 0;
    let mut batch: Vec<Vec<Changed>> = Vec::new();
    let mut ops = 0;
    let mut groups: Vec<Vec<Changed>> = groups.into_values().collect();
    groups.sort_by(|a, b| a[0].key.cmp(&b[0].key));
    for g in groups {
        if ops + g.len() > MAX_OPS && !batch.is_empty() {
            written += commit(store, std::mem::take(&mut batch)).await?;
            ops = 0;
        }
        ops += g.len();
        batch.push(g);
    }
    if !batch.is_empty() {
        written += commit(store, batch).await?;
    }
    if written > 0 {
        tracing::info!(objects = written, "stored pod templates given this strata's defaults");
    }
    Ok(written)
}

/// The object with its template defaulted, and the uid of the workload it goes with, if the
/// defaults changed anything.
fn defaulted(mut obj: Value, path: &[&str]) -> Option<(Vec<u8>, String)> {
    let spec = path.iter().try_fold(&mut obj, |v, k| v.get_mut(*k))?;
    let before = spec.clone();
    crate::validate::pod_spec_defaults(spec);
    if *spec == before {
        return None;
    }
    let meta = &obj["metadata"];
    let controller = meta["ownerReferences"].as_array().into_iter().flatten().find(|o| o["controller"] == true).and_then(|o| o["uid"].as_str());
    let group = controller.or(meta["uid"].as_str()).unwrap_or_default().to_string();
    Some((crate::object::for_storage(&obj), group))
}

/// Write the groups of `batch` in one transaction; on a conflict, each group again on its own
/// (one larger than a transaction holds is split).
async fn commit(store: &dyn Store, batch: Vec<Vec<Changed>>) -> Result<usize, strata_store::Error> {
    let all: Vec<&Changed> = batch.iter().flatten().collect();
    match write(store, &all).await {
        Ok(()) => return Ok(all.len()),
        Err(strata_store::Error::TxnFailed) if batch.len() > 1 => {}
        Err(strata_store::Error::TxnFailed) => return retry(store, &batch[0]).await,
        Err(e) => return Err(e),
    }
    let mut n = 0;
    for g in &batch {
        n += match write(store, &g.iter().collect::<Vec<_>>()).await {
            Ok(()) => g.len(),
            Err(strata_store::Error::TxnFailed) => retry(store, g).await?,
            Err(e) => return Err(e),
        };
    }
    Ok(n)
}

async fn write(store: &dyn Store, objs: &[&Changed]) -> Result<(), strata_store::Error> {
    for chunk in objs.chunks(MAX_OPS) {
        let compares = chunk.iter().map(|c| Compare::ModRevision(c.key.clone(), c.rev)).collect();
        let ops = chunk.iter().map(|c| Op::Put(c.key.clone(), c.value.clone())).collect();
        store.txn(compares, ops).await?;
    }
    Ok(())
}

/// A group another writer changed meanwhile: read again, default again, write once more
/// (given up with a warning if it changes again: the next start tries it anew).
async fn retry(store: &dyn Store, group: &[Changed]) -> Result<usize, strata_store::Error> {
    let mut fresh = Vec::new();
    for c in group {
        let Some(kv) = store.get(&c.key).await? else { continue };
        let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else { continue };
        if let Some((value, _)) = defaulted(obj, c.path) {
            fresh.push(Changed { key: c.key.clone(), rev: kv.mod_revision, value, group: c.group.clone(), path: c.path });
        }
    }
    match write(store, &fresh.iter().collect::<Vec<_>>()).await {
        Ok(()) => Ok(fresh.len()),
        Err(strata_store::Error::TxnFailed) => {
            let keys: Vec<&str> = group.iter().map(|c| c.key.as_str()).collect();
            tracing::warn!(?keys, "stored pod templates changed while they were given this strata's defaults; tried again at the next start");
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A template as an earlier strata stored it: the old subset of defaults.
    fn old_template() -> Value {
        json!({
            "metadata": { "labels": { "app": "web" } },
            "spec": {
                "containers": [{ "name": "c", "image": "img:1", "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log", "resources": {} }],
                "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler", "terminationGracePeriodSeconds": 30
            }
        })
    }

    async fn put(store: &dyn Store, plural: &str, group: &str, obj: Value) -> String {
        let r = crate::resources::find(group, "v1", plural).expect("kind");
        let key = r.key(obj["metadata"]["namespace"].as_str(), obj["metadata"]["name"].as_str().unwrap_or(""));
        store.create(&key, serde_json::to_vec(&obj).expect("json")).await.expect("create");
        key
    }

    async fn get(store: &dyn Store, key: &str) -> Value {
        serde_json::from_slice(&store.get(key).await.expect("get").expect("stored").value).expect("json")
    }

    #[tokio::test]
    async fn templates_stored_with_fewer_defaults_get_them_with_their_revisions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = strata_store::embedded::Embedded::open(&dir.path().join("db")).expect("store");
        let meta = |name: &str, uid: &str, owner: Option<&str>| {
            let mut m = json!({ "name": name, "namespace": "default", "uid": uid });
            if let Some(o) = owner {
                m["ownerReferences"] = json!([{ "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": o, "controller": true }]);
            }
            m
        };
        let deploy = put(&store, "deployments", "apps", json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web", "d1", None), "spec": { "replicas": 1, "template": old_template() } })).await;
        let rs = put(&store, "replicasets", "apps", json!({ "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta("web-1", "r1", Some("d1")), "spec": { "template": old_template() } })).await;
        let mut cr_data = json!({ "spec": { "template": old_template() } });
        cr_data["spec"]["template"]["$patch"] = json!("replace");
        let cr = put(&store, "controllerrevisions", "apps", json!({ "apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": meta("ds-1", "c1", Some("gone")), "data": cr_data, "revision": 1 })).await;
        let mut cron_template = json!({ "spec": { "template": old_template() } });
        cron_template["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
        let cron = put(&store, "cronjobs", "batch", json!({ "apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("tick", "j1", None), "spec": { "schedule": "* * * * *", "jobTemplate": cron_template } })).await;
        let pod_key = "/registry/core/pods/default/untouched".to_string();
        store.create(&pod_key, br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"untouched","namespace":"default"},"spec":{"containers":[]}}"#.to_vec()).await.expect("pod");
        let pod_rev = store.get(&pod_key).await.expect("get").expect("pod").mod_revision;

        assert_eq!(default_stored_templates(&store).await.expect("migrate"), 4);
        let (d, r) = (get(&store, &deploy).await, get(&store, &rs).await);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!((c["terminationMessagePolicy"].as_str(), &d["spec"]["template"]["spec"]["securityContext"]), (Some("File"), &json!({})), "{d}");
        // The Deployment and its ReplicaSet still hold the same template: nothing to roll out.
        assert_eq!(d["spec"]["template"], r["spec"]["template"]);
        assert_eq!(d["spec"]["replicas"], 1, "nothing else changes");
        assert_eq!(get(&store, &cr).await["data"]["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"], "File");
        assert_eq!(get(&store, &cr).await["data"]["spec"]["template"]["$patch"], "replace");
        let cj = get(&store, &cron).await;
        assert_eq!(cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["securityContext"], json!({}), "{cj}");
        assert!(cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["enableServiceLinks"].is_null(), "a Pod-only default stays out of templates");
        // Not a template kind: not touched.
        assert_eq!(store.get(&pod_key).await.expect("get").expect("pod").mod_revision, pod_rev);
        // Done once: a second start writes nothing.
        assert_eq!(default_stored_templates(&store).await.expect("migrate again"), 0);
    }

    /// An object written by someone else between the read and the write is read again.
    #[tokio::test]
    async fn a_group_changed_meanwhile_is_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = strata_store::embedded::Embedded::open(&dir.path().join("db")).expect("store");
        let meta = json!({ "name": "web", "namespace": "default", "uid": "d1" });
        let key = put(&store, "deployments", "apps", json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": { "replicas": 1, "template": old_template() } })).await;
        let kv = store.get(&key).await.expect("get").expect("stored");
        let obj: Value = serde_json::from_slice(&kv.value).expect("json");
        let (value, group) = defaulted(obj.clone(), TEMPLATES[0].2).expect("changed");
        let stale = Changed { key: key.clone(), rev: kv.mod_revision, value, group, path: TEMPLATES[0].2 };
        // Someone scales it meanwhile.
        let mut scaled = obj;
        scaled["spec"]["replicas"] = json!(3);
        store.update(&key, serde_json::to_vec(&scaled).expect("json"), kv.mod_revision).await.expect("scale");
        assert_eq!(commit(&store, vec![vec![stale]]).await.expect("commit"), 1);
        let d = get(&store, &key).await;
        assert_eq!((d["spec"]["replicas"].as_i64(), d["spec"]["template"]["spec"]["securityContext"].clone()), (Some(3), json!({})), "the scale kept and the defaults added: {d}");
    }
}
