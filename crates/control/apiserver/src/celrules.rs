//! CustomResourceDefinition validation rules (`x-kubernetes-validations`), as
//! apiextensions-apiserver has them (`pkg/apiserver/schema/cel`, and the rule checks of
//! `pkg/apis/apiextensions/validation`):
//!
//! - [`check_schema`], at definition create and update: every rule's fields (`rule`, `message`,
//!   `messageExpression`, `reason`, `fieldPath`, `optionalOldSelf`) with upstream's messages, and
//!   every rule and messageExpression compiled by [`crate::celenv`] (a syntax error, an unknown
//!   function or variable, or a field the schema does not declare is refused at the rule's path).
//! - [`validate`], on every write of a custom object: each rule evaluated with `self` bound to
//!   the value at its schema node ([`bind`]: objects with properties and maps as CEL maps, lists,
//!   scalars by the schema's type, int-or-string as either, preserve-unknown-fields as the JSON
//!   is), `oldSelf` to the correlated old value on updates (same property, same map key, same
//!   `x-kubernetes-list-map-keys` item); transition rules (those reading `oldSelf`) run only where
//!   an old value correlates unless `optionalOldSelf`. A failed rule is a field error at its node
//!   (or its `fieldPath`) with its `message`, `messageExpression` or `failed rule: <rule>`, of
//!   its `reason`; the cost of all rules of one object is bounded ([`celenv::RUNTIME_BUDGET`]).
//!   As upstream's ratcheting, a rule that does not read `oldSelf` and fails on a value that
//!   an update left unchanged is not reported.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::celenv::{self, EvalError};
use crate::status::Cause;

/// The `reason`s a rule may have (upstream's `supportedValidationReason`, sorted).
const REASONS: &[&str] = &["FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired"];
const VARS: &[&str] = &["self", "oldSelf"];
/// Longest evaluated messageExpression (upstream's `MaxEvaluatedMessageExpressionSizeBytes`).
const MAX_MESSAGE: usize = 5 * 1024;

/// CEL's reserved words, which a property name is escaped from (`__namespace__`).
const RESERVED: &[&str] = &[
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while",
];

/// A property name as CEL rules name it (apiserver's `cel.Escape`), or `None` when it cannot be
/// named (then rules cannot read it).
pub fn escape(name: &str) -> Option<String> {
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '_' | '.' | '-' | '/'));
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')) {
        return None;
    }
    Some(name.replace("__", "__underscores__").replace('.', "__dot__").replace('-', "__dash__").replace('/', "__slash__"))
}

fn rules_of(schema: &Value) -> &[Value] {
    schema["x-kubernetes-validations"].as_array().map_or(&[], Vec::as_slice)
}

/// Does any node of the schema carry rules?
pub fn has_rules(schema: &Value) -> bool {
    let Some(m) = schema.as_object() else { return false };
    !rules_of(schema).is_empty()
        || m.get("properties").and_then(Value::as_object).is_some_and(|p| p.values().any(has_rules))
        || m.get("items").is_some_and(has_rules)
        || m.get("additionalProperties").is_some_and(has_rules)
}

// ---- at definition write ----

/// Go's `%#v` of the internal `ValidationRule` (what upstream's field errors print as the value).
fn go_rule(rule: &Value) -> String {
    let s = |k: &str| format!("{:?}", rule[k].as_str().unwrap_or(""));
    let ptr = |k: &str, ty: &str| if rule[k].is_null() { format!("({ty})(nil)") } else { format!("({ty})(0xc000000000)") };
    format!(
        "apiextensions.ValidationRule{{Rule:{}, Message:{}, MessageExpression:{}, Reason:{}, FieldPath:{}, OptionalOldSelf:{}}}",
        s("rule"),
        s("message"),
        s("messageExpression"),
        ptr("reason", "*apiextensions.FieldValueErrorReason"),
        s("fieldPath"),
        ptr("optionalOldSelf", "*bool")
    )
}

fn invalid_raw(field: String, shown: &str, why: &str) -> Cause {
    Cause { reason: "FieldValueInvalid", field, message: format!("Invalid value: {shown}: {why}") }
}

/// Upstream's `StaticEstimatedCostLimit`: the most a rule's estimated cost, times the number of
/// times its node may occur in an object, may be.
const STATIC_COST_LIMIT: u64 = 10_000_000;
/// The largest request body (upstream's `maxRequestSizeBytes`), which bounds unbounded lists.
const MAX_REQUEST_BYTES: u64 = 3 * 1024 * 1024;

