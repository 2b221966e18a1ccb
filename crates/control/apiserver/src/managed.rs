//! Field management: `metadata.managedFields` and server-side apply, as apimachinery's
//! `managedfields` package does them over structured-merge-diff.
//!
//! Every write records which manager owns which fields. Creates, updates and patches are
//! "Update" operations: the fields they add or change move to the manager (named by the
//! `fieldManager` query parameter, else by the User-Agent), and leave every other manager.
//! Server-side apply (`PATCH` with `application/apply-patch+yaml`) is an "Apply": the applied
//! configuration is merged into the live object field by field, fields the same manager
//! applied last time and no longer applies are removed unless someone else owns them, and a
//! change to a field another manager owns is a conflict (409) unless forced.
//!
//! Merging needs to know what a field is. The kinds of the schema table
//! (`protobuf::schema_of`) are typed: structs, granular or atomic maps, and lists
//! that are atomic (replaced whole), sets (`v:` items) or associative (`k:` items keyed by the
//! `+listMapKey`s of k8s.io/api: containers by `name`, container ports by `containerPort` and
//! `protocol`, ...). `LISTS`, `ATOMIC_MAPS` and `ATOMIC_STRUCTS` carry the
//! `+listType`/`+mapType`/`+structType` markers of the k8s.io/api Go types; server-side apply
//! keys lists by them, not by the strategic-merge-patch keys of [`crate::patch`] (which have one
//! key where `+listMapKey` may have two). Kinds outside the table are "deduced" as upstream
//! deduces untyped objects: maps are granular, lists atomic.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::fieldpath::{cmp_values, path_string, FieldsError, Pe, Set};
use crate::protobuf::{schema_of, C, F, K};
use crate::resources::Resource;

/// Lists that are not atomic under server-side apply, as (message, field, list map keys): the
/// `+listType=map` lists with their `+listMapKey`s, and the `+listType=set` lists (no keys).
/// Every other list is atomic.
const LISTS: &[(&str, &str, &[&str])] = &[
    ("ObjectMeta", "finalizers", &[]),
    ("ObjectMeta", "ownerReferences", &["uid"]),
    ("PodSpec", "volumes", &["name"]),
    ("PodSpec", "initContainers", &["name"]),
    ("PodSpec", "containers", &["name"]),
    ("PodSpec", "ephemeralContainers", &["name"]),
    ("PodSpec", "imagePullSecrets", &["name"]),
    ("PodSpec", "hostAliases", &["ip"]),
    ("PodSpec", "topologySpreadConstraints", &["topologyKey", "whenUnsatisfiable"]),
    ("PodSpec", "schedulingGates", &["name"]),
    ("PodSpec", "resourceClaims", &["name"]),
    ("PodSpec", "evictionResponders", &["name"]),
    ("Container", "ports", &["containerPort", "protocol"]),
    ("Container", "env", &["name"]),
    ("Container", "volumeMounts", &["mountPath"]),
    ("Container", "volumeDevices", &["devicePath"]),
    ("EphemeralContainerCommon", "ports", &["containerPort", "protocol"]),
    ("EphemeralContainerCommon", "env", &["name"]),
    ("EphemeralContainerCommon", "volumeMounts", &["mountPath"]),
    ("EphemeralContainerCommon", "volumeDevices", &["devicePath"]),
    ("ResourceRequirements", "claims", &["name"]),
    ("VolumeMount", "bindMountOptions", &[]),
    ("ContainerRestartRuleOnExitCodes", "values", &[]),
    ("PodStatus", "conditions", &["type"]),
    ("PodStatus", "podIPs", &["ip"]),
    ("PodStatus", "resourceClaimStatuses", &["name"]),
    ("PodStatus", "nodeAllocatableResourceClaimStatuses", &["resourceClaimName"]),
    ("PodStatus", "volumeHealth", &["name"]),
    ("PodVolumeHealth", "healthConditions", &["status", "reason"]),
    ("VolumeHealthStatus", "healthConditions", &["status", "reason"]),
    ("ContainerStatus", "volumeMounts", &["mountPath"]),
    ("ContainerStatus", "allocatedResourcesStatus", &["name"]),
    ("ResourceStatus", "resources", &["resourceID"]),
    ("NodeAllocatableResourceClaimStatus", "containers", &[]),
    ("NodeAllocatableResourceClaimStatus", "mapping", &["name"]),
    ("NodeAllocatableResourceClaimStatus", "overhead", &["name"]),
    ("PersistentVolumeClaimStatus", "conditions", &["type"]),
    ("ServiceSpec", "ports", &["port", "protocol"]),
    ("ServiceStatus", "conditions", &["type"]),
    ("ServiceAccount", "secrets", &["name"]),
    ("NodeSpec", "podCIDRs", &[]),
    ("NodePodPreemptionPolicy", "disableResizePreemption", &[]),
    ("NodeStatus", "conditions", &["type"]),
    ("NodeStatus", "addresses", &["type"]),
    ("NamespaceStatus", "conditions", &["type"]),
    ("DeploymentStatus", "conditions", &["type"]),
    ("ReplicaSetStatus", "conditions", &["type"]),
    ("StatefulSetStatus", "conditions", &["type"]),
    ("DaemonSetStatus", "conditions", &["type"]),
    ("JobSchedulingConfiguration", "resourceClaims", &["name"]),
    ("UncountedTerminatedPods", "succeeded", &[]),
    ("UncountedTerminatedPods", "failed", &[]),
    ("PodFailurePolicyOnExitCodesRequirement", "values", &[]),
];

/// Maps that are replaced whole (`+mapType=atomic`), as (message, field).
const ATOMIC_MAPS: &[(&str, &str)] = &[("PodSpec", "nodeSelector"), ("ServiceSpec", "selector")];

/// Structs that are replaced whole (`+structType=atomic`).
const ATOMIC_STRUCTS: &[&str] = &[
    "LabelSelector", "OwnerReference", "ObjectReference", "LocalObjectReference", "TypedLocalObjectReference",
    "SecretReference", "ConfigMapKeySelector", "SecretKeySelector", "FileKeySelector", "ObjectFieldSelector",
    "ResourceFieldSelector", "NodeSelector", "NodeSelectorTerm", "TopologySelectorTerm", "ScopeSelector",
    "EndpointAddress", "EndpointPort", "EvictionResponder", "CrossVersionObjectReference", "Subject", "RoleRef",
];

/// List map keys an item may leave out because the schema defaults them, as (item message,
/// key, default).
const KEY_DEFAULTS: &[(&str, &str, &str)] = &[("ContainerPort", "protocol", "TCP"), ("ServicePort", "protocol", "TCP")];

/// Lists Go writes even when empty (no `omitempty`): upstream's zero objects have them, so a
/// write never adds them as such (see [`compare`]).
const ALWAYS_WRITTEN: &[(&str, &str)] = &[("PodSpec", "containers"), ("PodFailurePolicyOnExitCodesRequirement", "values")];

/// The annotation client-side apply keeps its last configuration in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the items of a list or the values of a map are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    Leaf,
    Msg(&'static str),
}

