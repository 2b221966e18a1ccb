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
pub mod quantity;
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
}

impl Default for Config {
    fn default() -> Self {
        Config { scheduler_name: "default-scheduler".into(), max_bindings_in_flight: 64 }
    }
}