/// The fewest bytes a value of the schema takes in JSON (upstream's `MinSerializedSize`).
fn min_size(schema: &Value) -> u64 {
    match schema["type"].as_str() {
        Some("string" | "array" | "object") => 2,
        Some("boolean") => 4,
        _ => 1,
    }
}

/// How many elements a list or map of the schema may have: its `maxItems`/`maxProperties`, or as
/// many of its smallest elements as fit in a request (upstream's estimate).
fn max_elements(schema: &Value) -> Option<u64> {
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        return Some(schema["maxItems"].as_u64().unwrap_or(MAX_REQUEST_BYTES / (min_size(items) + 1)));
    }
    if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        // A map entry is at least `"":` and its value.
        return Some(schema["maxProperties"].as_u64().unwrap_or(MAX_REQUEST_BYTES / (min_size(ap) + 4)));
    }
    if schema["type"] == "string" {
        return Some(schema["maxLength"].as_u64().unwrap_or(MAX_REQUEST_BYTES));
    }
    schema["maxProperties"].as_u64().or_else(|| schema["properties"].as_object().map(|p| p.len() as u64))
}

/// The schema a path from `self` (or `oldSelf`) reaches (`@items`: a list's items or a map's
/// values).
fn schema_at<'a>(schema: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut s = schema;
    for step in path.iter().skip(1) {
        s = if step == "@items" {
            s.get("items").filter(|i| i.is_object()).or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))?
        } else {
            s["properties"].as_object()?.iter().find(|(k, _)| escape(k).as_deref() == Some(step.as_str()))?.1
        };
    }
    Some(s)
}

/// Upstream's message for an estimated cost over the limit.
fn cost_message(what: &str, cost: u64) -> String {
    let factor = cost as f64 / STATIC_COST_LIMIT as f64;
    let shown = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!("{what} exceeds budget by factor of {shown} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)")
}

/// Check every node's rules under `schema` (at `path`, `…openAPIV3Schema`).
pub fn check_schema(schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    check_node(schema, path, None, Some(1), causes);
}

/// `cardinality`: how many times the node may occur in one object (`None`: under a list or map
/// without a bound).
fn check_node(schema: &Value, path: &str, uncorrelatable: Option<&str>, cardinality: Option<u64>, causes: &mut Vec<Cause>) {
    let Some(m) = schema.as_object() else { return };
    if let Some(v) = m.get("x-kubernetes-validations") {
        match v.as_array() {
            Some(rules) => {
                // Under an unbounded list or map: as many as the smallest such value fits in a request.
                let times = cardinality.unwrap_or(MAX_REQUEST_BYTES / (min_size(schema) + 1));
                check_rules(schema, rules, path, uncorrelatable, times, causes)
            }
            None => causes.push(Cause::invalid(&format!("{path}.x-kubernetes-validations"), v, "must be a list of rules")),
        }
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        // An atomic map's fields are replaced together: their old values do not correlate.
        let atomic = (schema["x-kubernetes-map-type"] == "atomic").then(|| path.to_string());
        let under = uncorrelatable.map(str::to_string).or(atomic);
        for (k, p) in props {
            check_node(p, &format!("{path}.properties[{k}]"), under.as_deref(), cardinality, causes);
        }
    }
    if let Some(ap) = m.get("additionalProperties").filter(|a| a.is_object()) {
        let atomic = (schema["x-kubernetes-map-type"] == "atomic").then(|| path.to_string());
        let times = cardinality.zip(schema["maxProperties"].as_u64()).map(|(c, n)| c.saturating_mul(n));
        check_node(ap, &format!("{path}.additionalProperties"), uncorrelatable.map(str::to_string).or(atomic).as_deref(), times, causes);
    }
    if let Some(items) = m.get("items").filter(|i| i.is_object()) {
        let here = format!("{path}.items");
        // Only the items of a map-type list correlate (by their keys).
        let under = match (uncorrelatable, schema["x-kubernetes-list-type"].as_str()) {
            (Some(u), _) => Some(u.to_string()),
            (None, Some("map")) => None,
            (None, _) => Some(here.clone()),
        };
        let times = cardinality.zip(schema["maxItems"].as_u64()).map(|(c, n)| c.saturating_mul(n));
        check_node(items, &here, under.as_deref(), times, causes);
    }
}