impl Elem {
    fn ty(self) -> Ty {
        match self {
            Elem::Leaf => Ty::Leaf,
            Elem::Msg(m) => msg_ty(m),
        }
    }
}

/// The type of a value, as far as field management cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    /// Scalars, and atomic lists, maps and structs: owned and replaced whole.
    Leaf,
    /// Untyped: objects are granular maps of untyped values, lists are atomic.
    Deduced,
    /// A whole object of a kind, typed by its message when the schema table has it.
    Root(Option<&'static str>),
    Struct(&'static str),
    /// A granular map (labels, annotations, data, resource limits).
    Map(Elem),
    /// A set (no keys) or an associative list (keys).
    List(Elem, &'static [&'static str]),
}

fn msg_ty(m: &'static str) -> Ty {
    if ATOMIC_STRUCTS.contains(&m) {
        Ty::Leaf
    } else {
        Ty::Struct(m)
    }
}

/// The field `name` of message `msg` and the message that declares it, looking through the
/// messages Go embeds.
fn declared(msg: &'static str, name: &str) -> Option<(&'static str, F)> {
    for f in schema_of(msg)? {
        match f.2 {
            K::Inline(inner) => {
                if let Some(found) = declared(inner, name) {
                    return Some(found);
                }
            }
            _ if f.1 == name => return Some((msg, *f)),
            _ => {}
        }
    }
    None
}

fn field_ty(owner: &'static str, f: &F) -> Ty {
    let elem = match f.2 {
        K::Msg(m) | K::Inline(m) => Elem::Msg(m),
        _ => Elem::Leaf,
    };
    match f.3 {
        C::Rep => match LISTS.iter().find(|(m, n, _)| *m == owner && *n == f.1) {
            Some((_, _, keys)) => Ty::List(elem, keys),
            None => Ty::Leaf,
        },
        C::Map if ATOMIC_MAPS.contains(&(owner, f.1)) => Ty::Leaf,
        C::Map => Ty::Map(elem),
        C::Keep | C::Omit => elem.ty(),
    }
}

fn struct_field(msg: &'static str, name: &str) -> (Ty, bool) {
    match declared(msg, name) {
        Some((owner, f)) => (field_ty(owner, &f), true),
        None => (Ty::Deduced, false),
    }
}

impl Ty {
    /// The type of field or map key `name`, and whether it is a declared field of a struct.
    fn field(self, name: &str) -> (Ty, bool) {
        match self {
            Ty::Root(msg) => match name {
                "apiVersion" | "kind" => (Ty::Leaf, true),
                "metadata" => (Ty::Struct("ObjectMeta"), true),
                _ => match msg {
                    Some(m) => struct_field(m, name),
                    None => (Ty::Deduced, false),
                },
            },
            Ty::Struct(m) => struct_field(m, name),
            Ty::Map(e) => (e.ty(), false),
            Ty::Leaf | Ty::Deduced | Ty::List(..) => (Ty::Deduced, false),
        }
    }

    fn child(self, pe: &Pe) -> Ty {
        match (pe, self) {
            (Pe::Field(name), _) => self.field(name).0,
            (_, Ty::List(e, _)) => e.ty(),
            _ => Ty::Deduced,
        }
    }
}

/// The type of a kind's objects.
fn object_ty(r: &Resource) -> Ty {
    Ty::Root(schema_of(r.kind).map(|_| r.kind))
}

/// How a value of a type is walked.
enum Shape {
    Leaf,
    List(Elem, &'static [&'static str]),
    Fields,
}

fn shape(ty: Ty, v: &Value) -> Shape {
    match (ty, v) {
        (Ty::List(e, keys), Value::Array(_) | Value::Null) => Shape::List(e, keys),
        (Ty::Root(_) | Ty::Struct(_) | Ty::Map(_), Value::Object(_) | Value::Null) | (Ty::Deduced, Value::Object(_)) => Shape::Fields,
        _ => Shape::Leaf,
    }
}

/// The path element of a list item (upstream's `listItemToPathElement`).
fn item_pe(elem: Elem, keys: &[&str], item: &Value) -> Result<Pe, String> {
    if keys.is_empty() {
        return match item {
            Value::Object(_) => Err("associative list without keys has an element that's a map type".into()),
            Value::Array(_) => Err("not supported: associative list with lists as elements".into()),
            Value::Null => Err("associative list without keys has an element that's an explicit null".into()),
            v => Ok(Pe::Value(v.clone())),
        };
    }
    let obj = match item {
        Value::Object(m) => m,
        Value::Null => return Err("associative list with keys may not have a null element".into()),
        _ => return Err("associative list with keys may not have non-map elements".into()),
    };
    let mut fields = Vec::new();
    for key in keys {
        if let Some(v) = obj.get(*key) {
            fields.push((key.to_string(), v.clone()));
        } else if let Some((_, _, d)) = KEY_DEFAULTS.iter().find(|(m, k, _)| Elem::Msg(m) == elem && k == key) {
            fields.push((key.to_string(), json!(d)));
        }
    }
    if fields.is_empty() {
        return Err(format!("associative list with keys has an element that omits all key fields {keys:?} (and doesn't have default values for any key fields)"));
    }
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Pe::Key(fields))
}

/// The fields a value sets (upstream's `ToFieldSet`): scalars and atomic values, list items,
/// empty or null fields, and the entries of maps. With `strict`, an item without its keys or
/// a duplicate item is an error (the applied configuration must be well formed); otherwise it
/// is skipped.
fn to_set(ty: Ty, v: &Value, strict: bool) -> Result<Set, String> {
    let mut set = Set::new();
    walk_set(ty, v, &mut Vec::new(), &mut set, strict)?;
    Ok(set)
}

fn walk_set(ty: Ty, v: &Value, path: &mut Vec<Pe>, set: &mut Set, strict: bool) -> Result<(), String> {
    match shape(ty, v) {
        Shape::Leaf => set.insert(path),
        Shape::List(e, keys) => {
            let Some(items) = v.as_array() else { return Ok(()) };
            let mut seen = BTreeSet::new();
            let mut dups = BTreeSet::new();
            let mut pes = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item_pe(e, keys, item) {
                    Ok(pe) => {
                        if !seen.insert(pe.clone()) {
                            if strict {
                                return Err(format!("{}: duplicate entries for key {pe}", path_string(path)));
                            }
                            dups.insert(pe.clone());
                        }
                        pes.push(Some(pe));
                    }
                    Err(why) if strict => return Err(format!("{}: element {i}: {why}", path_string(path))),
                    Err(_) => pes.push(None),
                }
            }
            for pe in &dups {
                path.push(pe.clone());
                set.insert(path);
                path.pop();
            }
            for (item, pe) in items.iter().zip(pes) {
                let Some(pe) = pe.filter(|pe| !dups.contains(pe)) else { continue };
                path.push(pe);
                walk_set(e.ty(), item, path, set, strict)?;
                set.insert(path);
                path.pop();
            }
        }
        Shape::Fields => {
            let Some(obj) = v.as_object() else { return Ok(()) };
            for (k, child) in obj {
                let (cty, declared) = ty.field(k);
                path.push(Pe::Field(k.clone()));
                walk_set(cty, child, path, set, strict)?;
                if child.is_null() || child.as_object().is_some_and(Map::is_empty) || !declared {
                    set.insert(path);
                }
                path.pop();
            }
        }
    }
    Ok(())
}

