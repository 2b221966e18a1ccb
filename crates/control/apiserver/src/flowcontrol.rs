//! Priority lanes: a small form of kube-apiserver's API Priority and Fairness.
//!
//! Every authenticated request is put in one lane before its body is read ([`classify`]):
//! - `leader-election`: reads and writes of one Lease outside `kube-node-lease` (client-go's
//!   leader election, kube-scheduler's and kube-controller-manager's and strata's own);
//! - `node-high`: node heartbeats — a Lease in `kube-node-lease`, a Node's status, and a node
//!   (`system:nodes`) reading or writing its own Node;
//! - `workload-mutating` / `workload-readonly`: everything else, split by verb as upstream's
//!   `--max-mutating-requests-inflight` / `--max-requests-inflight` split it;
//! - exempt (no seat): long-running requests (watches, exec, attach, port-forward, proxy, log),
//!   as upstream's long-running check, and the health probes.
//!
//! Each lane has a fixed number of seats (requests executing at once) and a bounded FIFO queue
//! in front of them. A request that finds the queue full, or waits in it longer than
//! [`QUEUE_WAIT`], is answered 429 with `Retry-After: 1` (client-go and strata's client retry it).
//! A flood of workload requests therefore waits on a semaphore, costing no CPU, instead of in
//! the runtime's one run queue in front of a Lease renewal: the renewal has seats of its own and
//! waits behind at most the workload seats' requests.
//!
//! Unlike upstream, `system:masters` is not exempt: strata's admin kubeconfig is in that group
//! (kubeadm gives its admin.conf a non-exempt group for the same reason), and a flood from it
//! must not starve leases either. Lanes are per process, not shared between servers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::User;

/// How long a request that is not long-running may take by default (kube-apiserver's
/// `--request-timeout`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait for a seat by default (upstream: a quarter of the request timeout).
pub const QUEUE_WAIT: Duration = Duration::from_secs(15);

/// The group of node identities.
const NODES_GROUP: &str = "system:nodes";

/// A lane with seats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    LeaderElection,
    NodeHigh,
    WorkloadMutating,
    WorkloadReadOnly,
}

impl Lane {
    pub const ALL: [Lane; 4] = [Lane::LeaderElection, Lane::NodeHigh, Lane::WorkloadMutating, Lane::WorkloadReadOnly];

    /// The `priority_level` label of the `apiserver_flowcontrol_*` metrics.
    pub fn name(self) -> &'static str {
        match self {
            Lane::LeaderElection => "leader-election",
            Lane::NodeHigh => "node-high",
            Lane::WorkloadMutating => "workload-mutating",
            Lane::WorkloadReadOnly => "workload-readonly",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where a request goes: a lane, or no seat at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Health probes: no seat, but the request timeout.
    Exempt,
    /// Watches and streams (exec, attach, port-forward, proxy, log): no seat and no request
    /// timeout (upstream's long-running requests).
    LongRunning,
    Seated(Lane),
}

/// The lane of a request, from its method, path, query and who sends it.
pub fn classify(method: &Method, path: &str, query: Option<&str>, user: &User) -> Class {
    let trimmed = path.trim_end_matches('/');
    if matches!(trimmed, "/healthz" | "/livez" | "/readyz") || trimmed.starts_with("/healthz/") || trimmed.starts_with("/livez/") || trimmed.starts_with("/readyz/") {
        return Class::Exempt;
    }
    let mutating = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let workload = Class::Seated(if mutating { Lane::WorkloadMutating } else { Lane::WorkloadReadOnly });
    let (verb, info) = crate::api::classify(method, path, query);
    let Some(info) = info else {
        return workload;
    };
    let sub = info.subresource.as_deref();
    if verb == "watch" || matches!(sub, Some("exec" | "attach" | "portforward" | "proxy" | "log")) {
        return Class::LongRunning;
    }
    let one_object = matches!(verb.as_str(), "get" | "create" | "update" | "patch");
    let r = info.resource;
    if r.group == "coordination.k8s.io" && r.plural == "leases" && one_object && sub.is_none() {
        return Class::Seated(if info.namespace.as_deref() == Some("kube-node-lease") { Lane::NodeHigh } else { Lane::LeaderElection });
    }
    if r.group.is_empty() && r.plural == "nodes" && info.name.is_some() {
        let status = sub == Some("status") && matches!(verb.as_str(), "get" | "update" | "patch");
        let own = sub.is_none() && matches!(verb.as_str(), "get" | "update" | "patch") && user.groups.iter().any(|g| g == NODES_GROUP);
        if status || own {
            return Class::Seated(Lane::NodeHigh);
        }
    }
    workload
}

/// Seats and queue bounds of the lanes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Non-mutating workload requests executing at once (`--max-requests-inflight`; 0: no limit).
    pub readonly: usize,
    /// Mutating workload requests executing at once (`--max-mutating-requests-inflight`; 0: no limit).
    pub mutating: usize,
    /// Requests waiting for a seat, per lane (`--max-queued-requests`); beyond it, 429.
    pub queued: usize,
    /// Longest wait in a queue; then 429.
    pub wait: Duration,
    /// How long a request that is not long-running may take; then 504 (`--request-timeout`).
    pub request_timeout: Duration,
}