fn check_rules(schema: &Value, rules: &[Value], path: &str, uncorrelatable: Option<&str>, times: u64, causes: &mut Vec<Cause>) {
    let base = format!("{path}.x-kubernetes-validations");
    let before = causes.len();
    for (i, rule) in rules.iter().enumerate() {
        let at = |f: &str| format!("{base}[{i}].{f}");
        let text = rule["rule"].as_str().unwrap_or("");
        let message = rule["message"].as_str().unwrap_or("");
        if text.trim().is_empty() {
            causes.push(Cause::required(&at("rule"), "rule is not specified"));
        } else if !message.is_empty() && message.trim().is_empty() {
            causes.push(Cause::invalid(&at("message"), &rule["message"], "message must be non-empty if specified"));
        } else if message.len() > 2048 {
            causes.push(invalid_raw(at("message"), &format!("{:?}", format!("{}...", message.chars().take(10).collect::<String>())), "message must have a maximum length of 2048 characters"));
        } else if message.trim().contains(['\n', '\r']) {
            causes.push(Cause::invalid(&at("message"), &rule["message"], "message must not contain line breaks"));
        } else if text.trim().contains(['\n', '\r']) && message.trim().is_empty() {
            causes.push(Cause::required(&at("message"), "message must be specified if rule contains line breaks"));
        }
        if let Some(me) = rule["messageExpression"].as_str() {
            if !me.is_empty() && me.trim().is_empty() {
                causes.push(Cause::required(&at("messageExpression"), "messageExpression must be non-empty if specified"));
            }
        }
        if let Some(reason) = rule.get("reason").filter(|r| !r.is_null()) {
            if !reason.as_str().is_some_and(|r| REASONS.contains(&r)) {
                causes.push(Cause::not_supported(&at("reason"), reason, REASONS));
            }
        }
        if let Some(fp) = rule["fieldPath"].as_str().filter(|f| !f.is_empty()) {
            if fp.trim().is_empty() {
                causes.push(Cause::invalid(&at("fieldPath"), &rule["fieldPath"], "fieldPath must be non-empty if specified"));
            }
            if fp.contains(['\n', '\r']) {
                causes.push(Cause::invalid(&at("fieldPath"), &rule["fieldPath"], "fieldPath must not contain line breaks"));
            }
            if let Err(e) = field_path(fp, schema) {
                causes.push(Cause::invalid(&at("fieldPath"), &rule["fieldPath"], &format!("fieldPath must be a valid path: {e}")));
            }
        }
    }
    // Rules are compiled only once their fields are right (upstream skips CEL then).
    if causes.len() > before {
        return;
    }
    for (i, rule) in rules.iter().enumerate() {
        let at = |f: &str| format!("{base}[{i}].{f}");
        let text = rule["rule"].as_str().unwrap_or("");
        // Upstream's static estimate, times how often the node may occur.
        let over_budget = |p: &celenv::Program, field: String, what: &str, causes: &mut Vec<Cause>| {
            let size = |path: &[String]| schema_at(schema, path).and_then(max_elements);
            let cost = p.estimate(&size, MAX_REQUEST_BYTES / 2).saturating_mul(times);
            if cost > STATIC_COST_LIMIT {
                causes.push(Cause { reason: "FieldValueForbidden", field, message: format!("Forbidden: {}", cost_message(what, cost)) });
            }
        };
        match compile_rule(text, schema) {
            Err(e) => causes.push(invalid_raw(at("rule"), &go_rule(rule), &format!("compilation failed: {e}"))),
            Ok(p) => {
                over_budget(&p, at("rule"), "estimated rule cost", causes);
                if p.uses("oldSelf") {
                    if let Some(u) = uncorrelatable {
                        causes.push(Cause::invalid(&at("rule"), &rule["rule"], &format!("oldSelf cannot be used on the uncorrelatable portion of the schema within {u}")));
                    }
                } else if rule["optionalOldSelf"] == true {
                    causes.push(Cause::invalid(&at("optionalOldSelf"), &Value::Bool(true), "may not be set if rule does not use oldSelf"));
                }
            }
        }
        if let Some(me) = rule["messageExpression"].as_str().filter(|m| !m.trim().is_empty()) {
            match compile_rule(me, schema) {
                Err(e) => causes.push(invalid_raw(at("messageExpression"), &go_rule(rule), &format!("messageExpression compilation failed: {e}"))),
                Ok(p) => over_budget(&p, at("messageExpression"), "estimated messageExpression cost", causes),
            }
        }
    }
}

