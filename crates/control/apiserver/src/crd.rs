//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`): their validation and defaulting, the
//! live registry of the kinds they define, and the controller that accepts their names, marks
//! them Established and removes a deleted definition's objects.
//!
//! The registry is rebuilt from the stored definitions whenever one changes (by this server's
//! own writes at once, by a watch of the CRD prefix for the others') and read on every request:
//! routing ([`crate::resources::find`]), discovery and the OpenAPI documents (whose hash and
//! ETag follow [`generation`]) see a new kind as soon as its definition is accepted.
//!
//! Each served version of a definition is a [`Resource`] marked `custom`. Resources are
//! `&'static` everywhere in the API server, so a definition's are interned: an identical
//! resource is reused, and only a definition with names or subresources never seen before in
//! this process costs a few hundred bytes that stay until it exits.
//!
//! Versions convert with the `None` strategy, as upstream: objects are stored with the storage
//! version's `apiVersion` ([`storage_form`], called by [`crate::object::storable`]) and served
//! with the requested one ([`served_form`]); nothing else changes.
//!
//! **Invariant:** one API server per process (the registry is process-wide).

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use strata_store::Store;

use crate::resources::{self, Resource};
use crate::status::Cause;

pub const GROUP: &str = "apiextensions.k8s.io";
/// Storage prefix of the definitions.
pub const PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";
/// The finalizer a deleted definition carries until its objects are gone (upstream's name).
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// One served version of a custom kind.
#[derive(Debug)]
pub struct Version {
    pub resource: &'static Resource,
    /// `schema.openAPIV3Schema` (structural: checked at create).
    pub schema: Value,
    /// `additionalPrinterColumns`.
    pub columns: Vec<Value>,
    /// `subresources.scale` (`specReplicasPath`, `statusReplicasPath`, `labelSelectorPath`).
    pub scale: Option<Value>,
    /// `selectableFields` as field paths (`spec.color`): what field selectors may name besides
    /// `metadata.name` and `metadata.namespace`.
    pub selectable: Vec<String>,
}

/// A definition as served.
#[derive(Debug)]
pub struct Definition {
    pub name: String,
    pub group: String,
    pub plural: String,
    pub kind: String,
    pub list_kind: String,
    /// The storage version's name.
    pub storage: String,
    /// Served versions, preferred first.
    pub versions: Vec<Version>,
    pub terminating: bool,
}

impl Definition {
    pub fn version(&self, v: &str) -> Option<&Version> {
        self.versions.iter().find(|x| x.resource.version == v)
    }
}

#[derive(Default)]
struct Registry {
    defs: Vec<Arc<Definition>>,
    generation: u64,
}

static REGISTRY: LazyLock<RwLock<Arc<Registry>>> = LazyLock::new(|| RwLock::new(Arc::new(Registry::default())));

fn registry() -> Arc<Registry> {
    REGISTRY.read().map(|r| r.clone()).unwrap_or_else(|e| e.into_inner().clone())
}

/// Every served version of every accepted definition.
pub fn resources() -> Vec<&'static Resource> {
    registry().defs.iter().flat_map(|d| d.versions.iter().map(|v| v.resource)).collect()
}

/// A custom kind by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    registry()
        .defs
        .iter()
        .filter(|d| d.group == group && d.plural == plural)
        .find_map(|d| d.version(version).map(|v| v.resource))
}

/// The definition serving `r` (a custom kind).
pub fn definition(r: &Resource) -> Option<Arc<Definition>> {
    if !r.custom {
        return None;
    }
    registry().defs.iter().find(|d| d.group == r.group && d.plural == r.plural).cloned()
}

/// The field paths a field selector may name for custom kind `r` besides `metadata.name` and
/// `metadata.namespace` (its version's `selectableFields`).
pub fn selectable_fields(r: &Resource) -> Vec<String> {
    definition(r).and_then(|d| d.version(r.version).map(|v| v.selectable.clone())).unwrap_or_default()
}

/// The selectable field paths of a stored custom object's kind (every version's), for the
/// attributes selectors read; empty for any other object.
pub fn selectable_paths(obj: &Value) -> Vec<String> {
    let Some((group, _)) = obj["apiVersion"].as_str().and_then(|v| v.split_once('/')) else { return Vec::new() };
    if !group.contains('.') {
        return Vec::new();
    }
    let kind = obj["kind"].as_str().unwrap_or("");
    let reg = registry();
    let Some(d) = reg.defs.iter().find(|d| d.group == group && d.kind == kind) else { return Vec::new() };
    let mut out: Vec<String> = d.versions.iter().flat_map(|v| v.selectable.iter().cloned()).collect();
    out.sort();
    out.dedup();
    out
}

/// Changes whenever the set of served kinds or their schemas does.
pub fn generation() -> u64 {
    registry().generation
}

fn intern_str(s: &str) -> &'static str {
    static STRS: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(|| Mutex::new(HashSet::new()));
    let mut set = STRS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

fn intern_strs(v: &[String]) -> &'static [&'static str] {
    static LISTS: LazyLock<Mutex<HashSet<&'static [&'static str]>>> = LazyLock::new(|| Mutex::new(HashSet::new()));
    let strs: Vec<&'static str> = v.iter().map(|s| intern_str(s)).collect();
    let mut set = LISTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(strs.as_slice()) {
        return found;
    }
    let leaked: &'static [&'static str] = Box::leak(strs.into_boxed_slice());
    set.insert(leaked);
    leaked
}

fn intern(r: Resource) -> &'static Resource {
    static RES: LazyLock<Mutex<HashSet<&'static Resource>>> = LazyLock::new(|| Mutex::new(HashSet::new()));
    let mut set = RES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(&r) {
        return found;
    }
    let leaked: &'static Resource = Box::leak(Box::new(r));
    set.insert(leaked);
    leaked
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// The names a definition asks for, defaults applied.
#[derive(Debug, Clone, PartialEq)]
struct Names {
    plural: String,
    singular: String,
    kind: String,
    list_kind: String,
    short_names: Vec<String>,
    categories: Vec<String>,
}

