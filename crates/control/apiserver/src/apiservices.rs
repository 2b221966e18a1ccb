//! The APIServices of the group versions this server serves itself, as kube-apiserver's
//! autoregister and crdregistration controllers keep them: `v1.` (the core group), `v1.apps`, ...
//! for every built-in group version (priorities generated into [`crate::k8s_apiservices`]),
//! labelled `kube-aggregator.kubernetes.io/automanaged: onstart`; and `VERSION.GROUP` for every
//! served version of a CustomResourceDefinition (group priority 1000, version priority 100),
//! labelled `automanaged: "true"` — as are strata's own groups (`strata.dev`), which upstream's
//! table cannot know. [`group_priority`] orders discovery's groups as the aggregator does. Each is `Local`, so Available (the availability controller's "Local
//! APIServices are always available"). A missing one is created, an automanaged one whose spec
//! was changed is put back, and an automanaged one no longer served is deleted; APIServices a
//! user made are left alone. Nothing is proxied: strata runs no aggregator.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_store::Store;

const LABEL: &str = "kube-aggregator.kubernetes.io/automanaged";
const AGGREGATOR: &str = "apiregistration.k8s.io";
/// How often the served group versions are compared with what was last written.
const POLL: Duration = Duration::from_secs(2);
/// How often the stored APIServices are checked anyway (one deleted by hand comes back).
const RESYNC: Duration = Duration::from_secs(10);

/// A group's place in discovery (kube-aggregator's): the aggregator's own group first (20001),
/// then the highest priority of its versions, a custom group's 1000.
pub fn group_priority(group: &str) -> i32 {
    if group == AGGREGATOR {
        return 20001;
    }
    crate::k8s_apiservices::PRIORITIES.iter().filter(|(g, ..)| *g == group).map(|(_, _, p, _)| *p).max().unwrap_or(CUSTOM.0)
}

/// Priorities of a custom group version (crdregistration's).
const CUSTOM: (i32, i32) = (1000, 100);

/// The APIService for group version `group`/`version`: upstream's priorities for a built-in one;
/// a custom kind's or strata's own group's (which upstream's table cannot know) as crdregistration
/// registers them.
fn api_service(group: &str, version: &str) -> Value {
    let ((group_priority, version_priority), managed) = match crate::k8s_apiservices::priority(group, version) {
        Some(p) => (p, "onstart"),
        None => (CUSTOM, "true"),
    };
    json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": { "name": format!("{version}.{group}"), "labels": { LABEL: managed } },
        "spec": { "group": group, "version": version, "groupPriorityMinimum": group_priority, "versionPriority": version_priority },
    })
}

/// Name -> APIService of every group version served now.
pub fn desired() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for r in crate::resources::served() {
        // The aggregator's own group is not a delegate's: upstream registers no APIService for it.
        if r.group == AGGREGATOR || out.contains_key(&format!("{}.{}", r.version, r.group)) {
            continue;
        }
        out.insert(format!("{}.{}", r.version, r.group), api_service(r.group, r.version));
    }
    out
}

fn available() -> Value {
    json!({ "conditions": [{ "type": "Available", "status": "True", "lastTransitionTime": crate::object::now(),
        "reason": "Local", "message": "Local APIServices are always available" }] })
}

/// One pass: create what is missing, put back automanaged specs, delete automanaged APIServices
/// no longer served. A write that loses a race is left to the next pass.
pub async fn reconcile(store: &dyn Store, want: &BTreeMap<String, Value>) -> Result<(), strata_store::Error> {
    let Some(r) = crate::resources::find("apiregistration.k8s.io", "v1", "apiservices") else { return Ok(()) };
    let mut have = BTreeMap::new();
    for kv in store.list(&r.key_prefix(), None, 0).await?.items {
        if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
            have.insert(v["metadata"]["name"].as_str().unwrap_or_default().to_string(), (v, kv.mod_revision, kv.key));
        }
    }
    for (name, obj) in want {
        let written = match have.get(name) {
            None => {
                let mut obj = obj.clone();
                obj["metadata"]["uid"] = json!(crate::object::uuid());
                obj["metadata"]["creationTimestamp"] = json!(crate::object::now());
                obj["status"] = available();
                store.create(&r.key(None, name), crate::object::for_storage(&obj)).await.map(|_| ())
            }
            // A user's own APIService of that name is theirs (autoregister skips unmanaged ones).
            Some((cur, _, _)) if cur["metadata"]["labels"][LABEL].is_null() => Ok(()),
            Some((cur, rev, key)) if cur["spec"] != obj["spec"] || cur["metadata"]["labels"][LABEL] != obj["metadata"]["labels"][LABEL] || cur["status"]["conditions"][0]["status"] != "True" => {
                let mut cur = cur.clone();
                cur["spec"] = obj["spec"].clone();
                cur["metadata"]["labels"][LABEL] = obj["metadata"]["labels"][LABEL].clone();
                cur["status"] = available();
                store.update(key, crate::object::for_storage(&cur), *rev).await.map(|_| ())
            }
            Some(_) => Ok(()),
        };
        match written {
            Ok(()) | Err(strata_store::Error::AlreadyExists(_) | strata_store::Error::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    for (name, (cur, rev, key)) in &have {
        if !want.contains_key(name) && !cur["metadata"]["labels"][LABEL].is_null() {
            match store.delete(key, *rev).await {
                Ok(_) | Err(strata_store::Error::NotFound(_) | strata_store::Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Keep them for the life of the process: at once when the served group versions change (a
/// CustomResourceDefinition comes or goes), and every [`RESYNC`].
pub async fn run(store: Arc<dyn Store>, started: Arc<crate::health::Started>) {
    let mut last: Option<(BTreeMap<String, Value>, Instant)> = None;
    loop {
        let want = desired();
        if last.as_ref().is_none_or(|(done, at)| *done != want || at.elapsed() >= RESYNC) {
            match reconcile(store.as_ref(), &want).await {
                Ok(()) => {
                    last = Some((want, Instant::now()));
                    started.api_services.store(true, std::sync::atomic::Ordering::Release);
                }
                Err(e) => tracing::warn!(error = %e, "keeping the local APIServices"),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}
