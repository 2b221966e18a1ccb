//! A Job's counts, `podFailurePolicy`, `successPolicy` and per-index backoff as kube-apiserver
//! defaults and validates them
//! (`SetDefaults_Job`, `validatePodFailurePolicy`, `validateSuccessPolicy`; the messages are
//! upstream's field errors).

use serde_json::{json, Value};

use crate::status::Cause;

const MAX_RULES: usize = 20;
const MAX_EXIT_CODES: usize = 255;
const MAX_CONDITION_PATTERNS: usize = 20;
const MAX_SUCCEEDED_INDEXES: usize = 64 * 1024;
const ACTIONS: &str = r#""Count", "FailIndex", "FailJob", "Ignore""#;

fn cause(reason: &'static str, field: String, message: String) -> Cause {
    Cause { reason, field, message }
}

/// Go's `%#v` of an `[]int32`.
fn int_list(v: &Value) -> String {
    let items: Vec<String> = v.as_array().into_iter().flatten().map(|x| x.to_string()).collect();
    format!("[]int32{{{}}}", items.join(", "))
}

/// Defaults of the counts (upstream's `SetDefaults_Job`): completions and parallelism 1 when
/// neither is given (a work-queue Job gives only parallelism), backoffLimit 6, or no limit
/// (2147483647) when backoffLimitPerIndex is given; podReplacementPolicy Failed with a pod
/// failure policy, else TerminatingOrFailed.
pub fn default_counts(spec: &mut Value) {
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
    }
    if spec["parallelism"].is_null() {
        spec["parallelism"] = json!(1);
    }
    if spec["backoffLimit"].is_null() {
        spec["backoffLimit"] = if spec["backoffLimitPerIndex"].is_null() { json!(6) } else { json!(i32::MAX) };
    }
    if spec["podReplacementPolicy"].is_null() {
        spec["podReplacementPolicy"] = if spec["podFailurePolicy"].is_object() { json!("Failed") } else { json!("TerminatingOrFailed") };
    }
}

/// Defaults: a pod condition pattern's `status` is "True".
pub fn default(spec: &mut Value) {
    // `get_mut`, not indexing: indexing a missing key would add it.
    let rules = spec.get_mut("podFailurePolicy").and_then(|p| p.get_mut("rules")).and_then(Value::as_array_mut);
    for rule in rules.into_iter().flatten() {
        for p in rule.get_mut("onPodConditions").and_then(Value::as_array_mut).into_iter().flatten() {
            if p["status"].as_str().unwrap_or("").is_empty() && p.is_object() {
                p["status"] = json!("True");
            }
        }
    }
}

/// The causes of an invalid `podFailurePolicy` or `successPolicy` in a Job's `spec`.
pub fn validate(spec: &Value, causes: &mut Vec<Cause>) {
    if spec["podFailurePolicy"].is_object() {
        pod_failure_policy(spec, causes);
        let restart = &spec["template"]["spec"]["restartPolicy"];
        if restart == "OnFailure" {
            causes.push(cause("FieldValueInvalid", "spec.template.spec.restartPolicy".into(), "Invalid value: \"OnFailure\": only \"Never\" is supported when podFailurePolicy is specified".into()));
        }
    }
    per_index(spec, causes);
    if spec["successPolicy"].is_object() {
        if spec["completionMode"] != "Indexed" {
            causes.push(cause("FieldValueInvalid", "spec.successPolicy".into(), format!("Invalid value: {}: requires indexed completion mode", spec["successPolicy"])));
        } else {
            success_policy(spec, causes);
        }
    }
}

