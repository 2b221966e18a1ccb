//! What upstream's sig-apps conformance specs (scripts/conformance.sh,
//! docs/conformance-sig-apps.md) showed missing in the workload controllers and the API server,
//! each reproduced here with the real kubectl or curl before it was fixed.

mod common;

use common::server::{ApiServer, Auth, Backend};
use serde_json::{json, Value};

/// A write to a `status` subresource changes the metadata as upstream's status strategies let it
/// (`PrepareForUpdate` of each kind's status strategy): Jobs and CronJobs keep the annotations
/// and labels it carries (the Job and CronJob "API operations" specs patch
/// `{"metadata":{"annotations":...},"status":...}`), a Deployment's labels and a Pod's owner
/// references come from the stored object, VolumeAttachments and APIServices keep all their
/// stored metadata; the spec never changes and nor does the generation.
#[test]
fn status_writes_keep_the_metadata_upstream_status_strategies_keep() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok(&["create", "namespace", "st"]);
    let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}});
    let objects = [
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "st", "labels": {"app": "x"}}, "spec": {"template": template}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj", "namespace": "st", "labels": {"app": "x"}}, "spec": {"schedule": "*/1 * * * *", "jobTemplate": {"spec": {"template": template}}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "st", "labels": {"app": "x"}}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "st", "labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": {"name": "va-st", "labels": {"app": "x"}}, "spec": {"attacher": "csi.example.com", "nodeName": "n1", "source": {"persistentVolumeName": "pv1"}}}),
        json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": "v1.st.example.com", "labels": {"app": "x"}}, "spec": {"group": "st.example.com", "version": "v1", "groupPriorityMinimum": 100, "versionPriority": 10, "service": {"namespace": "st", "name": "api"}}}),
    ];
    for o in &objects {
        s.ok_stdin(&["create", "-f", "-"], Some(&o.to_string()));
    }
    let owner = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "0b6a2f8e-0000-4000-8000-000000000001"}]);
    // (kind, name, namespace flag, status, kept: annotation, label, owner references)
    let cases: [(&str, &str, bool, Value, (bool, bool, bool)); 6] = [
        ("job", "j", true, json!({"active": 0}), (true, true, true)),
        ("cronjob", "cj", true, json!({"lastScheduleTime": "2026-01-01T00:00:00Z"}), (true, true, true)),
        ("deployment", "d", true, json!({"observedGeneration": 1}), (true, false, true)),
        ("pod", "p", true, json!({"phase": "Pending"}), (true, true, false)),
        ("volumeattachment", "va-st", false, json!({"attached": true}), (false, false, false)),
        ("apiservice", "v1.st.example.com", false, json!({"conditions": [{"type": "Available", "status": "False", "reason": "Test"}]}), (false, false, false)),
    ];
    for (kind, name, namespaced, status, (annotation, label, owners)) in cases {
        let ns: &[&str] = if namespaced { &["-n", "st"] } else { &[] };
        let get = |path: &str| s.ok(&[&["get", kind, name, "-o", &format!("jsonpath={path}")], ns].concat());
        let generation = get("{.metadata.generation}");
        // A merge patch of the status subresource (what the e2e specs send) ...
        let patch = json!({"metadata": {"annotations": {"patchedstatus": "true"}, "labels": {"patched": "yes"}, "ownerReferences": owner}, "status": status});
        s.ok(&[&["patch", kind, name, "--subresource=status", "--type=merge", "-p", &patch.to_string()], ns].concat());
        let want = |kept: bool, v: &str| if kept { v.to_string() } else { String::new() };
        assert_eq!(get("{.metadata.annotations.patchedstatus}"), want(annotation, "true"), "{kind}: the annotation of a status patch");
        assert_eq!(get("{.metadata.labels.patched}"), want(label, "yes"), "{kind}: the label of a status patch");
        assert_eq!(get("{.metadata.labels.app}"), "x", "{kind}: labels the patch did not name stay");
        assert_eq!(get("{.metadata.ownerReferences[0].name}"), want(owners, "owner"), "{kind}: owner references of a status patch");
        assert_eq!(get("{.metadata.generation}"), generation, "{kind}: a status write never moves the generation");
        // ... and a PUT of the status subresource (client-go's UpdateStatus).
        let mut obj: Value = serde_json::from_str(&s.ok(&[&["get", kind, name, "-o", "json"], ns].concat())).expect("json");
        obj["metadata"]["annotations"]["updatedstatus"] = json!("true");
        let self_path = api_path(&obj);
        let (code, body) = s.curl("PUT", &format!("{self_path}/status"), Auth::Admin, Some("application/json"), Some(obj.to_string().as_bytes()));
        assert_eq!(code, 200, "{kind}: {body}");
        assert_eq!(get("{.metadata.annotations.updatedstatus}"), want(annotation, "true"), "{kind}: the annotation of a status update");
    }
    // The spec of a status write is ignored.
    assert_eq!(s.ok(&["get", "job", "j", "-n", "st", "-o", "jsonpath={.spec.parallelism}"]), "1");
    s.ok(&["patch", "job", "j", "-n", "st", "--subresource=status", "--type=merge", "-p", r#"{"spec":{"parallelism":5}}"#]);
    assert_eq!(s.ok(&["get", "job", "j", "-n", "st", "-o", "jsonpath={.spec.parallelism}"]), "1");
}

/// The REST path of an object from its apiVersion, kind and metadata (plural = lowercased kind + "s").
fn api_path(obj: &Value) -> String {
    let version = obj["apiVersion"].as_str().unwrap_or("");
    let base = if version.contains('/') { format!("/apis/{version}") } else { format!("/api/{version}") };
    let ns = obj["metadata"]["namespace"].as_str().map(|n| format!("/namespaces/{n}")).unwrap_or_default();
    let plural = format!("{}s", obj["kind"].as_str().unwrap_or("").to_lowercase());
    format!("{base}{ns}/{plural}/{}", obj["metadata"]["name"].as_str().unwrap_or(""))
}
