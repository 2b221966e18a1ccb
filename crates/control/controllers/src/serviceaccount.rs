//! The ServiceAccount controller: every active namespace has a ServiceAccount `default`
//! (upstream's `serviceaccounts-controller`); one deleted is made again.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use strata_client::lean;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt};
use kube::ResourceExt;

use crate::{Clients, Context, Error};

pub const IDENTITY: &str = "service-account-controller";
const DEFAULT: &str = "default";

pub async fn run(clients: Clients) -> Result<(), Error> {
    let (accounts, writer) = reflector::store::<ServiceAccount>();
    let sa_stream = reflector::reflector(writer, lean::watcher(Api::<ServiceAccount>::all(clients.root.clone()), crate::watch_config().fields("metadata.name=default")))
        .default_backoff()
        .touched_objects();
    let ctx = Context::new(clients.clone(), IDENTITY, accounts);
    Controller::new(Api::<Namespace>::all(clients.root.clone()), crate::watch_config())
        .watches_stream(sa_stream, |sa: ServiceAccount| sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)))
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_failures(IDENTITY))
        .await;
    Ok(())
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context<Store<ServiceAccount>>>) -> Result<Action, Error> {
    let name = ns.name_any();
    let terminating = ns.metadata.deletion_timestamp.is_some() || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    if !crate::synced(&ctx.state) {
        return Ok(crate::not_synced());
    }
    if ctx.state.get(&ObjectRef::new(DEFAULT).within(&name)).is_some() {
        return Ok(Action::await_change());
    }
    let sa = ServiceAccount { metadata: ObjectMeta { name: Some(DEFAULT.into()), namespace: Some(name.clone()), ..Default::default() }, ..Default::default() };
    match Api::<ServiceAccount>::namespaced(ctx.writer.clone(), &name).create(&PostParams::default(), &sa).await {
        Ok(_) => tracing::debug!(namespace = %name, "created the default ServiceAccount"),
        // Already there (our cache was behind) or the namespace began terminating meanwhile.
        Err(kube::Error::Api(e)) if e.code == 409 || (e.code == 403 && e.message.contains("being terminated")) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

fn error_policy(ns: Arc<Namespace>, e: &Error, _: Arc<Context<Store<ServiceAccount>>>) -> Action {
    tracing::warn!(namespace = %ns.name_any(), error = %e, "service account controller");
    Action::requeue(Duration::from_secs(5))
}
