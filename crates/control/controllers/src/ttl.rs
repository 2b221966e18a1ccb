//! The TTL-after-finished controller (upstream's `ttlafterfinished`): a finished Job (its
//! `Complete` or `Failed` condition true) with `ttlSecondsAfterFinished` is deleted that long
//! after it finished, in the foreground (its pods first), as upstream deletes it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;

use crate::{Clients, Context, Error};

pub const IDENTITY: &str = "ttl-after-finished-controller";

pub async fn run(clients: Clients) -> Result<(), Error> {
    let ctx = Context::new(clients.clone(), IDENTITY, ());
    Controller::new(Api::<Job>::all(clients.root.clone()), watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_failures(IDENTITY))
        .await;
    Ok(())
}

fn error_policy(job: Arc<Job>, e: &Error, _: Arc<Context<()>>) -> Action {
    tracing::warn!(job = %crate::key(job.as_ref()), error = %e, "ttl-after-finished controller");
    Action::requeue(Duration::from_secs(5))
}

/// When the Job finished: its completionTime, else the terminal condition's transition time.
fn finished_at(job: &Job) -> Option<chrono::DateTime<chrono::Utc>> {
    let st = job.status.as_ref()?;
    let cond = st.conditions.iter().flatten().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    st.completion_time.as_ref().map(|t| t.0).or_else(|| cond.last_transition_time.as_ref().map(|t| t.0))
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context<()>>) -> Result<Action, Error> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else { return Ok(Action::await_change()) };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(done) = finished_at(&job) else { return Ok(Action::await_change()) };
    let expires = done + chrono::Duration::seconds(i64::from(ttl));
    let now = chrono::Utc::now();
    if now < expires {
        return Ok(Action::requeue((expires - now).to_std().unwrap_or(Duration::from_secs(1)) + Duration::from_millis(50)));
    }
    let api: Api<Job> = Api::namespaced(ctx.writer.clone(), &job.namespace().unwrap_or_default());
    let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Foreground), preconditions: Some(Preconditions { uid: job.metadata.uid.clone(), resource_version: None }), ..Default::default() };
    match api.delete(&job.name_any(), &dp).await {
        Ok(_) => tracing::info!(job = %crate::key(job.as_ref()), "deleted a finished job after its ttlSecondsAfterFinished"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
