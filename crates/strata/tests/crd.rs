//! CustomResourceDefinitions (issue 12 part 2), driven by real kubectl 1.27, 1.32 and 1.33 and
//! the Python client: definitions shaped like popular operators' (several versions, status and
//! scale subresources, printer columns, nested schemas with preserve-unknown-fields and
//! int-or-string) are created, served, validated, defaulted, pruned, listed with their columns,
//! watched, scaled and deleted.

mod common;

use std::time::{Duration, Instant};

use common::server::{kubectl_of, ApiServer, Auth, Backend, Options};
use serde_json::{json, Value};

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {}", &s[..s.len().min(800)]))
}

/// An operator-like definition: `v1beta1` (served, schemaless) and `v1` (storage) with status
/// and scale subresources, printer columns and a nested schema.
fn redis_crd(group: &str, extra_finalizer: bool) -> String {
    let finalizers = if extra_finalizer { "\n  finalizers: [example.com/hold]" } else { "" };
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: redisclusters.{group}{finalizers}
spec:
  group: {group}
  scope: Namespaced
  names:
    plural: redisclusters
    singular: rediscluster
    kind: RedisCluster
    shortNames: [rdc]
    categories: [all]
  versions:
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
  - name: v1
    served: true
    storage: true
    subresources:
      status: {{}}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    additionalPrinterColumns:
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Image
      type: string
      jsonPath: .spec.image
    - name: Ready
      type: string
      jsonPath: .status.conditions[?(@.type=="Ready")].status
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [image]
            properties:
              replicas: {{type: integer, format: int32, minimum: 0, maximum: 100, default: 3}}
              image: {{type: string, pattern: '^[a-z0-9./:-]+$'}}
              mode: {{type: string, enum: [standalone, cluster], default: cluster}}
              port: {{x-kubernetes-int-or-string: true}}
              resources:
                type: object
                x-kubernetes-preserve-unknown-fields: true
              config:
                type: object
                additionalProperties: {{type: string}}
              template:
                type: object
                x-kubernetes-embedded-resource: true
                x-kubernetes-preserve-unknown-fields: true
              storage:
                type: object
                nullable: true
                properties:
                  size: {{type: string, pattern: '^[0-9]+(Gi|Mi)$'}}
                  class: {{type: string, maxLength: 20}}
              nodes:
                type: array
                maxItems: 5
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {{type: string, minLength: 1}}
                    weight: {{type: number, minimum: 0, exclusiveMinimum: true}}
          status:
            type: object
            properties:
              replicas: {{type: integer}}
              selector: {{type: string}}
              conditions:
                type: array
                items:
                  type: object
                  properties:
                    type: {{type: string}}
                    status: {{type: string}}
"#
    )
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(s: &ApiServer, bin: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let out = s.kubectl_bin(bin, args, stdin);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn ok(s: &ApiServer, bin: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (good, out, err) = run(s, bin, args, stdin);
    assert!(good, "kubectl {args:?} failed: {out}{err}");
    out
}

fn fails(s: &ApiServer, bin: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (good, out, err) = run(s, bin, args, stdin);
    assert!(!good, "kubectl {args:?} unexpectedly succeeded: {out}");
    err
}

fn condition<'a>(crd: &'a Value, ty: &str) -> &'a Value {
    crd["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == ty)).unwrap_or(&Value::Null)
}

