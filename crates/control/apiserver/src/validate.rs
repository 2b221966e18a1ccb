//! Defaulting and validation of the built-in kinds, as the Kubernetes API does them, for the
//! fields clients rely on: workload selectors and templates, containers, service ports,
//! secret data. Errors are `Invalid` with one cause per field.

use base64::Engine;
use serde_json::{json, Value};

use crate::resources::Resource;
use crate::status::{ApiError, Cause};

fn required(field: &str) -> Cause {
    Cause { reason: "FieldValueRequired", field: field.into(), message: "Required value".into() }
}

/// Most bytes of data in a ConfigMap or a Secret (`MaxSecretSize`, 1 MiB).
pub const MAX_DATA: usize = 1024 * 1024;

fn too_long(field: &str, max: usize) -> Cause {
    Cause { reason: "FieldValueTooLong", field: field.into(), message: format!("Too long: may not be more than {max} bytes") }
}

fn invalid(field: &str, value: &Value, why: &str) -> Cause {
    Cause { reason: "FieldValueInvalid", field: field.into(), message: format!("Invalid value: {value}: {why}") }
}

/// Default and validate `obj` (already carrying apiVersion/kind/metadata).
pub fn validate(r: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    let mut causes = crate::object::metadata_causes(obj);
    match r.builtin() {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => workload(r.kind, obj, &mut causes),
        "Job" => {
            if obj["spec"]["template"].is_null() {
                causes.push(required("spec.template"));
            } else {
                default_pod_spec(&mut obj["spec"]["template"]["spec"], "spec.template.spec", &mut causes);
                if obj["spec"]["template"]["spec"]["restartPolicy"] == "Always" {
                    causes.push(Cause { reason: "FieldValueNotSupported", field: "spec.template.spec.restartPolicy".into(), message: "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"".into() });
                }
                if obj["spec"]["template"]["spec"]["restartPolicy"].is_null() {
                    causes.push(required("spec.template.spec.restartPolicy"));
                }
            }
            crate::job::default_counts(&mut obj["spec"]);
            if obj["spec"]["completionMode"].is_null() {
                obj["spec"]["completionMode"] = json!("NonIndexed");
            }
            if obj["spec"]["suspend"].is_null() {
                obj["spec"]["suspend"] = json!(false);
            }
            crate::job::default(&mut obj["spec"]);
            crate::job::validate(&obj["spec"], &mut causes);
            // Upstream's generated selector: the Job's own uid (unless spec.manualSelector).
            let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
            if obj["spec"]["selector"].is_null() && obj["spec"]["manualSelector"] != true && !uid.is_empty() && obj["spec"]["template"].is_object() {
                let job = obj["metadata"]["name"].clone();
                obj["spec"]["selector"] = json!({ "matchLabels": { "batch.kubernetes.io/controller-uid": uid } });
                let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
                for (k, v) in [("batch.kubernetes.io/controller-uid", json!(uid)), ("batch.kubernetes.io/job-name", job.clone()), ("controller-uid", json!(uid)), ("job-name", job)] {
                    if labels.get(k).is_none() {
                        labels[k] = v;
                    }
                }
            }
            // Whether generated or manual, the selector must select the pods the Job makes.
            let selector = &obj["spec"]["selector"];
            let given = selector["matchLabels"].as_object().is_some_and(|m| !m.is_empty()) || selector["matchExpressions"].as_array().is_some_and(|e| !e.is_empty());
            if given && !selector_matches(selector, &obj["spec"]["template"]["metadata"]["labels"]) {
                causes.push(invalid("spec.template.metadata.labels", &obj["spec"]["template"]["metadata"]["labels"], "`selector` does not match template `labels`"));
            }
        }
        "CronJob" => cronjob(obj, &mut causes),
        "Pod" => {
            default_pod_spec(&mut obj["spec"], "spec", &mut causes);
            if obj["spec"].is_object() && obj["spec"]["enableServiceLinks"].is_null() {
                obj["spec"]["enableServiceLinks"] = json!(true);
            }
            sysctls(&obj["spec"], "spec", &mut causes);
            default_requests_to_limits(&mut obj["spec"]);
            if obj["spec"]["restartPolicy"].is_null() {
                obj["spec"]["restartPolicy"] = json!("Always");
            }
            if obj["status"]["phase"].is_null() {
                obj["status"]["phase"] = json!("Pending");
            }
        }
        "Service" => service(obj, &mut causes),
        "Endpoints" => crate::endpoints::validate_endpoints(obj, &mut causes),
        "EndpointSlice" => crate::endpoints::validate_slice(obj, &mut causes),
        "Secret" => secret(obj, &mut causes),
        "CertificateSigningRequest" => crate::csr::validate(obj, &mut causes),
        "PriorityClass" => crate::priority::validate(obj, &mut causes),
        "PodDisruptionBudget" => disruption_budget(obj, &mut causes),
        "ReplicationController" => replication_controller(obj, &mut causes),
        "ControllerRevision" => controller_revision(obj, &mut causes),
        "PersistentVolume" => crate::storage::validate_pv(obj, &mut causes),
        "PersistentVolumeClaim" => crate::storage::validate_pvc(obj, &mut causes),
        "StorageClass" => crate::storage::validate_sc(obj, &mut causes),
        "RuntimeClass" => crate::runtimeclass::validate(obj, &mut causes),
        "LimitRange" => {
            crate::limitrange::default(obj);
            crate::limitrange::validate(obj, &mut causes);
        }
        "ResourceQuota" => crate::quota::validate(obj, &mut causes),
        "PodTemplate" => default_pod_spec(&mut obj["template"]["spec"], "template.spec", &mut causes),
        "Ingress" => crate::networking::validate_ingress(obj, &mut causes),
        "IngressClass" => crate::networking::validate_ingress_class(obj, &mut causes),
        "NetworkPolicy" => crate::networking::validate_network_policy(obj, &mut causes),
        "HorizontalPodAutoscaler" => crate::autoscaling::validate(obj, &mut causes),
        "CSIDriver" => crate::csi::validate_driver(obj, &mut causes),
        "CSINode" => crate::csi::validate_node(obj, &mut causes),
        "CSIStorageCapacity" => crate::csi::validate_capacity(obj, &mut causes),
        "VolumeAttachment" => crate::csi::validate_attachment(obj, &mut causes),
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => crate::webhooks::validate(r.kind, obj, &mut causes),
        "ValidatingAdmissionPolicy" => crate::vap::validate_policy(obj, &mut causes),
        "ValidatingAdmissionPolicyBinding" => crate::vap::validate_binding(obj, &mut causes),
        "Event" if r.group == "events.k8s.io" => crate::convert::validate_events_v1(obj, &mut causes),
        "VirtualMachine" => crate::vm::validate(obj, &mut causes),
        "ConfigMap" => {
            config_keys(obj, &["data", "binaryData"], &mut causes);
            let mut total = 0;
            if let Some(data) = obj["data"].as_object() {
                for (k, v) in data {
                    match v.as_str() {
                        Some(s) => total += s.len(),
                        None => causes.push(invalid(&format!("data[{k}]"), v, "must be a string")),
                    }
                }
            }
            if let Some(data) = obj["binaryData"].as_object() {
                for v in data.values() {
                    total += v.as_str().map_or(0, |s| base64::engine::general_purpose::STANDARD.decode(s).map_or(s.len(), |b| b.len()));
                }
            }
            // ValidateConfigMap reports the whole object's size on the empty path ("[]").
            if total > MAX_DATA {
                causes.push(too_long("[]", MAX_DATA));
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => role_ref(r.kind, obj, &mut causes),
        "CustomResourceDefinition" => {
            crate::crd::default(obj);
            crate::crd::validate(obj, &mut causes);
        }
        "" if r.custom => crate::crd::default_and_validate(r, obj, &mut causes),
        "Namespace" if obj["status"]["phase"].is_null() => obj["status"] = json!({ "phase": "Active" }),
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        Err(ApiError::invalid(r, &name, causes))
    }
}

/// What only a create is checked for (after [`validate`]): a custom object's CEL validation
/// rules, a CronJob's `TZ=` in its schedule, its time zone, and its name's length (upstream's
/// `ValidateCronJobCreate`).
pub fn validate_create(r: &Resource, obj: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    if r.custom {
        crate::crd::validate_rules(r, obj, None, &mut causes);
    }
    if r.kind == "CronJob" {
        cronjob_schedule_tz(obj, None, &mut causes);
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        // The controller appends 11 characters (`-<minutes since the epoch>`) for its Jobs.
        if name.len() > 52 {
            causes.push(invalid("metadata.name", &json!(name), "must be no more than 52 characters"));
        }
    }
    if r.builtin() == "EndpointSlice" {
        crate::endpoints::validate_slice_create(obj, &mut causes);
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(r, obj["metadata"]["name"].as_str().unwrap_or(""), causes))
    }
}

/// CronJob defaults and the checks that do not depend on an old object (`validateCronJobSpec`).
fn cronjob(obj: &mut Value, causes: &mut Vec<Cause>) {
    let spec = &mut obj["spec"];
    for (k, d) in [("concurrencyPolicy", json!("Allow")), ("suspend", json!(false)), ("successfulJobsHistoryLimit", json!(3)), ("failedJobsHistoryLimit", json!(1))] {
        if spec[k].is_null() {
            spec[k] = d;
        }
    }
    match spec["schedule"].as_str().unwrap_or("") {
        "" => causes.push(required("spec.schedule")),
        schedule => {
            if let Err(e) = strata_cron::parse_standard(schedule) {
                causes.push(invalid("spec.schedule", &json!(schedule), &e.to_string()));
            }
        }
    }
    for k in ["startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
        if spec[k].as_i64().is_some_and(|v| v < 0) {
            causes.push(invalid(&format!("spec.{k}"), &spec[k], "must be greater than or equal to 0"));
        }
    }
    match spec["concurrencyPolicy"].as_str() {
        Some("Allow" | "Forbid" | "Replace") => {}
        Some("") => causes.push(required("spec.concurrencyPolicy")),
        _ => causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.concurrencyPolicy".into(),
            message: format!("Unsupported value: {}: supported values: \"Allow\", \"Forbid\", \"Replace\"", spec["concurrencyPolicy"]),
        }),
    }
    if spec["jobTemplate"].is_null() {
        causes.push(required("spec.jobTemplate"));
        return;
    }
    let template = &mut spec["jobTemplate"]["spec"]["template"];
    if template.is_null() {
        causes.push(required("spec.jobTemplate.spec.template"));
    } else {
        default_pod_spec(&mut template["spec"], "spec.jobTemplate.spec.template.spec", causes);
        match template["spec"]["restartPolicy"].as_str() {
            None => causes.push(required("spec.jobTemplate.spec.template.spec.restartPolicy")),
            Some("OnFailure" | "Never") => {}
            Some(other) => causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: "spec.jobTemplate.spec.template.spec.restartPolicy".into(),
                message: format!("Unsupported value: {:?}: supported values: \"OnFailure\", \"Never\"", other),
            }),
        }
    }
}