/// The items of a list by path element, in order; an item whose element cannot be made gets
/// its index (it matches nothing in another list). The map holds `None` for duplicates.
fn index_items<'a>(e: Elem, keys: &[&str], items: &'a [Value]) -> (Vec<Pe>, BTreeMap<Pe, Option<&'a Value>>) {
    let mut order = Vec::with_capacity(items.len());
    let mut seen: BTreeMap<Pe, Option<&Value>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let pe = item_pe(e, keys, item).unwrap_or(Pe::Index(i));
        match seen.get_mut(&pe) {
            Some(slot) => *slot = None,
            None => {
                seen.insert(pe.clone(), Some(item));
            }
        }
        order.push(pe);
    }
    (order, seen)
}

/// The live value `l` with the applied value `r` merged in (upstream's `Merge`): maps field by
/// field, associative lists and sets item by item (the applied items in their order, live-only
/// items where they were), everything else replaced.
fn merge(ty: Ty, l: Option<&Value>, r: Option<&Value>) -> Option<Value> {
    let (l, r) = match (l, r) {
        (None, None) => return None,
        (Some(l), None) => return Some(l.clone()),
        (None, Some(r)) => return Some(r.clone()),
        (Some(l), Some(r)) => (l, r),
    };
    match shape(ty, r) {
        Shape::Leaf => Some(r.clone()),
        Shape::List(e, keys) => match (l.as_array(), r.as_array()) {
            (Some(la), Some(ra)) if !(la.is_empty() && ra.is_empty()) => Some(Value::Array(merge_list(e, keys, la, ra))),
            _ => Some(r.clone()),
        },
        Shape::Fields => match (l.as_object(), r.as_object()) {
            (Some(lo), Some(ro)) if !(lo.is_empty() && ro.is_empty()) => {
                let mut out = lo.clone();
                for (k, rv) in ro {
                    if let Some(m) = merge(ty.field(k).0, lo.get(k), Some(rv)) {
                        out.insert(k.clone(), m);
                    }
                }
                Some(Value::Object(out))
            }
            _ => Some(r.clone()),
        },
    }
}

/// structured-merge-diff's `visitListItems` of the merging walker: walks both lists at once;
/// items only in the live list stay where they are, items of the applied list come in its
/// order, and an item in both is merged when the applied list reaches it.
fn merge_list(e: Elem, keys: &[&str], l: &[Value], r: &[Value]) -> Vec<Value> {
    let (lpes, lobs) = index_items(e, keys, l);
    // The applied list was checked (every item has its key, none repeats).
    let (rpes, robs) = index_items(e, keys, r);
    let mut shared = rpes.iter().filter(|pe| lobs.contains_key(pe));
    let mut next_shared = shared.next();
    let mut merged_rhs: BTreeSet<&Pe> = BTreeSet::new();
    let mut out = Vec::with_capacity(l.len().max(r.len()));
    let (mut li, mut ri) = (0, 0);
    while li < lpes.len() || ri < rpes.len() {
        if li < lpes.len() && ri < rpes.len() {
            let pe = &lpes[li];
            if *pe == rpes[ri] {
                merged_rhs.insert(pe);
                let lchild = lobs.get(pe).copied().flatten();
                let rchild = robs.get(pe).copied().flatten();
                out.extend(merge(e.ty(), lchild, rchild));
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if robs.contains_key(pe) && next_shared.is_some_and(|n| n != pe) {
                // An item both lists have, but not the next one the applied list merges.
                li += 1;
                continue;
            }
        }
        if li < lpes.len() {
            let pe = &lpes[li];
            if !robs.contains_key(pe) {
                out.push(l[li].clone());
                li += 1;
                continue;
            } else if merged_rhs.contains(pe) {
                li += 1;
            }
        }
        if ri < rpes.len() {
            let pe = &rpes[ri];
            merged_rhs.insert(pe);
            let lchild = lobs.get(pe).copied().flatten();
            let rchild = robs.get(pe).copied().flatten();
            out.extend(merge(e.ty(), lchild, rchild));
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.next();
            }
        }
    }
    out
}

/// What changed between two versions of an object.
#[derive(Debug, Default)]
struct Comparison {
    added: Set,
    modified: Set,
    removed: Set,
}

impl Comparison {
    fn ignoring(self, ig: Ignore) -> Comparison {
        Comparison { added: ig.apply(self.added), modified: ig.apply(self.modified), removed: ig.apply(self.removed) }
    }
}

fn compare_objects(ty: Ty, old: &Value, new: &Value) -> Comparison {
    let mut c = Comparison::default();
    compare(ty, Some(old), Some(new), &mut Vec::new(), false, &mut c);
    c
}

/// Upstream's `Compare`: changed scalars and atomic values are modified, added or removed;
/// a map, list or list item that appears or disappears is added or removed too. Struct fields
/// and [`ALWAYS_WRITTEN`] lists are not (`insert_self` false): upstream compares with Go's
/// zero object on create, which has them (as `{}` or `null`), so it never sees them appear.
fn compare(ty: Ty, l: Option<&Value>, r: Option<&Value>, path: &mut Vec<Pe>, insert_self: bool, c: &mut Comparison) {
    let Some(probe) = r.or(l) else { return };
    let mut leaf = false;
    match shape(ty, probe) {
        Shape::Leaf => leaf = true,
        Shape::List(e, keys) => {
            let la = l.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let ra = r.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            if la.is_empty() && ra.is_empty() {
                leaf = true;
            } else {
                compare_items(e, keys, la, ra, path, c);
            }
        }
        Shape::Fields => {
            let empty = Map::new();
            let lo = l.and_then(Value::as_object).unwrap_or(&empty);
            let ro = r.and_then(Value::as_object).unwrap_or(&empty);
            if lo.is_empty() && ro.is_empty() {
                leaf = true;
            } else {
                let keys: BTreeSet<&String> = lo.keys().chain(ro.keys()).collect();
                for k in keys {
                    let cty = ty.field(k).0;
                    let appears = match (ty, cty) {
                        (_, Ty::Struct(_)) => false,
                        (Ty::Struct(m), _) => !ALWAYS_WRITTEN.contains(&(m, k.as_str())),
                        _ => true,
                    };
                    path.push(Pe::Field(k.clone()));
                    compare(cty, lo.get(k), ro.get(k), path, appears, c);
                    path.pop();
                }
            }
        }
    }
    if leaf {
        match (l, r) {
            (None, Some(_)) => c.added.insert(path),
            (Some(_), None) => c.removed.insert(path),
            (Some(a), Some(b)) if cmp_values(a, b) != std::cmp::Ordering::Equal => c.modified.insert(path),
            _ => {}
        }
    } else if insert_self {
        match (l, r) {
            (None, Some(_)) => c.added.insert(path),
            (Some(_), None) => c.removed.insert(path),
            _ => {}
        }
    }
}