/// The definition is accepted and established, its kind is in discovery under its plural,
/// short name, singular and kind, objects are served at both versions (stored at the storage
/// version, `apiVersion` rewritten), patched (merge, JSON; strategic refused with upstream's
/// 415), applied client- and server-side, listed, watched (Python client) and deleted one by one
/// and as a collection; deleting the definition shows Terminating and removes its objects, and
/// the kind leaves discovery.
#[test]
fn definitions_are_served_converted_and_deleted() {
    let s = ApiServer::start(Backend::Embedded);
    let k = kubectl_of("1.32");
    let group = "cache.example.com";
    let crd_name = format!("redisclusters.{group}");
    let out = ok(&s, &k, &["create", "-f", "-"], Some(&redis_crd(group, true)));
    assert!(out.contains(&format!("customresourcedefinition.apiextensions.k8s.io/{crd_name} created")), "{out}");
    ok(&s, &k, &["wait", "--for", "condition=Established", &format!("crd/{crd_name}"), "--timeout=30s"], None);
    let crd = json_of(&ok(&s, &k, &["get", "crd", &crd_name, "-o", "json"], None));
    assert_eq!(condition(&crd, "NamesAccepted")["status"], "True", "{crd}");
    assert_eq!(condition(&crd, "NamesAccepted")["reason"], "NoConflicts");
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "RedisCluster");
    assert_eq!(crd["status"]["acceptedNames"]["listKind"], "RedisClusterList");
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    assert_eq!(crd["spec"]["conversion"]["strategy"], "None", "defaulted");

    let resources = ok(&s, &k, &["api-resources", "--api-group", group, "--no-headers"], None);
    assert!(resources.contains("redisclusters") && resources.contains("rdc") && resources.contains("RedisCluster"), "{resources}");
    // Plain discovery lists both versions, the storage one preferred.
    let (code, body) = s.curl("GET", &format!("/apis/{group}"), Auth::Admin, None, None);
    assert_eq!(code, 200, "{body}");
    let g = json_of(&body);
    assert_eq!(g["preferredVersion"]["version"], "v1");
    assert_eq!(g["versions"].as_array().map(Vec::len), Some(2), "{g}");

    // Created at v1beta1, served at either version.
    let alpha = format!("apiVersion: {group}/v1beta1\nkind: RedisCluster\nmetadata:\n  name: alpha\nspec:\n  replicas: 2\n  image: redis:7\n");
    ok(&s, &k, &["create", "-f", "-"], Some(&alpha));
    assert_eq!(ok(&s, &k, &["get", "rdc", "alpha", "-o", "jsonpath={.apiVersion}"], None), format!("{group}/v1"));
    assert_eq!(ok(&s, &k, &["get", &format!("redisclusters.v1beta1.{group}"), "alpha", "-o", "jsonpath={.apiVersion}"], None), format!("{group}/v1beta1"));
    for name in ["redisclusters", "rediscluster", "RedisCluster", "rdc", &format!("redisclusters.{group}")] {
        let out = ok(&s, &k, &["get", name], None);
        assert!(out.contains("alpha"), "kubectl get {name}: {out}");
    }

    // Patches: merge and JSON; strategic merge is refused as upstream refuses it.
    ok(&s, &k, &["patch", "rdc", "alpha", "--type=merge", "-p", r#"{"spec":{"replicas":5}}"#], None);
    ok(&s, &k, &["patch", "rdc", "alpha", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/image","value":"redis:8"}]"#], None);
    let got = json_of(&ok(&s, &k, &["get", "rdc", "alpha", "-o", "json"], None));
    assert_eq!((got["spec"]["replicas"].as_i64(), got["spec"]["image"].as_str()), (Some(5), Some("redis:8")), "{got}");
    // v1beta1 has no status subresource: a status change there is a change like any other and
    // moves the generation (metadata changes do not).
    let beta_path = format!("/apis/{group}/v1beta1/namespaces/default/redisclusters/alpha");
    let generation = |s: &ApiServer| json_of(&s.curl("GET", &beta_path, Auth::Admin, None, None).1)["metadata"]["generation"].as_i64();
    let before = generation(&s).unwrap_or(0);
    let (code, body) = s.curl("PATCH", &beta_path, Auth::Admin, Some("application/merge-patch+json"), Some(br#"{"status":{"note":"x"},"metadata":{"labels":{"a":"b"}}}"#));
    assert_eq!(code, 200, "{body}");
    assert_eq!(generation(&s), Some(before + 1));
    s.curl("PATCH", &beta_path, Auth::Admin, Some("application/merge-patch+json"), Some(br#"{"metadata":{"labels":{"a":"c"}}}"#));
    assert_eq!(generation(&s), Some(before + 1));
    let err = fails(&s, &k, &["patch", "rdc", "alpha", "-p", r#"{"spec":{"replicas":1}}"#], None);
    assert!(
        err.contains("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"),
        "{err}"
    );

    // Update (PUT) through kubectl replace, with the object's resourceVersion.
    let mut whole = json_of(&ok(&s, &k, &["get", "rdc", "alpha", "-o", "json"], None));
    whole["spec"]["image"] = json!("redis:8.2");
    ok(&s, &k, &["replace", "-f", "-"], Some(&whole.to_string()));
    assert_eq!(ok(&s, &k, &["get", "rdc", "alpha", "-o", "jsonpath={.spec.image}"], None), "redis:8.2");
    whole["metadata"]["resourceVersion"] = json!("1");
    let err = fails(&s, &k, &["replace", "-f", "-"], Some(&whole.to_string()));
    assert!(err.contains("the object has been modified"), "a stale resourceVersion conflicts: {err}");

    // Server-side apply creates and then changes an object; client-side apply too.
    let beta = |replicas: i64| format!("apiVersion: {group}/v1\nkind: RedisCluster\nmetadata:\n  name: beta\nspec:\n  replicas: {replicas}\n  image: redis:7\n");
    assert!(ok(&s, &k, &["apply", "--server-side", "-f", "-"], Some(&beta(1))).contains("serverside-applied"));
    ok(&s, &k, &["apply", "--server-side", "-f", "-"], Some(&beta(6)));
    let got = json_of(&ok(&s, &k, &["get", "rdc", "beta", "-o", "json", "--show-managed-fields"], None));
    assert_eq!(got["spec"]["replicas"], 6);
    assert!(got["metadata"]["managedFields"].as_array().is_some_and(|m| m.iter().any(|e| e["manager"] == "kubectl" && e["operation"] == "Apply")), "{got}");
    let gamma = |image: &str| format!("apiVersion: {group}/v1\nkind: RedisCluster\nmetadata:\n  name: gamma\nspec:\n  replicas: 1\n  image: {image}\n");
    ok(&s, &k, &["apply", "-f", "-"], Some(&gamma("redis:7")));
    assert!(ok(&s, &k, &["apply", "-f", "-"], Some(&gamma("redis:9"))).contains("configured"));
    assert_eq!(ok(&s, &k, &["get", "rdc", "gamma", "-o", "jsonpath={.spec.image}"], None), "redis:9");

    // The Python client: create, patch, get, list, delete, and a watch that sees all three.
    let py = json_of(s.python("crd_client.py", &[group, "v1", "redisclusters", "default", "py-object"]).trim());
    assert_eq!(py["created_api_version"], format!("{group}/v1"));
    assert_eq!((py["patched_replicas"].as_i64(), py["got_replicas"].as_i64()), (Some(4), Some(4)), "{py}");
    assert!(py["listed"].as_array().is_some_and(|l| l.iter().any(|n| n == "py-object")), "{py}");
    assert_eq!(py["events"], json!(["ADDED", "MODIFIED", "DELETED"]), "{py}");

    // Delete one, then the rest as a collection.
    ok(&s, &k, &["delete", "rdc", "gamma"], None);
    ok(&s, &k, &["delete", "rdc", "--all"], None);
    assert_eq!(ok(&s, &k, &["get", "rdc", "-o", "name"], None).trim(), "");

    // Deleting the definition: Terminating while its objects go; a create meanwhile is refused.
    // The definition's own extra finalizer keeps it visible once the objects are gone.
    ok(&s, &k, &["create", "-f", "-"], Some(&alpha));
    ok(&s, &k, &["delete", "crd", &crd_name, "--wait=false"], None);
    let path = format!("/apis/{group}/v1/namespaces/default/redisclusters");
    wait_for("the definition's objects to be deleted", Duration::from_secs(30), || {
        let (code, body) = s.curl("GET", &path, Auth::Admin, None, None);
        code == 200 && json_of(&body)["items"].as_array().is_some_and(Vec::is_empty)
    });
    let crd = json_of(&ok(&s, &k, &["get", "crd", &crd_name, "-o", "json"], None));
    assert_eq!(condition(&crd, "Terminating")["status"], "True", "{crd}");
    assert_eq!(condition(&crd, "Terminating")["reason"], "InstanceDeletionInProgress");
    assert_eq!(crd["metadata"]["finalizers"], json!(["example.com/hold"]), "the cleanup finalizer is gone: {crd}");
    let body = format!(r#"{{"apiVersion":"{group}/v1","kind":"RedisCluster","metadata":{{"name":"late"}},"spec":{{"image":"redis"}}}}"#);
    let (code, resp) = s.curl("POST", &path, Auth::Admin, Some("application/json"), Some(body.as_bytes()));
    assert_eq!(code, 405, "{resp}");
    assert!(resp.contains("create not allowed while custom resource definition is terminating"), "{resp}");
    ok(&s, &k, &["patch", "crd", &crd_name, "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#], None);
    wait_for("the definition to go", Duration::from_secs(30), || !run(&s, &k, &["get", "crd", &crd_name], None).0);
    // (A fresh discovery cache: kubectl's own would still name the kind for hours.)
    let cache = s.dir.path().join("fresh-cache");
    let err = fails(&s, &k, &["--cache-dir", cache.to_str().unwrap_or_default(), "get", "rdc"], None);
    assert!(err.contains("the server doesn't have a resource type \"rdc\""), "{err}");
    let (code, _) = s.curl("GET", &path, Auth::Admin, None, None);
    assert_eq!(code, 404);
}

/// kubectl 1.27 and 1.33 see a new kind at once (aggregated discovery), create, get by short
/// name and kind, patch and apply server-side.
#[test]
fn kubectl_versions_serve_custom_kinds() {
    let s = ApiServer::start(Backend::Embedded);
    for (i, v) in ["1.27", "1.33"].iter().enumerate() {
        let k = kubectl_of(v);
        let group = format!("v{i}.cache.example.com");
        ok(&s, &k, &["apply", "-f", "-"], Some(&redis_crd(&group, false)));
        ok(&s, &k, &["wait", "--for", "condition=Established", &format!("crd/redisclusters.{group}"), "--timeout=30s"], None);
        let obj = format!("apiVersion: {group}/v1\nkind: RedisCluster\nmetadata:\n  name: one\nspec:\n  replicas: 2\n  image: redis:7\n");
        ok(&s, &k, &["create", "-f", "-"], Some(&obj));
        let full = format!("redisclusters.{group}");
        assert!(ok(&s, &k, &["get", &full, "one", "-o", "name"], None).contains("one"), "kubectl {v}");
        ok(&s, &k, &["patch", &full, "one", "--type=merge", "-p", r#"{"spec":{"replicas":3}}"#], None);
        let applied = format!("apiVersion: {group}/v1\nkind: RedisCluster\nmetadata:\n  name: two\nspec:\n  replicas: 1\n  image: redis:7\n");
        ok(&s, &k, &["apply", "--server-side", "-f", "-"], Some(&applied));
        // Client-side apply computes a merge patch for a custom kind (its OpenAPI PATCH takes
        // no strategic merge), as against kube-apiserver.
        let three = |r: u32| format!("apiVersion: {group}/v1\nkind: RedisCluster\nmetadata:\n  name: three\nspec:\n  replicas: {r}\n  image: redis:7\n  nodes: [{{name: a}}, {{name: b}}]\n");
        ok(&s, &k, &["apply", "-f", "-"], Some(&three(1)));
        let out = ok(&s, &k, &["apply", "-f", "-"], Some(&three(4).replace(", {name: b}", "")));
        assert!(out.contains("configured"), "kubectl {v}: {out}");
        let names = ok(&s, &k, &["get", &full, "-o", "jsonpath={.items[*].spec.replicas}"], None);
        assert_eq!(names, "3 4 1", "kubectl {v}");
        assert_eq!(ok(&s, &k, &["get", &full, "three", "-o", "jsonpath={.spec.nodes[*].name}"], None), "a", "kubectl {v}");
        ok(&s, &k, &["delete", "crd", &full], None);
    }
}

/// Definitions Kubernetes refuses are refused with its messages, and nothing is stored: a group
/// without a dot, a non-structural schema, names a built-in kind of the group has, two storage
/// versions, a bad printer column, a CEL rule naming a field the schema does not have, a name
/// that is not plural.group.
#[test]
fn bad_definitions_are_refused_with_upstreams_messages() {
    let s = ApiServer::start(Backend::Embedded);
    let k = kubectl_of("1.32");
    let good = redis_crd("refused.example.com", false);
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("group: refused.example.com", "group: example").replace("redisclusters.refused.example.com", "redisclusters.example"),
            "spec.group: Invalid value: \"example\": should be a domain with at least one dot",
        ),
        (
            good.replace("          spec:\n            type: object\n            required: [image]\n", "          spec:\n            required: [image]\n"),
            "spec.versions[1].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields",
        ),
        (
            good.replace("group: refused.example.com", "group: strata.dev").replace("redisclusters.refused.example.com", "virtualmachines.strata.dev").replace("plural: redisclusters", "plural: virtualmachines"),
            "spec.names.plural: Invalid value: \"virtualmachines\": \"virtualmachines\" is already in use by a built-in resource of group \"strata.dev\"",
        ),
        (good.replace("    served: true\n    storage: false\n", "    served: true\n    storage: true\n"), "must have exactly one version marked as storage version"),
        (
            good.replace("      jsonPath: .spec.image", "      jsonPath: spec.image"),
            "spec.versions[1].additionalPrinterColumns[1].jsonPath: Invalid value: \"spec.image\": must be a simple json path starting with .",
        ),
        (
            good.replace("            required: [image]\n", "            required: [image]\n            x-kubernetes-validations:\n            - rule: self.replicas >= 0 && self.replicaz > 0\n"),
            "spec.versions[1].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: apiextensions.ValidationRule{Rule:\"self.replicas >= 0 && self.replicaz > 0\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}: compilation failed: ERROR: <input>:1:27: undefined field 'replicaz'",
        ),
        (
            good.replace("name: redisclusters.refused.example.com", "name: caches.refused.example.com"),
            "metadata.name: Invalid value: \"caches.refused.example.com\": must be spec.names.plural+\".\"+spec.group",
        ),
    ];
    for (yaml, want) in cases {
        let err = fails(&s, &k, &["create", "-f", "-"], Some(&yaml));
        assert!(err.contains("is invalid") && err.contains(want), "want {want:?} in: {err}");
    }
    let left = ok(&s, &k, &["get", "crd", "-o", "name"], None);
    assert_eq!(left.trim(), "", "nothing stored");
}

/// Custom objects against the schema: unknown fields pruned (refused under kubectl's Strict
/// validation), defaults applied, every failing field listed in one 422 (kubectl 1.27 and 1.33,
/// and the Python client's Status), updates validated too, and objects read from storage pruned
/// and defaulted by the version they are read at.
#[test]
fn custom_objects_are_validated_defaulted_and_pruned() {
    let s = ApiServer::start(Backend::Embedded);
    let group = "valid.example.com";
    let k27 = kubectl_of("1.27");
    let k33 = kubectl_of("1.33");
    ok(&s, &k33, &["create", "-f", "-"], Some(&redis_crd(group, false)));
    ok(&s, &k33, &["wait", "--for", "condition=Established", &format!("crd/redisclusters.{group}"), "--timeout=30s"], None);

    // Pruned and defaulted (fieldValidation=Ignore).
    let loose = format!(
        "apiVersion: {group}/v1\nkind: RedisCluster\nmetadata:\n  name: loose\nspec:\n  image: redis:7\n  unknownField: 1\n  port: \"6379\"\n  resources:\n    limits: {{cpu: '1'}}\n  nodes:\n  - name: a\n    junk: 1\n  storage: null\n  template:\n    apiVersion: v1\n    kind: Pod\n    metadata: {{name: p, labels: {{a: b}}, junk: 1}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n"
    );
    ok(&s, &k33, &["create", "--validate=false", "-f", "-"], Some(&loose));
    let got = json_of(&ok(&s, &k33, &["get", &format!("redisclusters.{group}"), "loose", "-o", "json"], None));
    let spec = &got["spec"];
    assert_eq!((spec["replicas"].as_i64(), spec["mode"].as_str()), (Some(3), Some("cluster")), "defaults: {got}");
    assert!(spec.get("unknownField").is_none() && spec["nodes"][0].get("junk").is_none(), "pruned: {got}");
    assert_eq!(spec["resources"]["limits"]["cpu"], "1", "preserve-unknown-fields keeps: {got}");
    assert_eq!(spec["port"], "6379");
    assert!(spec.get("storage").is_some_and(Value::is_null), "nullable null kept: {got}");
    // An embedded resource keeps its own kind and spec; its metadata is ObjectMeta.
    assert_eq!((spec["template"]["kind"].as_str(), spec["template"]["spec"]["containers"][0]["image"].as_str()), (Some("Pod"), Some("busybox")), "{got}");
    assert!(spec["template"]["metadata"].get("junk").is_none() && spec["template"]["metadata"]["labels"]["a"] == "b", "{got}");
    // kubectl's default validation (Strict) refuses the unknown field instead.
    for k in [&k27, &k33] {
        let err = fails(&s, k, &["create", "-f", "-"], Some(&loose.replace("name: loose", "name: strict")));
        assert!(err.contains("unknown field \"spec.unknownField\""), "{err}");
    }

    // Every failing field, in one 422.
    let bad = format!(
        "apiVersion: {group}/v1\nkind: RedisCluster\nmetadata:\n  name: bad\nspec:\n  replicas: \"three\"\n  mode: other\n  port: true\n  storage: {{size: 10G, class: a-storage-class-name-too-long}}\n  nodes: [{{weight: 0}}]\n  template: {{kind: Pod}}\n"
    );
    let wanted = [
        "spec.image: Required value",
        "spec.mode: Unsupported value: \"other\": supported values: \"standalone\", \"cluster\"",
        "spec.nodes[0].name: Required value",
        "spec.nodes[0].weight: Invalid value: 0: spec.nodes[0].weight in body should be greater than 0",
        "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
        "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
        "spec.storage.class: Too long: may not be more than 20 bytes",
        "spec.storage.size: Invalid value: \"10G\": spec.storage.size in body should match '^[0-9]+(Gi|Mi)$'",
        "spec.template.apiVersion: Required value: must not be empty",
    ];
    for k in [&k27, &k33] {
        let err = fails(&s, k, &["create", "-f", "-"], Some(&bad));
        assert!(err.contains("The RedisCluster \"bad\" is invalid"), "{err}");
        for w in wanted {
            assert!(err.contains(w), "missing {w:?} in {err}");
        }
    }
    let bad_json = json!({ "apiVersion": format!("{group}/v1"), "kind": "RedisCluster", "metadata": { "name": "bad" },
        "spec": { "replicas": "three", "mode": "other", "port": true, "storage": { "size": "10G", "class": "a-storage-class-name-too-long" }, "nodes": [{ "weight": 0 }], "template": { "kind": "Pod" } } });
    let py = json_of(s.python("crd_client.py", &[group, "v1", "redisclusters", "default", "py-valid", &bad_json.to_string()]).trim());
    assert_eq!(py["bad_status"], 422, "{py}");
    assert_eq!(py["bad"]["reason"], "Invalid");
    assert_eq!(py["bad"]["message"], format!("RedisCluster.{group} \"bad\" is invalid: [{}]", wanted.join(", ")), "{py}");
    assert_eq!(py["bad"]["details"]["causes"].as_array().map(Vec::len), Some(wanted.len()));
    assert_eq!(py["bad"]["details"]["group"], group);
    let (code, _) = s.curl("GET", &format!("/apis/{group}/v1/namespaces/default/redisclusters/bad"), Auth::Admin, None, None);
    assert_eq!(code, 404, "nothing stored");

    // Updates are validated (a merge patch here).
    let err = fails(&s, &k33, &["patch", &format!("redisclusters.{group}"), "loose", "--type=merge", "-p", r#"{"spec":{"replicas":101}}"#], None);
    assert!(err.contains("spec.replicas: Invalid value: 101: spec.replicas in body should be less than or equal to 100"), "{err}");

    // Read from storage: an object written through v1beta1 (which keeps unknown fields) is
    // pruned and defaulted when read at v1, and still whole at v1beta1.
    let old = format!("apiVersion: {group}/v1beta1\nkind: RedisCluster\nmetadata:\n  name: old\nspec:\n  image: redis:6\n  legacyField: keep-me\n");
    ok(&s, &k33, &["create", "-f", "-"], Some(&old));
    let v1 = json_of(&ok(&s, &k33, &["get", &format!("redisclusters.v1.{group}"), "old", "-o", "json"], None));
    assert!(v1["spec"].get("legacyField").is_none(), "{v1}");
    assert_eq!((v1["spec"]["mode"].as_str(), v1["spec"]["replicas"].as_i64()), (Some("cluster"), Some(3)), "{v1}");
    let beta = json_of(&ok(&s, &k33, &["get", &format!("redisclusters.v1beta1.{group}"), "old", "-o", "json"], None));
    assert_eq!(beta["spec"]["legacyField"], "keep-me", "{beta}");
    assert!(beta["spec"].get("mode").is_none(), "v1beta1 has no defaults: {beta}");
}

/// The status and scale subresources (spec and status changed only through their own
/// endpoints, generation moving with spec; `kubectl scale` through the definition's paths,
/// checked against the schema), printer columns in `kubectl get`, the `all` category, `kubectl
/// explain` from the published OpenAPI v3 (documents re-hashed when a definition comes), v2 with
/// the kind, and field selectors on metadata.name and metadata.namespace.
#[test]
fn subresources_columns_categories_explain_and_field_selectors() {
    let s = ApiServer::start(Backend::Embedded);
    let group = "sub.example.com";
    let k = kubectl_of("1.33");
    let k27 = kubectl_of("1.27");
    let (_, index_before) = s.curl("GET", "/openapi/v3", Auth::Admin, None, None);
    let etag = |s: &ApiServer| {
        let (_, headers, _) = s.get_with_headers("/openapi/v2", &["Accept: application/json"]);
        headers.lines().find(|l| l.starts_with("etag:")).map(str::to_string).unwrap_or_default()
    };
    let v2_before = etag(&s);
    assert!(!v2_before.is_empty());
    ok(&s, &k, &["create", "-f", "-"], Some(&redis_crd(group, false)));
    ok(&s, &k, &["wait", "--for", "condition=Established", &format!("crd/redisclusters.{group}"), "--timeout=30s"], None);
    let rdc = format!("redisclusters.{group}");
    for (name, replicas) in [("alpha", 2), ("beta", 1)] {
        let obj = format!("apiVersion: {group}/v1\nkind: RedisCluster\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  image: redis:7\n");
        ok(&s, &k, &["create", "-f", "-"], Some(&obj));
    }
    let get = |name: &str| json_of(&ok(&s, &k, &["get", &rdc, name, "-o", "json"], None));

    // status: only status changes through /status, only the rest through the object.
    ok(&s, &k, &["patch", &rdc, "alpha", "--subresource=status", "--type=merge", "-p",
        r#"{"spec":{"replicas":9},"status":{"replicas":2,"selector":"app=alpha","conditions":[{"type":"Ready","status":"True"}]}}"#], None);
    let a = get("alpha");
    assert_eq!((a["spec"]["replicas"].as_i64(), a["status"]["replicas"].as_i64(), a["metadata"]["generation"].as_i64()), (Some(2), Some(2), Some(1)), "{a}");
    ok(&s, &k, &["patch", &rdc, "alpha", "--type=merge", "-p", r#"{"spec":{"replicas":4},"status":{"replicas":100}}"#], None);
    let a = get("alpha");
    assert_eq!((a["spec"]["replicas"].as_i64(), a["status"]["replicas"].as_i64(), a["metadata"]["generation"].as_i64()), (Some(4), Some(2), Some(2)), "{a}");
    ok(&s, &k, &["label", &rdc, "alpha", "tier=cache"], None);
    assert_eq!(get("alpha")["metadata"]["generation"], 2, "metadata changes leave generation");
    // A status that does not fit the schema is refused at /status too.
    let err = fails(&s, &k, &["patch", &rdc, "alpha", "--subresource=status", "--type=merge", "-p", r#"{"status":{"replicas":"two"}}"#], None);
    assert!(err.contains("status.replicas: Invalid value: \"string\": status.replicas in body must be of type integer"), "{err}");

    // scale, through the definition's paths, with kubectl 1.33 and 1.27.
    ok(&s, &k, &["scale", &rdc, "alpha", "--replicas=5"], None);
    assert_eq!(get("alpha")["spec"]["replicas"], 5);
    ok(&s, &k27, &["scale", &rdc, "alpha", "--replicas=6"], None);
    let (code, body) = s.curl("GET", &format!("/apis/{group}/v1/namespaces/default/redisclusters/alpha/scale"), Auth::Admin, None, None);
    assert_eq!(code, 200, "{body}");
    let scale = json_of(&body);
    assert_eq!((scale["kind"].as_str(), scale["apiVersion"].as_str()), (Some("Scale"), Some("autoscaling/v1")));
    assert_eq!((scale["spec"]["replicas"].as_i64(), scale["status"]["replicas"].as_i64(), scale["status"]["selector"].as_str()), (Some(6), Some(2), Some("app=alpha")), "{scale}");
    let err = fails(&s, &k, &["scale", &rdc, "alpha", "--replicas=500"], None);
    assert!(err.contains("spec.replicas in body should be less than or equal to 100"), "{err}");
    assert_eq!(get("alpha")["spec"]["replicas"], 6);

    // Printer columns.
    let table = ok(&s, &k, &["get", &rdc], None);
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["NAME", "REPLICAS", "IMAGE", "READY", "AGE"], "{table}");
    assert_eq!(&lines[1][..4], ["alpha", "6", "redis:7", "True"], "{table}");
    // A path that finds nothing is an empty cell (a null, as upstream's table convertor sends).
    assert_eq!((&lines[2][..3], lines[2].len()), (&["beta", "1", "redis:7"][..], 4), "{table}");
    // A watch at v1beta1 converts each object; one as a Table carries the columns.
    let (code, _, body) = s.get_with_headers(&format!("/apis/{group}/v1beta1/namespaces/default/redisclusters?watch=1&timeoutSeconds=1"), &[]);
    assert_eq!(code, 200);
    let events: Vec<Value> = String::from_utf8_lossy(&body).lines().map(json_of).collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e["type"] == "ADDED" && e["object"]["apiVersion"] == format!("{group}/v1beta1")), "{events:?}");
    let (code, _, body) = s.get_with_headers(
        &format!("/apis/{group}/v1/namespaces/default/redisclusters?watch=1&timeoutSeconds=1"),
        &["Accept: application/json;as=Table;v=v1;g=meta.k8s.io"],
    );
    assert_eq!(code, 200);
    let first = json_of(String::from_utf8_lossy(&body).lines().next().unwrap_or("{}"));
    let cols: Vec<&str> = first["object"]["columnDefinitions"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(cols, ["Name", "Replicas", "Image", "Ready", "Age"], "{first}");
    assert_eq!(first["object"]["rows"][0]["cells"][1], 6, "{first}");

    // The `all` category.
    let all = ok(&s, &k, &["get", "all"], None);
    assert!(all.contains(&format!("rediscluster.{group}/alpha")) && all.contains(&format!("rediscluster.{group}/beta")), "{all}");

    // Field selectors.
    assert_eq!(ok(&s, &k, &["get", &rdc, "--field-selector", "metadata.name=beta", "-o", "name"], None).trim(), format!("rediscluster.{group}/beta"));
    assert_eq!(ok(&s, &k, &["get", &rdc, "--field-selector", "metadata.namespace=default", "-o", "name"], None).lines().count(), 2);
    let err = fails(&s, &k, &["get", &rdc, "--field-selector", "spec.image=redis:7"], None);
    assert!(err.contains("field label not supported: spec.image"), "{err}");

    // OpenAPI: re-hashed documents, the kind's schema; kubectl explain reads it.
    let (_, index_after) = s.curl("GET", "/openapi/v3", Auth::Admin, None, None);
    let index_after = json_of(&index_after);
    let url = index_after["paths"][format!("apis/{group}/v1")]["serverRelativeURL"].as_str().unwrap_or_default().to_string();
    assert!(!url.is_empty(), "{index_after}");
    let old_core = json_of(&index_before)["paths"]["api/v1"]["serverRelativeURL"].clone();
    assert_ne!(old_core, index_after["paths"]["api/v1"]["serverRelativeURL"], "the hash moves with the served kinds");
    let (code, doc) = s.curl("GET", &url, Auth::Admin, None, None);
    assert_eq!(code, 200);
    let doc = json_of(&doc);
    let def = &doc["components"]["schemas"]["com.example.sub.v1.RedisCluster"];
    assert_eq!(def["properties"]["spec"]["properties"]["replicas"]["maximum"], 100, "{def}");
    assert_eq!(def["x-kubernetes-group-version-kind"][0]["kind"], "RedisCluster");
    assert_ne!(etag(&s), v2_before, "the v2 ETag moves too");
    let (code, v2) = s.curl("GET", "/openapi/v2", Auth::Admin, None, None);
    assert_eq!(code, 200);
    assert!(json_of(&v2)["definitions"]["com.example.sub.v1.RedisCluster"]["properties"]["spec"]["properties"]["image"]["type"] == "string");
    for kb in [&k, &k27] {
        let out = ok(&s, kb, &["explain", &format!("{rdc}.spec.replicas")], None);
        assert!(out.contains("replicas") && out.contains("<integer>"), "{out}");
        let out = ok(&s, kb, &["explain", &format!("{rdc}.spec")], None);
        assert!(out.contains("nodes") && out.contains("image") && out.contains("-required-"), "{out}");
    }
}

/// `kubectl explain` on a custom kind shows what upstream's publishes (apiextensions' OpenAPI
/// builder): the schema's own descriptions at every level, none where the schema has none
/// ("<empty>", no made-up text), `metadata` as "Standard object's metadata" with ObjectMeta's
/// field descriptions, and apiVersion/kind as TypeMeta describes them; an unknown field is an
/// error. Upstream's CustomResourcePublishOpenAPI conformance specs "works for CRD with
/// validation schema" and "... without validation schema" check the same.
#[test]
fn explain_shows_a_custom_kind_s_descriptions() {
    let s = ApiServer::start(Backend::Embedded);
    let group = "explain.example.com";
    let foo = format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: foos.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: foos, singular: foo, kind: Foo, listKind: FooList}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        description: Foo CRD for Testing
        type: object
        properties:
          spec:
            description: Specification of Foo
            type: object
            properties:
              bars:
                description: List of Bars and their specs.
                type: array
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {{description: Name of Bar., type: string}}
                    age: {{description: Age of Bar., type: string}}
                    bazs: {{description: List of Bazs., type: array, items: {{type: string}}}}
          status:
            description: Status of Foo
            type: object
"#
    );
    let empty = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: empties.{group}}}\nspec:\n  group: {group}\n  scope: Namespaced\n  \
         names: {{plural: empties, singular: empty, kind: Empty, listKind: EmptyList}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    \
         schema:\n      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n"
    );
    let k = kubectl_of("1.32");
    for crd in [&foo, &empty] {
        ok(&s, &k, &["create", "-f", "-"], Some(crd));
    }
    for name in ["foos", "empties"] {
        ok(&s, &k, &["wait", "--for", "condition=Established", &format!("crd/{name}.{group}"), "--timeout=30s"], None);
    }
    let matches = |out: &str, parts: &[&str]| {
        // The parts in this order (the e2e spec's regular expressions are `A.*B.*C`).
        let mut rest = out;
        for p in parts {
            match rest.find(p) {
                Some(i) => rest = &rest[i + p.len()..],
                None => return false,
            }
        }
        true
    };
    for v in ["1.27", "1.32", "1.33"] {
        let kb = kubectl_of(v);
        // Discovery and the OpenAPI documents follow the definitions within moments.
        let mut out = String::new();
        wait_for("kubectl explain to know the kind", Duration::from_secs(30), || {
            let (good, o, _) = run(&s, &kb, &["explain", "foos"], None);
            out = o;
            good
        });
        assert!(matches(&out, &["DESCRIPTION:", "Foo CRD for Testing", "FIELDS:", "apiVersion", "<string>", "APIVersion defines", "spec", "<Object>", "Specification of Foo"]), "{v}: {out}");
        let out = ok(&s, &kb, &["explain", "foos.metadata"], None);
        assert!(matches(&out, &["DESCRIPTION:", "Standard object's metadata", "FIELDS:", "creationTimestamp", "<string>", "CreationTimestamp is a timestamp"]), "{v}: {out}");
        let out = ok(&s, &kb, &["explain", "foos.spec"], None);
        assert!(matches(&out, &["DESCRIPTION:", "Specification of Foo", "FIELDS:", "bars", "<[]Object>", "List of Bars and their specs"]), "{v}: {out}");
        let out = ok(&s, &kb, &["explain", "foos.spec.bars"], None);
        assert!(matches(&out, &["bars", "<[]Object>", "DESCRIPTION:", "List of Bars and their specs", "FIELDS:", "bazs", "<[]string>", "List of Bazs", "name", "<string>", "Name of Bar"]), "{v}: {out}");
        let err = fails(&s, &kb, &["explain", "foos.spec.bars2"], None);
        assert!(err.contains(r#"field "bars2" does not exist"#), "{v}: {err}");
        let out = ok(&s, &kb, &["explain", "empties"], None);
        assert!(matches(&out, &["DESCRIPTION:", "<empty>"]), "{v}: a schema without a description shows none: {out}");
    }
    // The v2 document (what older clients and `--output=plaintext-openapiv2` read) carries them too.
    let out = ok(&s, &k, &["explain", "--output=plaintext-openapiv2", "foos.metadata"], None);
    assert!(matches(&out, &["Standard object's metadata", "creationTimestamp", "CreationTimestamp is a timestamp"]), "{out}");
    let out = ok(&s, &k, &["explain", "--output=plaintext-openapiv2", "foos.spec"], None);
    assert!(matches(&out, &["Specification of Foo", "bars", "List of Bars and their specs"]), "{out}");
}

/// A definition whose names another definition of the group already has is stored but not
/// accepted (NamesAccepted False with upstream's reason, not Established, not served); the
/// first keeps its names. Deleting a namespace deletes the custom objects in it.
#[test]
fn name_conflicts_and_namespace_deletion() {
    let s = ApiServer::start(Backend::Embedded);
    let k = kubectl_of("1.32");
    let group = "names.example.com";
    ok(&s, &k, &["create", "-f", "-"], Some(&redis_crd(group, false)));
    ok(&s, &k, &["wait", "--for", "condition=Established", &format!("crd/redisclusters.{group}"), "--timeout=30s"], None);
    let second = redis_crd(group, false)
        .replace("redisclusters", "memcacheds")
        .replace("singular: rediscluster", "singular: memcached")
        .replace("kind: RedisCluster", "kind: Memcached")
        .replace("categories: [all]", "categories: []");
    ok(&s, &k, &["create", "-f", "-"], Some(&second));
    let mut crd = Value::Null;
    wait_for("NamesAccepted on the second definition", Duration::from_secs(30), || {
        crd = json_of(&ok(&s, &k, &["get", "crd", &format!("memcacheds.{group}"), "-o", "json"], None));
        !condition(&crd, "NamesAccepted").is_null()
    });
    let names = condition(&crd, "NamesAccepted");
    assert_eq!((names["status"].as_str(), names["reason"].as_str(), names["message"].as_str()), (Some("False"), Some("ShortNamesConflict"), Some("\"rdc\" is already in use")), "{crd}");
    assert_eq!(condition(&crd, "Established")["status"], "False", "{crd}");
    let (code, _) = s.curl("GET", &format!("/apis/{group}/v1/namespaces/default/memcacheds"), Auth::Admin, None, None);
    assert_eq!(code, 404, "not served");

    ok(&s, &k, &["create", "namespace", "doomed"], None);
    let obj = format!("apiVersion: {group}/v1\nkind: RedisCluster\nmetadata:\n  name: inside\n  namespace: doomed\nspec:\n  image: redis:7\n");
    ok(&s, &k, &["create", "-f", "-"], Some(&obj));
    ok(&s, &k, &["delete", "namespace", "doomed", "--wait=false"], None);
    wait_for("the namespace to go", Duration::from_secs(30), || !run(&s, &k, &["get", "namespace", "doomed"], None).0);
    let (code, body) = s.curl("GET", &format!("/apis/{group}/v1/redisclusters"), Auth::Admin, None, None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(json_of(&body)["items"], json!([]), "{body}");
}

/// Two servers on one etcd: a definition created through one is served by the other (its
/// registry follows the store's watch), and goes from both when deleted.
#[test]
fn a_second_server_on_the_same_etcd_serves_the_kinds() {
    let a = ApiServer::start(Backend::Etcd);
    let ep = a.etcd_endpoint().expect("etcd").to_string();
    let b = ApiServer::start_opts(Backend::Etcd, Options { etcd_endpoint: Some(ep), ..Options::default() });
    let k = kubectl_of("1.32");
    let group = "shared.example.com";
    ok(&a, &k, &["create", "-f", "-"], Some(&redis_crd(group, false)));
    let path = format!("/apis/{group}/v1/namespaces/default/redisclusters");
    wait_for("the second server to serve the kind", Duration::from_secs(30), || b.curl("GET", &path, Auth::Admin, None, None).0 == 200);
    let obj = format!("apiVersion: {group}/v1\nkind: RedisCluster\nmetadata:\n  name: from-b\nspec:\n  image: redis:7\n");
    ok(&b, &k, &["create", "-f", "-"], Some(&obj));
    assert_eq!(ok(&a, &k, &["get", &format!("redisclusters.{group}"), "from-b", "-o", "jsonpath={.spec.replicas}"], None), "3", "defaulted, seen by both");
    ok(&a, &k, &["delete", "crd", &format!("redisclusters.{group}")], None);
    wait_for("the second server to stop serving the kind", Duration::from_secs(30), || b.curl("GET", &path, Auth::Admin, None, None).0 == 404);
}

/// Changing a definition changes what is served at once: a version no longer served leaves
/// discovery and answers 404, and a default added to the schema shows on objects already
/// stored when they are next read. `kubectl get crd` prints upstream's columns.
#[test]
fn changing_a_definition_changes_what_is_served() {
    let s = ApiServer::start(Backend::Embedded);
    let k = kubectl_of("1.32");
    let group = "live.example.com";
    let crd_name = format!("redisclusters.{group}");
    ok(&s, &k, &["create", "-f", "-"], Some(&redis_crd(group, false)));
    ok(&s, &k, &["wait", "--for", "condition=Established", &format!("crd/{crd_name}"), "--timeout=30s"], None);
    let header = ok(&s, &k, &["get", "crd"], None);
    assert_eq!(header.lines().next().map(|l| l.split_whitespace().collect::<Vec<_>>()), Some(vec!["NAME", "CREATED", "AT"]), "{header}");
    let obj = format!("apiVersion: {group}/v1\nkind: RedisCluster\nmetadata:\n  name: kept\nspec:\n  image: redis:7\n");
    ok(&s, &k, &["create", "-f", "-"], Some(&obj));
    let beta = format!("/apis/{group}/v1beta1/namespaces/default/redisclusters/kept");
    assert_eq!(s.curl("GET", &beta, Auth::Admin, None, None).0, 200);

    ok(&s, &k, &["patch", "crd", &crd_name, "--type=json", "-p", r#"[{"op":"replace","path":"/spec/versions/0/served","value":false},
        {"op":"add","path":"/spec/versions/1/schema/openAPIV3Schema/properties/spec/properties/tier","value":{"type":"string","default":"gold"}}]"#], None);
    assert_eq!(s.curl("GET", &beta, Auth::Admin, None, None).0, 404, "v1beta1 is no longer served");
    let (_, body) = s.curl("GET", &format!("/apis/{group}"), Auth::Admin, None, None);
    assert_eq!(json_of(&body)["versions"], json!([{ "groupVersion": format!("{group}/v1"), "version": "v1" }]), "{body}");
    let kept = json_of(&ok(&s, &k, &["get", &format!("redisclusters.{group}"), "kept", "-o", "json"], None));
    assert_eq!(kept["spec"]["tier"], "gold", "the new default applies on read: {kept}");
}

/// Garbage collection follows custom kinds defined after the controllers started: a ConfigMap
/// owned by a custom object goes when its owner is deleted, and a custom object owned by a
/// ConfigMap goes with the ConfigMap (owner references at the non-preferred version too).
#[test]
fn garbage_collection_follows_custom_kinds() {
    let s = ApiServer::start_opts(Backend::Embedded, Options { controllers: true, ..Options::default() });
    let k = kubectl_of("1.32");
    let group = "gc.example.com";
    ok(&s, &k, &["create", "-f", "-"], Some(&redis_crd(group, false)));
    ok(&s, &k, &["wait", "--for", "condition=Established", &format!("crd/redisclusters.{group}"), "--timeout=30s"], None);
    let rdc = format!("redisclusters.{group}");
    let obj = format!("apiVersion: {group}/v1\nkind: RedisCluster\nmetadata:\n  name: owner\nspec:\n  image: redis:7\n");
    ok(&s, &k, &["create", "-f", "-"], Some(&obj));
    let owner_uid = ok(&s, &k, &["get", &rdc, "owner", "-o", "jsonpath={.metadata.uid}"], None);
    let dependent = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dependent\n  ownerReferences:\n  - {{apiVersion: {group}/v1beta1, kind: RedisCluster, name: owner, uid: {owner_uid}}}\ndata: {{a: b}}\n"
    );
    ok(&s, &k, &["create", "-f", "-"], Some(&dependent));
    ok(&s, &k, &["create", "configmap", "parent"], None);
    let parent_uid = ok(&s, &k, &["get", "configmap", "parent", "-o", "jsonpath={.metadata.uid}"], None);
    let child = format!(
        "apiVersion: {group}/v1\nkind: RedisCluster\nmetadata:\n  name: child\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: parent, uid: {parent_uid}}}\nspec:\n  image: redis:7\n"
    );
    ok(&s, &k, &["create", "-f", "-"], Some(&child));

    ok(&s, &k, &["delete", &rdc, "owner"], None);
    wait_for("the custom object's dependent to be collected", Duration::from_secs(60), || !run(&s, &k, &["get", "configmap", "dependent"], None).0);
    ok(&s, &k, &["delete", "configmap", "parent"], None);
    wait_for("the ConfigMap's custom dependent to be collected", Duration::from_secs(60), || !run(&s, &k, &["get", &rdc, "child"], None).0);
}

/// A custom kind's OpenAPI v2 definition is what kube-apiserver publishes (apiextensions'
/// `ToStructuralOpenAPIV2` and builder): value validations kept (enum, bounds, pattern) but the
/// `allOf`/`anyOf`/`oneOf`/`not` junctors and defaults dropped (the int-or-string `anyOf` pattern
/// is a structural schema, as upstream); a nullable field loses its type
/// and structure and leaves `required`; a preserve-unknown-fields field loses its structure (and
/// an `object` type); an array without items its type; a definition preserving unknown fields at
/// its root is just `type: object`, without a description. Upstream's CustomResourcePublishOpenAPI
/// conformance specs compare these definitions (without metadata, apiVersion, kind and the
/// group-version-kind) with the schema they created.
#[test]
fn openapi_v2_publishes_custom_kinds_as_upstream() {
    let s = ApiServer::start(Backend::Embedded);
    let k = kubectl_of("1.32");
    let group = "pub.example.com";
    let crd = |plural: &str, kind: &str, schema: &Value| {
        json!({ "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": { "name": format!("{plural}.{group}") },
            "spec": { "group": group, "scope": "Namespaced", "names": { "plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List") },
                "versions": [{ "name": "v1", "served": true, "storage": true, "schema": { "openAPIV3Schema": schema } }] } })
        .to_string()
    };
    let foo = json!({
        "description": "Foo CRD for Testing", "type": "object",
        "properties": {
            "spec": { "type": "object", "description": "Specification of Foo", "required": ["bars", "maybe"],
                "properties": {
                    "bars": { "description": "List of Bars.", "type": "array", "items": { "type": "object", "required": ["name"], "properties": {
                        "name": { "type": "string", "description": "Name of Bar." },
                        "feeling": { "type": "string", "enum": ["Great", "Down"] },
                        "age": { "type": "integer", "minimum": 0, "maximum": 120, "default": 1 },
                        "code": { "type": "string", "pattern": "^[a-z]+$", "maxLength": 8 } } } },
                    "port": { "x-kubernetes-int-or-string": true, "allOf": [{ "maximum": 65535 }] },
                    "target": { "x-kubernetes-int-or-string": true, "anyOf": [{ "type": "integer" }, { "type": "string" }] },
                    "maybe": { "type": "object", "nullable": true, "properties": { "a": { "type": "string" } } },
                    "free": { "type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": { "b": { "type": "string" } } },
                    "anything": { "type": "array", "items": { "type": "string" }, "x-kubernetes-preserve-unknown-fields": true } } },
            "status": { "type": "object", "properties": { "ready": { "type": "boolean" } } } }
    });
    ok(&s, &k, &["create", "-f", "-"], Some(&crd("foos", "Foo", &foo)));
    let open = json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true });
    ok(&s, &k, &["create", "-f", "-"], Some(&crd("opens", "Open", &open)));
    for p in ["foos", "opens"] {
        ok(&s, &k, &["wait", "--for", "condition=Established", &format!("crd/{p}.{group}"), "--timeout=30s"], None);
    }
    let mut v2 = Value::Null;
    wait_for("both definitions in /openapi/v2", Duration::from_secs(30), || {
        v2 = json_of(&s.curl("GET", "/openapi/v2", Auth::Admin, None, None).1);
        ["Foo", "Open"].iter().all(|k| v2["definitions"][format!("com.example.pub.v1.{k}")].is_object())
    });
    // What the e2e suite drops before comparing.
    let published = |kind: &str| {
        let mut d = v2["definitions"][format!("com.example.pub.v1.{kind}")].clone();
        assert_eq!(d["x-kubernetes-group-version-kind"], json!([{ "group": group, "version": "v1", "kind": kind }]), "{d}");
        d.as_object_mut().map(|m| m.remove("x-kubernetes-group-version-kind"));
        if let Some(props) = d.get_mut("properties").and_then(Value::as_object_mut) {
            for f in ["metadata", "apiVersion", "kind"] {
                props.remove(f);
            }
            if props.is_empty() {
                d.as_object_mut().map(|m| m.remove("properties"));
            }
        }
        d
    };
    let want = json!({
        "description": "Foo CRD for Testing", "type": "object",
        "properties": {
            "spec": { "type": "object", "description": "Specification of Foo", "required": ["bars"],
                "properties": {
                    "bars": { "description": "List of Bars.", "type": "array", "items": { "type": "object", "required": ["name"], "properties": {
                        "name": { "type": "string", "description": "Name of Bar." },
                        "feeling": { "type": "string", "enum": ["Great", "Down"] },
                        "age": { "type": "integer", "minimum": 0, "maximum": 120 },
                        "code": { "type": "string", "pattern": "^[a-z]+$", "maxLength": 8 } } } },
                    "port": { "x-kubernetes-int-or-string": true },
                    "target": { "x-kubernetes-int-or-string": true },
                    "maybe": {},
                    "free": { "x-kubernetes-preserve-unknown-fields": true },
                    "anything": { "x-kubernetes-preserve-unknown-fields": true } } },
            "status": { "type": "object", "properties": { "ready": { "type": "boolean" } } } }
    });
    assert_eq!(published("Foo"), want);
    assert_eq!(published("Open"), json!({ "type": "object" }));
}

/// A definition shaped like Gateway API's (nested objects, a list-map of listeners keyed by
/// name, several rules: a `fieldPath`, a `messageExpression`, string, list, quantity and duration
/// functions, a transition rule on the list items and one on a field, a rule on the status).
fn gateway_crd(group: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: self.minReplicas <= self.replicas
              message: replicas must be greater than or equal to minReplicas
              fieldPath: .replicas
            - rule: self.color == oldSelf.color
              message: color is immutable
              reason: FieldValueForbidden
            - rule: "self.listeners.all(l, l.port > 1024 || l.protocol == 'HTTPS')"
              messageExpression: "'listeners on ports below 1025 must use HTTPS: ' + self.listeners.filter(l, l.port <= 1024 && l.protocol != 'HTTPS').map(l, l.name).join(', ')"
            properties:
              color: {{type: string}}
              replicas: {{type: integer}}
              minReplicas: {{type: integer, default: 1}}
              memory:
                x-kubernetes-int-or-string: true
                x-kubernetes-validations:
                - rule: "isQuantity(string(self)) && quantity(string(self)).isLessThan(quantity('1Gi'))"
                  message: memory must be a quantity below 1Gi
              timeout:
                type: string
                maxLength: 32
                x-kubernetes-validations:
                - rule: duration(self) <= duration('1h')
                  message: timeout must be at most 1h
              hostname:
                type: string
                x-kubernetes-validations:
                - rule: "self.lowerAscii() == self && !self.startsWith('*.')"
                  message: hostname must be lowercase and not a wildcard
              listeners:
                type: array
                maxItems: 16
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                x-kubernetes-validations:
                - rule: self.all(l1, self.exists_one(l2, l1.port == l2.port))
                  message: listener ports must be unique
                items:
                  type: object
                  required: [name, port]
                  x-kubernetes-validations:
                  - rule: self.port == oldSelf.port
                    message: the port of a listener cannot change
                  properties:
                    name: {{type: string}}
                    port: {{type: integer}}
                    protocol: {{type: string, default: HTTP}}
          status:
            type: object
            properties:
              phase: {{type: string}}
            x-kubernetes-validations:
            - rule: "self.phase in ['Pending', 'Ready']"
              message: phase must be Pending or Ready
"#
    )
}

fn widget(group: &str, name: &str, color: &str, replicas: i64, listeners: &str) -> String {
    format!("apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: {name}\nspec:\n  color: {color}\n  replicas: {replicas}\n  minReplicas: 2\n  hostname: shop.example.com\n  memory: 512Mi\n  timeout: 30m\n  listeners: {listeners}\n")
}

/// `x-kubernetes-validations` CEL rules (issue 12 part 2), with kubectl 1.27 and 1.33: objects
/// that keep the rules are created; ones that break them are refused with every rule's message
/// in one 422 (`fieldPath`, `messageExpression`, `reason` as upstream); an update that breaks a
/// transition rule (on a field, on a list-map item correlated by key) is refused while a new
/// item is not held to it; the status subresource is checked too; a definition whose rule does
/// not compile is refused naming the rule's path, and nothing is stored.
#[test]
fn validation_rules_are_evaluated_as_upstream() {
    let s = ApiServer::start(Backend::Embedded);
    for v in ["1.27", "1.33"] {
        let k = kubectl_of(v);
        let group = format!("rules{}.example.com", v.replace('.', ""));
        let full = format!("widgets.{group}");
        ok(&s, &k, &["create", "-f", "-"], Some(&gateway_crd(&group)));
        ok(&s, &k, &["wait", "--for", "condition=Established", &format!("crd/{full}"), "--timeout=30s"], None);

        let good = widget(&group, "w1", "red", 3, "[{name: web, port: 8080}, {name: tls, port: 443, protocol: HTTPS}]");
        ok(&s, &k, &["create", "-f", "-"], Some(&good));

        // Every broken rule, in one response, with upstream's field paths and messages.
        let bad = widget(&group, "w2", "red", 1, "[{name: web, port: 80}, {name: alt, port: 80}]")
            .replace("shop.example.com", "'*.Example.com'")
            .replace("512Mi", "2Gi")
            .replace("30m", "1h30m");
        let err = fails(&s, &k, &["create", "-f", "-"], Some(&bad));
        for want in [
            "The Widget \"w2\" is invalid",
            "spec.replicas: Invalid value: \"object\": replicas must be greater than or equal to minReplicas",
            "spec: Invalid value: \"object\": listeners on ports below 1025 must use HTTPS: web, alt",
            "spec.hostname: Invalid value: \"string\": hostname must be lowercase and not a wildcard",
            "spec.listeners: Invalid value: \"array\": listener ports must be unique",
            "spec.memory: Invalid value: \"\": memory must be a quantity below 1Gi",
            "spec.timeout: Invalid value: \"string\": timeout must be at most 1h",
        ] {
            assert!(err.contains(want), "kubectl {v}: missing {want:?} in {err}");
        }
        assert!(!err.contains("color is immutable") && !err.contains("cannot change"), "kubectl {v}: transition rules run on updates only: {err}");
        let (code, _) = s.curl("GET", &format!("/apis/{group}/v1/namespaces/default/widgets/w2"), Auth::Admin, None, None);
        assert_eq!(code, 404, "nothing stored");

        // Transition rules: the color may not change; a listener's port may not change (the old
        // item found by its name whatever its position); a new listener is not held to it.
        let err = fails(&s, &k, &["patch", &full, "w1", "--type=merge", "-p", r#"{"spec":{"color":"blue"}}"#], None);
        assert!(err.contains("spec: Forbidden: color is immutable"), "kubectl {v}: {err}");
        let moved = widget(&group, "w1", "red", 3, "[{name: tls, port: 443, protocol: HTTPS}, {name: web, port: 9090}, {name: new, port: 7070}]");
        let err = fails(&s, &k, &["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(&moved));
        assert!(err.contains("spec.listeners[1]: Invalid value: \"object\": the port of a listener cannot change"), "kubectl {v}: {err}");
        assert!(!err.contains("spec.listeners[2]"), "kubectl {v}: a new item has no old value: {err}");
        let grown = moved.replace("port: 9090", "port: 8080");
        ok(&s, &k, &["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(&grown));
        let ports = ok(&s, &k, &["get", &full, "w1", "-o", "jsonpath={.spec.listeners[*].port}"], None);
        assert_eq!(ports, "443 8080 7070", "kubectl {v}");

        // The status subresource is validated by the same rules.
        ok(&s, &k, &["patch", &full, "w1", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Ready"}}"#], None);
        let err = fails(&s, &k, &["patch", &full, "w1", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Broken"}}"#], None);
        assert!(err.contains("status: Invalid value: \"object\": phase must be Pending or Ready"), "kubectl {v}: {err}");

        // A definition whose rule does not compile is refused at the rule's path.
        let broken = gateway_crd(&group.replace("rules", "broken")).replace("rule: self.minReplicas <= self.replicas", "rule: self.minReplicas <= self.replicas.nope()");
        let err = fails(&s, &k, &["create", "-f", "-"], Some(&broken));
        assert!(
            err.contains("spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: apiextensions.ValidationRule{Rule:\"self.minReplicas <= self.replicas.nope()\"")
                && err.contains("compilation failed: ERROR: <input>:1:39: undeclared reference to 'nope' (in container '')"),
            "kubectl {v}: {err}"
        );
        let typo = gateway_crd(&group.replace("rules", "typo")).replace("self.lowerAscii() == self", "self.lowerAscii() == self.hostname");
        let err = fails(&s, &k, &["create", "-f", "-"], Some(&typo));
        assert!(err.contains("spec.validation.openAPIV3Schema.properties[spec].properties[hostname].x-kubernetes-validations[0].rule: Invalid value: "), "kubectl {v}: {err}");
        let bad_reason = gateway_crd(&group.replace("rules", "reason")).replace("reason: FieldValueForbidden", "reason: Nope");
        let err = fails(&s, &k, &["create", "-f", "-"], Some(&bad_reason));
        assert!(err.contains("spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[1].reason: Unsupported value: \"Nope\": supported values: \"FieldValueDuplicate\", \"FieldValueForbidden\", \"FieldValueInvalid\", \"FieldValueRequired\""), "kubectl {v}: {err}");
        // A rule whose estimated cost is too high (lists of lists without maxItems, as upstream's
        // e2e spec has it) is refused.
        let costly = gateway_crd(&group.replace("rules", "costly")).replace(
            "              color: {type: string}\n",
            "              color: {type: string}\n              matrix:\n                type: array\n                items:\n                  type: array\n                  items: {type: string}\n                  x-kubernetes-validations:\n                  - rule: \"self.all(s, s == 'string constant')\"\n",
        );
        let err = fails(&s, &k, &["create", "-f", "-"], Some(&costly));
        assert!(
            err.contains("spec.validation.openAPIV3Schema.properties[spec].properties[matrix].items.x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x"),
            "kubectl {v}: {err}"
        );
        let names = ok(&s, &k, &["get", "crd", "-o", "name"], None);
        assert!(!names.contains("broken") && !names.contains("typo") && !names.contains("reason") && !names.contains("costly"), "kubectl {v}: nothing stored: {names}");
        ok(&s, &k, &["delete", "crd", &full], None);
    }
}

/// CRD `selectableFields` (v1.32): `kubectl get --field-selector` on them (and on metadata.name)
/// for kubectl 1.27 and 1.33, a watch filtered by one, a clear error naming the selectable fields
/// for any other, and definitions with bad selectable fields refused with upstream's messages.
#[test]
fn selectable_fields_select_custom_objects() {
    let s = ApiServer::start(Backend::Embedded);
    let group = "select.example.com";
    let full = format!("widgets.{group}");
    let k33 = kubectl_of("1.33");
    let selectable = "    selectableFields:\n    - jsonPath: .spec.color\n    - jsonPath: .spec.replicas\n    schema:\n";
    let crd = gateway_crd(group).replacen("    schema:\n", selectable, 1);
    ok(&s, &k33, &["create", "-f", "-"], Some(&crd));
    ok(&s, &k33, &["wait", "--for", "condition=Established", &format!("crd/{full}"), "--timeout=30s"], None);
    for (name, color, replicas) in [("w1", "blue", 3), ("w2", "red", 3), ("w3", "blue", 5)] {
        ok(&s, &k33, &["create", "-f", "-"], Some(&widget(group, name, color, replicas, "[]")));
    }
    for v in ["1.27", "1.33"] {
        let k = kubectl_of(v);
        let names = |sel: &str| ok(&s, &k, &["get", &full, "--field-selector", sel, "-o", "jsonpath={.items[*].metadata.name}"], None);
        assert_eq!(names("spec.color=blue"), "w1 w3", "kubectl {v}");
        assert_eq!(names("spec.color!=blue"), "w2", "kubectl {v}");
        assert_eq!(names("spec.color=blue,spec.replicas=5"), "w3", "kubectl {v}");
        assert_eq!(names("metadata.name=w2,spec.color=red"), "w2", "kubectl {v}");
        let err = fails(&s, &k, &["get", &full, "--field-selector", "spec.hostname=shop.example.com"], None);
        assert!(
            err.contains("field label not supported: spec.hostname (the selectable fields of widgets.select.example.com v1 are: metadata.name, metadata.namespace, spec.color, spec.replicas)"),
            "kubectl {v}: {err}"
        );
    }
    // A watch filtered by a selectable field sees only the matching objects.
    let (code, body) = s.curl("GET", &format!("/apis/{group}/v1/namespaces/default/widgets?watch=1&resourceVersion=0&timeoutSeconds=2&fieldSelector=spec.color%3Dred"), Auth::Admin, None, None);
    assert_eq!(code, 200, "{body}");
    let seen: Vec<String> = body.lines().map(|l| json_of(l)["object"]["metadata"]["name"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(seen, ["w2"], "{body}");

    // Bad selectable fields are refused, nothing stored.
    let bad = gateway_crd("badselect.example.com").replacen(
        "    schema:\n",
        "    selectableFields:\n    - jsonPath: .spec.listeners\n    - jsonPath: .spec.nope\n    - jsonPath: .spec.color\n    - jsonPath: .spec.color\n    - jsonPath: .spec['color']\n    schema:\n",
        1,
    );
    let err = fails(&s, &k33, &["create", "-f", "-"], Some(&bad));
    for want in [
        "spec.selectableFields[0].jsonPath: Invalid value: \".spec.listeners\": must point to a field of type string, boolean or integer. Enum string fields and strings with formats are allowed.",
        "spec.selectableFields[1].jsonPath: Invalid value: \".spec.nope\": is an invalid path: does not refer to a valid field",
        "spec.selectableFields[3].jsonPath: Duplicate value: \".spec.color\"",
        "spec.selectableFields[4].jsonPath: Invalid value: \".spec['color']\": is an invalid path: array notation is not allowed",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
    let many: String = (0..9).map(|i| format!("    - jsonPath: .spec.f{i}\n")).collect();
    let props: String = (0..9).map(|i| format!("              f{i}: {{type: string}}\n")).collect();
    let too_many = gateway_crd("many.example.com")
        .replacen("    schema:\n", &format!("    selectableFields:\n{many}    schema:\n"), 1)
        .replace("              color: {type: string}\n", &format!("              color: {{type: string}}\n{props}"));
    let err = fails(&s, &k33, &["create", "-f", "-"], Some(&too_many));
    assert!(err.contains("spec.selectableFields: Too many: 9: must have at most 8 items"), "{err}");
    let names = ok(&s, &k33, &["get", "crd", "-o", "name"], None);
    assert!(!names.contains("badselect") && !names.contains("many."), "nothing stored: {names}");
}

/// The APIServices of the group versions served here, as kube-apiserver's autoregister and
/// crdregistration controllers keep them: one per built-in group version (upstream's
/// priorities), one per served version of a definition; Local and Available; put back when
/// deleted or changed, removed with the definition; a user's own APIService left alone.
#[test]
fn local_api_services_follow_the_served_group_versions() {
    let s = ApiServer::start(Backend::Embedded);
    let get = |name: &str| -> Value { serde_json::from_slice(&s.kubectl(&["get", "apiservice", name, "-o", "json"]).stdout).unwrap_or(Value::Null) };
    assert!(common::eventually(Duration::from_secs(10), || get("v1.apps")["spec"]["groupPriorityMinimum"] == 17800), "{}", s.ok(&["get", "apiservices"]));
    let core = get("v1.");
    assert_eq!((core["spec"]["group"].as_str(), core["spec"]["version"].as_str(), core["spec"]["versionPriority"].as_i64()), (Some(""), Some("v1"), Some(1)), "{core}");
    assert_eq!(core["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"], "onstart", "{core}");
    assert_eq!(get("v2.autoscaling")["spec"]["versionPriority"], 30);
    let table = s.ok(&["get", "apiservices"]);
    let apps: Vec<&str> = table.lines().find(|l| l.starts_with("v1.apps ")).map(|l| l.split_whitespace().collect()).unwrap_or_default();
    assert_eq!(apps.get(1..3), Some(&["Local", "True"][..]), "{table}");

    // A definition's served versions get theirs (and lose them with it).
    s.ok_stdin(&["apply", "-f", "-"], Some(&redis_crd("cache.example.com", false)));
    assert!(common::eventually(Duration::from_secs(10), || get("v1beta1.cache.example.com")["spec"]["groupPriorityMinimum"] == 1000));
    let v1 = get("v1.cache.example.com");
    assert_eq!((v1["spec"]["versionPriority"].as_i64(), v1["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"].as_str()), (Some(100), Some("true")), "{v1}");
    assert_eq!(v1["status"]["conditions"][0]["reason"], "Local", "{v1}");

    // Deleted or changed: put back. A user's own: left alone.
    s.ok(&["delete", "apiservice", "v1.apps"]);
    s.ok(&["patch", "apiservice", "v1.batch", "--type=merge", "-p", r#"{"spec":{"groupPriorityMinimum":5}}"#]);
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: v1beta1.metrics.k8s.io}\nspec: {group: metrics.k8s.io, version: v1beta1, groupPriorityMinimum: 100, versionPriority: 100, service: {namespace: kube-system, name: metrics-server}, insecureSkipTLSVerify: true}\n"));
    assert!(common::eventually(Duration::from_secs(20), || get("v1.apps")["spec"]["version"] == "v1" && get("v1.batch")["spec"]["groupPriorityMinimum"] == 17400));
    s.ok(&["delete", "crd", "redisclusters.cache.example.com"]);
    assert!(common::eventually(Duration::from_secs(20), || get("v1.cache.example.com").is_null() && get("v1beta1.cache.example.com").is_null()), "{}", s.ok(&["get", "apiservices"]));
    assert_eq!(get("v1beta1.metrics.k8s.io")["spec"]["service"]["name"], "metrics-server");
    // strata's own group is registered as an out-of-tree one.
    assert_eq!(get("v1.strata.dev")["spec"]["groupPriorityMinimum"], 1000);
    // The aggregator's own group has none (it is not a delegate's).
    assert!(get("v1.apiregistration.k8s.io").is_null());
}

/// Discovery lists groups as kube-aggregator does: its own group first, then by the groups'
/// APIService priority, then by name (custom groups, at 1000, after the built-ins).
#[test]
fn discovery_orders_groups_by_their_priority() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok_stdin(&["apply", "-f", "-"], Some(&redis_crd("aaa.example.com", false)));
    assert!(common::eventually(Duration::from_secs(10), || s.ok(&["api-versions"]).contains("aaa.example.com/v1")));
    let names = |v: &Value, list: &str, name: &str| -> Vec<String> { v[list].as_array().into_iter().flatten().map(|g| g.pointer(name).and_then(Value::as_str).unwrap_or("").to_string()).collect() };
    let legacy = names(&s.get_json("/apis"), "groups", "/name");
    assert_eq!(legacy[..6], ["apiregistration.k8s.io", "apps", "events.k8s.io", "authentication.k8s.io", "authorization.k8s.io", "autoscaling"], "{legacy:?}");
    let at = |g: &str| legacy.iter().position(|x| x == g).unwrap_or(usize::MAX);
    assert!(at("admissionregistration.k8s.io") < at("apiextensions.k8s.io") && at("apiextensions.k8s.io") < at("scheduling.k8s.io"), "{legacy:?}");
    assert_eq!(legacy[legacy.len() - 2..], ["aaa.example.com", "strata.dev"], "{legacy:?}");
    // Both served versions carry the storage version's hash (upstream's sha256 of
    // "aaa.example.com/v1/RedisCluster", first 8 bytes, base64).
    for v in ["v1", "v1beta1"] {
        let list = s.get_json(&format!("/apis/aaa.example.com/{v}"));
        let r = list["resources"].as_array().into_iter().flatten().find(|r| r["name"] == "redisclusters").cloned().unwrap_or(Value::Null);
        assert_eq!(r["storageVersionHash"], "UdVzuEDYJ+Q=", "{list}");
    }
    // Aggregated discovery (what kubectl 1.30+ reads) in the same order.
    let (code, body) = s.curl_headers("GET", "/apis", Auth::Admin, &["Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList".to_string()], None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(names(&json_of(&body), "items", "/metadata/name"), legacy);
}