/// `TZ=`/`CRON_TZ=` in a schedule (refused, unless the old object had one and no timeZone is
/// set) and `spec.timeZone` (an IANA name the system zoneinfo knows, checked when it changes),
/// with upstream's messages.
fn cronjob_schedule_tz(new: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let schedule = new["spec"]["schedule"].as_str().unwrap_or("");
    let tz = &new["spec"]["timeZone"];
    let allow_tz = old.is_some_and(|o| o["spec"]["schedule"].as_str().unwrap_or("").contains("TZ"));
    if !schedule.is_empty() && schedule.contains("TZ") {
        if !allow_tz {
            causes.push(invalid("spec.schedule", &json!(schedule), "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"));
        } else if !tz.is_null() {
            causes.push(invalid("spec.schedule", &json!(schedule), "cannot use both timeZone field and TZ or CRON_TZ in schedule"));
        }
    }
    if old.is_some_and(|o| &o["spec"]["timeZone"] == tz) {
        return;
    }
    let Some(name) = tz.as_str() else { return };
    if name.is_empty() {
        causes.push(invalid("spec.timeZone", tz, "timeZone must be nil or non-empty string"));
        return;
    }
    // IANA's naming rules, with the digits and '+' of legacy names tolerated.
    let part_ok = |p: &str| !p.is_empty() && p.len() <= 14 && p != "." && p != ".." && !p.starts_with('-') && p.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'+'));
    if !name.split('/').all(part_ok) {
        causes.push(invalid("spec.timeZone", tz, &format!("unknown time zone {name}")));
        return;
    }
    if name.eq_ignore_ascii_case("Local") {
        causes.push(invalid("spec.timeZone", tz, "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"));
    }
    if let Err(e) = strata_cron::Zone::load(name) {
        causes.push(invalid("spec.timeZone", tz, &e.to_string()));
    }
}