impl Names {
    fn of(crd: &Value) -> Names {
        let n = &crd["spec"]["names"];
        let kind = n["kind"].as_str().unwrap_or("").to_string();
        let singular = n["singular"].as_str().filter(|s| !s.is_empty()).map(str::to_string).unwrap_or_else(|| kind.to_lowercase());
        let list_kind = n["listKind"].as_str().filter(|s| !s.is_empty()).map(str::to_string).unwrap_or_else(|| format!("{kind}List"));
        Names { plural: n["plural"].as_str().unwrap_or("").to_string(), singular, kind, list_kind, short_names: strings(&n["shortNames"]), categories: strings(&n["categories"]) }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({ "plural": self.plural, "singular": self.singular, "kind": self.kind, "listKind": self.list_kind });
        if !self.short_names.is_empty() {
            v["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            v["categories"] = json!(self.categories);
        }
        v
    }
}

/// Which names of each definition are accepted: definitions whose names were accepted before
/// keep them, then the first (by creation time, then name) to claim a kind, singular, short
/// name or list kind in its group gets it; one that conflicts is not served, with upstream's
/// reason and message. Built-in kinds of a group count as claimed (such definitions are also
/// refused at create: see [`validate`]).
fn accept(crds: &[Value]) -> Vec<Result<Names, (&'static str, String)>> {
    let mut order: Vec<usize> = (0..crds.len()).collect();
    let created = |i: usize| {
        let accepted = crds[i]["status"]["acceptedNames"]["kind"].as_str().is_some_and(|k| !k.is_empty());
        (!accepted, crds[i]["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string(), crds[i]["metadata"]["name"].as_str().unwrap_or("").to_string())
    };
    order.sort_by_key(|i| created(*i));
    let mut out: Vec<Result<Names, (&'static str, String)>> = crds.iter().map(|_| Err(("", String::new()))).collect();
    // (group, name) -> taken; resource names (plural, singular, short) and kinds apart.
    let mut resource_names: HashSet<(String, String)> = HashSet::new();
    let mut kinds: HashSet<(String, String)> = HashSet::new();
    for r in resources::RESOURCES {
        resource_names.insert((r.group.to_string(), r.plural.to_string()));
        resource_names.insert((r.group.to_string(), r.singular.to_string()));
        kinds.insert((r.group.to_string(), r.kind.to_string()));
        kinds.insert((r.group.to_string(), format!("{}List", r.kind)));
        for s in r.short_names {
            resource_names.insert((r.group.to_string(), s.to_string()));
        }
    }
    for i in order {
        let crd = &crds[i];
        let group = crd["spec"]["group"].as_str().unwrap_or("").to_string();
        let n = Names::of(crd);
        let taken = |set: &HashSet<(String, String)>, s: &str| set.contains(&(group.clone(), s.to_string()));
        let verdict = if taken(&resource_names, &n.plural) {
            Err(("PluralConflict", format!("{:?} is already in use", n.plural)))
        } else if taken(&resource_names, &n.singular) {
            Err(("SingularConflict", format!("{:?} is already in use", n.singular)))
        } else if let Some(s) = n.short_names.iter().find(|s| taken(&resource_names, s)) {
            Err(("ShortNamesConflict", format!("{s:?} is already in use")))
        } else if taken(&kinds, &n.kind) {
            Err(("KindConflict", format!("{:?} is already in use", n.kind)))
        } else if taken(&kinds, &n.list_kind) {
            Err(("ListKindConflict", format!("{:?} is already in use", n.list_kind)))
        } else {
            Ok(n.clone())
        };
        if verdict.is_ok() {
            for s in [&n.plural, &n.singular].into_iter().chain(n.short_names.iter()) {
                resource_names.insert((group.clone(), s.clone()));
            }
            kinds.insert((group.clone(), n.kind.clone()));
            kinds.insert((group.clone(), n.list_kind.clone()));
        }
        out[i] = verdict;
    }
    out
}

/// The served form of an accepted definition.
fn served(crd: &Value, names: &Names) -> Option<Definition> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str()?.to_string();
    let namespaced = spec["scope"] == "Namespaced";
    let mut storage = String::new();
    let mut versions = Vec::new();
    for v in spec["versions"].as_array()? {
        let name = v["name"].as_str().unwrap_or("").to_string();
        if v["storage"] == true {
            storage = name.clone();
        }
        if v["served"] != true {
            continue;
        }
        let subs = &v["subresources"];
        let mut subresources = Vec::new();
        if subs["status"].is_object() {
            subresources.push("status".to_string());
        }
        if subs["scale"].is_object() {
            subresources.push("scale".to_string());
        }
        let resource = intern(Resource {
            group: intern_str(&group),
            version: intern_str(&name),
            kind: intern_str(&names.kind),
            plural: intern_str(&names.plural),
            singular: intern_str(&names.singular),
            namespaced,
            short_names: intern_strs(&names.short_names),
            categories: intern_strs(&names.categories),
            subresources: intern_strs(&subresources),
            custom: true,
        });
        versions.push(Version {
            resource,
            schema: v["schema"]["openAPIV3Schema"].clone(),
            columns: v["additionalPrinterColumns"].as_array().cloned().unwrap_or_default(),
            scale: subs["scale"].is_object().then(|| subs["scale"].clone()),
            selectable: v["selectableFields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["jsonPath"].as_str().and_then(crate::jsonpath::simple_fields))
                .map(|p| p.join("."))
                .collect(),
        });
    }
    versions.sort_by(|a, b| resources::version_priority(a.resource.version, b.resource.version));
    if versions.is_empty() {
        return None;
    }
    Some(Definition {
        name: crd["metadata"]["name"].as_str().unwrap_or("").to_string(),
        group,
        plural: names.plural.clone(),
        kind: names.kind.clone(),
        list_kind: names.list_kind.clone(),
        storage,
        versions,
        terminating: crd["metadata"]["deletionTimestamp"].is_string(),
    })
}

/// Replace the registry with the served forms of `crds` (every stored definition).
fn install(crds: &[Value]) {
    let verdicts = accept(crds);
    let defs: Vec<Arc<Definition>> = crds
        .iter()
        .zip(&verdicts)
        .filter_map(|(crd, v)| v.as_ref().ok().and_then(|names| served(crd, names)))
        .map(Arc::new)
        .collect();
    let mut guard = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    let same = guard.defs.len() == defs.len()
        && guard.defs.iter().zip(&defs).all(|(a, b)| format!("{a:?}") == format!("{b:?}"));
    if same {
        return;
    }
    let generation = guard.generation + 1;
    *guard = Arc::new(Registry { defs, generation });
}

async fn list_crds(store: &dyn Store) -> Result<(Vec<(String, Value, u64)>, u64), strata_store::Error> {
    let page = store.list(PREFIX, None, 0).await?;
    let mut out = Vec::new();
    for kv in page.items {
        match serde_json::from_slice::<Value>(&kv.value) {
            Ok(v) => out.push((kv.key, v, kv.mod_revision)),
            Err(e) => tracing::warn!(key = %kv.key, error = %e, "skipping a stored CustomResourceDefinition that is not JSON"),
        }
    }
    Ok((out, page.revision))
}

/// Rebuild the registry from the store (after this server wrote a definition, so that the
/// next request already sees it).
pub async fn refresh(store: &dyn Store) {
    match list_crds(store).await {
        Ok((crds, _)) => install(&crds.into_iter().map(|(_, v, _)| v).collect::<Vec<_>>()),
        Err(e) => tracing::warn!(error = %e, "listing CustomResourceDefinitions"),
    }
}

/// The controller: keeps the registry current and each definition's status (NamesAccepted,
/// Established, Terminating, acceptedNames, storedVersions), and removes a deleted
/// definition's objects before letting it go.
pub async fn run(store: Arc<dyn Store>) {
    loop {
        let rev = match reconcile(store.as_ref()).await {
            Ok(rev) => rev,
            Err(e) => {
                tracing::warn!(error = %e, "reconciling CustomResourceDefinitions");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut stream = match store.watch(PREFIX, rev).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "watching CustomResourceDefinitions");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            // A burst of events is reconciled once.
            match stream.next().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "CustomResourceDefinition watch ended; relisting");
                    break;
                }
                None => break,
            }
            while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(20), stream.next()).await {
                if ev.is_err() {
                    break;
                }
            }
            if let Err(e) = reconcile(store.as_ref()).await {
                tracing::warn!(error = %e, "reconciling CustomResourceDefinitions");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn condition(ty: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({ "type": ty, "status": if status { "True" } else { "False" }, "reason": reason, "message": message, "lastTransitionTime": crate::object::now() })
}

/// Set a condition, keeping its transition time when its status does not change.
fn set_condition(status: &mut Value, mut c: Value) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(list) = status["conditions"].as_array_mut() else { return };
    match list.iter_mut().find(|x| x["type"] == c["type"]) {
        Some(old) => {
            if old["status"] == c["status"] {
                c["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = c;
        }
        None => list.push(c),
    }
}

/// One pass: registry, statuses, deletions. Returns the revision listed at.
async fn reconcile(store: &dyn Store) -> Result<u64, strata_store::Error> {
    let (crds, rev) = list_crds(store).await?;
    let objects: Vec<Value> = crds.iter().map(|(_, v, _)| v.clone()).collect();
    install(&objects);
    let verdicts = accept(&objects);
    for ((key, crd, mod_rev), verdict) in crds.iter().zip(verdicts) {
        let mut new = crd.clone();
        let status = &mut new["status"];
        if !status.is_object() {
            *status = json!({});
        }
        match &verdict {
            Ok(names) => {
                set_condition(status, condition("NamesAccepted", true, "NoConflicts", "no conflicts found"));
                set_condition(status, condition("Established", true, "InitialNamesAccepted", "the initial names have been accepted"));
                status["acceptedNames"] = names.to_json();
            }
            Err((reason, message)) => {
                set_condition(status, condition("NamesAccepted", false, reason, message));
                let established = status["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
                if !established {
                    set_condition(status, condition("Established", false, "NotAccepted", "not all names are accepted"));
                }
                if status["acceptedNames"].is_null() {
                    status["acceptedNames"] = json!({ "plural": "", "kind": "" });
                }
            }
        }
        let mut stored = strings(&status["storedVersions"]);
        if let Some(v) = crd["spec"]["versions"].as_array().and_then(|vs| vs.iter().find(|v| v["storage"] == true)).and_then(|v| v["name"].as_str()) {
            if !stored.iter().any(|s| s == v) {
                stored.push(v.to_string());
            }
        }
        status["storedVersions"] = json!(stored);
        let deleting = crd["metadata"]["deletionTimestamp"].is_string();
        if deleting {
            set_condition(status, condition("Terminating", true, "InstanceDeletionInProgress", "CustomResource deletion is in progress"));
        }
        if new != *crd {
            match store.update(key, crate::object::for_storage(&new), *mod_rev).await {
                Ok(_) => {}
                Err(strata_store::Error::Conflict { .. } | strata_store::Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
            // The finalizer is removed in the pass this write triggers.
            continue;
        }
        if deleting && has_finalizer(crd, CLEANUP_FINALIZER) {
            finish_deletion(store, key, crd, *mod_rev).await?;
        }
    }
    Ok(rev)
}

fn has_finalizer(obj: &Value, f: &str) -> bool {
    obj["metadata"]["finalizers"].as_array().is_some_and(|a| a.iter().any(|x| x == f))
}

/// Delete every object of a deleted definition, then drop its cleanup finalizer (the
/// definition goes once no finalizer is left).
async fn finish_deletion(store: &dyn Store, key: &str, crd: &Value, mod_rev: u64) -> Result<(), strata_store::Error> {
    let group = crd["spec"]["group"].as_str().unwrap_or("");
    let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or("");
    if group.is_empty() || plural.is_empty() {
        return Ok(());
    }
    let prefix = format!("/registry/{group}/{plural}/");
    loop {
        let page = store.list(&prefix, None, 500).await?;
        for kv in &page.items {
            match store.delete(&kv.key, 0).await {
                Ok(_) | Err(strata_store::Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if !page.more {
            break;
        }
    }
    let mut new = crd.clone();
    if let Some(f) = new["metadata"]["finalizers"].as_array_mut() {
        f.retain(|x| x != CLEANUP_FINALIZER);
    }
    let result = if new["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty()) {
        store.delete(key, mod_rev).await.map(|_| ())
    } else {
        store.update(key, crate::object::for_storage(&new), mod_rev).await.map(|_| ())
    };
    match result {
        Ok(()) | Err(strata_store::Error::Conflict { .. } | strata_store::Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Prepare a delete of a definition (upstream's CRD storage): it gets the cleanup finalizer
/// and the Terminating condition, and stays until the controller has removed its objects.
pub fn begin_deletion(crd: &mut Value) {
    if !has_finalizer(crd, CLEANUP_FINALIZER) {
        let f = &mut crd["metadata"]["finalizers"];
        if !f.is_array() {
            *f = json!([]);
        }
        if let Some(a) = f.as_array_mut() {
            a.push(json!(CLEANUP_FINALIZER));
        }
    }
    if !crd["status"].is_object() {
        crd["status"] = json!({});
    }
    set_condition(&mut crd["status"], condition("Terminating", true, "InstanceDeletionInProgress", "CustomResource deletion is in progress"));
}

/// The object as stored: a custom object's `apiVersion` becomes its storage version's.
pub fn storage_form(obj: &mut Value) {
    let Some((group, _)) = obj["apiVersion"].as_str().and_then(|v| v.split_once('/')) else { return };
    let kind = obj["kind"].as_str().unwrap_or("");
    if kind.is_empty() || !group.contains('.') {
        return;
    }
    let reg = registry();
    let Some(d) = reg.defs.iter().find(|d| d.group == group && d.kind == kind) else { return };
    if !d.storage.is_empty() {
        obj["apiVersion"] = json!(format!("{}/{}", d.group, d.storage));
    }
}

/// A stored custom object as served at `r`'s version (`None` conversion: only `apiVersion`
/// changes), pruned and defaulted by that version's schema as upstream does on every read.
pub fn served_form(r: &Resource, obj: &mut Value) {
    if r.custom && obj.is_object() {
        obj["apiVersion"] = json!(r.api_version());
        if let Some(d) = definition(r) {
            if let Some(v) = d.version(r.version) {
                crate::structural::prune_and_default(&v.schema, obj);
            }
        }
    }
}

/// A custom kind's scale paths (`specReplicasPath`, `statusReplicasPath`, `labelSelectorPath`)
/// as field names, if its version has the scale subresource.
pub fn scale_paths(r: &Resource) -> Option<(Vec<String>, Vec<String>, Option<Vec<String>>)> {
    let d = definition(r)?;
    let scale = d.version(r.version)?.scale.clone()?;
    let fields = |k: &str| scale[k].as_str().and_then(crate::jsonpath::simple_fields);
    Some((fields("specReplicasPath")?, fields("statusReplicasPath")?, fields("labelSelectorPath")))
}

/// Set the value at a field path, creating the objects on the way.
pub fn set_path(obj: &mut Value, path: &[String], value: Value) {
    let mut at = obj;
    for f in path {
        if !at.is_object() {
            *at = json!({});
        }
        at = &mut at[f.as_str()];
    }
    *at = value;
}

/// Remove the fields `r`'s schema does not declare; returns their paths.
pub fn prune(r: &Resource, obj: &mut Value) -> Vec<String> {
    let Some(d) = definition(r) else { return Vec::new() };
    let Some(v) = d.version(r.version) else { return Vec::new() };
    let mut removed = Vec::new();
    if v.schema.is_object() {
        crate::structural::prune(&v.schema, obj, true, "", &mut removed);
    }
    removed
}

/// Apply `r`'s schema defaults to a custom object and validate it against the schema. When the
/// schema refuses it, its CEL rules are evaluated too (without an old object), so that one
/// response lists every violation; or, after a failure that leaves the rules nothing sound to
/// read (a wrong type, a missing required field, ...), upstream's notice that they were not.
/// An object the schema accepts has its rules evaluated by [`validate_rules`] (create and
/// update, with the old object).
pub fn default_and_validate(r: &Resource, obj: &mut Value, causes: &mut Vec<Cause>) {
    let Some(d) = definition(r) else { return };
    let Some(v) = d.version(r.version) else { return };
    if v.schema.is_object() {
        crate::structural::default(&v.schema, obj);
        let found = crate::structural::validate_object(&v.schema, obj);
        if !found.is_empty() && crate::celrules::has_rules(&v.schema) {
            let blocking = found.iter().any(|c| matches!(c.reason, "FieldValueNotSupported" | "FieldValueRequired" | "FieldValueTooLong" | "FieldValueTooMany" | "FieldValueTypeInvalid"));
            causes.extend(found);
            if blocking {
                causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: "<nil>".into(),
                    message: "Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
                });
            } else {
                crate::celrules::validate(&v.schema, obj, None, causes);
            }
        } else {
            causes.extend(found);
        }
    }
}

/// Evaluate `r`'s CEL validation rules (`x-kubernetes-validations`) over a custom object the
/// schema accepted; `old` is the stored object on an update (for transition rules).
pub fn validate_rules(r: &Resource, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let Some(d) = definition(r) else { return };
    let Some(v) = d.version(r.version) else { return };
    crate::celrules::validate(&v.schema, obj, old, causes);
}

// ---- validation of definitions ----

fn required(field: &str) -> Cause {
    Cause { reason: "FieldValueRequired", field: field.into(), message: "Required value".into() }
}

fn required_why(field: &str, why: &str) -> Cause {
    Cause { reason: "FieldValueRequired", field: field.into(), message: format!("Required value: {why}") }
}

fn invalid(field: &str, value: &Value, why: &str) -> Cause {
    Cause { reason: "FieldValueInvalid", field: field.into(), message: format!("Invalid value: {}: {why}", short(value)) }
}

fn forbidden(field: &str, why: &str) -> Cause {
    Cause::forbidden(field, why)
}

fn not_supported(field: &str, value: &Value, supported: &[&str]) -> Cause {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    Cause { reason: "FieldValueNotSupported", field: field.into(), message: format!("Unsupported value: {}: supported values: {}", short(value), list.join(", ")) }
}

/// A value as upstream's field errors print it: strings quoted, objects and lists elided.
fn short(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn dns1035(s: &str) -> Vec<String> {
    crate::object::dns1035_label_errors(s)
}

/// Upstream's defaults for a v1 definition (`SetDefaults_CustomResourceDefinition`).
pub fn default(crd: &mut Value) {
    let names = Names::of(crd);
    if let Some(n) = crd.get_mut("spec").and_then(|s| s.get_mut("names")).filter(|n| n.is_object() && !names.kind.is_empty()) {
        if n["singular"].as_str().is_none_or(str::is_empty) {
            n["singular"] = json!(names.singular);
        }
        if n["listKind"].as_str().is_none_or(str::is_empty) {
            n["listKind"] = json!(names.list_kind);
        }
    }
    if let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) {
        if spec.get("conversion").is_none_or(Value::is_null) {
            spec.insert("conversion".into(), json!({ "strategy": "None" }));
        }
    }
    if let Some(vs) = crd.get_mut("spec").and_then(|s| s.get_mut("versions")).and_then(Value::as_array_mut) {
        for v in vs {
            if let Some(cols) = v.get_mut("additionalPrinterColumns").and_then(Value::as_array_mut) {
                for c in cols {
                    if c.is_object() && c["priority"].is_null() {
                        c["priority"] = json!(0);
                    }
                }
            }
        }
    }
}

/// Validate a definition (defaults applied), with upstream's messages.
pub fn validate(crd: &Value, causes: &mut Vec<Cause>) {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    if group.is_empty() {
        causes.push(required("spec.group"));
    } else if let errs @ [_, ..] = crate::object::dns_subdomain_errors(group).as_slice() {
        causes.push(invalid("spec.group", &spec["group"], &errs.join(",")));
    } else if !group.contains('.') {
        causes.push(invalid("spec.group", &spec["group"], "should be a domain with at least one dot"));
    }
    let names = Names::of(crd);
    let name = crd["metadata"]["name"].as_str().unwrap_or("");
    if !names.plural.is_empty() && !group.is_empty() && name != format!("{}.{group}", names.plural) {
        causes.push(invalid("metadata.name", &json!(name), "must be spec.names.plural+\".\"+spec.group"));
    }
    // Groups of the Kubernetes project need an approval annotation (upstream's rule).
    if group == "k8s.io" || group.ends_with(".k8s.io") || group == "kubernetes.io" || group.ends_with(".kubernetes.io") {
        if crd["metadata"]["annotations"]["api-approved.kubernetes.io"].as_str().is_none_or(str::is_empty) {
            causes.push(required_why(
                "metadata.annotations[api-approved.kubernetes.io]",
                "protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111",
            ));
        }
    }
    match spec["scope"].as_str() {
        None | Some("") => causes.push(required("spec.scope")),
        Some("Cluster" | "Namespaced") => {}
        Some(_) => causes.push(not_supported("spec.scope", &spec["scope"], &["Cluster", "Namespaced"])),
    }
    if spec["preserveUnknownFields"] == true {
        causes.push(invalid("spec.preserveUnknownFields", &json!(true), "cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead"));
    }
    match spec["conversion"]["strategy"].as_str() {
        Some("None") | None => {}
        Some("Webhook") => causes.push(forbidden("spec.conversion.strategy", "conversion webhooks are not supported by this server")),
        Some(_) => causes.push(not_supported("spec.conversion.strategy", &spec["conversion"]["strategy"], &["None", "Webhook"])),
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(required_why("spec.versions", "must have exactly one version marked as storage version"));
    }
    // Identical schemas in every version are one schema to upstream (its internal form keeps
    // them in `spec.validation`), and are reported there.
    let shared_schema = versions.len() > 1 && versions.iter().all(|v| v["schema"] == versions[0]["schema"]) && !versions[0]["schema"]["openAPIV3Schema"].is_null();
    if shared_schema || versions.len() == 1 {
        schema_causes(&versions[0]["schema"]["openAPIV3Schema"], "spec.validation.openAPIV3Schema", causes);
    }
    // Selectable fields, likewise reported once when every version has the same.
    let shared_selectable = versions.len() == 1 || (versions.len() > 1 && versions.iter().all(|v| v["selectableFields"] == versions[0]["selectableFields"]));
    if shared_selectable && !versions.is_empty() {
        selectable_causes(&versions[0], "spec.selectableFields", causes);
    }
    let mut seen = HashSet::new();
    let mut unique = true;
    let mut storage = 0;
    let mut any_served = false;
    for (i, v) in versions.iter().enumerate() {
        let at = format!("spec.versions[{i}]");
        let vname = v["name"].as_str().unwrap_or("");
        if !seen.insert(vname.to_string()) {
            unique = false;
        }
        if let errs @ [_, ..] = dns1035(vname).as_slice() {
            causes.push(invalid(&format!("{at}.name"), &v["name"], &errs.join(",")));
        }
        if v["storage"] == true {
            storage += 1;
        }
        if v["served"] == true {
            any_served = true;
        }
        version_causes(v, &at, !(shared_schema || versions.len() == 1), causes);
        if !shared_selectable {
            selectable_causes(v, &format!("{at}.selectableFields"), causes);
        }
    }
    if !versions.is_empty() {
        if !unique {
            causes.push(invalid("spec.versions", &spec["versions"], "must contain unique version names"));
        }
        if storage != 1 {
            causes.push(invalid("spec.versions", &spec["versions"], "must have exactly one version marked as storage version"));
        }
        if !any_served {
            causes.push(invalid("spec.versions", &spec["versions"], "must have at least one served version"));
        }
    }
    for (field, value) in [("plural", &names.plural), ("kind", &names.kind)] {
        if value.is_empty() {
            causes.push(required(&format!("spec.names.{field}")));
        }
    }
    let n = &spec["names"];
    if let errs @ [_, ..] = dns1035(&names.plural).as_slice() {
        if !names.plural.is_empty() {
            causes.push(invalid("spec.names.plural", &n["plural"], &errs.join(",")));
        }
    }
    if let errs @ [_, ..] = dns1035(&names.singular).as_slice() {
        if !names.singular.is_empty() {
            causes.push(invalid("spec.names.singular", &json!(names.singular), &errs.join(",")));
        }
    }
    for (field, value) in [("kind", &names.kind), ("listKind", &names.list_kind)] {
        if let errs @ [_, ..] = dns1035(&value.to_lowercase()).as_slice() {
            if !names.kind.is_empty() {
                causes.push(invalid(&format!("spec.names.{field}"), &json!(value), &format!("may have mixed case, but should otherwise match: {}", errs.join(","))));
            }
        }
    }
    if !names.kind.is_empty() && names.kind == names.list_kind {
        causes.push(invalid("spec.names.listKind", &json!(names.list_kind), "kind and listKind may not be the same"));
    }
    for (field, list) in [("shortNames", &names.short_names), ("categories", &names.categories)] {
        for (i, s) in list.iter().enumerate() {
            if let errs @ [_, ..] = dns1035(s).as_slice() {
                causes.push(invalid(&format!("spec.names.{field}[{i}]"), &json!(s), &errs.join(",")));
            }
        }
    }
    // A built-in kind of the same group keeps its names: such a definition would never be
    // served (upstream serves the built-in and leaves the definition unestablished).
    for r in resources::RESOURCES.iter().filter(|r| r.group == group) {
        if r.plural == names.plural {
            causes.push(invalid("spec.names.plural", &json!(names.plural), &format!("{:?} is already in use by a built-in resource of group {group:?}", names.plural)));
        } else if r.kind == names.kind {
            causes.push(invalid("spec.names.kind", &json!(names.kind), &format!("{:?} is already in use by a built-in resource of group {group:?}", names.kind)));
        }
    }
}

/// A version's schema (at `sp`): structural, its metadata as upstream allows, and its CEL rules
/// (compiled only when the schema itself is right, as upstream).
fn schema_causes(schema: &Value, sp: &str, causes: &mut Vec<Cause>) {
    if schema.is_null() {
        causes.push(required_why(sp, "schemas are required"));
        return;
    }
    let before = causes.len();
    structural(schema, sp, Level::Root, causes);
    if schema["type"].as_str().is_some_and(|t| t != "object") {
        causes.push(invalid(&format!("{sp}.type"), &schema["type"], "must be object at the root"));
    }
    if let Some(meta) = schema["properties"].get("metadata") {
        let allowed = meta.as_object().is_some_and(|m| {
            m.iter().all(|(k, x)| match k.as_str() {
                "type" => x == "object",
                "properties" => x.as_object().is_some_and(|p| p.iter().all(|(f, s)| matches!(f.as_str(), "name" | "generateName") && s.as_object().is_some_and(|s| s.keys().all(|k| k == "type") && s.get("type").is_some_and(|t| t == "string")))),
                _ => false,
            })
        });
        if !allowed {
            causes.push(forbidden(&format!("{sp}.properties[metadata]"), "must not specify anything other than name and generateName, but metadata is implicitly specified"));
        }
    }
    if causes.len() == before {
        crate::celrules::check_schema(schema, sp, causes);
    }
}

/// Most selectable fields a version may have (upstream's `MaxSelectableFields`).
const MAX_SELECTABLE: usize = 8;

/// A version's `selectableFields` (at `at`) as upstream's `ValidateCustomResourceSelectableFields`:
/// each a path without array notation to a string, integer or boolean of the schema, outside
/// metadata, none twice, at most [`MAX_SELECTABLE`].
fn selectable_causes(v: &Value, at: &str, causes: &mut Vec<Cause>) {
    let Some(fields) = v["selectableFields"].as_array() else { return };
    let schema = &v["schema"]["openAPIV3Schema"];
    let mut seen: HashSet<String> = HashSet::new();
    for (i, f) in fields.iter().enumerate() {
        let fp = format!("{at}[{i}].jsonPath");
        let Some(path) = f["jsonPath"].as_str().filter(|p| !p.is_empty()) else {
            causes.push(required(&fp));
            continue;
        };
        let shown = json!(path);
        match crate::celrules::resolve(path, schema, false) {
            Err(e) => causes.push(invalid(&fp, &shown, &format!("is an invalid path: {e}"))),
            Ok((resolved, leaf)) => {
                if resolved == "metadata" || resolved.starts_with("metadata.") {
                    causes.push(invalid(&fp, &shown, "must not point to fields in metadata"));
                }
                if !matches!(leaf["type"].as_str(), Some("string" | "integer" | "boolean")) {
                    causes.push(invalid(&fp, &shown, "must point to a field of type string, boolean or integer. Enum string fields and strings with formats are allowed."));
                }
                if !seen.insert(resolved) {
                    causes.push(Cause { reason: "FieldValueDuplicate", field: fp.clone(), message: format!("Duplicate value: {shown}") });
                }
            }
        }
    }
    if fields.len() > MAX_SELECTABLE {
        causes.push(Cause { reason: "FieldValueTooMany", field: at.to_string(), message: format!("Too many: {}: must have at most {MAX_SELECTABLE} items", fields.len()) });
    }
}

const TYPES: &[&str] = &["array", "boolean", "integer", "number", "object", "string"];
const COLUMN_TYPES: &[&str] = &["boolean", "date", "integer", "number", "string"];
const COLUMN_FORMATS: &[&str] = &["int32", "int64", "float", "double", "byte", "date", "date-time", "password"];

fn version_causes(v: &Value, at: &str, own_schema: bool, causes: &mut Vec<Cause>) {
    if own_schema {
        schema_causes(&v["schema"]["openAPIV3Schema"], &format!("{at}.schema.openAPIV3Schema"), causes);
    }
    if let Some(cols) = v["additionalPrinterColumns"].as_array() {
        for (i, c) in cols.iter().enumerate() {
            let cp = format!("{at}.additionalPrinterColumns[{i}]");
            if c["name"].as_str().is_none_or(str::is_empty) {
                causes.push(required(&format!("{cp}.name")));
            }
            match c["type"].as_str() {
                None | Some("") => causes.push(required(&format!("{cp}.type"))),
                Some(t) if COLUMN_TYPES.contains(&t) => {}
                Some(_) => causes.push(not_supported(&format!("{cp}.type"), &c["type"], COLUMN_TYPES)),
            }
            if let Some(f) = c["format"].as_str().filter(|f| !f.is_empty()) {
                if !COLUMN_FORMATS.contains(&f) {
                    causes.push(not_supported(&format!("{cp}.format"), &c["format"], COLUMN_FORMATS));
                }
            }
            match c["jsonPath"].as_str() {
                None | Some("") => causes.push(required(&format!("{cp}.jsonPath"))),
                Some(p) => {
                    if let Err(why) = crate::jsonpath::parse(p) {
                        causes.push(invalid(&format!("{cp}.jsonPath"), &c["jsonPath"], &why));
                    }
                }
            }
        }
    }
    let scale = &v["subresources"]["scale"];
    if scale.is_object() {
        let sc = format!("{at}.subresources.scale");
        let simple = |p: &str, under: &[&str]| under.iter().any(|u| p.starts_with(&format!(".{u}.")) && p.len() > u.len() + 2) && crate::jsonpath::simple_fields(p).is_some();
        match scale["specReplicasPath"].as_str() {
            None | Some("") => causes.push(required(&format!("{sc}.specReplicasPath"))),
            Some(p) if !simple(p, &["spec"]) => causes.push(invalid(&format!("{sc}.specReplicasPath"), &scale["specReplicasPath"], "should be a json path under .spec")),
            _ => {}
        }
        match scale["statusReplicasPath"].as_str() {
            None | Some("") => causes.push(required(&format!("{sc}.statusReplicasPath"))),
            Some(p) if !simple(p, &["status"]) => causes.push(invalid(&format!("{sc}.statusReplicasPath"), &scale["statusReplicasPath"], "should be a json path under .status")),
            _ => {}
        }
        if let Some(p) = scale["labelSelectorPath"].as_str().filter(|p| !p.is_empty()) {
            if !simple(p, &["spec", "status"]) {
                causes.push(invalid(&format!("{sc}.labelSelectorPath"), &scale["labelSelectorPath"], "should be a json path under either .spec or .status"));
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Root,
    Items,
    Field,
}

/// Upstream's structural-schema rules (apiextensions' `validateStructuralInvariants` and
/// `validateStructuralCompleteness`, the parts that matter for serving): a type everywhere it
/// is needed, items for arrays, no `$ref`, the extensions used consistently (CEL rules are
/// checked by [`crate::celrules::check_schema`]).
fn structural(s: &Value, path: &str, level: Level, causes: &mut Vec<Cause>) {
    let Some(m) = s.as_object() else {
        causes.push(invalid(path, s, "must be a schema object"));
        return;
    };
    let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
    let int_or_string = m.get("x-kubernetes-int-or-string") == Some(&json!(true));
    let embedded = m.get("x-kubernetes-embedded-resource") == Some(&json!(true));
    let preserve = m.get("x-kubernetes-preserve-unknown-fields");
    if let Some(p) = preserve {
        if p != &json!(true) {
            causes.push(invalid(&format!("{path}.x-kubernetes-preserve-unknown-fields"), p, "must be true or undefined"));
        }
    }
    if !ty.is_empty() && !TYPES.contains(&ty) {
        causes.push(not_supported(&format!("{path}.type"), &json!(ty), TYPES));
    }
    if embedded && ty != "object" {
        if ty.is_empty() {
            causes.push(required_why(&format!("{path}.type"), "must be object if x-kubernetes-embedded-resource is true"));
        } else {
            causes.push(invalid(&format!("{path}.type"), &json!(ty), "must be object if x-kubernetes-embedded-resource is true"));
        }
    } else if ty.is_empty() && !int_or_string {
        let why = match level {
            Level::Root => "must not be empty at the root",
            Level::Items => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        causes.push(required_why(&format!("{path}.type"), why));
    }
    if int_or_string && !ty.is_empty() {
        causes.push(invalid(&format!("{path}.type"), &json!(ty), "must be empty if x-kubernetes-int-or-string is true"));
    }
    if embedded && preserve.is_none() && m.get("properties").and_then(Value::as_object).is_none_or(|p| p.is_empty()) {
        causes.push(required_why(&format!("{path}.properties"), "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields"));
    }
    if ty == "array" && m.get("items").is_none() {
        causes.push(required_why(&format!("{path}.items"), "must be specified"));
    }
    for (k, why) in [
        ("$ref", "$ref is not supported"),
        ("id", "id is not supported"),
        ("additionalItems", "additionalItems is not supported"),
        ("patternProperties", "patternProperties is not supported"),
        ("definitions", "definitions is not supported"),
        ("dependencies", "dependencies is not supported"),
    ] {
        if m.contains_key(k) {
            causes.push(forbidden(&format!("{path}.{k}"), why));
        }
    }
    if m.get("uniqueItems") == Some(&json!(true)) {
        causes.push(forbidden(&format!("{path}.uniqueItems"), "uniqueItems cannot be set to true since the runtime complexity becomes quadratic"));
    }
    if let (Some(props), Some(ap)) = (m.get("properties").and_then(Value::as_object), m.get("additionalProperties")) {
        if !props.is_empty() && (ap == &json!(false) || ap.is_object()) {
            causes.push(forbidden(&format!("{path}.additionalProperties"), "additionalProperties and properties are mutual exclusive"));
        }
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            structural(p, &format!("{path}.properties[{k}]"), Level::Field, causes);
        }
    }
    if let Some(ap) = m.get("additionalProperties").filter(|a| a.is_object()) {
        structural(ap, &format!("{path}.additionalProperties"), Level::Field, causes);
    }
    match m.get("items") {
        Some(Value::Array(_)) => causes.push(forbidden(&format!("{path}.items"), "items must be a schema object and not an array")),
        Some(items) => structural(items, &format!("{path}.items"), Level::Items, causes),
        None => {}
    }
    // Logical junctors may only carry value validations (upstream: no types or structure in
    // them); strata does not evaluate them, so only their structure is refused.
    // Upstream's one exception: an int-or-string node may say so with
    // `anyOf: [{type: integer}, {type: string}]` (isIntOrStringAnyOfPattern).
    let int_or_string_any_of = m.get("x-kubernetes-int-or-string") == Some(&json!(true))
        && m.get("anyOf") == Some(&json!([{ "type": "integer" }, { "type": "string" }]));
    for j in ["allOf", "anyOf", "oneOf"] {
        if j == "anyOf" && int_or_string_any_of {
            continue;
        }
        if let Some(list) = m.get(j).and_then(Value::as_array) {
            for (i, x) in list.iter().enumerate() {
                junctor(x, &format!("{path}.{j}[{i}]"), causes);
            }
        }
    }
    if let Some(x) = m.get("not") {
        junctor(x, &format!("{path}.not"), causes);
    }
}

fn junctor(s: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(m) = s.as_object() else { return };
    for k in ["type", "additionalProperties", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string", "default", "nullable"] {
        if m.contains_key(k) {
            causes.push(forbidden(&format!("{path}.{k}"), "must be empty to be structural"));
        }
    }
}

/// What an update of a definition may not change (upstream's `ValidateCustomResourceDefinitionUpdate`).
pub fn validate_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let immutable = |field: &str, a: &Value, b: &Value, causes: &mut Vec<Cause>| {
        if a != b {
            causes.push(invalid(field, a, "field is immutable"));
        }
    };
    immutable("spec.group", &new["spec"]["group"], &old["spec"]["group"], causes);
    immutable("spec.names.plural", &new["spec"]["names"]["plural"], &old["spec"]["names"]["plural"], causes);
    let established = old["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
    if established {
        immutable("spec.scope", &new["spec"]["scope"], &old["spec"]["scope"], causes);
        immutable("spec.names.kind", &new["spec"]["names"]["kind"], &old["spec"]["names"]["kind"], causes);
    }
    // Every stored version must stay listed (upstream: status.storedVersions).
    let versions: HashSet<String> = new["spec"]["versions"].as_array().into_iter().flatten().filter_map(|v| v["name"].as_str().map(str::to_string)).collect();
    for (i, s) in strings(&new["status"]["storedVersions"]).iter().enumerate() {
        if !versions.contains(s) {
            causes.push(invalid(&format!("status.storedVersions[{i}]"), &json!(s), "must appear in spec.versions"));
        }
    }
}

/// The media types a patch of a custom object may have (no strategic merge: custom kinds have
/// no patch strategies, as upstream).
pub const PATCH_TYPES_MESSAGE: &str = "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

/// Is a group served only by definitions (so its discovery may change at any time)?
pub fn is_custom_group(group: &str) -> bool {
    registry().defs.iter().any(|d| d.group == group)
}

/// The per-group map of served definitions (for tests and the OpenAPI index).
pub fn definitions() -> Vec<Arc<Definition>> {
    registry().defs.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": { "name": "widgets.example.com", "creationTimestamp": "2026-01-01T00:00:00Z" },
            "spec": {
                "group": "example.com", "scope": "Namespaced",
                "names": { "plural": "widgets", "kind": "Widget", "shortNames": ["wd"] },
                "versions": [
                    { "name": "v1beta1", "served": true, "storage": false, "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } },
                    { "name": "v1", "served": true, "storage": true, "schema": { "openAPIV3Schema": { "type": "object", "properties": {
                        "spec": { "type": "object", "properties": { "replicas": { "type": "integer" } } } } } },
                      "subresources": { "status": {}, "scale": { "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas" } } },
                ],
            },
        })
    }

    fn causes_of(c: &Value) -> Vec<String> {
        let mut c = c.clone();
        default(&mut c);
        let mut out = Vec::new();
        validate(&c, &mut out);
        out.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn definitions_are_validated_with_upstreams_messages() {
        assert_eq!(causes_of(&crd()), Vec::<String>::new());
        let mut c = crd();
        c["spec"]["group"] = json!("example");
        c["metadata"]["name"] = json!("widgets.example");
        assert_eq!(causes_of(&c), ["spec.group: Invalid value: \"example\": should be a domain with at least one dot"]);
        let mut c = crd();
        c["spec"]["versions"][0]["storage"] = json!(true);
        assert!(causes_of(&c).iter().any(|m| m.starts_with("spec.versions: Invalid value") && m.ends_with("must have exactly one version marked as storage version")));
        let mut c = crd();
        c["metadata"]["name"] = json!("gadgets.example.com");
        assert_eq!(causes_of(&c), ["metadata.name: Invalid value: \"gadgets.example.com\": must be spec.names.plural+\".\"+spec.group"]);
        let mut c = crd();
        c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"] = json!({ "properties": { "x": { "type": "string" } } });
        assert_eq!(causes_of(&c), ["spec.versions[1].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields"]);
        let mut c = crd();
        c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] = json!([{ "rule": "self.replicas > 0" }, { "rule": "self.replicas.bogus()" }]);
        assert_eq!(
            causes_of(&c),
            ["spec.versions[1].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[1].rule: Invalid value: apiextensions.ValidationRule{Rule:\"self.replicas.bogus()\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}: compilation failed: ERROR: <input>:1:20: undeclared reference to 'bogus' (in container '')\n | self.replicas.bogus()\n | ...................^"]
        );
        // One schema for every version is reported where upstream keeps it.
        let mut c = crd();
        c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] = json!([{ "rule": "self.replicas >" }]);
        c["spec"]["versions"][0]["schema"] = c["spec"]["versions"][1]["schema"].clone();
        assert!(causes_of(&c)[0].starts_with("spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: "), "{:?}", causes_of(&c));
        let mut c = crd();
        c["spec"]["versions"][1]["subresources"]["scale"]["specReplicasPath"] = json!(".status.replicas");
        assert_eq!(causes_of(&c), ["spec.versions[1].subresources.scale.specReplicasPath: Invalid value: \".status.replicas\": should be a json path under .spec"]);
        let mut c = crd();
        c["spec"]["group"] = json!("strata.dev");
        c["metadata"]["name"] = json!("virtualmachines.strata.dev");
        c["spec"]["names"] = json!({ "plural": "virtualmachines", "kind": "VM2" });
        assert_eq!(causes_of(&c), ["spec.names.plural: Invalid value: \"virtualmachines\": \"virtualmachines\" is already in use by a built-in resource of group \"strata.dev\""]);
        let mut c = crd();
        c["spec"]["scope"] = json!("Global");
        c["spec"]["versions"][0]["additionalPrinterColumns"] = json!([{ "name": "R", "type": "int", "jsonPath": "spec.replicas" }]);
        assert_eq!(
            causes_of(&c),
            [
                "spec.scope: Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespaced\"",
                "spec.versions[0].additionalPrinterColumns[0].type: Unsupported value: \"int\": supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\"",
                "spec.versions[0].additionalPrinterColumns[0].jsonPath: Invalid value: \"spec.replicas\": must be a simple json path starting with .",
            ]
        );
    }

    #[test]
    fn names_conflicts_go_to_the_later_definition() {
        let a = crd();
        let mut b = crd();
        b["metadata"]["name"] = json!("gizmos.example.com");
        b["metadata"]["creationTimestamp"] = json!("2026-01-02T00:00:00Z");
        b["spec"]["names"] = json!({ "plural": "gizmos", "kind": "Gizmo", "shortNames": ["wd"] });
        let v = accept(&[b, a]);
        assert!(v[1].is_ok());
        assert_eq!(v[0].as_ref().err().map(|(r, m)| (*r, m.as_str())), Some(("ShortNamesConflict", "\"wd\" is already in use")));
        // Created in the same second and first by name, a newcomer still does not take the
        // names of a definition that has them accepted.
        let mut a = crd();
        a["status"]["acceptedNames"] = json!({ "plural": "widgets", "kind": "Widget" });
        let mut c = crd();
        c["metadata"]["name"] = json!("aardvarks.example.com");
        c["spec"]["names"] = json!({ "plural": "aardvarks", "kind": "Aardvark", "shortNames": ["wd"] });
        let v = accept(&[c, a]);
        assert!(v[1].is_ok() && v[0].is_err());
    }
}