impl Limits {
    /// Read-only seats per CPU: upstream's default (400 seats) is sized for large control-plane
    /// machines; a read's seat costs CPU (decoding and encoding lists), so a few per core keep
    /// the cores busy without a long run queue.
    pub const READONLY_PER_CPU: usize = 8;
    /// Mutating seats, upstream's `--max-mutating-requests-inflight` default. A write holds its
    /// seat mostly while it waits for the store's commit (an fsync, no CPU), and the store
    /// commits every write waiting at once in one transaction: the seats bound that group
    /// commit. At 4 per CPU (8 here) a flood of creates was committed a few writes at a time,
    /// which cost the server 3.8 CPU ms and 174 KiB per plain pod in the scheduler benchmark
    /// against 2.1 ms and 58 KiB with 200 seats (docs/benchmarks.md, session 7).
    pub const MUTATING: usize = 200;
    /// Seats of the leader-election and node-high lanes: upstream's shares of its 600 default
    /// seats (leader-election 10 and node-high 40 of 245: 25 and 98). Like a workload write, a
    /// Lease renewal holds its seat mostly while it waits for the store's group commit: 16
    /// node-high seats capped renewals at ~550-650 per second (docs/benchmarks.md, session 10),
    /// short of the 1,500 per second 15,000 kubelets renewing every 10 s send.
    pub const LEADER_ELECTION: usize = 25;
    pub const NODE_HIGH: usize = 98;

    /// The defaults for this machine.
    pub fn for_this_machine() -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Limits { readonly: Self::READONLY_PER_CPU * cpus, mutating: Self::MUTATING, queued: 1000, wait: QUEUE_WAIT, request_timeout: REQUEST_TIMEOUT }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::for_this_machine()
    }
}

/// Why a request got no seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the queue of priority level {0} is full")]
    QueueFull(&'static str),
    #[error("no seat of priority level {0} within the queue wait")]
    TimedOut(&'static str),
}

impl Rejected {
    /// The `reason` label of `apiserver_flowcontrol_rejected_requests_total`, as upstream's.
    pub fn reason(self) -> &'static str {
        match self {
            Rejected::QueueFull(_) => "queue-full",
            Rejected::TimedOut(_) => "time-out",
        }
    }
}

struct LaneState {
    lane: Lane,
    /// `None`: no limit.
    seats: Option<Arc<Semaphore>>,
    waiting: AtomicUsize,
    queued: usize,
    wait: Duration,
}

/// The lanes of one server.
pub struct FlowControl {
    lanes: [LaneState; 4],
    request_timeout: Duration,
}

/// A seat held while a request executes; released on drop.
pub struct Seat {
    lane: Lane,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        crate::metrics::flowcontrol_executing(self.lane.name(), -1);
    }
}