/// What an update may not change (checked after [`validate`]): a custom object's CEL validation
/// rules (transition rules with `oldSelf`), the selector of apps/v1 workloads is immutable
/// (upstream's `ValidateDeploymentUpdate` and its siblings), a StatefulSet's spec but for the
/// fields upstream lets change, a Job's template, selector, completions and policies.
pub fn validate_update(r: &Resource, new: &Value, old: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    if r.custom {
        crate::crd::validate_rules(r, new, Some(old), &mut causes);
    }
    if r.kind == "CronJob" {
        cronjob_schedule_tz(new, Some(old), &mut causes);
    }
    if r.group == "apps" && matches!(r.kind, "Deployment" | "ReplicaSet" | "DaemonSet") && new["spec"]["selector"] != old["spec"]["selector"] {
        causes.push(Cause { reason: "FieldValueInvalid", field: "spec.selector".into(), message: format!("Invalid value: {}: field is immutable", new["spec"]["selector"]) });
    }
    // A StatefulSet's spec beyond these is fixed, its selector included (`ValidateStatefulSetUpdate`).
    if r.group == "apps" && r.kind == "StatefulSet" {
        let fixed = |spec: &Value| {
            let mut spec = spec.clone();
            if let Some(m) = spec.as_object_mut() {
                for k in ["replicas", "ordinals", "template", "updateStrategy", "revisionHistoryLimit", "persistentVolumeClaimRetentionPolicy", "minReadySeconds"] {
                    m.remove(k);
                }
            }
            spec
        };
        if fixed(&new["spec"]) != fixed(&old["spec"]) {
            causes.push(Cause {
                reason: "FieldValueForbidden",
                field: "spec".into(),
                message: "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".into(),
            });
        }
    }
    if r.group == "batch" && r.kind == "Job" {
        crate::job::validate_update(new, old, &mut causes);
    }
    // A ControllerRevision's data is a snapshot: it never changes (`ValidateControllerRevisionUpdate`).
    if r.kind == "ControllerRevision" && new["data"] != old["data"] {
        causes.push(Cause { reason: "FieldValueInvalid", field: "data".into(), message: "Invalid value: \"<value omitted>\": field is immutable".into() });
    }
    if r.builtin() == "CustomResourceDefinition" {
        crate::crd::validate_update(new, old, &mut causes);
    }
    match r.builtin() {
        "RuntimeClass" => crate::runtimeclass::validate_update(new, old, &mut causes),
        "IngressClass" => crate::networking::validate_ingress_class_update(new, old, &mut causes),
        "CSIDriver" => crate::csi::validate_driver_update(new, old, &mut causes),
        "VolumeAttachment" => crate::csi::validate_attachment_update(new, old, &mut causes),
        "CSIStorageCapacity" => crate::csi::validate_capacity_update(new, old, &mut causes),
        "Endpoints" => crate::endpoints::validate_endpoints_update(new, old, &mut causes),
        "EndpointSlice" => crate::endpoints::validate_slice_update(new, old, &mut causes),
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(r, new["metadata"]["name"].as_str().unwrap_or(""), causes))
    }
}

