//! The three patch types kubectl and client libraries send: JSON merge patch (RFC 7386),
//! JSON patch (RFC 6902) and Kubernetes' strategic merge patch, which merges lists of objects
//! by a per-field key (`containers` by `name`, `ports` by `containerPort`, ...), merges the lists
//! of primitives tagged `patchStrategy:"merge"` (`metadata.finalizers`, `spec.podCIDRs`) as
//! ordered sets, replaces other lists, and honours the `$patch`, `$retainKeys`,
//! `$deleteFromPrimitiveList` and `$setElementOrder` directives. The merge and ordering follow
//! apimachinery's `strategicpatch` (`mergeMap`, `mergeSlice`, `normalizeElementOrder`), so an
//! item a patch adds without an element order lands before the items it does not mention, as
//! in Kubernetes. Which list merges how comes from upstream's `patchStrategy`/`patchMergeKey`
//! tags ([`crate::k8s_meta`]), looked up by the message of each object on the way down from the
//! kind; lists of kinds outside the message table are replaced whole.

use serde_json::{Map, Value};

use crate::protobuf::K;

/// RFC 7386.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(vec![]);
    }
    let rest = path.strip_prefix('/').ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(doc: &'a mut Value, parts: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get_mut(p).ok_or_else(|| format!("path segment {p:?} not found"))?,
            Value::Array(a) => {
                let i: usize = p.parse().map_err(|_| format!("invalid array index {p:?}"))?;
                a.get_mut(i).ok_or_else(|| format!("array index {i} out of range"))?
            }
            _ => return Err(format!("cannot descend into {p:?}")),
        };
    }
    Ok(cur)
}

fn get_ptr(doc: &Value, path: &str) -> Result<Value, String> {
    let mut cur = doc;
    for p in split_pointer(path)? {
        cur = match cur {
            Value::Object(m) => m.get(&p).ok_or_else(|| format!("path {path:?} not found"))?,
            Value::Array(a) => a.get(p.parse::<usize>().map_err(|_| format!("invalid index in {path:?}"))?).ok_or_else(|| format!("path {path:?} not found"))?,
            _ => return Err(format!("path {path:?} not found")),
        };
    }
    Ok(cur.clone())
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let parts = split_pointer(path)?;
    let Some((last, parents)) = parts.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last.parse().map_err(|_| format!("invalid array index {last:?}"))?;
                if i > a.len() {
                    return Err(format!("array index {i} out of range"));
                }
                a.insert(i, value);
            }
        }
        _ => return Err(format!("cannot add at {path:?}")),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let parts = split_pointer(path)?;
    let (last, parents) = parts.split_last().ok_or("cannot remove the whole document")?;
    match parent_mut(doc, parents)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| format!("path {path:?} not found")),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| format!("invalid array index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("array index {i} out of range"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("path {path:?} not found")),
    }
}

