//! The scheduler: watches unbound pods and nodes, picks a node for each pod through filter and
//! score plugins, and binds it with `pods/binding`. Only talks to the API server (through a
//! `kube::Client`, typed objects), so kube-scheduler can replace it and it can run against
//! any Kubernetes API server.
//!
//! Layout: `run.rs` is all the I/O (watches, bindings, events, conditions, preemption's
//! deletions); everything else is pure and unit-tested: `cache.rs` (nodes, bound and assumed
//! pods), `queue.rs` (active/backoff/unschedulable), `plugins/` (the framework and its filter
//! and score plugins), `preemption.rs`.

pub mod cache;
pub mod info;
pub mod labels;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod resources;
mod run;

pub use run::run;

/// The scheduler's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Pods whose `spec.schedulerName` is this are ours (`default-scheduler`).
    pub scheduler_name: String,
    /// Bindings sent and not yet answered, at most.
    pub max_bindings_in_flight: usize,
    /// Stand for leadership of the Lease `kube-system/kube-scheduler` (kube-scheduler's) and
    /// schedule only while leading; `None` schedules right away.
    pub leader_election: Option<Election>,
    /// How fast its Events (`Scheduled`, `FailedScheduling`, ...) are written; `None`: as fast
    /// as the API server takes them. Default: kube-scheduler's event client's limit.
    pub event_rate: Option<strata_client::events::WriteRate>,
}

/// Who stands for leadership, and the Lease's timing.
#[derive(Clone, Debug)]
pub struct Election {
    pub identity: String,
    pub timing: strata_client::leader::Timing,
}

impl Default for Election {
    fn default() -> Self {
        Election { identity: strata_client::leader::default_identity(), timing: Default::default() }
    }
}

/// kube-scheduler's leader-election Lease.
pub const LEASE_NAMESPACE: &str = "kube-system";
pub const LEASE_NAME: &str = "kube-scheduler";

/// The default of [`Config::max_bindings_in_flight`].
pub const MAX_BINDINGS_IN_FLIGHT: usize = 256;

impl Default for Config {
    fn default() -> Self {
        Config {
            scheduler_name: "default-scheduler".into(),
            max_bindings_in_flight: MAX_BINDINGS_IN_FLIGHT,
            leader_election: Some(Election::default()),
            event_rate: Some(strata_client::events::WriteRate::SCHEDULER),
        }
    }
}

/// Run the scheduler (while leading, with leader election) until `stop` resolves; a leader
/// stops scheduling and then releases its Lease.
///
/// `lease_client` renews the Lease: give it a client of its own (its own connections), as
/// kube-scheduler gives leader election its own clientset, so a renewal never queues behind
/// hundreds of bindings in flight on the scheduler's connections.
pub async fn run_elected(client: kube::Client, lease_client: kube::Client, config: Config, stop: impl std::future::Future<Output = ()>) {
    let Some(election) = config.leader_election.clone() else {
        return run(client, config, stop).await;
    };
    let elector = strata_client::leader::LeaderElector::new(lease_client, LEASE_NAMESPACE, LEASE_NAME, &election.identity, election.timing.clone());
    elector.run(|| run(client.clone(), config.clone(), std::future::pending()), stop).await
}