fn workload(kind: &str, obj: &mut Value, causes: &mut Vec<Cause>) {
    let spec = &mut obj["spec"];
    if spec.is_null() {
        causes.push(required("spec"));
        return;
    }
    if kind != "DaemonSet" && spec["replicas"].is_null() {
        spec["replicas"] = json!(1);
    }
    if let Some(n) = spec["replicas"].as_i64() {
        if n < 0 {
            causes.push(invalid("spec.replicas", &spec["replicas"], "must be greater than or equal to 0"));
        }
    }
    let selector = spec["selector"].clone();
    let labels = spec["template"]["metadata"]["labels"].clone();
    if selector.is_null() {
        causes.push(required("spec.selector"));
    } else if !selector_matches(&selector, &labels) {
        causes.push(invalid("spec.template.metadata.labels", &labels, "`selector` does not match template `labels`"));
    }
    if spec["template"].is_null() {
        causes.push(required("spec.template"));
    } else {
        default_pod_spec(&mut spec["template"]["spec"], "spec.template.spec", causes);
        if spec["template"]["spec"]["restartPolicy"].as_str().is_some_and(|p| p != "Always") {
            causes.push(Cause { reason: "FieldValueNotSupported", field: "spec.template.spec.restartPolicy".into(), message: "Unsupported value: only \"Always\" is supported".into() });
        }
        if spec["template"]["spec"]["restartPolicy"].is_null() {
            spec["template"]["spec"]["restartPolicy"] = json!("Always");
        }
    }
    // Upstream's apps/v1 defaults (`SetDefaults_DaemonSet`, `SetDefaults_StatefulSet`).
    if kind == "DaemonSet" {
        if spec["updateStrategy"]["type"].is_null() {
            spec["updateStrategy"]["type"] = json!("RollingUpdate");
        }
        if spec["updateStrategy"]["type"] == "RollingUpdate" {
            let ru = &mut spec["updateStrategy"]["rollingUpdate"];
            if ru["maxUnavailable"].is_null() {
                ru["maxUnavailable"] = json!(1);
            }
            if ru["maxSurge"].is_null() {
                ru["maxSurge"] = json!(0);
            }
        }
        if spec["revisionHistoryLimit"].is_null() {
            spec["revisionHistoryLimit"] = json!(10);
        }
    }
    if kind == "StatefulSet" {
        if spec["podManagementPolicy"].is_null() {
            spec["podManagementPolicy"] = json!("OrderedReady");
        }
        if spec["updateStrategy"]["type"].is_null() {
            spec["updateStrategy"]["type"] = json!("RollingUpdate");
        }
        if spec["updateStrategy"]["type"] == "RollingUpdate" && spec["updateStrategy"]["rollingUpdate"]["partition"].is_null() {
            spec["updateStrategy"]["rollingUpdate"]["partition"] = json!(0);
        }
        if spec["revisionHistoryLimit"].is_null() {
            spec["revisionHistoryLimit"] = json!(10);
        }
        for k in ["whenDeleted", "whenScaled"] {
            if spec["persistentVolumeClaimRetentionPolicy"][k].is_null() {
                spec["persistentVolumeClaimRetentionPolicy"][k] = json!("Retain");
            }
        }
        if let Some(ts) = spec.get_mut("volumeClaimTemplates").and_then(Value::as_array_mut) {
            for t in ts {
                if t["spec"]["volumeMode"].is_null() {
                    t["spec"]["volumeMode"] = json!("Filesystem");
                }
            }
        }
    }
    if kind == "Deployment" {
        // Field by field (`SetDefaults_Deployment`): kubectl's typed clients send `strategy: {}`.
        let strategy = &mut spec["strategy"];
        if strategy["type"].as_str().is_none_or(str::is_empty) {
            strategy["type"] = json!("RollingUpdate");
        }
        if strategy["type"] == "RollingUpdate" {
            for k in ["maxUnavailable", "maxSurge"] {
                if strategy["rollingUpdate"][k].is_null() {
                    strategy["rollingUpdate"][k] = json!("25%");
                }
            }
        }
        for (k, d) in [("revisionHistoryLimit", 10), ("progressDeadlineSeconds", 600)] {
            if spec[k].is_null() {
                spec[k] = json!(d);
            }
        }
    }
}

/// A ControllerRevision (upstream's `ValidateControllerRevisionCreate`): `data` a JSON object,
/// `revision` not negative.
fn controller_revision(obj: &Value, causes: &mut Vec<Cause>) {
    match &obj["data"] {
        Value::Null => causes.push(Cause { reason: "FieldValueRequired", field: "data".into(), message: "Required value: data is mandatory".into() }),
        Value::Object(_) => {}
        _ => causes.push(Cause { reason: "FieldValueRequired", field: "data".into(), message: "Required value: data must be a valid JSON object".into() }),
    }
    match &obj["revision"] {
        Value::Null => {}
        v if v.as_i64().is_some_and(|n| n >= 0) => {}
        v => causes.push(invalid("revision", v, "must be greater than or equal to 0")),
    }
}

/// A ReplicationController: upstream's defaults (replicas 1; selector, and the object's own
/// labels, from the template's labels) and validation (a selector, matched by the template).
fn replication_controller(obj: &mut Value, causes: &mut Vec<Cause>) {
    if obj["spec"].is_null() {
        causes.push(required("spec"));
        return;
    }
    if obj["spec"]["replicas"].is_null() {
        obj["spec"]["replicas"] = json!(1);
    }
    if let Some(n) = obj["spec"]["replicas"].as_i64().filter(|n| *n < 0) {
        causes.push(invalid("spec.replicas", &json!(n), "must be greater than or equal to 0"));
    }
    let labels = obj["spec"]["template"]["metadata"]["labels"].clone();
    let has = |v: &Value| v.as_object().is_some_and(|m| !m.is_empty());
    if has(&labels) {
        if !has(&obj["spec"]["selector"]) {
            obj["spec"]["selector"] = labels.clone();
        }
        if !has(&obj["metadata"]["labels"]) {
            obj["metadata"]["labels"] = labels.clone();
        }
    }
    let selector = obj["spec"]["selector"].clone();
    if !has(&selector) {
        causes.push(required("spec.selector"));
    } else if obj["spec"]["template"].is_object() && !selector_matches(&json!({ "matchLabels": selector }), &labels) {
        causes.push(invalid("spec.template.metadata.labels", &labels, "`selector` does not match template `labels`"));
    }
    if obj["spec"]["template"].is_null() {
        causes.push(required("spec.template"));
        return;
    }
    default_pod_spec(&mut obj["spec"]["template"]["spec"], "spec.template.spec", causes);
    let policy = &mut obj["spec"]["template"]["spec"]["restartPolicy"];
    if policy.is_null() {
        *policy = json!("Always");
    } else if policy != "Always" {
        causes.push(Cause { reason: "FieldValueNotSupported", field: "spec.template.spec.restartPolicy".into(), message: format!("Unsupported value: {policy}: supported values: \"Always\"") });
    }
}