/// RFC 6902.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch.as_array().ok_or("a JSON patch must be an array of operations")?;
    for op in ops {
        let kind = op["op"].as_str().ok_or("operation without \"op\"")?;
        let path = op["path"].as_str().ok_or("operation without \"path\"")?;
        match kind {
            "add" => add(doc, path, op.get("value").cloned().ok_or("add without value")?)?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                remove(doc, path)?;
                add(doc, path, op.get("value").cloned().ok_or("replace without value")?)?;
            }
            "move" => {
                let from = op["from"].as_str().ok_or("move without from")?;
                let v = remove(doc, from)?;
                add(doc, path, v)?;
            }
            "copy" => {
                let from = op["from"].as_str().ok_or("copy without from")?;
                let v = get_ptr(doc, from)?;
                add(doc, path, v)?;
            }
            "test" => {
                let want = op.get("value").ok_or("test without value")?;
                if &get_ptr(doc, path)? != want {
                    return Err(format!("test operation at {path:?} failed"));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

/// Why a strategic merge patch cannot be applied (apimachinery's `strategicpatch` wording).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SmpError {
    #[error("Unknown patch type: {0} in map")]
    UnknownDirective(String),
    #[error("merging lists cannot yet be specified in the patch")]
    MergeDirectiveInList,
    #[error("map: {item} does not contain declared merge key: {key}")]
    NoMergeKey { item: String, key: &'static str },
    #[error("invalid type for {field}: expected a list, got {got}")]
    NotAList { field: String, got: String },
    #[error("cannot merge lists without merge key for {0}")]
    NoMergeKeyForList(String),
    #[error("The order in patch list:\n{patch}\n doesn't match $setElementOrder list:\n{order}\n")]
    OrderMismatch { patch: String, order: String },
}

/// How a strategic merge patch combines a list field (the field's `patchStrategy` and
/// `patchMergeKey` Go struct tags in k8s.io/api).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListStrategy {
    /// No patch strategy: the patch's list replaces the object's.
    Replace,
    /// `patchStrategy:"merge"` on a list of objects: merged item by item on this key.
    MergeByKey(&'static str),
    /// `patchStrategy:"merge"` on a list of primitives: a union that keeps both lists' order.
    MergeSet,
}

/// The message a JSON object has (`None`: untyped, or a type outside the schema table).
type Msg = Option<&'static str>;

/// The field `name` of an object of message `msg`: its strategy as a list (upstream's
/// `patchStrategy`/`patchMergeKey` tags, [`crate::k8s_meta`]) and the message of its value (or
/// of its items). Untyped fields are replaced whole when they are lists, as upstream does for
/// types without patch metadata.
fn field_of(msg: Msg, name: &str) -> (ListStrategy, Msg) {
    let Some((owner, f)) = msg.and_then(|m| crate::protobuf::declared(m, name)) else {
        return (ListStrategy::Replace, None);
    };
    let child = match f.2 {
        K::Msg(m) | K::Inline(m) => Some(m),
        _ => None,
    };
    let strategy = match crate::k8s_meta::field(crate::protobuf::go_type(owner), name) {
        Some(meta) if meta.strategy.split(',').any(|s| s == "merge") => {
            if meta.merge_key.is_empty() {
                ListStrategy::MergeSet
            } else {
                ListStrategy::MergeByKey(meta.merge_key)
            }
        }
        _ => ListStrategy::Replace,
    };
    (strategy, child)
}

/// Kubernetes strategic merge patch (apimachinery's `StrategicMergePatch` with the built-in
/// kinds' patch metadata).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value, kind: Msg) -> Result<(), SmpError> {
    smp(target, patch, kind)
}

const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

fn smp(target: &mut Value, patch: &Value, msg: Msg) -> Result<(), SmpError> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match p.get("$patch") {
        None => {}
        Some(Value::String(d)) if d == "replace" => {
            let mut v = patch.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("$patch");
            }
            strip_directives(&mut v);
            *target = v;
            return Ok(());
        }
        Some(Value::String(d)) if d == "delete" => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some(other) => return Err(SmpError::UnknownDirective(other.to_string())),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(t) = target.as_object_mut() else { return Ok(()) };
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
    // Lists with an element order first: merged and put in that order, then skipped below.
    let mut ordered: Vec<&str> = Vec::new();
    for (k, order) in p {
        let Some(field) = k.strip_prefix(SET_ELEMENT_ORDER) else { continue };
        let order = as_list(field, order)?;
        let original = t.get(field).map(|v| as_list(field, v).cloned()).transpose()?;
        let patch_list = p.get(field).map(|v| as_list(field, v)).transpose()?;
        let (declared, items) = field_of(msg, field);
        let strategy = effective(declared, [original.as_deref().unwrap_or_default(), patch_list.map_or(&[][..], Vec::as_slice), order]);
        let key = item_key(strategy);
        if let Some(pl) = patch_list {
            check_order(pl, order, key)?;
        }
        let merged = match (&original, patch_list) {
            (Some(o), None) => o.clone(),
            (None, Some(pl)) => without_directives(pl),
            (Some(o), Some(pl)) => merge_list(o.clone(), pl, strategy, field, items)?,
            (None, None) => continue,
        };
        let (in_order, server_only) = partition(merged, order, key);
        let original = original.unwrap_or_default();
        t.insert(field.to_string(), Value::Array(normalize_order(in_order, server_only, order, &original, key)));
        ordered.push(field);
    }
    for (k, v) in p {
        if k.starts_with(SET_ELEMENT_ORDER) || k.starts_with(DELETE_FROM_PRIMITIVE_LIST) || k == "$retainKeys" || k == "$patch" || ordered.contains(&k.as_str()) {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let (strategy, child) = field_of(msg, k);
        match (t.get_mut(k), v) {
            (Some(Value::Array(cur)), Value::Array(items)) => {
                let original = std::mem::take(cur);
                *cur = merge_list(original, items, strategy, k, child)?;
            }
            (Some(cur @ Value::Object(_)), Value::Object(_)) => smp(cur, v, child)?,
            _ => {
                let mut fresh = Value::Null;
                smp(&mut fresh, v, child)?;
                strip_directives(&mut fresh);
                t.insert(k.clone(), fresh);
            }
        }
    }
    // Deletions from lists of primitives, whatever the list's strategy; after the merges.
    for (k, v) in p {
        let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) else { continue };
        let gone = as_list(field, v)?;
        if let Some(Value::Array(list)) = t.get_mut(field) {
            list.retain(|x| !gone.contains(x));
        }
    }
    Ok(())
}

fn as_list<'a>(field: &str, v: &'a Value) -> Result<&'a Vec<Value>, SmpError> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(SmpError::NotAList { field: field.to_string(), got: other.to_string() }),
    }
}