fn compare_items(e: Elem, keys: &[&str], l: &[Value], r: &[Value], path: &mut Vec<Pe>, c: &mut Comparison) {
    let group = |items: &[Value]| {
        let mut order: Vec<Pe> = Vec::new();
        let mut by: BTreeMap<Pe, Vec<Value>> = BTreeMap::new();
        for item in items {
            let Ok(pe) = item_pe(e, keys, item) else { continue };
            let slot = by.entry(pe.clone()).or_default();
            if slot.is_empty() {
                order.push(pe);
            }
            slot.push(item.clone());
        }
        (order, by)
    };
    let (lorder, lby) = group(l);
    let (rorder, rby) = group(r);
    let all: Vec<Pe> = lorder.into_iter().chain(rorder.into_iter().filter(|pe| !lby.contains_key(pe))).collect();
    let none = Vec::new();
    for pe in all {
        let ll = lby.get(&pe).unwrap_or(&none);
        let rl = rby.get(&pe).unwrap_or(&none);
        path.push(pe);
        match (ll.len(), rl.len()) {
            (0..=1, 0..=1) => compare(e.ty(), ll.first(), rl.first(), path, true, c),
            (2.., 2..) => {
                if ll != rl {
                    c.modified.insert(path);
                }
            }
            (2.., _) => {
                if let Some(r0) = rl.first() {
                    compare(e.ty(), None, Some(r0), path, true, c);
                }
                c.removed.insert(path);
            }
            (_, _) => {
                if let Some(l0) = ll.first() {
                    compare(e.ty(), Some(l0), None, path, true, c);
                }
                c.added.insert(path);
            }
        }
        path.pop();
    }
}

/// `v` without the member paths of `set` (each removed with everything below it); a map or
/// list left empty becomes null (upstream's `RemoveItems`).
fn remove_items(ty: Ty, v: &Value, set: &Set) -> Value {
    match shape(ty, v) {
        Shape::Leaf => v.clone(),
        Shape::List(e, keys) => {
            let Some(items) = v.as_array().filter(|a| !a.is_empty()) else { return v.clone() };
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let Ok(pe) = item_pe(e, keys, item) else {
                    out.push(item.clone());
                    continue;
                };
                if set.is_member(&pe) {
                    continue;
                }
                out.push(match set.child(&pe) {
                    Some(sub) => remove_items(e.ty(), item, sub),
                    None => item.clone(),
                });
            }
            if out.is_empty() {
                Value::Null
            } else {
                Value::Array(out)
            }
        }
        Shape::Fields => {
            let Some(obj) = v.as_object().filter(|m| !m.is_empty()) else { return v.clone() };
            let mut out = Map::new();
            for (k, child) in obj {
                let pe = Pe::Field(k.clone());
                if set.is_member(&pe) {
                    continue;
                }
                let kept = match set.child(&pe) {
                    Some(sub) => remove_items(ty.field(k).0, child, sub),
                    None => child.clone(),
                };
                out.insert(k.clone(), kept);
            }
            if out.is_empty() {
                Value::Null
            } else {
                Value::Object(out)
            }
        }
    }
}

/// `s` with the declared struct fields on its paths made members too (upstream's
/// `EnsureNamedFieldsAreMembers`), so that removing them removes what is below.
fn ensure_named(ty: Ty, s: &Set) -> Set {
    let mut out = Set::new();
    for m in s.members() {
        out.insert_member(m.clone());
    }
    for (pe, c) in s.children() {
        if let Pe::Field(name) = pe {
            if matches!(ty, Ty::Root(_) | Ty::Struct(_)) && ty.field(name).1 {
                out.insert_member(pe.clone());
            }
        }
        out.set_child(pe.clone(), ensure_named(ty.child(pe), c));
    }
    out
}

/// Fields a request may set but not own, per subresource (upstream's reset fields: the main
/// resource never changes the status of a kind with a status subresource, and the status
/// subresource changes only the status).
#[derive(Clone, Copy, Debug)]
enum Ignore {
    Nothing,
    Status,
    AllButStatus,
}

impl Ignore {
    fn of(r: &Resource, subresource: Option<&str>) -> Ignore {
        match subresource {
            Some("status") => Ignore::AllButStatus,
            Some(_) => Ignore::Nothing,
            None if r.subresources.contains(&"status") => Ignore::Status,
            None => Ignore::Nothing,
        }
    }

    fn apply(self, s: Set) -> Set {
        match self {
            Ignore::Nothing => s,
            Ignore::Status => s.without_field("status"),
            Ignore::AllButStatus => s.only_field("status"),
        }
    }
}

/// Fields no manager owns (upstream's `stripMetaManager`): type and system metadata.
fn strip_meta(s: &Set) -> Set {
    let f = |n: &str| Pe::Field(n.to_string());
    let mut strip = Set::new();
    for top in ["apiVersion", "kind", "metadata"] {
        strip.insert(&[f(top)]);
    }
    for m in ["name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName", "generation", "managedFields", "resourceVersion"] {
        strip.insert(&[f("metadata"), f(m)]);
    }
    s.difference(&strip)
}

/// Who manages: the name, the operation, the API version (for updates only: an applier is
/// the same manager whatever version it applies with) and the subresource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Id {
    manager: String,
    apply: bool,
    api_version: String,
    subresource: String,
}