/// Counts a request in the queue while it waits (also when the waiting request is dropped).
struct Waiting<'a>(&'a LaneState);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::flowcontrol_inqueue(self.0.lane.name(), -1);
    }
}

impl FlowControl {
    pub fn new(limits: Limits) -> Self {
        let state = |lane: Lane, seats: usize| {
            crate::metrics::flowcontrol_seats(lane.name(), seats);
            LaneState { lane, seats: (seats > 0).then(|| Arc::new(Semaphore::new(seats))), waiting: AtomicUsize::new(0), queued: limits.queued, wait: limits.wait }
        };
        FlowControl {
            lanes: [
                state(Lane::LeaderElection, Limits::LEADER_ELECTION),
                state(Lane::NodeHigh, Limits::NODE_HIGH),
                state(Lane::WorkloadMutating, limits.mutating),
                state(Lane::WorkloadReadOnly, limits.readonly),
            ],
            request_timeout: limits.request_timeout,
        }
    }

    /// How long a request that is not long-running may take.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// A seat in `lane`: at once if one is free, else after waiting in its queue (at most
    /// [`Limits::wait`]).
    pub async fn acquire(&self, lane: Lane) -> Result<Seat, Rejected> {
        let state = &self.lanes[lane.index()];
        let name = lane.name();
        let Some(seats) = &state.seats else {
            return Ok(self.seated(lane, None, Duration::ZERO));
        };
        if let Ok(p) = seats.clone().try_acquire_owned() {
            return Ok(self.seated(lane, Some(p), Duration::ZERO));
        }
        if state.waiting.fetch_add(1, Ordering::AcqRel) >= state.queued {
            state.waiting.fetch_sub(1, Ordering::AcqRel);
            crate::metrics::flowcontrol_rejected(name, "queue-full");
            return Err(Rejected::QueueFull(name));
        }
        crate::metrics::flowcontrol_inqueue(name, 1);
        let waiting = Waiting(state);
        let started = Instant::now();
        let got = tokio::time::timeout(state.wait, seats.clone().acquire_owned()).await;
        drop(waiting);
        match got {
            Ok(Ok(p)) => Ok(self.seated(lane, Some(p), started.elapsed())),
            // The semaphore is never closed; a timeout is the only way here.
            Ok(Err(_)) | Err(_) => {
                crate::metrics::flowcontrol_rejected(name, "time-out");
                Err(Rejected::TimedOut(name))
            }
        }
    }

