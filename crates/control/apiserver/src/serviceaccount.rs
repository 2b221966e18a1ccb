//! The ServiceAccount admission plugin (upstream's `plugin/pkg/admission/serviceaccount`, the
//! parts that apply to pods being created): a pod without `serviceAccountName` runs as
//! `default`; the ServiceAccount must exist (403 otherwise, after waiting a little for
//! `default`, which the ServiceAccount controller makes for a new namespace); and unless
//! `automountServiceAccountToken: false` (the pod's, else the ServiceAccount's) every container
//! and init container mounts a projected volume `kube-api-access-<5 random>` read-only at
//! [`MOUNT_PATH`]: a bound token (3607 s, `token`), `kube-root-ca.crt`'s `ca.crt`, and the
//! namespace. A container with its own mount at that path keeps it. Mirror pods are left alone.

use std::time::Duration;

use serde_json::{json, Value};
use strata_store::Store;

use crate::resources::Resource;
use crate::status::ApiError;

/// Where the token volume is mounted in every container.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Prefix of the token volume's name (`ServiceAccountVolumeName`).
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// The ConfigMap with the cluster's CA bundle in every namespace (the root-CA publisher's).
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The token lifetime the plugin asks for (`WarnOnlyBoundTokenExpirationSeconds`).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
const DEFAULT: &str = "default";
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// How long a pod create waits for a new namespace's `default` ServiceAccount (upstream tries
/// 10 times 100-200 ms apart; a loaded node gets more).
const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// The projected volume source of the token volume (`TokenVolumeSource`).
pub fn token_volume_source() -> Value {
    TOKEN_VOLUME_SOURCE.clone()
}

/// Built once: every pod created mounts it.
static TOKEN_VOLUME_SOURCE: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
    json!({
        "defaultMode": 0o644,
        "sources": [
            { "serviceAccountToken": { "path": "token", "expirationSeconds": TOKEN_EXPIRATION_SECONDS } },
            { "configMap": { "name": ROOT_CA_CONFIGMAP, "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
            { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } },
        ],
    })
});

fn random_suffix() -> String {
    let chars = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|_| chars[rand::random::<usize>() % chars.len()] as char).collect()
}

/// Admit a pod being created in `namespace` (see the module header).
pub async fn admit_pod(store: &dyn Store, r: &Resource, namespace: &str, pod: &mut Value) -> Result<(), ApiError> {
    if pod["metadata"]["annotations"][MIRROR_ANNOTATION].is_string() {
        return Ok(());
    }
    let name = crate::object::name_of(pod).to_string();
    let sa_name = match pod["spec"]["serviceAccountName"].as_str().filter(|s| !s.is_empty()) {
        Some(n) => n.to_string(),
        // The deprecated alias, as the v1 conversion reads it.
        None => pod["spec"]["serviceAccount"].as_str().filter(|s| !s.is_empty()).unwrap_or(DEFAULT).to_string(),
    };
    pod["spec"]["serviceAccountName"] = json!(sa_name);
    pod["spec"]["serviceAccount"] = json!(sa_name);
    let sa = lookup(store, namespace, &sa_name)
        .await?
        .ok_or_else(|| ApiError::forbidden(r, &name, &format!("error looking up service account {namespace}/{sa_name}: serviceaccount \"{sa_name}\" not found")))?;
    // A pod without imagePullSecrets gets its ServiceAccount's (upstream's ServiceAccount admission).
    let own = pod["spec"]["imagePullSecrets"].as_array().is_some_and(|l| !l.is_empty());
    if let Some(secrets) = sa.image_pull_secrets.filter(|l| !own && !l.is_empty()) {
        pod["spec"]["imagePullSecrets"] = Value::Array(secrets);
    }
    let automount = pod["spec"]["automountServiceAccountToken"].as_bool().or(sa.automount).unwrap_or(true);
    if automount {
        mount_token(pod, random_suffix());
    }
    Ok(())
}

/// What admission reads of a ServiceAccount (every pod created looks one up; the rest of it is
/// skipped, not decoded).
#[derive(serde::Deserialize)]
struct Account {
    #[serde(rename = "imagePullSecrets", default)]
    image_pull_secrets: Option<Vec<Value>>,
    #[serde(rename = "automountServiceAccountToken", default)]
    automount: Option<bool>,
}

