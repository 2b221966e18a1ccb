//! The root-CA publisher (upstream's `root-ca-cert-publisher`): every active namespace has a
//! ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster's CA bundle (what the
//! ServiceAccount token volume projects next to the token); one deleted is made again, one
//! changed is put back (its other data dropped, its description annotation added if missing).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use strata_client::lean;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt};
use kube::ResourceExt;

use crate::{Clients, Context, Error};

pub const IDENTITY: &str = "root-ca-cert-publisher";
/// The ConfigMap's name in every namespace.
pub const NAME: &str = "kube-root-ca.crt";
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct State {
    maps: Store<ConfigMap>,
    root_ca: String,
}

/// Publish `root_ca` (PEM) in every namespace; without one (a manager that was given no CA)
/// there is nothing to publish and the controller idles.
pub async fn run(clients: Clients, root_ca: Option<String>) -> Result<(), Error> {
    let Some(root_ca) = root_ca else {
        tracing::warn!("no root CA bundle: the kube-root-ca.crt ConfigMaps are not published");
        std::future::pending::<()>().await;
        return Ok(());
    };
    let (maps, writer) = reflector::store::<ConfigMap>();
    let cm_stream = reflector::reflector(writer, lean::watcher(Api::<ConfigMap>::all(clients.root.clone()), crate::watch_config().fields(&format!("metadata.name={NAME}"))))
        .default_backoff()
        .touched_objects();
    let ctx = Context::new(clients.clone(), IDENTITY, State { maps, root_ca });
    Controller::new(Api::<Namespace>::all(clients.root.clone()), crate::watch_config())
        .watches_stream(cm_stream, |cm: ConfigMap| cm.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)))
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_failures(IDENTITY))
        .await;
    Ok(())
}

/// What the namespace's ConfigMap must become: `None` when it is right as it is.
fn desired(existing: Option<&ConfigMap>, root_ca: &str) -> Option<ConfigMap> {
    let data = BTreeMap::from([("ca.crt".to_string(), root_ca.to_string())]);
    match existing {
        None => Some(ConfigMap {
            metadata: ObjectMeta { name: Some(NAME.into()), annotations: Some(BTreeMap::from([(DESCRIPTION_ANNOTATION.to_string(), DESCRIPTION.to_string())])), ..Default::default() },
            data: Some(data),
            ..Default::default()
        }),
        Some(cm) => {
            let described = cm.metadata.annotations.as_ref().and_then(|a| a.get(DESCRIPTION_ANNOTATION)).is_some_and(|d| !d.is_empty());
            if cm.data.as_ref() == Some(&data) && cm.binary_data.as_ref().is_none_or(|b| b.is_empty()) && described {
                return None;
            }
            let mut cm = cm.clone();
            cm.data = Some(data);
            cm.binary_data = None;
            cm.metadata.annotations.get_or_insert_with(BTreeMap::new).entry(DESCRIPTION_ANNOTATION.to_string()).or_insert_with(|| DESCRIPTION.to_string());
            cm.metadata.managed_fields = None;
            Some(cm)
        }
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    let name = ns.name_any();
    let terminating = ns.metadata.deletion_timestamp.is_some() || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    if !crate::synced(&ctx.state.maps) {
        return Ok(crate::not_synced());
    }
    let existing = ctx.state.maps.get(&ObjectRef::new(NAME).within(&name));
    let Some(want) = desired(existing.as_deref(), &ctx.state.root_ca) else { return Ok(Action::await_change()) };
    let api = Api::<ConfigMap>::namespaced(ctx.writer.clone(), &name);
    let result = if existing.is_some() { api.replace(NAME, &PostParams::default(), &want).await.map(|_| ()) } else { api.create(&PostParams::default(), &want).await.map(|_| ()) };
    match result {
        Ok(()) => tracing::debug!(namespace = %name, "published kube-root-ca.crt"),
        // Our cache was behind (the next event brings the current object), the namespace went
        // or began terminating meanwhile.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 || (e.code == 403 && e.message.contains("being terminated")) => {
            tracing::debug!(namespace = %name, code = e.code, "publishing kube-root-ca.crt: {}", e.message);
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

fn error_policy(ns: Arc<Namespace>, e: &Error, _: Arc<Context<State>>) -> Action {
    tracing::warn!(namespace = %ns.name_any(), error = %e, "root CA publisher");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_when_missing_put_back_when_changed_left_when_right() {
        let made = desired(None, "PEM").expect("missing: made");
        assert_eq!(made.data.as_ref().and_then(|d| d.get("ca.crt")).map(String::as_str), Some("PEM"));
        assert_eq!(made.metadata.annotations.as_ref().and_then(|a| a.get(DESCRIPTION_ANNOTATION)).map(String::as_str), Some(DESCRIPTION));
        assert!(desired(Some(&made), "PEM").is_none(), "right as it is");
        let mut changed = made.clone();
        changed.data.get_or_insert_with(BTreeMap::new).insert("ca.crt".into(), "forged".into());
        changed.data.get_or_insert_with(BTreeMap::new).insert("extra".into(), "x".into());
        changed.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(DESCRIPTION_ANNOTATION.into(), "mine".into());
        let back = desired(Some(&changed), "PEM").expect("changed: put back");
        assert_eq!(back.data, made.data);
        assert_eq!(back.metadata.annotations.as_ref().and_then(|a| a.get(DESCRIPTION_ANNOTATION)).map(String::as_str), Some("mine"), "an existing description is kept");
        assert!(desired(Some(&made), "NEW CA").is_some(), "a new CA bundle is published");
    }
}