impl Id {
    /// Upstream's `printManager`: `"kubectl" with subresource "scale" using apps/v1`.
    fn describe(&self) -> String {
        let mut s = Value::String(self.manager.clone()).to_string();
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {}", Value::String(self.subresource.clone())));
        }
        if !self.apply {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

#[derive(Clone, Debug)]
struct Entry {
    set: Set,
    api_version: String,
    time: Option<String>,
}

type Managed = BTreeMap<Id, Entry>;

/// Why `metadata.managedFields` could not be read (upstream's `DecodeManagedFields`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("managedFields must be a list of entries")]
    NotAList,
    #[error("operation must be `Apply` or `Update`")]
    Operation,
    #[error("apiVersion must not be empty")]
    ApiVersion,
    #[error("missing fieldsType in managed fields entry {0}")]
    MissingFieldsType(usize),
    #[error("invalid fieldsType {1:?} in managed fields entry {0}")]
    FieldsType(usize, String),
    #[error("error decoding set: {0}")]
    Fields(#[from] FieldsError),
}

fn decode(v: Option<&Value>) -> Result<Managed, DecodeError> {
    let mut out = Managed::new();
    let entries = match v {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(DecodeError::NotAList),
    };
    for (i, e) in entries.iter().enumerate() {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let apply = match s("operation").as_str() {
            "Apply" => true,
            "Update" => false,
            _ => return Err(DecodeError::Operation),
        };
        let api_version = s("apiVersion");
        if api_version.is_empty() {
            return Err(DecodeError::ApiVersion);
        }
        match s("fieldsType").as_str() {
            "FieldsV1" => {}
            "" => return Err(DecodeError::MissingFieldsType(i)),
            other => return Err(DecodeError::FieldsType(i, other.to_string())),
        }
        let set = match e.get("fieldsV1") {
            None | Some(Value::Null) => Set::new(),
            Some(f) => Set::from_fields_v1(f)?,
        };
        let id = Id { manager: s("manager"), apply, api_version: if apply { String::new() } else { api_version.clone() }, subresource: s("subresource") };
        let time = e.get("time").and_then(Value::as_str).map(str::to_string);
        out.insert(id, Entry { set, api_version, time });
    }
    Ok(out)
}

fn seconds(t: &Option<String>) -> i64 {
    t.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map_or(0, |t| t.timestamp())
}

/// The `managedFields` list, sorted as upstream sorts it (operation, time, manager, version,
/// subresource); `None` when no manager is left.
fn encode(m: &Managed) -> Option<Value> {
    if m.is_empty() {
        return None;
    }
    let mut entries: Vec<(&Id, &Entry)> = m.iter().collect();
    entries.sort_by(|(a, ea), (b, eb)| {
        (!a.apply, seconds(&ea.time), &a.manager, &ea.api_version, &a.subresource).cmp(&(!b.apply, seconds(&eb.time), &b.manager, &eb.api_version, &b.subresource))
    });
    let list = entries
        .into_iter()
        .map(|(id, e)| {
            let mut o = Map::new();
            o.insert("manager".into(), json!(id.manager));
            o.insert("operation".into(), json!(if id.apply { "Apply" } else { "Update" }));
            o.insert("apiVersion".into(), json!(e.api_version));
            if let Some(t) = &e.time {
                o.insert("time".into(), json!(t));
            }
            o.insert("fieldsType".into(), json!("FieldsV1"));
            o.insert("fieldsV1".into(), e.set.to_fields_v1());
            if !id.subresource.is_empty() {
                o.insert("subresource".into(), json!(id.subresource));
            }
            Value::Object(o)
        })
        .collect();
    Some(Value::Array(list))
}

fn set_managed_fields(obj: &mut Value, m: &Managed) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        match encode(m) {
            Some(v) => meta.insert("managedFields".into(), v),
            None => meta.remove("managedFields"),
        };
    }
}

/// A client resetting managedFields: `[]` or `[{}]` (upstream's `isResetManagedFields`).
fn is_reset(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Array(a)) if a.is_empty() => true,
        Some(Value::Array(a)) if a.len() == 1 => match &a[0] {
            Value::Object(o) => o.values().all(|v| v.is_null() || v.as_str() == Some("")),
            _ => false,
        },
        _ => false,
    }
}

/// The object as field management sees it: without managedFields and resourceVersion.
fn plain(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    o
}

/// Remove null fields, which Kubernetes' typed objects cannot hold (what a prune leaves of an
/// emptied map or list, and what an applied `null` asks for).
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Upstream's `Updater.update`: the fields `new` adds or changes leave every manager but
/// `workflow` (or, without `force`, are conflicts), and removed fields leave every manager
/// but `workflow`.
fn update_managers(ty: Ty, ig: Ignore, old: &Value, new: &Value, managed: &mut Managed, workflow: Option<&Id>, force: bool) -> Result<Comparison, Vec<(Id, Set)>> {
    let cmp = compare_objects(ty, old, new).ignoring(ig);
    let changed = cmp.modified.union(&cmp.added);
    let conflicts: Vec<(Id, Set)> = managed
        .iter()
        .filter(|(id, _)| Some(*id) != workflow)
        .map(|(id, e)| (id.clone(), e.set.intersection(&changed)))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    if !force && !conflicts.is_empty() {
        return Err(conflicts);
    }
    for (id, lost) in &conflicts {
        if let Some(e) = managed.get_mut(id) {
            e.set = e.set.difference(lost);
        }
    }
    if !cmp.removed.is_empty() {
        for (id, e) in managed.iter_mut() {
            if Some(id) != workflow {
                e.set = e.set.difference(&cmp.removed);
            }
        }
    }
    managed.retain(|_, e| !e.set.is_empty());
    Ok(cmp)
}

/// Upstream's `prune`: remove what `last` (the applier's previous set) had and no manager,
/// the applier's new set included, owns now; fields nobody owned stay.
fn prune(ty: Ty, merged: Value, managed: &Managed, last: &Set) -> Value {
    let ens = |s: &Set| ensure_named(ty, s);
    let owned = |v: &Value| ens(&to_set(ty, v, false).unwrap_or_default());
    let last = ens(last);
    let pruned = remove_items(ty, &merged, &last);
    let all = ens(&managed.values().fold(Set::new(), |acc, e| acc.union(&e.set)));
    let merged_set = owned(&merged);
    // Put back what someone owns.
    let pruned = remove_items(ty, &merged, &merged_set.difference(&owned(&pruned).union(&all)));
    // And what the applier did not have last time.
    remove_items(ty, &merged, &merged_set.difference(&owned(&pruned)).intersection(&last))
}

enum Failure {
    Invalid(String),
    Conflicts(Vec<(Id, Set)>),
}

/// Upstream's `Updater.Apply` on plain objects, for applier `id` with version `version`;
/// updates `managed`.
fn apply_sets((ty, ig): (Ty, Ignore), live: &Value, config: &Value, managed: &mut Managed, (id, version): (&Id, &str), force: bool) -> Result<Value, Failure> {
    let set = ig.apply(to_set(ty, config, true).map_err(Failure::Invalid)?);
    let merged = merge(ty, Some(live), Some(config)).unwrap_or_else(|| config.clone());
    let previous = managed.get(id).cloned();
    managed.insert(id.clone(), Entry { set, api_version: version.to_string(), time: previous.as_ref().and_then(|e| e.time.clone()) });
    let merged = match previous {
        Some(last) if !last.set.is_empty() => prune(ty, merged, managed, &last.set),
        _ => merged,
    };
    update_managers(ty, ig, live, &merged, managed, Some(id), force).map_err(Failure::Conflicts)?;
    Ok(merged)
}

/// The fields an object's client-side apply annotation still describes (upstream's
/// `allowedConflictsFromLastApplied`): `kubectl apply --server-side` may take them over
/// from client-side apply without conflicts.
fn allowed_from_last_applied(ty: Ty, live: &Value, version: &str) -> Option<Set> {
    let text = live["metadata"]["annotations"][LAST_APPLIED].as_str().filter(|s| !s.is_empty())?;
    let last: Value = serde_json::from_str(text).ok()?;
    if last["apiVersion"].as_str() != Some(version) {
        return None;
    }
    let set = to_set(ty, &last, false).ok()?;
    let cmp = compare_objects(ty, &last, live);
    Some(set.difference(&cmp.modified).difference(&cmp.added).difference(&cmp.removed))
}

/// One field another manager owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The manager as Kubernetes prints it: `"kubectl" with subresource "scale" using apps/v1`.
    pub manager: String,
    /// `.spec.replicas`.
    pub field: String,
}

/// Why an apply failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The configuration does not fit the kind (an associative list item without its key, a
    /// duplicate item).
    #[error("{0}")]
    Invalid(String),
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
    #[error("failed to decode managed fields: {0}")]
    Decode(#[from] DecodeError),
}