/// A merge key on a list that does not hold objects: nothing to merge by, so the list is
/// replaced.
fn effective<const N: usize>(strategy: ListStrategy, lists: [&[Value]; N]) -> ListStrategy {
    match strategy {
        ListStrategy::MergeByKey(_) if !lists.iter().all(|l| l.iter().all(Value::is_object)) => ListStrategy::Replace,
        other => other,
    }
}

/// What identifies an item of a list: its merge key, or (`None`) the item itself.
fn item_key(strategy: ListStrategy) -> Option<&'static str> {
    match strategy {
        ListStrategy::MergeByKey(key) => Some(key),
        ListStrategy::Replace | ListStrategy::MergeSet => None,
    }
}

/// Whether two items are the same item of a list.
fn same_item(a: &Value, b: &Value, key: Option<&str>) -> bool {
    match key {
        Some(key) => a.get(key) == b.get(key),
        None => a == b,
    }
}

/// The position of `item` in `list`.
fn position(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    list.iter().position(|x| same_item(x, item, key))
}

fn has_directive(item: &Value) -> bool {
    item.get("$patch").is_some()
}

/// The merge of list `original` with list `patch` under `strategy` (apimachinery's
/// `mergeSlice`): merged items keep the patch's order, the others the original's, the two
/// interleaved as the original had them.
fn merge_list(original: Vec<Value>, patch: &[Value], strategy: ListStrategy, field: &str, items: Msg) -> Result<Vec<Value>, SmpError> {
    let key = match effective(strategy, [&original, patch]) {
        ListStrategy::MergeByKey(key) => key,
        ListStrategy::Replace => return Ok(without_directives(patch)),
        ListStrategy::MergeSet => {
            if original.iter().chain(patch).any(|v| v.is_object() || v.is_array()) {
                return Err(SmpError::NoMergeKeyForList(field.to_string()));
            }
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for v in original.iter().chain(patch) {
                if !merged.contains(v) {
                    merged.push(v.clone());
                }
            }
            let (in_patch, server_only) = partition(merged, patch, None);
            return Ok(normalize_order(in_patch, server_only, patch, &original, None));
        }
    };
    // `$patch` items first: `delete` removes every item with its key, `replace` makes the
    // patch's other items the whole list.
    let mut original = original;
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        match item.get("$patch") {
            None => plain.push(item.clone()),
            Some(Value::String(d)) if d == "delete" => {
                let id = item.get(key).ok_or_else(|| SmpError::NoMergeKey { item: item.to_string(), key })?;
                original.retain(|o| o.get(key) != Some(id));
            }
            Some(Value::String(d)) if d == "replace" => replace = true,
            Some(Value::String(d)) if d == "merge" => return Err(SmpError::MergeDirectiveInList),
            Some(other) => return Err(SmpError::UnknownDirective(other.to_string())),
        }
    }
    if replace {
        return Ok(without_directives(&plain));
    }
    let mut merged = original.clone();
    for item in &plain {
        let id = item.get(key).ok_or_else(|| SmpError::NoMergeKey { item: item.to_string(), key })?;
        match merged.iter().position(|m| m.get(key) == Some(id)) {
            Some(i) => smp(&mut merged[i], item, items)?,
            None => {
                let mut v = item.clone();
                strip_directives(&mut v);
                merged.push(v);
            }
        }
    }
    let (in_patch, server_only) = partition(merged, &plain, Some(key));
    Ok(normalize_order(in_patch, server_only, &plain, &original, Some(key)))
}