/// `backoffLimitPerIndex` and `maxFailedIndexes` (upstream's `validateJobSpec`).
fn per_index(spec: &Value, causes: &mut Vec<Cause>) {
    let indexed = spec["completionMode"] == "Indexed";
    let (limit, max_failed, completions) = (&spec["backoffLimitPerIndex"], &spec["maxFailedIndexes"], &spec["completions"]);
    if indexed && completions.is_null() {
        causes.push(cause("FieldValueRequired", "spec.completions".into(), "Required value: when completion mode is Indexed".into()));
    }
    if !limit.is_null() {
        if limit.as_i64().is_some_and(|n| n < 0) {
            causes.push(cause("FieldValueInvalid", "spec.backoffLimitPerIndex".into(), format!("Invalid value: {limit}: must be greater than or equal to 0")));
        }
        if !indexed {
            causes.push(cause("FieldValueInvalid", "spec.backoffLimitPerIndex".into(), format!("Invalid value: {limit}: requires indexed completion mode")));
        }
    }
    if !max_failed.is_null() {
        if limit.is_null() {
            causes.push(cause("FieldValueRequired", "spec.backoffLimitPerIndex".into(), "Required value: when maxFailedIndexes is specified".into()));
        }
        if max_failed.as_i64().is_some_and(|n| n < 0) {
            causes.push(cause("FieldValueInvalid", "spec.maxFailedIndexes".into(), format!("Invalid value: {max_failed}: must be greater than or equal to 0")));
        }
        if !indexed {
            causes.push(cause("FieldValueInvalid", "spec.maxFailedIndexes".into(), format!("Invalid value: {max_failed}: requires indexed completion mode")));
        }
        if indexed && completions.as_i64().zip(max_failed.as_i64()).is_some_and(|(c, m)| m > c) {
            causes.push(cause("FieldValueInvalid", "spec.maxFailedIndexes".into(), format!("Invalid value: {max_failed}: must be less than or equal to completions")));
        }
    }
}

fn pod_failure_policy(spec: &Value, causes: &mut Vec<Cause>) {
    let rules = spec["podFailurePolicy"]["rules"].as_array().cloned().unwrap_or_default();
    if rules.len() > MAX_RULES {
        causes.push(cause("FieldValueTooMany", "spec.podFailurePolicy.rules".into(), format!("Too many: {}: must have at most {MAX_RULES} items", rules.len())));
    }
    let tspec = &spec["template"]["spec"];
    let names: Vec<&str> = ["containers", "initContainers"].iter().flat_map(|k| tspec[*k].as_array().into_iter().flatten()).filter_map(|c| c["name"].as_str()).collect();
    for (i, rule) in rules.iter().enumerate() {
        let path = format!("spec.podFailurePolicy.rules[{i}]");
        match rule["action"].as_str().unwrap_or("") {
            "" => causes.push(cause("FieldValueRequired", format!("{path}.action"), format!("Required value: valid values: [{}]", ACTIONS.replace(", ", " ")))),
            "FailIndex" if spec["backoffLimitPerIndex"].is_null() => {
                causes.push(cause("FieldValueInvalid", format!("{path}.action"), "Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set".into()))
            }
            "FailIndex" | "FailJob" | "Ignore" | "Count" => {}
            other => causes.push(cause("FieldValueNotSupported", format!("{path}.action"), format!("Unsupported value: {}: supported values: {ACTIONS}", json!(other)))),
        }
        let on_exit = &rule["onExitCodes"];
        let conditions = rule["onPodConditions"].as_array().filter(|c| !c.is_empty());
        if on_exit.is_object() {
            exit_codes(on_exit, &format!("{path}.onExitCodes"), &names, causes);
        }
        if let Some(patterns) = conditions {
            let cpath = format!("{path}.onPodConditions");
            if patterns.len() > MAX_CONDITION_PATTERNS {
                causes.push(cause("FieldValueTooMany", cpath.clone(), format!("Too many: {}: must have at most {MAX_CONDITION_PATTERNS} items", patterns.len())));
            }
            for (j, p) in patterns.iter().enumerate() {
                let t = p["type"].as_str().unwrap_or("");
                for m in crate::object::label_key_errors(t) {
                    causes.push(cause("FieldValueInvalid", format!("{cpath}[{j}].type"), format!("Invalid value: {}: {m}", json!(t))));
                }
                match p["status"].as_str().unwrap_or("") {
                    "" => causes.push(cause("FieldValueRequired", format!("{cpath}[{j}].status"), "Required value: valid values: [\"False\" \"True\" \"Unknown\"]".into())),
                    "True" | "False" | "Unknown" => {}
                    s => causes.push(cause("FieldValueNotSupported", format!("{cpath}[{j}].status"), format!("Unsupported value: {}: supported values: \"False\", \"True\", \"Unknown\"", json!(s)))),
                }
            }
        }
        if on_exit.is_object() && conditions.is_some() {
            causes.push(cause("FieldValueInvalid", path.clone(), "Invalid value: specifying both OnExitCodes and OnPodConditions is not supported".into()));
        }
        if !on_exit.is_object() && conditions.is_none() {
            causes.push(cause("FieldValueInvalid", path.clone(), "Invalid value: specifying one of OnExitCodes and OnPodConditions is required".into()));
        }
    }
}