/// Upstream's `getConflictMessage`.
fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [one] = conflicts {
        return format!("Apply failed with 1 conflict: conflict with {}: {}", one.manager, one.field);
    }
    let mut by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in conflicts {
        by.entry(&c.manager).or_default().push(&c.field);
    }
    let mut lines = Vec::new();
    for (manager, fields) in by {
        lines.push(format!("conflicts with {manager}:"));
        lines.extend(fields.iter().map(|f| format!("- {f}")));
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

fn to_conflicts(sets: Vec<(Id, Set)>) -> ApplyError {
    let mut out = Vec::new();
    for (id, set) in sets {
        let manager = id.describe();
        out.extend(set.paths().iter().map(|p| Conflict { manager: manager.clone(), field: path_string(p) }));
    }
    ApplyError::Conflicts(out)
}

/// Server-side apply of `config` by `manager` to `live` (`None`: the object does not exist
/// yet). Returns the new object, managedFields included, before defaulting and validation;
/// the live object itself (with new managedFields) when the configuration changes nothing.
pub fn apply(r: &Resource, subresource: Option<&str>, live: Option<&Value>, config: &Value, manager: &str, force: bool, now: &str) -> Result<Value, ApplyError> {
    let ty = object_ty(r);
    let ig = Ignore::of(r, subresource);
    let version = r.api_version();
    let managed = match live {
        Some(l) => decode(l.pointer("/metadata/managedFields"))?,
        None => Managed::new(),
    };
    let live = live.map(plain).unwrap_or_else(|| json!({}));
    let id = Id { manager: manager.to_string(), apply: true, api_version: String::new(), subresource: subresource.unwrap_or("").to_string() };
    let attempt = |force: bool| {
        let mut m = managed.clone();
        apply_sets((ty, ig), &live, config, &mut m, (&id, &version), force).map(|v| (v, m))
    };
    let (mut merged, mut m) = match attempt(force) {
        Ok(done) => done,
        Err(Failure::Invalid(why)) => return Err(ApplyError::Invalid(why)),
        Err(Failure::Conflicts(conflicts)) => {
            // kubectl taking over from client-side apply: conflicts on fields the
            // last-applied annotation describes are forced.
            let allowed = if manager == "kubectl" { allowed_from_last_applied(ty, &live, &version) } else { None };
            let Some(allowed) = allowed else { return Err(to_conflicts(conflicts)) };
            let rest: Vec<(Id, Set)> = conflicts.into_iter().map(|(id, s)| (id, s.difference(&allowed))).filter(|(_, s)| !s.is_empty()).collect();
            if !rest.is_empty() {
                return Err(to_conflicts(rest));
            }
            match attempt(true) {
                Ok(done) => done,
                Err(Failure::Invalid(why)) => return Err(ApplyError::Invalid(why)),
                Err(Failure::Conflicts(c)) => return Err(to_conflicts(c)),
            }
        }
    };
    if let Some(e) = m.get_mut(&id) {
        e.set = strip_meta(&e.set);
        if e.set.is_empty() {
            m.remove(&id);
        }
    }
    strip_nulls(&mut merged);
    let mut before = live.clone();
    strip_nulls(&mut before);
    let mut out = if merged == before {
        live
    } else {
        if let Some(e) = m.get_mut(&id) {
            e.time = Some(now.to_string());
        }
        merged
    };
    // Keep client-side apply's annotation in step with what kubectl applies server-side.
    if manager == "kubectl" && out["metadata"]["annotations"][LAST_APPLIED].as_str().is_some_and(|s| !s.is_empty()) {
        let mut last = config.clone();
        if let Some(a) = last.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
            a.remove(LAST_APPLIED);
        }
        out["metadata"]["annotations"][LAST_APPLIED] = json!(last.to_string());
    }
    set_managed_fields(&mut out, &m);
    Ok(out)
}

/// Upstream's `IgnoreManagedFieldsTimestampsTransformer`: when a write would change nothing but
/// the times of managedFields entries, `new` keeps `old`'s times, so that it changes nothing (an
/// apply of `creationTimestamp: null`, say, which the server puts back).
pub fn keep_times_if_unchanged(old: &Value, new: &mut Value) {
    let (Some(before), Some(after)) = (old.pointer("/metadata/managedFields").and_then(Value::as_array), new.pointer("/metadata/managedFields").and_then(Value::as_array)) else {
        return;
    };
    let untimed = |e: &Value| {
        let mut e = e.clone();
        if let Some(m) = e.as_object_mut() {
            m.remove("time");
        }
        e
    };
    if before.len() != after.len() || before.iter().zip(after).any(|(a, b)| untimed(a) != untimed(b)) || plain(old) != plain(new) {
        return;
    }
    let kept = Value::Array(before.clone());
    if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), kept);
    }
}