/// Split `merged` into the items found in `by` and the others, each in `merged`'s order.
fn partition(merged: Vec<Value>, by: &[Value], key: Option<&str>) -> (Vec<Value>, Vec<Value>) {
    merged.into_iter().partition(|v| position(by, v, key).is_some())
}

/// apimachinery's `normalizeElementOrder`: the patch's items in `patch_order`, the server's in
/// `server_order`, then interleaved: a server item goes before a patch item only when both are
/// in `server_order` and it came first there (so new items land before the server's).
fn normalize_order(mut in_patch: Vec<Value>, mut server_only: Vec<Value>, patch_order: &[Value], server_order: &[Value], key: Option<&str>) -> Vec<Value> {
    // Every item is found in its order list (see the callers), so these are plain stable sorts.
    in_patch.sort_by_key(|v| position(patch_order, v, key));
    server_only.sort_by_key(|v| position(server_order, v, key));
    let mut out = Vec::with_capacity(in_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = in_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (position(server_order, l, key), position(server_order, r, key)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        out.extend(if take_left { left.next() } else { right.next() });
    }
    out
}

/// apimachinery's `validatePatchWithSetOrderList`: the patch's items (`$patch` items aside) are
/// in the element order list, in the same order.
fn check_order(patch: &[Value], order: &[Value], key: Option<&'static str>) -> Result<(), SmpError> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let items: Vec<&Value> = patch.iter().filter(|v| !has_directive(v)).collect();
    let (mut i, mut j) = (0, 0);
    while i < items.len() && j < order.len() {
        if let Some(key) = key {
            for v in [items[i], &order[j]] {
                if v.get(key).is_none() {
                    return Err(SmpError::NoMergeKey { item: v.to_string(), key });
                }
            }
        }
        if same_item(items[i], &order[j], key) {
            i += 1;
        }
        j += 1;
    }
    if i < items.len() {
        return Err(SmpError::OrderMismatch { patch: Value::Array(patch.to_vec()).to_string(), order: Value::Array(order.to_vec()).to_string() });
    }
    Ok(())
}

/// A patch's list as a value: its `$patch` items dropped, directives removed from the rest.
fn without_directives(list: &[Value]) -> Vec<Value> {
    let mut v = Value::Array(list.to_vec());
    strip_directives(&mut v);
    match v {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

/// apimachinery's `removeDirectives`: objects carrying `$patch` leave their lists, other `$`
/// keys leave their objects.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            for x in m.values_mut() {
                strip_directives(x);
            }
        }
        Value::Array(a) => {
            a.retain(|x| !has_directive(x));
            for x in a.iter_mut() {
                strip_directives(x);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut t = json!({"a": [1, 2], "b": {"c": 1}});
        json_patch(&mut t, &json!([
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "replace", "path": "/b/c", "value": 9},
            {"op": "test", "path": "/b/c", "value": 9},
            {"op": "copy", "from": "/b/c", "path": "/d"},
            {"op": "remove", "path": "/a/0"}
        ])).expect("patch");
        assert_eq!(t, json!({"a": [2, 3], "b": {"c": 9}, "d": 9}));
        assert!(json_patch(&mut t, &json!([{"op": "test", "path": "/d", "value": 1}])).is_err());
        assert!(json_patch(&mut t, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut t = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]}}}});
        strategic_merge_patch(&mut t, &json!({"spec": {"replicas": 3, "template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [
                {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
                {"name": "b", "$patch": "delete"}
            ]}}}}), Some("Deployment")).expect("smp");
        assert_eq!(t["spec"]["replicas"], 3);
        let c = &t["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().map(Vec::len), Some(1));
        assert_eq!(c[0]["image"], "a:2");
        // An item new to a list without an element order goes first, as upstream puts it.
        assert_eq!(c[0]["env"], json!([{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}]));
        // Lists without a merge key are replaced.
        let mut t = json!({"spec": {"args": ["a", "b"]}});
        strategic_merge_patch(&mut t, &json!({"spec": {"args": ["c"]}}), Some("Pod")).expect("smp");
        assert_eq!(t["spec"]["args"], json!(["c"]));
        // Null deletes a field.
        strategic_merge_patch(&mut t, &json!({"spec": {"args": null}}), Some("Pod")).expect("smp");
        assert_eq!(t, json!({"spec": {}}));
    }

    /// One strategic merge patch case: `original` patched with `patch` is `expected`.
    #[track_caller]
    fn check(kind: &'static str, original: Value, patch: Value, expected: Value) {
        let mut got = original.clone();
        strategic_merge_patch(&mut got, &patch, Some(kind)).unwrap_or_else(|e| panic!("{patch} on {original}: {e}"));
        assert_eq!(got, expected, "{patch} on {original}");
    }

    #[track_caller]
    fn check_err(kind: &'static str, original: Value, patch: Value, expected: &str) {
        let mut got = original.clone();
        match strategic_merge_patch(&mut got, &patch, Some(kind)) {
            Err(e) => assert!(e.to_string().contains(expected), "{patch} on {original}: {e}"),
            Ok(()) => panic!("{patch} on {original} gave {got}, not an error"),
        }
    }

    fn finalizers(list: &[&str]) -> Value {
        json!({"metadata": {"name": "x", "finalizers": list}})
    }

    #[test]
    fn primitive_lists_with_a_merge_strategy_are_sets() {
        // Cases from apimachinery's strategicpatch tests (mergingIntList), on metadata.finalizers.
        // A union without duplicates; the patch's items in its order, the others kept where they
        // were relative to them.
        check("ConfigMap", finalizers(&["1", "2"]), json!({"metadata": {"finalizers": ["2", "3"]}}), finalizers(&["1", "2", "3"]));
        check("ConfigMap", finalizers(&["1", "2", "3"]), json!({"metadata": {"finalizers": ["3", "1", "2"]}}), finalizers(&["3", "1", "2"]));
        check("ConfigMap", finalizers(&["1", "2", "3"]), json!({"metadata": {"finalizers": ["3", "1"]}}), finalizers(&["2", "3", "1"]));
        // What `kubectl patch -p '{"metadata":{"finalizers":["b"]}}'` sends: b joins a, first.
        check("ConfigMap", finalizers(&["a"]), json!({"metadata": {"finalizers": ["b"]}}), finalizers(&["b", "a"]));
        check("ConfigMap", finalizers(&["a", "a"]), json!({"metadata": {"finalizers": ["a"]}}), finalizers(&["a"]));
        check("ConfigMap", json!({"metadata": {"name": "x"}}), json!({"metadata": {"finalizers": ["a"]}}), finalizers(&["a"]));
        // The pod template's metadata is an ObjectMeta too; a node's podCIDRs merge the same way.
        check("Deployment", 
            json!({"spec": {"template": {"metadata": {"finalizers": ["a"]}}}}),
            json!({"spec": {"template": {"metadata": {"finalizers": ["b"]}}}}),
            json!({"spec": {"template": {"metadata": {"finalizers": ["b", "a"]}}}}),
        );
        check("Node", json!({"spec": {"podCIDRs": ["10.0.0.0/24"]}}), json!({"spec": {"podCIDRs": ["fd00::/64"]}}), json!({"spec": {"podCIDRs": ["fd00::/64", "10.0.0.0/24"]}}));
        // Not every primitive list: a namespace's spec.finalizers and container args are atomic.
        check("Namespace", json!({"spec": {"finalizers": ["kubernetes"]}}), json!({"spec": {"finalizers": ["other"]}}), json!({"spec": {"finalizers": ["other"]}}));
        check("Pod", json!({"spec": {"args": ["a"]}}), json!({"spec": {"args": ["b"]}}), json!({"spec": {"args": ["b"]}}));
        // null still removes the whole list.
        check("ConfigMap", finalizers(&["a"]), json!({"metadata": {"finalizers": null}}), json!({"metadata": {"name": "x"}}));
        check_err("ConfigMap", finalizers(&["a"]), json!({"metadata": {"finalizers": [{"name": "a"}]}}), "cannot merge lists without merge key for finalizers");
    }

    #[test]
    fn delete_from_primitive_list() {
        check("ConfigMap", finalizers(&["1", "2", "3"]), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["2"]}}), finalizers(&["1", "3"]));
        check("ConfigMap", finalizers(&["1", "2", "3", "3"]), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["3"]}}), finalizers(&["1", "2"]));
        check("ConfigMap", finalizers(&["1", "2"]), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["3"]}}), finalizers(&["1", "2"]));
        // Nothing to delete from: nothing is added.
        check("ConfigMap", json!({"metadata": {"name": "x"}}), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["3"]}}), json!({"metadata": {"name": "x"}}));
        // Any list, whatever its strategy.
        check("Pod", json!({"spec": {"args": ["1", "2"]}}), json!({"spec": {"$deleteFromPrimitiveList/args": ["1"]}}), json!({"spec": {"args": ["2"]}}));
        // Add and delete in one patch (kubectl's two-way patch of [1 2 3] -> [1 2 4]).
        check("ConfigMap", 
            finalizers(&["1", "2", "3"]),
            json!({"metadata": {"$setElementOrder/finalizers": ["1", "2", "4"], "$deleteFromPrimitiveList/finalizers": ["3"], "finalizers": ["4"]}}),
            finalizers(&["1", "2", "4"]),
        );
        check_err("ConfigMap", finalizers(&["1"]), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "1"}}), "expected a list");
    }

    #[test]
    fn set_element_order() {
        // Three-way patches kubectl sends, applied to a live object that has moved on (the
        // `Current`/`ThreeWay`/`Result` cases of apimachinery's tests).
        check("ConfigMap", 
            finalizers(&["1", "2", "4"]),
            json!({"metadata": {"$setElementOrder/finalizers": ["1", "2", "3"], "finalizers": ["3"]}}),
            finalizers(&["1", "2", "3", "4"]),
        );
        check("ConfigMap", 
            finalizers(&["1", "2", "3", "4"]),
            json!({"metadata": {"$setElementOrder/finalizers": ["1", "2"], "$deleteFromPrimitiveList/finalizers": ["3"]}}),
            finalizers(&["1", "2", "4"]),
        );
        // An order alone reorders; items it does not name are ignored.
        check("ConfigMap", finalizers(&["1", "3"]), json!({"metadata": {"$setElementOrder/finalizers": ["3", "2", "1"]}}), finalizers(&["3", "1"]));
        // Lists of objects: by merge key.
        check("Pod", 
            json!({"spec": {"containers": [{"name": "1", "other": "a"}, {"name": "2", "value": "2", "other": "b"}]}}),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "4"}, {"name": "1"}, {"name": "2"}, {"name": "3"}],
                "containers": [{"name": "4", "value": "4"}, {"name": "3", "value": "3"}]
            }}),
            json!({"spec": {"containers": [
                {"name": "4", "value": "4"}, {"name": "1", "other": "a"}, {"name": "2", "value": "2", "other": "b"}, {"name": "3", "value": "3"}
            ]}}),
        );
        // The patch's items must follow the order list.
        check_err("ConfigMap", 
            finalizers(&["1", "3", "2"]),
            json!({"metadata": {"$setElementOrder/finalizers": ["1", "2", "3"], "finalizers": ["3", "1"]}}),
            "doesn't match $setElementOrder list",
        );
        check_err("Pod", 
            json!({"spec": {"containers": [{"name": "1"}]}}),
            json!({"spec": {"$setElementOrder/containers": [{"name": "1"}, {"name": "2"}], "containers": [{"name": "2", "image": "x"}, {"name": "1", "image": "y"}]}}),
            "doesn't match",
        );
    }

    #[test]
    fn patch_directives() {
        // $patch on a map: replace it, or empty it; an unknown one is an error.
        check("Pod", json!({"spec": {"a": 1, "b": 2}}), json!({"spec": {"$patch": "replace", "c": 3}}), json!({"spec": {"c": 3}}));
        check("Pod", json!({"spec": {"a": 1}}), json!({"spec": {"$patch": "delete"}}), json!({"spec": {}}));
        check_err("Pod", json!({"spec": {}}), json!({"spec": {"$patch": "explode"}}), "Unknown patch type");
        // In a list with a merge key: delete every item with the key; replace the whole list.
        check("Pod", 
            json!({"spec": {"volumes": [{"name": "1"}, {"name": "1"}, {"name": "2", "value": "a"}, {"name": "3"}]}}),
            json!({"spec": {"volumes": [{"name": "1", "$patch": "delete"}, {"name": "3", "$patch": "delete"}]}}),
            json!({"spec": {"volumes": [{"name": "2", "value": "a"}]}}),
        );
        check("Pod", json!({"spec": {"volumes": [{"name": "1"}, {"name": "2"}]}}), json!({"spec": {"volumes": [{"$patch": "replace"}]}}), json!({"spec": {"volumes": []}}));
        check("Pod", 
            json!({"spec": {"volumes": [{"name": "1"}]}}),
            json!({"spec": {"volumes": [{"name": "2"}, {"$patch": "replace"}]}}),
            json!({"spec": {"volumes": [{"name": "2"}]}}),
        );
        check_err("Pod", json!({"spec": {"volumes": [{"name": "1"}]}}), json!({"spec": {"volumes": [{"value": "b"}]}}), "does not contain declared merge key: name");
        check_err("Pod", json!({"spec": {"volumes": []}}), json!({"spec": {"volumes": [{"$patch": "merge"}]}}), "merging lists cannot yet be specified");
        // $retainKeys keeps only the listed keys, then merges.
        check("Deployment", json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}), json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}), json!({"spec": {"strategy": {"type": "Recreate"}}}));
        // Directives never end up in the object.
        check("Pod", json!({}), json!({"spec": {"volumes": [{"name": "1", "$patch": "delete"}, {"name": "2"}], "$setElementOrder/x": []}}), json!({"spec": {"volumes": [{"name": "2"}]}}));
    }
}