/// Compile a rule at a schema node: the crate's checks, and every `self.a.b` (or `oldSelf.…`)
/// naming a field the node's schema declares (cel-go's "undefined field").
fn compile_rule(text: &str, schema: &Value) -> Result<Arc<celenv::Program>, celenv::CompileError> {
    let program = celenv::compile(text, VARS)?;
    for chain in program.selections() {
        let mut s = schema;
        for (depth, field) in chain.iter().enumerate().skip(1) {
            let scalar = match s["type"].as_str() {
                Some("string") => Some("string"),
                Some("integer") => Some("int"),
                Some("number") => Some("double"),
                Some("boolean") => Some("bool"),
                _ => None,
            };
            if let (Some(t), false) = (scalar, s["x-kubernetes-int-or-string"] == true) {
                return Err(celenv::undefined_field(text, &chain[..=depth]).with_message(&format!("type '{t}' does not support field selection")));
            }
            let Some(props) = s["properties"].as_object() else { break };
            let root_meta = depth == 1 && matches!(field.as_str(), "apiVersion" | "kind" | "metadata");
            match props.iter().find(|(k, _)| escape(k).as_deref() == Some(field.as_str())) {
                Some((_, p)) => s = p,
                None if root_meta || s["x-kubernetes-preserve-unknown-fields"] == true => break,
                None => return Err(celenv::undefined_field(text, &chain[..=depth])),
            }
        }
    }
    Ok(program)
}

/// Resolve a rule's `fieldPath` (`.spec.x`, `.m['key']`) against the schema: the field path it
/// names (`spec.x`, `m[key]`), or upstream's reason why not (`cel.ValidFieldPath`).
pub fn field_path(path: &str, schema: &Value) -> Result<String, String> {
    resolve(path, schema, true).map(|(p, _)| p)
}

/// [`field_path`] and the schema it ends at; `allow_array`: whether `['key']` may be used.
pub fn resolve<'a>(path: &str, schema: &'a Value, allow_array: bool) -> Result<(String, &'a Value), String> {
    let mut out = String::new();
    let mut s = schema;
    let mut rest = path;
    let step = |name: &str, s: &mut &'a Value, out: &mut String| -> Result<(), String> {
        if s["properties"].is_object() {
            let Some(p) = s["properties"].get(name) else { return Err("does not refer to a valid field".into()) };
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(name);
            *s = p;
        } else if s["additionalProperties"].is_object() {
            out.push_str(&format!("[{name}]"));
            *s = &s["additionalProperties"];
        } else {
            return Err("does not refer to a valid field".into());
        }
        Ok(())
    };
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err("unexpected end of JSON path".into());
            }
            step(&r[..end], &mut s, &mut out)?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            if !allow_array {
                return Err("array notation is not allowed".into());
            }
            let Some(r) = r.strip_prefix('\'') else { return Err(format!("expected single quoted string but got {}", r.split(']').next().unwrap_or(""))) };
            let Some(end) = r.find("']") else { return Err("unexpected end of JSON path".into()) };
            step(&r[..end].replace("\\'", "'"), &mut s, &mut out)?;
            rest = &r[end + 2..];
        } else {
            return Err(format!("expected [ or . but got: {}", rest.split(['.', '[']).next().unwrap_or(rest)));
        }
    }
    Ok((out, s))
}

// ---- on custom object writes ----

/// The schema type as upstream's field errors print the value (`"object"`, `""` for
/// int-or-string).
fn type_shown(schema: &Value) -> String {
    format!("{:?}", schema["type"].as_str().unwrap_or(""))
}

/// `v` as CEL sees it at a node of `schema` (`resource_root`: the object's root or an embedded
/// resource, whose `apiVersion`, `kind`, `metadata.name` and `metadata.generateName` are visible).
pub fn bind(schema: &Value, v: &Value, resource_root: bool) -> cel::Value {
    match v {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                let mut out: HashMap<String, cel::Value> = HashMap::new();
                for (k, x) in map {
                    if let (Some(p), Some(name)) = (props.get(k), escape(k)) {
                        out.insert(name, bind(p, x, p["x-kubernetes-embedded-resource"] == true));
                    } else if schema["x-kubernetes-preserve-unknown-fields"] == true && !(resource_root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata")) {
                        if let Some(name) = escape(k) {
                            out.insert(name, celenv::value(x));
                        }
                    }
                }
                if resource_root {
                    for k in ["apiVersion", "kind"] {
                        if let Some(s) = map.get(k).filter(|s| s.is_string()) {
                            out.insert(k.to_string(), celenv::value(s));
                        }
                    }
                    let meta = &map.get("metadata").cloned().unwrap_or(Value::Null);
                    let mut m: HashMap<String, cel::Value> = HashMap::new();
                    for k in ["name", "generateName"] {
                        if let Some(s) = meta.get(k).filter(|s| s.is_string()) {
                            m.insert(k.to_string(), celenv::value(s));
                        }
                    }
                    if map.contains_key("metadata") {
                        out.insert("metadata".to_string(), cel::Value::from(m));
                    }
                }
                cel::Value::from(out)
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                cel::Value::from(map.iter().map(|(k, x)| (k.clone(), bind(ap, x, ap["x-kubernetes-embedded-resource"] == true))).collect::<HashMap<String, cel::Value>>())
            } else {
                celenv::value(v)
            }
        }
        Value::Array(items) => match schema.get("items").filter(|i| i.is_object()) {
            Some(is) => cel::Value::List(Arc::new(items.iter().map(|x| bind(is, x, is["x-kubernetes-embedded-resource"] == true)).collect())),
            None => celenv::value(v),
        },
        Value::Number(n) => match schema["type"].as_str() {
            Some("number") => cel::Value::Float(n.as_f64().unwrap_or(0.0)),
            Some("integer") if n.as_i64().is_none() => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => cel::Value::Int(f as i64),
                _ => celenv::value(v),
            },
            _ => celenv::value(v),
        },
        _ => celenv::value(v),
    }
}