/// A PodDisruptionBudget's spec (upstream's `ValidatePodDisruptionBudgetSpec`).
fn disruption_budget(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    if !spec["minAvailable"].is_null() && !spec["maxUnavailable"].is_null() {
        causes.push(invalid("spec", spec, "minAvailable and maxUnavailable cannot be both set"));
    }
    for f in ["minAvailable", "maxUnavailable"] {
        let v = &spec[f];
        let field = format!("spec.{f}");
        match v {
            Value::Null => {}
            Value::Number(n) if n.as_i64().is_some_and(|n| n < 0) => causes.push(invalid(&field, v, "must be greater than or equal to 0")),
            Value::Number(_) => {}
            Value::String(s) => match s.strip_suffix('%').filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) {
                None => causes.push(invalid(&field, v, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")),
                Some(p) if p.parse::<u64>().map_or(true, |p| p > 100) => causes.push(invalid(&field, v, "must not be greater than 100%")),
                Some(_) => {}
            },
            _ => causes.push(invalid(&field, v, "must be an integer or a percentage")),
        }
    }
    match &spec["unhealthyPodEvictionPolicy"] {
        Value::Null => {}
        Value::String(p) if p == "AlwaysAllow" || p == "IfHealthyBudget" => {}
        v => causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.unhealthyPodEvictionPolicy".into(),
            message: format!("Unsupported value: {v}: supported values: \"AlwaysAllow\", \"IfHealthyBudget\""),
        }),
    }
}

/// Does a LabelSelector (matchLabels + matchExpressions) select these labels?
pub fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let ml = selector["matchLabels"].as_object();
    let me = selector["matchExpressions"].as_array();
    if ml.is_none_or(|m| m.is_empty()) && me.is_none_or(|m| m.is_empty()) {
        return false;
    }
    let labels_ok = ml.is_none_or(|m| m.iter().all(|(k, v)| get(k) == v.as_str()));
    let exprs_ok = me.is_none_or(|es| {
        es.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"].as_array().map(|v| v.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            match e["operator"].as_str().unwrap_or("") {
                "In" => get(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => get(key).is_some(),
                "DoesNotExist" => get(key).is_none(),
                _ => false,
            }
        })
    });
    labels_ok && exprs_ok
}

/// A pod's container without a request for a resource it has a limit for requests the limit
/// (upstream's `SetDefaults_Pod`; pods only, not templates).
fn default_requests_to_limits(spec: &mut Value) {
    for list in ["containers", "initContainers"] {
        for c in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let Some(limits) = c["resources"]["limits"].as_object().cloned() else { continue };
            for (k, v) in limits {
                if c["resources"]["requests"].get(&k).is_none() {
                    c["resources"]["requests"][k.as_str()] = v;
                }
            }
        }
    }
}

fn default_pod_spec(spec: &mut Value, path: &str, causes: &mut Vec<Cause>) {
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.push(required(&format!("{path}.containers")));
    }
    let mut names = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let name = c["name"].as_str().unwrap_or("");
        if name.is_empty() {
            causes.push(required(&format!("{path}.containers[{i}].name")));
        } else if names.contains(&name) {
            causes.push(Cause { reason: "FieldValueDuplicate", field: format!("{path}.containers[{i}].name"), message: format!("Duplicate value: \"{name}\"") });
        }
        names.push(name);
        if c["image"].as_str().unwrap_or("").is_empty() {
            causes.push(required(&format!("{path}.containers[{i}].image")));
        }
    }
    pod_spec_defaults(spec);
}

/// Upstream's core/v1 defaults of a PodSpec, a Pod's or a template's (`SetDefaults_PodSpec`,
/// `SetDefaults_Container`, `_Probe`, `_HTTPGetAction`, `_ObjectFieldSelector`, the volume
/// sources' `defaultMode` 0644 and `hostPath.type`), on every container, init and regular.
/// (`enableServiceLinks` and requests defaulted to limits are `SetDefaults_Pod`'s: Pods only.)
/// Templates stored by a strata that defaulted less are brought up to these at start-up
/// ([`crate::bootstrap::default_stored_templates`]), so no workload rolls out for them.
pub(crate) fn pod_spec_defaults(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    for (k, d) in [("dnsPolicy", json!("ClusterFirst")), ("schedulerName", json!("default-scheduler")), ("terminationGracePeriodSeconds", json!(30))] {
        if spec[k].is_null() {
            spec[k] = d;
        }
    }
    if spec["securityContext"].is_null() {
        spec["securityContext"] = json!({});
    }
    for list in ["initContainers", "containers"] {
        for c in items_at(spec, &[list]) {
            container_defaults(c);
        }
    }
    for v in items_at(spec, &["volumes"]) {
        for source in ["secret", "configMap", "downwardAPI", "projected"] {
            if let Some(src) = at(v, &[source]).filter(|s| s.is_object() && s["defaultMode"].is_null()) {
                src["defaultMode"] = json!(0o644);
            }
        }
        if let Some(host) = at(v, &["hostPath"]).filter(|h| h.is_object() && h["type"].is_null()) {
            host["type"] = json!("");
        }
        for item in items_at(v, &["downwardAPI", "items"]) {
            field_ref_defaults(at(item, &["fieldRef"]));
        }
        for p in items_at(v, &["projected", "sources"]) {
            for item in items_at(p, &["downwardAPI", "items"]) {
                field_ref_defaults(at(item, &["fieldRef"]));
            }
        }
    }
}

/// The value at `path` (object members), if there is one; never adds a member (indexing a
/// `Value` mutably would).
fn at<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| v.get_mut(*k))
}

/// The elements of the array at `path` (none if it is absent or not an array).
fn items_at<'a>(v: &'a mut Value, path: &[&str]) -> impl Iterator<Item = &'a mut Value> {
    at(v, path).and_then(Value::as_array_mut).into_iter().flatten()
}