/// The ServiceAccount, waiting up to [`DEFAULT_WAIT`] for `default`.
async fn lookup(store: &dyn Store, namespace: &str, name: &str) -> Result<Option<Account>, ApiError> {
    let Some(r) = crate::resources::find("", "v1", "serviceaccounts") else { return Err(ApiError::internal("core kinds missing")) };
    let key = r.key(Some(namespace), name);
    let deadline = tokio::time::Instant::now() + if name == DEFAULT { DEFAULT_WAIT } else { Duration::ZERO };
    loop {
        if let Some(kv) = store.get(&key).await? {
            return serde_json::from_slice(&kv.value).map(Some).map_err(|e| ApiError::internal(format!("decoding {key}: {e}")));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100 + rand::random::<u64>() % 100)).await;
    }
}

/// Mount the token volume in every container and init container that has nothing at
/// [`MOUNT_PATH`] yet, adding the volume (named with `suffix` unless the pod already has a
/// `kube-api-access-*` volume) when one does (`mountServiceAccountToken`).
pub fn mount_token(pod: &mut Value, suffix: String) {
    let existing = pod["spec"]["volumes"].as_array().and_then(|vs| vs.iter().filter_map(|v| v["name"].as_str()).find(|n| n.starts_with(VOLUME_PREFIX)).map(str::to_string));
    let volume_name = existing.clone().unwrap_or_else(|| format!("{VOLUME_PREFIX}{suffix}"));
    let mount = json!({ "name": volume_name, "readOnly": true, "mountPath": MOUNT_PATH });
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        // `get_mut`, not `IndexMut`: indexing would add the missing list as `null`.
        let Some(containers) = pod.get_mut("spec").and_then(|s| s.get_mut(list)).and_then(Value::as_array_mut) else { continue };
        for c in containers {
            let has = c["volumeMounts"].as_array().is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == MOUNT_PATH));
            if has {
                continue;
            }
            match c["volumeMounts"].as_array_mut() {
                Some(ms) => ms.push(mount.clone()),
                None => c["volumeMounts"] = json!([mount.clone()]),
            }
            needed = true;
        }
    }
    if existing.is_none() && needed {
        let volume = json!({ "name": volume_name, "projected": token_volume_source() });
        match pod["spec"]["volumes"].as_array_mut() {
            Some(vs) => vs.push(volume),
            None => pod["spec"]["volumes"] = json!([volume]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_mounts_one_token_volume_unless_it_has_its_own_mount() {
        let mut pod = json!({ "spec": {
            "initContainers": [{ "name": "i" }],
            "containers": [
                { "name": "a", "volumeMounts": [{ "name": "data", "mountPath": "/data" }] },
                { "name": "b", "volumeMounts": [{ "name": "mine", "mountPath": MOUNT_PATH }] },
            ],
            "volumes": [{ "name": "data", "emptyDir": {} }, { "name": "mine", "emptyDir": {} }],
        }});
        mount_token(&mut pod, "x2b4z".into());
        let mount = json!({ "name": "kube-api-access-x2b4z", "readOnly": true, "mountPath": MOUNT_PATH });
        assert_eq!(pod["spec"]["initContainers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(pod["spec"]["containers"][0]["volumeMounts"][1], mount);
        assert_eq!(pod["spec"]["containers"][1]["volumeMounts"].as_array().map(Vec::len), Some(1), "its own mount kept, nothing added");
        assert_eq!(pod["spec"]["volumes"][2], json!({ "name": "kube-api-access-x2b4z", "projected": token_volume_source() }));
        assert_eq!(token_volume_source()["defaultMode"], 420);
        // Admitted again (an existing kube-api-access-* volume): reused, not duplicated.
        pod["spec"]["containers"].as_array_mut().expect("containers").push(json!({ "name": "c" }));
        mount_token(&mut pod, "other".into());
        assert_eq!(pod["spec"]["volumes"].as_array().map(Vec::len), Some(3));
        assert_eq!(pod["spec"]["containers"][2]["volumeMounts"], json!([mount]));
        // Nobody needs it: no volume.
        let mut own = json!({ "spec": { "containers": [{ "name": "a", "volumeMounts": [{ "name": "m", "mountPath": MOUNT_PATH }] }], "volumes": [{ "name": "m", "emptyDir": {} }] } });
        mount_token(&mut own, "abcde".into());
        assert_eq!(own["spec"]["volumes"].as_array().map(Vec::len), Some(1));
    }

    /// A list the pod does not have is not added, not even as `null` (as upstream stores it).
    #[test]
    fn mounting_adds_no_list_the_pod_lacks() {
        let mut pod = json!({ "spec": { "containers": [{ "name": "a" }] } });
        mount_token(&mut pod, "x2b4z".into());
        let spec = pod["spec"].as_object().expect("spec");
        assert!(!spec.contains_key("initContainers"), "{spec:?}");
        assert_eq!(spec.keys().collect::<Vec<_>>(), ["containers", "volumes"]);
    }
}