struct Run<'a> {
    causes: &'a mut Vec<Cause>,
    budget: u64,
    stopped: bool,
}

/// Evaluate every rule of `schema` over a custom object (`old`: the stored object, on updates).
pub fn validate(schema: &Value, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    if !has_rules(schema) {
        return;
    }
    let mut run = Run { causes, budget: celenv::RUNTIME_BUDGET, stopped: false };
    run.node(schema, obj, old, None, true);
}

/// A field path one step down: `spec.x` (`None` is the root, which upstream prints `<nil>`).
fn child(path: Option<&str>, name: &str) -> String {
    match path {
        Some(p) => format!("{p}.{name}"),
        None => name.to_string(),
    }
}

impl Run<'_> {
    fn node(&mut self, schema: &Value, v: &Value, old: Option<&Value>, path: Option<&str>, resource_root: bool) {
        if v.is_null() || self.stopped || !has_rules(schema) {
            return;
        }
        let old = old.filter(|o| !o.is_null());
        if !rules_of(schema).is_empty() {
            self.rules(schema, v, old, path, resource_root);
        }
        match v {
            Value::Object(map) => {
                let correlates = schema["x-kubernetes-map-type"] != "atomic";
                let old_of = |k: &str| if correlates { old.and_then(|o| o.get(k)) } else { None };
                let props = schema["properties"].as_object();
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                for (k, x) in map {
                    if self.stopped {
                        return;
                    }
                    if resource_root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    if let Some(p) = props.and_then(|p| p.get(k)) {
                        self.node(p, x, old_of(k), Some(&child(path, k)), p["x-kubernetes-embedded-resource"] == true);
                    } else if let Some(a) = additional {
                        let here = format!("{}[{k}]", path.unwrap_or(""));
                        self.node(a, x, old_of(k), Some(&here), a["x-kubernetes-embedded-resource"] == true);
                    }
                }
            }
            Value::Array(items) => {
                let Some(is) = schema.get("items").filter(|i| i.is_object()) else { return };
                let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let map_list = schema["x-kubernetes-list-type"] == "map" && !keys.is_empty();
                let old_items = old.and_then(Value::as_array);
                for (i, x) in items.iter().enumerate() {
                    if self.stopped {
                        return;
                    }
                    let old_item = if map_list { old_items.and_then(|o| o.iter().find(|y| keys.iter().all(|k| y.get(*k) == x.get(*k)))) } else { None };
                    let here = format!("{}[{i}]", path.unwrap_or(""));
                    self.node(is, x, old_item, Some(&here), is["x-kubernetes-embedded-resource"] == true);
                }
            }
            _ => {}
        }
    }

    fn rules(&mut self, schema: &Value, v: &Value, old: Option<&Value>, path: Option<&str>, resource_root: bool) {
        let at = path.unwrap_or("<nil>").to_string();
        let ty = type_shown(schema);
        let this = bind(schema, v, resource_root);
        let previous = old.map(|o| bind(schema, o, resource_root));
        // Ratcheting: an unchanged value's failures of rules without oldSelf are not reported.
        let unchanged = old == Some(v);
        for rule in rules_of(schema) {
            let text = rule["rule"].as_str().unwrap_or("").trim();
            if text.is_empty() {
                continue;
            }
            let error_string = match rule["message"].as_str().map(str::trim).filter(|m| !m.is_empty()) {
                Some(m) => m.to_string(),
                None => text.to_string(),
            };
            let program = match compile_rule(text, schema) {
                Ok(p) => p,
                Err(e) => {
                    self.causes.push(invalid_raw(at.clone(), &ty, &format!("rule compile error: {e}")));
                    continue;
                }
            };
            let optional = rule["optionalOldSelf"] == true;
            let transition = program.uses("oldSelf");
            if transition && previous.is_none() && !optional {
                continue;
            }
            let mut vars = vec![("self", this.clone())];
            if optional {
                let o = match &previous {
                    Some(p) => cel::objects::OptionalValue::of(p.clone()),
                    None => cel::objects::OptionalValue::none(),
                };
                vars.push(("oldSelf", cel::Value::Opaque(Arc::new(o))));
            } else if let Some(p) = &previous {
                vars.push(("oldSelf", p.clone()));
            }
            if self.budget == 0 {
                self.causes.push(invalid_raw(at.clone(), &ty, "validation failed due to running out of cost budget, no further validation rules will be run"));
                self.stopped = true;
                return;
            }
            let limit = celenv::PER_CALL_LIMIT.min(self.budget);
            let (result, spent) = celenv::eval(&program, &vars, limit);
            self.budget = self.budget.saturating_sub(spent);
            match result {
                Ok(cel::Value::Bool(true)) => continue,
                Ok(cel::Value::Bool(false)) => {}
                Ok(_) => {
                    self.causes.push(invalid_raw(at.clone(), &ty, &format!("cel expression must evaluate to a bool evaluating rule: {error_string}")));
                    continue;
                }
                Err(EvalError::Cost) if limit < celenv::PER_CALL_LIMIT => {
                    self.causes.push(invalid_raw(at.clone(), &ty, "validation failed due to running out of cost budget, no further validation rules will be run"));
                    self.stopped = true;
                    return;
                }
                Err(EvalError::Cost) => {
                    self.causes.push(invalid_raw(at.clone(), &ty, &format!("'{}': no further validation rules will be run due to call cost exceeds limit for rule: {error_string}", EvalError::Cost)));
                    self.stopped = true;
                    return;
                }
                Err(EvalError::Overload(e)) => {
                    self.causes.push(invalid_raw(at.clone(), &ty, &format!("'no such overload: {e}': call arguments did not match a supported operator, function or macro signature for rule: {error_string}")));
                    continue;
                }
                Err(EvalError::Other(e)) => {
                    self.causes.push(invalid_raw(at.clone(), &ty, &format!("{e} evaluating rule: {error_string}")));
                    continue;
                }
            }
            if !transition && unchanged {
                tracing::debug!(field = %at, rule = text, "validation rule fails on an unchanged value (ratcheted)");
                continue;
            }
            let field = match rule["fieldPath"].as_str().filter(|f| !f.trim().is_empty()).map(|f| field_path(f.trim(), schema)) {
                Some(Ok(p)) if !p.is_empty() => match path {
                    Some(base) if p.starts_with('[') => format!("{base}{p}"),
                    Some(base) => format!("{base}.{p}"),
                    None => p,
                },
                _ => at.clone(),
            };
            let detail = rule["messageExpression"].as_str().filter(|m| !m.trim().is_empty()).and_then(|me| self.message(me, schema, &vars, limit)).unwrap_or_else(|| {
                match rule["message"].as_str().map(str::trim).filter(|m| !m.is_empty()) {
                    Some(m) => m.to_string(),
                    None => format!("failed rule: {text}"),
                }
            });
            self.causes.push(match rule["reason"].as_str() {
                Some("FieldValueForbidden") => Cause { reason: "FieldValueForbidden", field, message: format!("Forbidden: {detail}") },
                Some("FieldValueRequired") => Cause::required(&field, &detail),
                Some("FieldValueDuplicate") => Cause { reason: "FieldValueDuplicate", field, message: format!("Duplicate value: {ty}") },
                _ => invalid_raw(field, &ty, &detail),
            });
        }
    }

    /// A messageExpression's message, or `None` to fall back to the rule's message (upstream
    /// logs why).
    fn message(&mut self, source: &str, schema: &Value, vars: &[(&str, cel::Value)], limit: u64) -> Option<String> {
        let program = compile_rule(source, schema).ok()?;
        let (result, spent) = celenv::eval(&program, vars, limit);
        self.budget = self.budget.saturating_sub(spent);
        match result {
            Ok(cel::Value::String(s)) => {
                let t = s.trim();
                if t.is_empty() || t.len() > MAX_MESSAGE || t.contains('\n') {
                    tracing::debug!(source, "messageExpression gave an empty, too long or multi-line message");
                    return None;
                }
                Some(t.to_string())
            }
            other => {
                tracing::debug!(source, ?other, "messageExpression evaluation failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn widget_schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.minReplicas <= self.replicas", "message": "replicas must be at least minReplicas", "fieldPath": ".replicas"},
                {"rule": "self.color == oldSelf.color", "message": "color is immutable", "reason": "FieldValueForbidden"},
                {"rule": "self.ports.all(p, p.port > 0)", "messageExpression": "'ports of ' + self.name + ' must be positive'"}],
            "properties": {
                "name": {"type": "string"}, "color": {"type": "string"}, "weight": {"type": "number"},
                "replicas": {"type": "integer"}, "minReplicas": {"type": "integer"},
                "port": {"x-kubernetes-int-or-string": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string", "x-kubernetes-validations": [{"rule": "self.size() < 5"}]}},
                "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object",
                    "x-kubernetes-validations": [{"rule": "self.port >= oldSelf.port", "message": "ports may only grow"}],
                    "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}}}}}})
    }

    fn run(obj: Value, old: Option<Value>) -> Vec<String> {
        let mut causes = Vec::new();
        validate(&widget_schema(), &obj, old.as_ref(), &mut causes);
        causes.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    fn widget(color: &str, replicas: i64, ports: Value) -> Value {
        json!({"apiVersion": "x.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"name": "w", "color": color, "replicas": replicas, "minReplicas": 2, "weight": 1, "port": "http", "labels": {"a": "ok"}, "ports": ports}})
    }

    #[test]
    fn values_are_bound_by_their_schema() {
        let s = widget_schema();
        let v = bind(&s, &widget("red", 3, json!([{"name": "a", "port": 80}])), true);
        let check = |src: &str| celenv::eval(&compile_rule(src, &s).expect(src), &[("self", v.clone())], celenv::PER_CALL_LIMIT).0;
        assert_eq!(check("type(self.spec.weight) == double && type(self.spec.replicas) == int"), Ok(cel::Value::Bool(true)));
        assert_eq!(check("self.spec.port == 'http' && self.spec.labels['a'] == 'ok' && self.metadata.name == 'w' && self.kind == 'Widget'"), Ok(cel::Value::Bool(true)));
        assert_eq!(check("self.spec.ports.exists(p, p.name == 'a' && p.port == 80)"), Ok(cel::Value::Bool(true)));
        assert!(compile_rule("!has(self.spec.missing)", &s).is_err_and(|e| e.0.contains("undefined field 'missing'")));
        assert!(compile_rule("self.spec.colour == 'x'", &s).is_err_and(|e| e.0.starts_with("ERROR: <input>:1:10: undefined field 'colour'")), "{:?}", compile_rule("self.spec.colour == 'x'", &s).err());
        assert_eq!(compile_rule("self.spec.name.first == 'a'", &s).map(|_| ()), Err(celenv::CompileError("ERROR: <input>:1:15: type 'string' does not support field selection\n | self.spec.name.first == 'a'\n | ..............^".into())));
        assert_eq!(escape("x-y.z"), Some("x__dash__y__dot__z".into()));
        assert_eq!(escape("namespace"), Some("__namespace__".into()));
        assert_eq!(escape("a b"), None);
    }

    #[test]
    fn rules_report_upstreams_messages() {
        assert!(run(widget("red", 3, json!([{"name": "a", "port": 80}])), None).is_empty());
        assert_eq!(
            run(widget("red", 1, json!([{"name": "a", "port": 0}])), None),
            ["spec.replicas: Invalid value: \"object\": replicas must be at least minReplicas", "spec: Invalid value: \"object\": ports of w must be positive"]
        );
        // Transition rules run on updates, where the old value correlates (same list-map key).
        let old = widget("red", 3, json!([{"name": "a", "port": 80}, {"name": "b", "port": 90}]));
        assert_eq!(
            run(widget("blue", 3, json!([{"name": "b", "port": 91}, {"name": "a", "port": 70}, {"name": "c", "port": 1}])), Some(old.clone())),
            ["spec: Forbidden: color is immutable", "spec.ports[1]: Invalid value: \"object\": ports may only grow"]
        );
        // Ratcheting: an unchanged failing value is not reported again.
        let bad = widget("red", 1, json!([]));
        assert!(run(bad.clone(), Some(bad)).is_empty());
        // A rule that errors when evaluated is reported as upstream reports it.
        let mut absent = widget("red", 3, json!([]));
        absent["spec"].as_object_mut().map(|m| m.remove("replicas"));
        assert_eq!(run(absent, None), ["spec: Invalid value: \"object\": no such key: replicas evaluating rule: replicas must be at least minReplicas"]);
        // Map values are reached by key.
        let mut long = widget("red", 3, json!([]));
        long["spec"]["labels"]["k"] = json!("toolong");
        assert_eq!(run(long, None), ["spec.labels[k]: Invalid value: \"string\": failed rule: self.size() < 5"]);
    }

    #[test]
    fn definitions_rules_are_checked() {
        let mut c = Vec::new();
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"a": {"type": "integer"}, "l": {"type": "array", "items": {"type": "string",
            "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}}},
            "x-kubernetes-validations": [{"rule": "self.a > 0 &&"}, {"rule": "self.nope()", "reason": "Bad"}, {"rule": "self.a > 0", "fieldPath": ".b", "messageExpression": "oops(1)"}]}}});
        check_schema(&schema, "spec.validation.openAPIV3Schema", &mut c);
        let msgs: Vec<String> = c.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(msgs[0], "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[1].reason: Unsupported value: \"Bad\": supported values: \"FieldValueDuplicate\", \"FieldValueForbidden\", \"FieldValueInvalid\", \"FieldValueRequired\"");
        assert_eq!(msgs[1], "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[2].fieldPath: Invalid value: \".b\": fieldPath must be a valid path: does not refer to a valid field");
        assert_eq!(msgs[2], "spec.validation.openAPIV3Schema.properties[spec].properties[l].items.x-kubernetes-validations[0].rule: Invalid value: \"self == oldSelf\": oldSelf cannot be used on the uncorrelatable portion of the schema within spec.validation.openAPIV3Schema.properties[spec].properties[l].items");
        assert_eq!(msgs.len(), 3, "{msgs:#?}");
        let mut c = Vec::new();
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"a": {"type": "integer"}},
            "x-kubernetes-validations": [{"rule": "self.a > 0 &&"}, {"rule": "self.nope()"}, {"rule": "self.a > 0", "messageExpression": "oops(1)"}]}}});
        check_schema(&schema, "spec.validation.openAPIV3Schema", &mut c);
        let msgs: Vec<String> = c.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert!(msgs[0].starts_with("spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: apiextensions.ValidationRule{Rule:\"self.a > 0 &&\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}: compilation failed: ERROR: <input>:1:"), "{}", msgs[0]);
        assert_eq!(msgs[1], "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[1].rule: Invalid value: apiextensions.ValidationRule{Rule:\"self.nope()\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}: compilation failed: ERROR: <input>:1:10: undeclared reference to 'nope' (in container '')\n | self.nope()\n | .........^");
        assert!(msgs[2].contains("x-kubernetes-validations[2].messageExpression: Invalid value: apiextensions.ValidationRule{") && msgs[2].contains("messageExpression compilation failed: ERROR: <input>:1:5: undeclared reference to 'oops'"), "{}", msgs[2]);
        assert_eq!(field_path(".spec['x']", &json!({"properties": {"spec": {"additionalProperties": {"type": "string"}}}})), Ok("spec[x]".into()));
        // Estimated cost: a rule over unbounded lists nested in unbounded lists is refused (the
        // e2e suite's case); the same rule with maxItems on both is fine.
        let nested = |max: Value| json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"x": {"type": "array", "maxItems": max,
            "items": {"type": "array", "maxItems": max, "items": {"type": "string"}, "x-kubernetes-validations": [{"rule": "self.all(s, s == 'string constant')"}]}}}}}});
        let mut c = Vec::new();
        check_schema(&nested(Value::Null), "spec.validation.openAPIV3Schema", &mut c);
        let msgs: Vec<String> = c.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(msgs, ["spec.validation.openAPIV3Schema.properties[spec].properties[x].items.x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"]);
        let mut c = Vec::new();
        check_schema(&nested(json!(100)), "spec.validation.openAPIV3Schema", &mut c);
        assert!(c.is_empty(), "{c:?}");
        // Chained map/filter over a bounded list and split of a bounded string stay bounded.
        let mut c = Vec::new();
        let chained = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"h": {"type": "string", "maxLength": 253},
            "l": {"type": "array", "maxItems": 16, "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}}},
            "x-kubernetes-validations": [{"rule": "self.l.filter(x, x.port > 1).map(x, x.name).all(n, n != '') && self.h.split('.').all(p, p != '')",
                "messageExpression": "self.l.filter(x, x.port > 1).map(x, x.name).join(', ')"}]}}});
        check_schema(&chained, "spec.validation.openAPIV3Schema", &mut c);
        assert!(c.is_empty(), "{c:?}");
    }
}