/// `SetDefaults_Container` (and its probes', hooks' and field references'), for a Pod's
/// containers of every kind (ephemeral ones too, `ephemeral.rs`).
pub(crate) fn container_defaults(c: &mut Value) {
    if !c.is_object() {
        return;
    }
    if c["terminationMessagePath"].is_null() {
        c["terminationMessagePath"] = json!("/dev/termination-log");
    }
    if c["imagePullPolicy"].is_null() {
        // Always for `:latest` or no tag.
        let latest = c["image"].as_str().is_some_and(|i| !i.rsplit('/').next().unwrap_or("").contains(':') || i.ends_with(":latest"));
        c["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
    }
    for p in items_at(c, &["ports"]) {
        if p["protocol"].is_null() {
            p["protocol"] = json!("TCP");
        }
    }
    if c["terminationMessagePolicy"].is_null() {
        c["terminationMessagePolicy"] = json!("File");
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(p) = at(c, &[probe]).filter(|p| p.is_object()) else { continue };
        for (k, d) in [("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)] {
            if p[k].as_i64().is_none_or(|n| n == 0) {
                p[k] = json!(d);
            }
        }
        http_get_defaults(at(p, &["httpGet"]));
    }
    for hook in ["postStart", "preStop"] {
        http_get_defaults(at(c, &["lifecycle", hook, "httpGet"]));
    }
    for e in items_at(c, &["env"]) {
        field_ref_defaults(at(e, &["valueFrom", "fieldRef"]));
    }
}

/// `SetDefaults_HTTPGetAction`: path `/`, scheme HTTP.
fn http_get_defaults(get: Option<&mut Value>) {
    let Some(get) = get.filter(|g| g.is_object()) else { return };
    if get["path"].as_str().is_none_or(str::is_empty) {
        get["path"] = json!("/");
    }
    if get["scheme"].as_str().is_none_or(str::is_empty) {
        get["scheme"] = json!("HTTP");
    }
}

/// `SetDefaults_ObjectFieldSelector`: apiVersion v1.
fn field_ref_defaults(field_ref: Option<&mut Value>) {
    if let Some(f) = field_ref.filter(|f| f.is_object() && f["apiVersion"].as_str().is_none_or(str::is_empty)) {
        f["apiVersion"] = json!("v1");
    }
}

/// The keys of a ConfigMap's or Secret's `fields` (upstream's `IsConfigMapKey`; a key in two of
/// them is a duplicate): what becomes a file name in a volume or a variable name.
fn config_keys(obj: &Value, fields: &[&str], causes: &mut Vec<Cause>) {
    let mut seen = std::collections::HashSet::new();
    for f in fields {
        for k in obj[*f].as_object().into_iter().flat_map(|m| m.keys()) {
            let field = format!("{f}[{k}]");
            let why = if k.is_empty() || k.len() > 253 || !k.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                Some(if k.len() > 253 { "must be no more than 253 characters".to_string() } else {
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".to_string()
                })
            } else if k == "." {
                Some("must not be '.'".to_string())
            } else if k == ".." {
                Some("must not be '..'".to_string())
            } else if k.starts_with("..") {
                Some("must not start with '..'".to_string())
            } else {
                None
            };
            match why {
                Some(why) => causes.push(invalid(&field, &json!(k), &why)),
                None if !seen.insert(k.clone()) => causes.push(Cause { reason: "FieldValueDuplicate", field, message: format!("Duplicate value: {k:?}") }),
                None => {}
            }
        }
    }
}

/// Upstream's sysctl name format (`IsValidSysctlName`: dots or slashes between segments).
const SYSCTL_PATTERN: &str = r"^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$";
const SYSCTL_MAX: usize = 253;

/// `securityContext.sysctls` of a pod spec: names in the sysctl format, none twice (upstream's
/// `validateSysctls`; whether a node allows one is the node's business).
fn sysctls(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    static RE: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let Some(re) = RE.get_or_init(|| regex::Regex::new(SYSCTL_PATTERN).ok()).as_ref() else { return };
    let mut seen = std::collections::HashSet::new();
    for (i, s) in spec["securityContext"]["sysctls"].as_array().into_iter().flatten().enumerate() {
        let field = format!("{path}.securityContext.sysctls[{i}].name");
        let name = s["name"].as_str().unwrap_or("");
        if name.is_empty() {
            causes.push(required(&field));
        } else if name.len() > SYSCTL_MAX || !re.is_match(name) {
            causes.push(invalid(&field, &s["name"], &format!("must have at most {SYSCTL_MAX} characters and match regex {SYSCTL_PATTERN}")));
        } else if !seen.insert(name) {
            causes.push(Cause { reason: "FieldValueDuplicate", field, message: format!("Duplicate value: {:?}", name) });
        }
    }
}

/// A binding's `roleRef`, as upstream defaults and validates it: the RBAC group (an empty one
/// defaults to it), a Role or ClusterRole (only a ClusterRole for a ClusterRoleBinding), a
/// name. The `bind` check authorizes against the group named here, so it must be RBAC's.
fn role_ref(kind: &str, obj: &mut Value, causes: &mut Vec<Cause>) {
    if obj["roleRef"]["apiGroup"].as_str().is_none_or(str::is_empty) && obj["roleRef"].is_object() {
        obj["roleRef"]["apiGroup"] = json!(crate::rbac::GROUP);
    }
    let r = &obj["roleRef"];
    let not_supported = |field: &str, value: &Value, supported: &[&str]| Cause {
        reason: "FieldValueNotSupported",
        field: field.into(),
        message: format!("Unsupported value: {value}: supported values: {}", supported.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")),
    };
    if r["apiGroup"].as_str() != Some(crate::rbac::GROUP) {
        causes.push(not_supported("roleRef.apiGroup", &r["apiGroup"], &[crate::rbac::GROUP]));
    }
    let kinds: &[&str] = if kind == "ClusterRoleBinding" { &["ClusterRole"] } else { &["Role", "ClusterRole"] };
    if !r["kind"].as_str().is_some_and(|k| kinds.contains(&k)) {
        causes.push(not_supported("roleRef.kind", &r["kind"], kinds));
    }
    if r["name"].as_str().is_none_or(str::is_empty) {
        causes.push(required("roleRef.name"));
    }
}

fn service(obj: &mut Value, causes: &mut Vec<Cause>) {
    let spec = &mut obj["spec"];
    if spec["type"].is_null() {
        spec["type"] = json!("ClusterIP");
    }
    let ty = spec["type"].as_str().unwrap_or("").to_string();
    if !matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName") {
        causes.push(Cause { reason: "FieldValueNotSupported", field: "spec.type".into(), message: format!("Unsupported value: \"{ty}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"") });
    }
    let headless = spec["clusterIP"] == "None";
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        causes.push(required("spec.ports"));
    }
    for (i, p) in ports.iter().enumerate() {
        match p["port"].as_i64() {
            Some(n) if (1..=65535).contains(&n) => {}
            Some(_) => causes.push(invalid(&format!("spec.ports[{i}].port"), &p["port"], "must be between 1 and 65535, inclusive")),
            None => causes.push(required(&format!("spec.ports[{i}].port"))),
        }
        if ports.len() > 1 && p["name"].as_str().unwrap_or("").is_empty() {
            causes.push(required(&format!("spec.ports[{i}].name")));
        }
    }
    // externalIPs: valid and not special (`ValidateEndpointIP`).
    for (i, ip) in spec["externalIPs"].as_array().into_iter().flatten().enumerate() {
        let field = format!("spec.externalIPs[{i}]");
        match ip.as_str().filter(|s| s.parse::<std::net::IpAddr>().is_ok()) {
            Some(text) => crate::endpoints::non_special_ip(text, &field, causes),
            None => causes.push(invalid(&field, ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")),
        }
    }
    if let Some(ps) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ps {
            if p["protocol"].is_null() {
                p["protocol"] = json!("TCP");
            }
            if p["targetPort"].is_null() {
                p["targetPort"] = p["port"].clone();
            }
        }
    }
    if spec["sessionAffinity"].is_null() {
        spec["sessionAffinity"] = json!("None");
    }
}

fn secret(obj: &mut Value, causes: &mut Vec<Cause>) {
    if obj["type"].is_null() {
        obj["type"] = json!("Opaque");
    }
    // stringData is write-only: it is merged into data, as the API server does.
    if let Some(sd) = obj.get("stringData").and_then(Value::as_object).cloned() {
        for (k, v) in sd {
            let enc = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or("").as_bytes());
            obj["data"][k] = json!(enc);
        }
        if let Some(m) = obj.as_object_mut() {
            m.remove("stringData");
        }
    }
    config_keys(obj, &["data"], causes);
    let mut total = 0;
    if let Some(data) = obj["data"].as_object() {
        for (k, v) in data {
            match v.as_str().map(|s| base64::engine::general_purpose::STANDARD.decode(s)) {
                Some(Ok(bytes)) => total += bytes.len(),
                _ => causes.push(invalid(&format!("data[{k}]"), v, "must be base64-encoded bytes")),
            }
        }
    }
    if total > MAX_DATA {
        causes.push(too_long("data", MAX_DATA));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn deployment_without_selector_is_rejected_like_kubernetes() {
        let d = find("apps", "v1", "deployments").expect("d");
        let mut o = json!({"metadata": {"name": "web"}, "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
        let e = validate(d, &mut o).expect_err("invalid");
        assert_eq!(e.code, 422);
        assert!(e.message.starts_with("Deployment.apps \"web\" is invalid: spec.selector: Required value"), "{}", e.message);
        let mut ok = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
        validate(d, &mut ok).expect("valid");
        assert_eq!(ok["spec"]["replicas"], 1);
        assert_eq!(ok["spec"]["strategy"]["type"], "RollingUpdate");
        let mut mismatch = ok.clone();
        mismatch["spec"]["selector"]["matchLabels"]["app"] = json!("other");
        assert!(validate(d, &mut mismatch).expect_err("mismatch").message.contains("`selector` does not match template `labels`"));
    }

    /// `SetDefaults_Deployment` defaults the strategy field by field: kubectl's typed clients
    /// (`kubectl create deployment`) send `strategy: {}`, which a stock kube-controller-manager
    /// refuses ("unexpected deployment strategy type") unless the server fills it in.
    #[test]
    fn deployment_strategy_is_defaulted_field_by_field() {
        let d = find("apps", "v1", "deployments").expect("d");
        let with = |strategy: Value| {
            let mut o = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "strategy": strategy,
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
            validate(d, &mut o).expect("valid");
            o["spec"]["strategy"].clone()
        };
        let full = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
        assert_eq!(with(json!({})), full);
        assert_eq!(with(Value::Null), full);
        assert_eq!(with(json!({"type": ""})), full);
        assert_eq!(with(json!({"rollingUpdate": {"maxSurge": 2}})), json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 2}}));
        assert_eq!(with(json!({"type": "Recreate"})), json!({"type": "Recreate"}));
    }

    /// A Pod gets upstream's core/v1 defaults on every container, probe, hook, field
    /// reference and volume, and nothing it did not have is added beside them.
    #[test]
    fn a_pod_gets_upstreams_defaults() {
        let pods = find("", "v1", "pods").expect("pods");
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "i", "image": "busybox"}],
            "containers": [{"name": "c", "image": "busybox:1.36",
                "readinessProbe": {"httpGet": {"port": 80}}, "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5},
                "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/stop"}}},
                "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}, {"name": "X", "value": "1"}]}],
            "volumes": [{"name": "s", "secret": {"secretName": "x"}}, {"name": "m", "configMap": {"name": "x", "defaultMode": 256}},
                {"name": "h", "hostPath": {"path": "/tmp"}}, {"name": "e", "emptyDir": {}},
                {"name": "d", "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                {"name": "p", "projected": {"sources": [{"downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}}]}}]}});
        validate(pods, &mut pod).expect("valid");
        let spec = &pod["spec"];
        assert_eq!((&spec["securityContext"], &spec["enableServiceLinks"]), (&json!({}), &json!(true)));
        let init = &spec["initContainers"][0];
        assert_eq!(init, &json!({"name": "i", "image": "busybox", "imagePullPolicy": "Always", "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}));
        let c = &spec["containers"][0];
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["readinessProbe"], json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}));
        assert_eq!(c["livenessProbe"], json!({"exec": {"command": ["true"]}, "timeoutSeconds": 1, "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 3}));
        assert_eq!(c["lifecycle"], json!({"preStop": {"httpGet": {"port": 80, "path": "/stop", "scheme": "HTTP"}}}));
        assert_eq!(c["env"], json!([{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name", "apiVersion": "v1"}}}, {"name": "X", "value": "1"}]));
        assert!(c.get("startupProbe").is_none());
        let v = &spec["volumes"];
        assert_eq!((&v[0]["secret"]["defaultMode"], &v[1]["configMap"]["defaultMode"], &v[2]["hostPath"]["type"]), (&json!(420), &json!(256), &json!("")));
        assert_eq!(v[3], json!({"name": "e", "emptyDir": {}}));
        assert_eq!(v[4]["downwardAPI"], json!({"defaultMode": 420, "items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name", "apiVersion": "v1"}}]}));
        assert_eq!(v[5]["projected"]["defaultMode"], 420);
        assert_eq!(v[5]["projected"]["sources"][0]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"], "v1");
    }

    #[test]
    fn config_map_and_secret_keys() {
        let cms = find("", "v1", "configmaps").expect("configmaps");
        validate(cms, &mut json!({"metadata": {"name": "c"}, "data": {"a.b-c_D": "x"}, "binaryData": {"bin": "eA=="}})).expect("valid keys");
        for (bad, why) in [("", "a valid config key must consist of"), ("a/b", "a valid config key"), ("..x", "must not start with '..'"), (".", "must not be '.'")] {
            let e = validate(cms, &mut json!({"metadata": {"name": "c"}, "data": {bad: "x"}})).expect_err(bad);
            assert!(e.message.contains(&format!("data[{bad}]: Invalid value: {:?}: {why}", bad)), "{}", e.message);
        }
        let e = validate(cms, &mut json!({"metadata": {"name": "c"}, "data": {"k": "x"}, "binaryData": {"k": "eA=="}})).expect_err("twice");
        assert!(e.message.contains("binaryData[k]: Duplicate value: \"k\""), "{}", e.message);
        let secrets = find("", "v1", "secrets").expect("secrets");
        let e = validate(secrets, &mut json!({"metadata": {"name": "s"}, "data": {"": "eA=="}})).expect_err("empty key");
        assert!(e.message.contains("data[]: Invalid value: \"\": a valid config key"), "{}", e.message);
    }

    #[test]
    fn pod_sysctl_names_as_upstream_validates_them() {
        let pods = find("", "v1", "pods").expect("pods");
        let pod = |names: &[&str]| {
            let sysctls: Vec<Value> = names.iter().map(|n| json!({"name": n, "value": "1"})).collect();
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}], "securityContext": {"sysctls": sysctls}}})
        };
        validate(pods, &mut pod(&["kernel.shm_rmid_forced", "net/ipv4/ip_forward", "kernel.msgmax"])).expect("valid names");
        let e = validate(pods, &mut pod(&["foo-", "kernel.shmmax", "safe-and-unsafe", "bar..", "kernel.shmmax"])).expect_err("invalid names");
        assert!(e.message.contains(r#"spec.securityContext.sysctls[0].name: Invalid value: "foo-": must have at most 253 characters and match regex"#), "{}", e.message);
        assert!(e.message.contains(r#"spec.securityContext.sysctls[3].name: Invalid value: "bar..""#), "{}", e.message);
        assert!(e.message.contains(r#"spec.securityContext.sysctls[4].name: Duplicate value: "kernel.shmmax""#), "{}", e.message);
        assert!(!e.message.contains("safe-and-unsafe"), "{}", e.message);
    }

    #[test]
    fn secrets_and_services() {
        let s = find("", "v1", "secrets").expect("s");
        let mut o = json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}});
        validate(s, &mut o).expect("ok");
        assert_eq!(o["data"]["k"], "dg==");
        assert!(o.get("stringData").is_none());
        let mut bad = json!({"metadata": {"name": "s"}, "data": {"k": "%%%"}});
        assert_eq!(validate(s, &mut bad).expect_err("bad").code, 422);
        let svc = find("", "v1", "services").expect("svc");
        let mut o = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
        validate(svc, &mut o).expect("ok");
        assert_eq!(o["spec"]["ports"][0]["targetPort"], 80);
        let mut bad = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 70000}]}});
        assert!(validate(svc, &mut bad).is_err());
    }

    #[test]
    fn role_refs_name_an_rbac_role() {
        let rb = find("rbac.authorization.k8s.io", "v1", "rolebindings").expect("rb");
        let crb = find("rbac.authorization.k8s.io", "v1", "clusterrolebindings").expect("crb");
        let binding = |role_ref: Value| json!({"metadata": {"name": "b", "namespace": "a"}, "roleRef": role_ref, "subjects": [{"kind": "User", "name": "u"}]});
        // The bind check is made in the roleRef's group: it must be RBAC's.
        let e = validate(crb, &mut binding(json!({"apiGroup": "example.com", "kind": "ClusterRole", "name": "cluster-admin"}))).expect_err("foreign group");
        assert_eq!(e.code, 422);
        assert!(e.message.contains("roleRef.apiGroup: Unsupported value: \"example.com\": supported values: \"rbac.authorization.k8s.io\""), "{}", e.message);
        let e = validate(crb, &mut binding(json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}))).expect_err("Role in a ClusterRoleBinding");
        assert!(e.message.contains("roleRef.kind: Unsupported value: \"Role\""), "{}", e.message);
        assert!(validate(rb, &mut binding(json!({"kind": "Role"}))).expect_err("no name").message.contains("roleRef.name: Required value"));
        let mut ok = binding(json!({"kind": "Role", "name": "r"}));
        validate(rb, &mut ok).expect("valid");
        assert_eq!(ok["roleRef"]["apiGroup"], "rbac.authorization.k8s.io", "defaulted");
    }
}