    fn seated(&self, lane: Lane, permit: Option<OwnedSemaphorePermit>, waited: Duration) -> Seat {
        crate::metrics::flowcontrol_dispatched(lane.name(), waited);
        crate::metrics::flowcontrol_executing(lane.name(), 1);
        Seat { lane, _permit: permit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(groups: &[&str]) -> User {
        User::new("u", groups)
    }

    fn check(method: Method, path: &str, query: Option<&str>, groups: &[&str], want: Class) {
        assert_eq!(classify(&method, path, query, &user(groups)), want, "{method} {path}?{query:?} as {groups:?}");
    }

    #[test]
    fn requests_go_to_their_lanes() {
        use Class::*;
        use Lane::*;
        let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler";
        check(Method::GET, lease, None, &["system:masters"], Seated(LeaderElection));
        check(Method::PUT, lease, None, &[], Seated(LeaderElection));
        check(Method::POST, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", None, &[], Seated(LeaderElection));
        // Listing or watching leases is no renewal.
        check(Method::GET, "/apis/coordination.k8s.io/v1/leases", None, &[], Seated(WorkloadReadOnly));
        check(Method::GET, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", Some("watch=1"), &[], LongRunning);
        check(Method::DELETE, lease, None, &[], Seated(WorkloadMutating));
        // Node heartbeats.
        check(Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", None, &["system:nodes"], Seated(NodeHigh));
        check(Method::PATCH, "/api/v1/nodes/n1/status", None, &["system:masters"], Seated(NodeHigh));
        check(Method::GET, "/api/v1/nodes/n1", None, &["system:nodes"], Seated(NodeHigh));
        check(Method::GET, "/api/v1/nodes/n1", None, &[], Seated(WorkloadReadOnly));
        check(Method::GET, "/api/v1/nodes", None, &["system:nodes"], Seated(WorkloadReadOnly));
        // Workload.
        check(Method::POST, "/api/v1/namespaces/default/pods", None, &["system:masters"], Seated(WorkloadMutating));
        check(Method::POST, "/api/v1/namespaces/default/pods/p/binding", None, &[], Seated(WorkloadMutating));
        check(Method::GET, "/api/v1/pods", Some("limit=500"), &[], Seated(WorkloadReadOnly));
        check(Method::GET, "/apis", None, &[], Seated(WorkloadReadOnly));
        check(Method::GET, "/api/v1/namespaces/default/pods/nope/nope/nope", None, &[], Seated(WorkloadReadOnly));
        // Long-running requests and probes take no seat.
        check(Method::GET, "/api/v1/pods", Some("watch=true&resourceVersion=5"), &[], LongRunning);
        check(Method::GET, "/api/v1/namespaces/default/pods/p/log", Some("follow=true"), &[], LongRunning);
        check(Method::POST, "/api/v1/namespaces/default/pods/p/exec", Some("command=sh"), &[], LongRunning);
        check(Method::GET, "/api/v1/namespaces/default/pods/p/portforward", None, &[], LongRunning);
        check(Method::GET, "/readyz", None, &[], Exempt);
        check(Method::GET, "/healthz/ping", None, &[], Exempt);
    }

    #[tokio::test]
    async fn a_full_lane_queues_then_refuses_and_leaves_the_others_free() {
        let fc = FlowControl::new(Limits { readonly: 1, mutating: 1, queued: 1, wait: QUEUE_WAIT, request_timeout: REQUEST_TIMEOUT });
        let first = fc.acquire(Lane::WorkloadMutating).await.expect("a free seat");
        // One request may wait; the next finds the queue full.
        let fc = Arc::new(fc);
        let waiter = {
            let fc = fc.clone();
            tokio::spawn(async move { fc.acquire(Lane::WorkloadMutating).await.map(|_| ()) })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while fc.lanes[Lane::WorkloadMutating.index()].waiting.load(Ordering::Acquire) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(fc.acquire(Lane::WorkloadMutating).await.err(), Some(Rejected::QueueFull("workload-mutating")));
        // Other lanes are not affected.
        let _lease = tokio::time::timeout(Duration::from_secs(1), fc.acquire(Lane::LeaderElection)).await.expect("prompt").expect("seat");
        let _read = tokio::time::timeout(Duration::from_secs(1), fc.acquire(Lane::WorkloadReadOnly)).await.expect("prompt").expect("seat");
        // Releasing the seat lets the queued request in.
        drop(first);
        tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("dispatched").expect("task").expect("seat");
        assert_eq!(fc.lanes[Lane::WorkloadMutating.index()].waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_request_waits_at_most_the_queue_wait() {
        let wait = Duration::from_millis(200);
        let fc = FlowControl::new(Limits { readonly: 1, mutating: 1, queued: 10, wait, request_timeout: REQUEST_TIMEOUT });
        let _held = fc.acquire(Lane::WorkloadReadOnly).await.expect("a free seat");
        let started = Instant::now();
        assert_eq!(fc.acquire(Lane::WorkloadReadOnly).await.err(), Some(Rejected::TimedOut("workload-readonly")));
        assert!(started.elapsed() >= wait);
        assert_eq!(fc.lanes[Lane::WorkloadReadOnly.index()].waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn zero_seats_is_no_limit() {
        let fc = FlowControl::new(Limits { readonly: 0, mutating: 0, queued: 0, wait: QUEUE_WAIT, request_timeout: REQUEST_TIMEOUT });
        let seats: Vec<_> = futures_util::future::join_all((0..100).map(|_| fc.acquire(Lane::WorkloadMutating))).await;
        assert!(seats.iter().all(Result::is_ok));
    }
}