fn exit_codes(req: &Value, path: &str, names: &[&str], causes: &mut Vec<Cause>) {
    let op = req["operator"].as_str().unwrap_or("");
    match op {
        "" => causes.push(cause("FieldValueRequired", format!("{path}.operator"), "Required value: valid values: [\"In\" \"NotIn\"]".into())),
        "In" | "NotIn" => {}
        other => causes.push(cause("FieldValueNotSupported", format!("{path}.operator"), format!("Unsupported value: {}: supported values: \"In\", \"NotIn\"", json!(other)))),
    }
    if let Some(name) = req["containerName"].as_str() {
        if !names.contains(&name) {
            causes.push(cause("FieldValueInvalid", format!("{path}.containerName"), format!("Invalid value: {}: must be one of the container or initContainer names in the pod template", json!(name))));
        }
    }
    let values: Vec<i64> = req["values"].as_array().into_iter().flatten().filter_map(Value::as_i64).collect();
    let vpath = format!("{path}.values");
    if values.is_empty() {
        causes.push(cause("FieldValueInvalid", vpath.clone(), format!("Invalid value: {}: at least one value is required", int_list(&req["values"]))));
    } else if values.len() > MAX_EXIT_CODES {
        causes.push(cause("FieldValueTooMany", vpath.clone(), format!("Too many: {}: must have at most {MAX_EXIT_CODES} items", values.len())));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut ordered = true;
    for (j, v) in values.iter().enumerate() {
        if op == "In" && *v == 0 {
            causes.push(cause("FieldValueInvalid", format!("{vpath}[{j}]"), "Invalid value: 0: must not be 0 for the In operator".into()));
        }
        if !seen.insert(*v) {
            causes.push(cause("FieldValueDuplicate", format!("{vpath}[{j}]"), format!("Duplicate value: {v}")));
        }
        if j > 0 && values[j - 1] > *v {
            ordered = false;
        }
    }
    if !ordered {
        causes.push(cause("FieldValueInvalid", vpath, format!("Invalid value: {}: must be ordered", int_list(&req["values"]))));
    }
}

fn success_policy(spec: &Value, causes: &mut Vec<Cause>) {
    let rules = spec["successPolicy"]["rules"].as_array().cloned().unwrap_or_default();
    let completions = spec["completions"].as_i64().unwrap_or(0);
    if rules.is_empty() {
        causes.push(cause("FieldValueRequired", "spec.successPolicy.rules".into(), "Required value: at least one rules must be specified when the successPolicy is specified".into()));
    }
    if rules.len() > MAX_RULES {
        causes.push(cause("FieldValueTooMany", "spec.successPolicy.rules".into(), format!("Too many: {}: must have at most {MAX_RULES} items", rules.len())));
    }
    for (i, rule) in rules.iter().enumerate() {
        let path = format!("spec.successPolicy.rules[{i}]");
        let (indexes, count) = (rule["succeededIndexes"].as_str(), rule["succeededCount"].as_i64());
        if indexes.is_none() && count.is_none() {
            causes.push(cause("FieldValueRequired", path.clone(), "Required value: at least one of succeededCount or succeededIndexes must be specified".into()));
        }
        let mut total = 0;
        if let Some(s) = indexes {
            if s.len() > MAX_SUCCEEDED_INDEXES {
                causes.push(cause("FieldValueTooLong", format!("{path}.succeededIndexes"), format!("Too long: may not be more than {MAX_SUCCEEDED_INDEXES} bytes")));
            }
            match indexes_total(s, completions) {
                Ok(t) => total = t,
                Err(e) => causes.push(cause("FieldValueInvalid", format!("{path}.succeededIndexes"), format!("Invalid value: {}: error parsing succeededIndexes: {e}", json!(s)))),
            }
        }
        if let Some(c) = count {
            let cpath = format!("{path}.succeededCount");
            if c < 0 {
                causes.push(cause("FieldValueInvalid", cpath.clone(), format!("Invalid value: {c}: must be greater than or equal to 0")));
            }
            if c > completions {
                causes.push(cause("FieldValueInvalid", cpath.clone(), format!("Invalid value: {c}: must be less than or equal to {completions} (the number of specified completions)")));
            }
            if indexes.is_some() && c > total {
                causes.push(cause("FieldValueInvalid", cpath, format!("Invalid value: {c}: must be less than or equal to {total} (the number of indexes in the specified succeededIndexes field)")));
            }
        }
    }
}

/// How many indexes `1,3-5` names, each below `completions`, in increasing order
/// (upstream's `validateIndexesFormat`).
pub fn indexes_total(s: &str, completions: i64) -> Result<i64, String> {
    if s.is_empty() {
        return Ok(0);
    }
    let mut last: Option<i64> = None;
    let mut total = 0;
    for interval in s.split(',') {
        let parts: Vec<&str> = interval.split('-').collect();
        if parts.len() > 2 {
            return Err(format!("the fragment {interval:?} violates the requirement that an index interval can have at most two parts separated by '-'"));
        }
        let num = |p: &str| -> Result<i64, String> {
            let n: i64 = p.parse().map_err(|_| format!("cannot convert string to integer for index: {p:?}"))?;
            if n >= completions {
                return Err(format!("too large index: {p:?}"));
            }
            Ok(n)
        };
        let x = num(parts[0])?;
        let y = match parts.get(1) {
            Some(p) => {
                let y = num(p)?;
                if x >= y {
                    return Err(format!("non-increasing order, previous: {x}, current: {y}"));
                }
                y
            }
            None => x,
        };
        if let Some(l) = last {
            if l >= x {
                return Err(format!("non-increasing order, previous: {l}, current: {x}"));
            }
        }
        total += y - x + 1;
        last = Some(y);
    }
    Ok(total)
}

/// Set the field at `path` in `at` to `value`, creating the objects on the way; a null `value`
/// removes the field (and creates nothing).
fn carry(at: &mut Value, path: &[&str], value: &Value) {
    match path {
        [] => {}
        [key] => match at.as_object_mut() {
            Some(m) if value.is_null() => {
                m.remove(*key);
            }
            Some(m) => {
                m.insert((*key).to_string(), value.clone());
            }
            None if !value.is_null() => *at = Value::Object([((*key).to_string(), value.clone())].into_iter().collect()),
            None => {}
        },
        [key, rest @ ..] => {
            if let Some(next) = at.get_mut(*key) {
                carry(next, rest, value);
            } else if !value.is_null() {
                let mut next = json!({});
                carry(&mut next, rest, value);
                carry(at, &[key], &next);
            }
        }
    }
}

/// What an update may not change in a Job's spec (upstream's `ValidateJobSpecUpdate`): the
/// selector, the pod template (but a suspended Job that never started may still move its pods:
/// template labels and annotations, nodeSelector, tolerations, scheduling gates, node affinity),
/// the completion mode, the pod failure and success policies, the per-index backoff limit,
/// `managedBy`, and completions (an Indexed Job's only in tandem with parallelism).
pub fn validate_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let (spec, was) = (&new["spec"], &old["spec"]);
    let immutable = |field: &str, value: &Value| cause("FieldValueInvalid", field.to_string(), format!("Invalid value: {value}: field is immutable"));
    if spec["completions"] != was["completions"] {
        if spec["completionMode"] != "Indexed" {
            causes.push(immutable("spec.completions", &spec["completions"]));
        } else if !spec["completions"].is_null() && spec["completions"] != spec["parallelism"] {
            causes.push(cause("FieldValueInvalid", "spec.completions".into(), format!("Invalid value: {}: can only be modified in tandem with spec.parallelism", spec["completions"])));
        }
    }
    if spec["selector"] != was["selector"] {
        causes.push(immutable("spec.selector", &spec["selector"]));
    }
    let template = &spec["template"];
    let mut before = was["template"].clone();
    if was["suspend"] == true && old["status"]["startTime"].is_null() {
        for path in [["metadata", "labels"], ["metadata", "annotations"], ["spec", "nodeSelector"], ["spec", "tolerations"], ["spec", "schedulingGates"]] {
            carry(&mut before, &path, &template[path[0]][path[1]]);
        }
        // Node affinity may change (an affinity of nothing else may go or come); the rest may not.
        let affinity = &template["spec"]["affinity"];
        if affinity.is_null() {
            carry(&mut before, &["spec", "affinity", "nodeAffinity"], &Value::Null);
            if before["spec"]["affinity"].as_object().is_some_and(|a| a.is_empty()) {
                carry(&mut before, &["spec", "affinity"], &Value::Null);
            }
        } else {
            if before["spec"]["affinity"].is_null() {
                carry(&mut before, &["spec", "affinity"], &json!({}));
            }
            carry(&mut before, &["spec", "affinity", "nodeAffinity"], &affinity["nodeAffinity"]);
        }
    }
    if *template != before {
        causes.push(immutable("spec.template", template));
    }
    for f in ["completionMode", "podFailurePolicy", "backoffLimitPerIndex", "successPolicy", "managedBy"] {
        if spec[f] != was[f] {
            causes.push(immutable(&format!("spec.{f}"), &spec[f]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: Value) -> Vec<String> {
        let mut causes = Vec::new();
        let mut spec = spec;
        default(&mut spec);
        validate(&spec, &mut causes);
        causes.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    fn job(extra: Value) -> Value {
        let mut spec = json!({ "completions": 4, "completionMode": "NonIndexed", "template": { "spec": { "restartPolicy": "Never", "containers": [{ "name": "main" }], "initContainers": [{ "name": "setup" }] } } });
        for (k, v) in extra.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        spec
    }

    #[test]
    fn pod_failure_policies_as_upstream_validates_them() {
        let good = job(json!({ "podFailurePolicy": { "rules": [
            { "action": "FailJob", "onExitCodes": { "containerName": "main", "operator": "In", "values": [1, 42] } },
            { "action": "Ignore", "onPodConditions": [{ "type": "DisruptionTarget" }] },
            { "action": "Count", "onExitCodes": { "operator": "NotIn", "values": [0] } },
        ]}}));
        assert_eq!(check(good.clone()), Vec::<String>::new());
        let mut defaulted = good;
        default(&mut defaulted);
        assert_eq!(defaulted["podFailurePolicy"]["rules"][1]["onPodConditions"][0]["status"], "True");
        let bad = job(json!({ "podFailurePolicy": { "rules": [
            { "action": "Explode", "onExitCodes": { "containerName": "other", "operator": "In", "values": [3, 0, 3] } },
            { "action": "FailIndex", "onPodConditions": [{ "type": "bad type!", "status": "Maybe" }] },
            { "action": "Count" },
            { "action": "Count", "onExitCodes": { "operator": "Has", "values": [] }, "onPodConditions": [{ "type": "Ready" }] },
        ]}}));
        let got = check(bad);
        for want in [
            r#"spec.podFailurePolicy.rules[0].action: Unsupported value: "Explode": supported values: "Count", "FailIndex", "FailJob", "Ignore""#,
            r#"spec.podFailurePolicy.rules[0].onExitCodes.containerName: Invalid value: "other": must be one of the container or initContainer names in the pod template"#,
            "spec.podFailurePolicy.rules[0].onExitCodes.values[1]: Invalid value: 0: must not be 0 for the In operator",
            "spec.podFailurePolicy.rules[0].onExitCodes.values[2]: Duplicate value: 3",
            "spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid value: []int32{3, 0, 3}: must be ordered",
            r#"spec.podFailurePolicy.rules[1].action: Invalid value: "FailIndex": requires the backoffLimitPerIndex to be set"#,
            r#"spec.podFailurePolicy.rules[1].onPodConditions[0].status: Unsupported value: "Maybe": supported values: "False", "True", "Unknown""#,
            "spec.podFailurePolicy.rules[2]: Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
            r#"spec.podFailurePolicy.rules[3].onExitCodes.operator: Unsupported value: "Has": supported values: "In", "NotIn""#,
            "spec.podFailurePolicy.rules[3].onExitCodes.values: Invalid value: []int32{}: at least one value is required",
            "spec.podFailurePolicy.rules[3]: Invalid value: specifying both OnExitCodes and OnPodConditions is not supported",
        ] {
            assert!(got.iter().any(|g| g == want), "missing {want:?} in {got:#?}");
        }
        assert!(got.iter().any(|g| g.starts_with("spec.podFailurePolicy.rules[1].onPodConditions[0].type: Invalid value: \"bad type!\"")), "{got:#?}");
        let on_failure = job(json!({ "podFailurePolicy": { "rules": [] } }));
        let mut on_failure = on_failure;
        on_failure["template"]["spec"]["restartPolicy"] = json!("OnFailure");
        assert_eq!(check(on_failure), [r#"spec.template.spec.restartPolicy: Invalid value: "OnFailure": only "Never" is supported when podFailurePolicy is specified"#]);
        let many: Vec<Value> = (0..21).map(|_| json!({ "action": "Count", "onExitCodes": { "operator": "NotIn", "values": [0] } })).collect();
        assert_eq!(check(job(json!({ "podFailurePolicy": { "rules": many } }))), ["spec.podFailurePolicy.rules: Too many: 21: must have at most 20 items"]);
    }

    #[test]
    fn defaulting_adds_nothing_to_a_job_without_policies() {
        let mut spec = json!({ "completions": 1, "template": { "spec": { "restartPolicy": "OnFailure" } } });
        let before = spec.clone();
        default(&mut spec);
        assert_eq!(spec, before);
        let mut no_conditions = json!({ "podFailurePolicy": { "rules": [{ "action": "Count", "onExitCodes": { "operator": "NotIn", "values": [0] } }] } });
        let before = no_conditions.clone();
        default(&mut no_conditions);
        assert_eq!(no_conditions, before);
    }

    #[test]
    fn success_policies_as_upstream_validates_them() {
        let indexed = |rules: Value| job(json!({ "completionMode": "Indexed", "successPolicy": { "rules": rules } }));
        assert_eq!(check(indexed(json!([{ "succeededIndexes": "0,2-3", "succeededCount": 2 }, { "succeededCount": 4 }]))), Vec::<String>::new());
        assert_eq!(check(job(json!({ "successPolicy": { "rules": [{ "succeededCount": 1 }] } }))), [r#"spec.successPolicy: Invalid value: {"rules":[{"succeededCount":1}]}: requires indexed completion mode"#]);
        assert_eq!(check(indexed(json!([]))), ["spec.successPolicy.rules: Required value: at least one rules must be specified when the successPolicy is specified"]);
        assert_eq!(check(indexed(json!([{}]))), ["spec.successPolicy.rules[0]: Required value: at least one of succeededCount or succeededIndexes must be specified"]);
        assert_eq!(check(indexed(json!([{ "succeededIndexes": "1-4" }]))), [r#"spec.successPolicy.rules[0].succeededIndexes: Invalid value: "1-4": error parsing succeededIndexes: too large index: "4""#]);
        assert_eq!(check(indexed(json!([{ "succeededIndexes": "2,1" }]))), [r#"spec.successPolicy.rules[0].succeededIndexes: Invalid value: "2,1": error parsing succeededIndexes: non-increasing order, previous: 2, current: 1"#]);
        assert_eq!(check(indexed(json!([{ "succeededIndexes": "x" }]))), [r#"spec.successPolicy.rules[0].succeededIndexes: Invalid value: "x": error parsing succeededIndexes: cannot convert string to integer for index: "x""#]);
        assert_eq!(
            check(indexed(json!([{ "succeededIndexes": "0-1", "succeededCount": 3 }]))),
            ["spec.successPolicy.rules[0].succeededCount: Invalid value: 3: must be less than or equal to 2 (the number of indexes in the specified succeededIndexes field)"]
        );
        assert_eq!(check(indexed(json!([{ "succeededCount": 5 }]))), ["spec.successPolicy.rules[0].succeededCount: Invalid value: 5: must be less than or equal to 4 (the number of specified completions)"]);
    }

    #[test]
    fn a_suspended_job_that_never_started_may_move_its_pods_only() {
        let old = |suspend: bool, started: bool| {
            let mut j = json!({ "spec": { "suspend": suspend, "template": { "spec": { "containers": [{ "name": "c", "image": "a" }],
                "affinity": { "nodeAffinity": { "x": 1 }, "podAffinity": { "y": 2 } } } } } });
            if started {
                j["status"]["startTime"] = json!("2026-01-01T00:00:00Z");
            }
            j
        };
        let changed = |f: &dyn Fn(&mut Value)| {
            let mut new = old(true, false);
            f(&mut new["spec"]["template"]);
            new
        };
        let fields = |new: &Value, old: &Value| {
            let mut causes = Vec::new();
            validate_update(new, old, &mut causes);
            causes.into_iter().map(|c| c.field).collect::<Vec<_>>()
        };
        let moved = changed(&|t| {
            t["metadata"] = json!({ "labels": { "q": "a" } });
            t["spec"]["nodeSelector"] = json!({ "zone": "b" });
            t["spec"]["affinity"]["nodeAffinity"] = json!({ "z": 3 });
        });
        assert_eq!(fields(&moved, &old(true, false)), Vec::<String>::new());
        assert_eq!(fields(&moved, &old(true, true)), ["spec.template"], "started");
        assert_eq!(fields(&moved, &old(false, false)), ["spec.template"], "not suspended");
        // Dropping the node affinity is a move; dropping the pod affinity is not.
        let no_node_affinity = changed(&|t| t["spec"]["affinity"] = json!({ "podAffinity": { "y": 2 } }));
        assert_eq!(fields(&no_node_affinity, &old(true, false)), Vec::<String>::new());
        let no_affinity = changed(&|t| {
            t["spec"].as_object_mut().map(|m| m.remove("affinity"));
        });
        assert_eq!(fields(&no_affinity, &old(true, false)), ["spec.template"]);
        let image = changed(&|t| t["spec"]["containers"][0]["image"] = json!("b"));
        assert_eq!(fields(&image, &old(true, false)), ["spec.template"]);
    }
}