/// Record a create, update or patch (an "Update" by `manager`) of `live` (`None` for a create)
/// into `new`'s managedFields, as upstream's `FieldManager.UpdateNoErrors` does: the
/// managedFields a client sends are used when they are valid and not empty (a client may edit
/// them), `[]` or `[{}]` resets them, anything else keeps the live ones; a subresource always
/// keeps the live ones. Never fails: unreadable live managedFields are dropped (logged).
pub fn record_update(r: &Resource, subresource: Option<&str>, live: Option<&Value>, new: &mut Value, manager: &str, now: &str) {
    let ty = object_ty(r);
    let ig = Ignore::of(r, subresource);
    let version = r.api_version();
    let live_fields = || match decode(live.and_then(|l| l.pointer("/metadata/managedFields"))) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(kind = r.kind, error = %e, "dropping unreadable managedFields");
            Managed::new()
        }
    };
    let sent = new.pointer("/metadata/managedFields");
    let mut managed = if subresource.is_some() {
        live_fields()
    } else if is_reset(sent) {
        Managed::new()
    } else {
        match decode(sent) {
            Ok(m) if !m.is_empty() => m,
            _ => live_fields(),
        }
    };
    let old = live.map(plain).unwrap_or_else(|| json!({}));
    let fresh = plain(new);
    // The operation's fields leave every manager, the writer's own entry included, and are then
    // merged into that entry (upstream's `managedFieldsUpdater` does this with a
    // "current-operation" manager).
    if let Ok(cmp) = update_managers(ty, ig, &old, &fresh, &mut managed, None, true) {
        let set = strip_meta(&ig.apply(cmp.modified.union(&cmp.added)));
        if !set.is_empty() {
            let manager = if manager.is_empty() { "unknown" } else { manager };
            let id = Id { manager: manager.to_string(), apply: false, api_version: version.clone(), subresource: subresource.unwrap_or("").to_string() };
            let e = managed.entry(id).or_insert_with(|| Entry { set: Set::new(), api_version: version.clone(), time: None });
            e.set = set.union(&e.set);
            e.time = Some(now.to_string());
        }
    }
    set_managed_fields(new, &managed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    fn deployments() -> &'static Resource {
        find("apps", "v1", "deployments").expect("deployments")
    }

    fn deployment(replicas: i64, containers: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}}
        })
    }

    fn entries(obj: &Value) -> Vec<(String, String, String)> {
        obj["metadata"]["managedFields"]
            .as_array()
            .map(|a| a.iter().map(|e| (e["manager"].as_str().unwrap_or("").into(), e["operation"].as_str().unwrap_or("").into(), e["subresource"].as_str().unwrap_or("").into())).collect())
            .unwrap_or_default()
    }

    fn fields_of<'a>(obj: &'a Value, manager: &str) -> &'a Value {
        obj["metadata"]["managedFields"].as_array().and_then(|a| a.iter().find(|e| e["manager"] == manager)).map_or(&Value::Null, |e| &e["fieldsV1"])
    }

    #[test]
    fn applied_fields_in_the_kubernetes_encoding() {
        let config = deployment(2, json!([{"name": "web", "image": "busybox", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]}]));
        let out = apply(deployments(), None, None, &config, "kubectl", false, "2025-01-01T00:00:00Z").expect("apply");
        assert_eq!(entries(&out), [("kubectl".into(), "Apply".into(), "".into())]);
        let e = &out["metadata"]["managedFields"][0];
        assert_eq!((e["apiVersion"].as_str(), e["fieldsType"].as_str(), e["time"].as_str()), (Some("apps/v1"), Some("FieldsV1"), Some("2025-01-01T00:00:00Z")));
        // As a Kubernetes API server writes it: the selector is an atomic struct, container
        // ports are keyed by containerPort and the defaulted protocol, items are members (".").
        assert_eq!(e["fieldsV1"], json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                    ".": {}, "f:image": {}, "f:name": {},
                    "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                }}}
            }}
        }));
        // The object is the configuration (defaulting comes later).
        assert_eq!(out["spec"], config["spec"]);
    }

    /// Cases of structured-merge-diff's merge tests (`typed/merge_test.go`, sets of strings).
    #[test]
    fn sets_merge_as_upstream_orders_them() {
        let set = Ty::List(Elem::Leaf, &[]);
        for (live, applied, want) in [
            (json!(["a", "b", "c"]), json!(["a", "b"]), json!(["a", "b", "c"])),
            (json!(["a", "b"]), json!(["b", "a"]), json!(["b", "a"])),
            (json!(["a", "b", "c"]), json!([]), json!(["a", "b", "c"])),
            (json!([]), json!(["a", "b", "c"]), json!(["a", "b", "c"])),
            (json!(["a", "b", "c", "g", "f"]), json!(["c", "d", "e", "f"]), json!(["a", "b", "c", "g", "d", "e", "f"])),
            (json!(["c", "d", "e", "f"]), json!(["a", "c", "e"]), json!(["a", "c", "d", "e", "f"])),
            (json!(["a", "b", "c", "x", "y", "z"]), json!(["d", "e", "f", "x", "y", "z"]), json!(["a", "b", "c", "d", "e", "f", "x", "y", "z"])),
            (json!(["c", "a", "g", "f"]), json!(["c", "f", "a", "g"]), json!(["c", "f", "a", "g"])),
            (json!(["a", "b", "c", "d"]), json!(["d", "e", "f", "a"]), json!(["b", "c", "d", "e", "f", "a"])),
            (
                json!(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]),
                json!(["1", "b", "2", "h", "3", "e", "4", "k", "l"]),
                json!(["a", "1", "b", "c", "d", "f", "g", "2", "h", "i", "j", "3", "e", "4", "k", "l"]),
            ),
            // Duplicates in the live list.
            (json!(["a", "b", "b"]), json!(["b"]), json!(["a", "b"])),
            (json!(["a", "b", "b"]), json!(["a"]), json!(["a", "b", "b"])),
            (json!(["a", "b", "c", "d", "e", "c"]), json!(["1", "b", "2", "e", "d"]), json!(["a", "1", "b", "c", "2", "e", "c", "d"])),
            (json!(["a", "a", "b", "b"]), json!(["b", "c", "d"]), json!(["a", "a", "b", "c", "d"])),
        ] {
            assert_eq!(merge(set, Some(&live), Some(&applied)), Some(want.clone()), "{live} + {applied}");
        }
    }

    #[test]
    fn merge_is_field_by_field_and_item_by_item() {
        let ty = Ty::Struct("PodSpec");
        let live = json!({"containers": [{"name": "a", "image": "a:1"}, {"name": "x", "image": "x"}, {"name": "b", "image": "b:1"}], "nodeSelector": {"k": "v"}, "hostname": "h"});
        let config = json!({"containers": [{"name": "c", "image": "c"}, {"name": "b", "image": "b:2"}, {"name": "a", "image": "a:2", "args": ["1"]}], "nodeSelector": {"z": "1"}});
        let merged = merge(ty, Some(&live), Some(&config)).expect("merged");
        let names: Vec<&str> = merged["containers"].as_array().expect("list").iter().filter_map(|c| c["name"].as_str()).collect();
        // Upstream's order: shared items follow the applied list, live-only ones stay put.
        assert_eq!(names, ["x", "c", "b", "a"]);
        assert_eq!(merged["containers"][3], json!({"name": "a", "image": "a:2", "args": ["1"]}));
        assert_eq!(merged["hostname"], "h", "fields the configuration does not mention stay");
        // nodeSelector is an atomic map: replaced, not merged; so are atomic lists.
        assert_eq!(merged["nodeSelector"], json!({"z": "1"}));
        let c = merge(Ty::Struct("Container"), Some(&json!({"args": ["1", "2"], "env": [{"name": "A", "value": "1"}]})), Some(&json!({"args": ["3"], "env": [{"name": "B", "value": "2"}]}))).expect("c");
        assert_eq!(c["args"], json!(["3"]));
        assert_eq!(c["env"], json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
    }

    #[test]
    fn reapply_removes_what_the_manager_no_longer_applies() {
        let r = deployments();
        let config = deployment(2, json!([{"name": "web", "image": "busybox", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]));
        let live = apply(r, None, None, &config, "kubectl", false, "2025-01-01T00:00:00Z").expect("create");
        // Someone else adds a label; then the applier drops env B and its own label.
        let mut edited = live.clone();
        edited["metadata"]["labels"]["tier"] = json!("db");
        record_update(r, None, Some(&live), &mut edited, "kubectl-edit", "2025-01-01T00:00:01Z");
        assert_eq!(entries(&edited).len(), 2);
        let mut next = deployment(2, json!([{"name": "web", "image": "busybox", "env": [{"name": "A", "value": "1"}]}]));
        next["metadata"]["labels"] = json!({"other": "x"});
        let out = apply(r, None, Some(&edited), &next, "kubectl", false, "2025-01-01T00:00:02Z").expect("reapply");
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["env"], json!([{"name": "A", "value": "1"}]));
        assert_eq!(out["metadata"]["labels"], json!({"other": "x", "tier": "db"}), "app was the applier's; tier is kubectl-edit's");
        // A field nobody applied (defaulted, say) stays when the applier drops its siblings.
        let mut defaulted = out.clone();
        defaulted["spec"]["revisionHistoryLimit"] = json!(10);
        let mut bare = next.clone();
        bare["spec"].as_object_mut().expect("spec").remove("replicas");
        let out = apply(r, None, Some(&defaulted), &bare, "kubectl", false, "2025-01-01T00:00:03Z").expect("drop replicas");
        assert!(out["spec"].get("replicas").is_none(), "replicas left the configuration: {}", out["spec"]);
        assert_eq!(out["spec"]["revisionHistoryLimit"], 10);
    }

    #[test]
    fn conflicts_with_other_managers_and_force() {
        let r = deployments();
        let live = apply(r, None, None, &deployment(2, json!([{"name": "web", "image": "busybox"}])), "kubectl", false, "2025-01-01T00:00:00Z").expect("create");
        // kubectl scale: an Update through the scale subresource, manager from the User-Agent.
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(r, Some("scale"), Some(&live), &mut scaled, "kubectl", "2025-01-01T00:00:01Z");
        assert!(!fields_of(&scaled, "kubectl").to_string().contains("replicas"), "the applier lost replicas");
        assert!(entries(&scaled).contains(&("kubectl".into(), "Update".into(), "scale".into())));
        let err = apply(r, None, Some(&scaled), &deployment(3, json!([{"name": "web", "image": "busybox"}])), "kubectl", false, "t").expect_err("conflict");
        assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas");
        // The same value is shared, not a conflict.
        let shared = apply(r, None, Some(&scaled), &deployment(5, json!([{"name": "web", "image": "busybox"}])), "kubectl", false, "t").expect("same value");
        assert_eq!(entries(&shared).len(), 2);
        // Forced: the applier takes replicas and the scaler's entry, now empty, goes.
        let forced = apply(r, None, Some(&scaled), &deployment(3, json!([{"name": "web", "image": "busybox"}])), "kubectl", true, "t").expect("forced");
        assert_eq!(forced["spec"]["replicas"], 3);
        assert_eq!(entries(&forced), [("kubectl".into(), "Apply".into(), "".into())]);
        // Two conflicts, two managers: the multi-line message, and one cause each.
        let mut edited = scaled.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:2");
        record_update(r, None, Some(&scaled), &mut edited, "kubectl-edit", "t");
        let err = apply(r, None, Some(&edited), &deployment(3, json!([{"name": "web", "image": "nginx"}])), "other", false, "t").expect_err("conflicts");
        let ApplyError::Conflicts(c) = &err else { panic!("{err}") };
        assert!(c.len() >= 2, "{c:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("Apply failed with {} conflicts: conflicts with \"kubectl\"", c.len())), "{msg}");
        assert!(msg.contains("conflicts with \"kubectl-edit\" using apps/v1:\n- .spec.template.spec.containers[name=\"web\"].image"), "{msg}");
    }

    #[test]
    fn updates_record_their_manager() {
        let r = find("", "v1", "configmaps").expect("cm");
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "d", "uid": "u"}, "data": {"a": "1"}});
        record_update(r, None, None, &mut cm, "kubectl-create", "2025-01-01T00:00:00Z");
        assert_eq!(fields_of(&cm, "kubectl-create"), &json!({"f:data": {".": {}, "f:a": {}}}));
        let mut next = cm.clone();
        next["data"]["a"] = json!("2");
        next["data"]["b"] = json!("3");
        record_update(r, None, Some(&cm), &mut next, "", "2025-01-01T00:00:01Z");
        // The map itself stays kubectl-create's (a member without children encodes as {}).
        assert_eq!(fields_of(&next, "kubectl-create"), &json!({"f:data": {}}));
        assert_eq!(fields_of(&next, "unknown"), &json!({"f:data": {"f:a": {}, "f:b": {}}}));
        // No change: nothing moves, no timestamp changes.
        let mut same = next.clone();
        record_update(r, None, Some(&next), &mut same, "third", "2025-01-02T00:00:00Z");
        assert_eq!(same, next);
        // Client-sent managedFields: [{}] resets them; garbage keeps the live ones.
        let mut reset = next.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        record_update(r, None, Some(&next), &mut reset, "x", "t");
        assert!(reset["metadata"].get("managedFields").is_none(), "{reset}");
        let mut garbage = next.clone();
        garbage["metadata"]["managedFields"] = json!([{"manager": "m", "operation": "Nope"}]);
        record_update(r, None, Some(&next), &mut garbage, "x", "t");
        assert_eq!(garbage["metadata"]["managedFields"], next["metadata"]["managedFields"]);
        assert_eq!(decode(Some(&json!([{"operation": "Apply", "apiVersion": "v1"}]))).expect_err("type"), DecodeError::MissingFieldsType(0));
    }

    #[test]
    fn created_fields_as_upstream_records_them() {
        let mut d = deployment(1, json!([{"name": "web", "image": "busybox", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]));
        record_update(deployments(), None, None, &mut d, "kubectl-create", "t");
        let f = fields_of(&d, "kubectl-create");
        // Maps, omitempty lists and list items appear ("."); structs and containers (which Go
        // always writes) do not.
        assert_eq!(f["f:metadata"]["f:labels"]["."], json!({}), "{f}");
        let spec = &f["f:spec"]["f:template"]["f:spec"];
        assert!(f["f:spec"].get(".").is_none() && spec.get(".").is_none() && spec["f:containers"].get(".").is_none(), "{f}");
        let web = &spec["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!((&web["."], &web["f:ports"]["."]), (&json!({}), &json!({})), "{f}");
        assert!(f["f:metadata"].get("f:name").is_none() && f.get("f:kind").is_none(), "type and system metadata are nobody's: {f}");
    }

    #[test]
    fn status_belongs_to_the_status_subresource() {
        let r = find("", "v1", "pods").expect("pods");
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}});
        record_update(r, None, None, &mut pod, "kubectl-create", "t");
        assert!(fields_of(&pod, "kubectl-create").get("f:status").is_none());
        let mut running = pod.clone();
        running["status"]["phase"] = json!("Running");
        record_update(r, Some("status"), Some(&pod), &mut running, "kubelet", "t");
        assert_eq!(fields_of(&running, "kubelet"), &json!({"f:status": {"f:phase": {}}}));
        assert!(entries(&running).contains(&("kubelet".into(), "Update".into(), "status".into())));
    }

    #[test]
    fn bad_configurations_are_invalid() {
        let r = deployments();
        let no_name = deployment(1, json!([{"image": "busybox"}]));
        let err = apply(r, None, None, &no_name, "m", false, "t").expect_err("no key");
        assert_eq!(err.to_string(), ".spec.template.spec.containers: element 0: associative list with keys has an element that omits all key fields [\"name\"] (and doesn't have default values for any key fields)");
        let twice = deployment(1, json!([{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]));
        let err = apply(r, None, None, &twice, "m", false, "t").expect_err("dup");
        assert_eq!(err.to_string(), ".spec.template.spec.containers: duplicate entries for key [name=\"a\"]");
    }

    #[test]
    fn kinds_without_a_schema_are_deduced() {
        let r = find("coordination.k8s.io", "v1", "leases").expect("leases");
        let config = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l", "labels": {"a": "b"}}, "spec": {"holderIdentity": "me", "list": [1, 2]}});
        let out = apply(r, None, None, &config, "m", false, "t").expect("apply");
        assert_eq!(fields_of(&out, "m"), &json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {".": {}, "f:holderIdentity": {}, "f:list": {}}}));
    }
}
