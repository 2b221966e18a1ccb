//! [`PodRuntimes`]: the node's pod runtimes behind one [`PodRuntime`], as a CRI runtime serves
//! several runtime handlers. A sandbox is created by the runtime its config's
//! `runtime_handler` names (a RuntimeClass's `handler`; none for the default, the container
//! driver); every later call finds the runtime that owns the id. So a caller (the node agent)
//! chooses isolation with one field and never branches on it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::pod::{
    ContainerConfig, ContainerFilter, ContainerStatus, ExecSession, ExecSessionRequest, ExecSyncResult, PodEvent, PodRuntime, PodSandboxConfig,
    PodSandboxStatus, SandboxFilter,
};
use crate::{Attachment, ContainerDriver, Error, LogOptions, LogRecord};

/// The handler name of VM-isolated pods (`RuntimeClass strata-vm`, handler `strata-vm`).
pub const VM_HANDLER: &str = "strata-vm";

pub struct PodRuntimes {
    default: Arc<ContainerDriver>,
    /// Handler name -> runtime (the default is also reachable as `runc`).
    others: BTreeMap<String, Arc<dyn PodRuntime>>,
    /// Handlers this node knows but does not serve, with why (and what would make it serve them).
    unserved: BTreeMap<String, String>,
    /// Which runtime owns an id (sandbox or container).
    owners: Mutex<Owners>,
}

/// Which runtime owns each id (sandbox or container), an index into `PodRuntimes::all()`, and
/// the sandbox the id belongs to: a sandbox's entries (its own and its containers') go when it
/// is removed, so nothing is kept for a deleted pod.
#[derive(Default)]
struct Owners(HashMap<String, (usize, String)>);

impl Owners {
    fn get(&self, id: &str) -> Option<usize> {
        self.0.get(id).map(|(i, _)| *i)
    }

    fn insert(&mut self, id: &str, runtime: usize, sandbox: String) {
        // Ids removed behind this process's back (another strata process) are never forgotten:
        // a bound, since asking again costs only a status read.
        if self.0.len() > 100_000 {
            self.0.clear();
        }
        self.0.insert(id.to_string(), (runtime, sandbox));
    }

    fn forget(&mut self, id: &str) {
        self.0.remove(id);
    }

    /// Forget the sandbox and every container of it.
    fn forget_sandbox(&mut self, sandbox: &str) {
        self.0.retain(|id, (_, sb)| id != sandbox && sb != sandbox);
    }
}

impl PodRuntimes {
    pub fn new(default: Arc<ContainerDriver>) -> PodRuntimes {
        PodRuntimes { default, others: BTreeMap::new(), unserved: BTreeMap::new(), owners: Mutex::default() }
    }

    /// Serve sandboxes whose `runtime_handler` is `handler` with `runtime`.
    pub fn with_handler(mut self, handler: &str, runtime: Arc<dyn PodRuntime>) -> PodRuntimes {
        self.others.insert(handler.to_string(), runtime);
        self
    }

    /// Do not serve `handler`, because `why` (said to every pod that asks for it: the driver
    /// does not know how the node was configured, its caller does).
    pub fn without_handler(mut self, handler: &str, why: &str) -> PodRuntimes {
        self.unserved.insert(handler.to_string(), why.to_string());
        self
    }

    /// The container driver (images, plain containers).
    pub fn containers(&self) -> &Arc<ContainerDriver> {
        &self.default
    }

    /// The image store pods' images are pulled into.
    pub fn images(&self) -> &Arc<strata_image::ImageStore> {
        self.default.images()
    }

    /// Every workload of the container driver (plain containers and pod containers).
    pub fn list(&self) -> Result<Vec<crate::WorkloadState>, Error> {
        crate::Driver::list(&*self.default)
    }

    /// The handlers this node serves besides the default.
    pub fn handlers(&self) -> Vec<String> {
        self.others.keys().cloned().collect()
    }

    fn all(&self) -> Vec<&dyn PodRuntime> {
        std::iter::once(&*self.default as &dyn PodRuntime).chain(self.others.values().map(|r| &**r)).collect()
    }

    /// The runtime owning `id`, found by asking each (`probe`, which answers the id's sandbox)
    /// and remembered.
    fn owner(&self, id: &str, probe: impl Fn(&dyn PodRuntime) -> Result<String, Error>) -> Result<&dyn PodRuntime, Error> {
        let all = self.all();
        if let Some(i) = self.owners.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            if let Some(r) = all.get(i) {
                return Ok(*r);
            }
        }
        for (i, r) in all.iter().enumerate() {
            match probe(*r) {
                Ok(sandbox) => {
                    self.owners.lock().unwrap_or_else(|e| e.into_inner()).insert(id, i, sandbox);
                    return Ok(*r);
                }
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::NotFound(id.to_string()))
    }

    fn sandbox_owner(&self, id: &str) -> Result<&dyn PodRuntime, Error> {
        self.owner(id, |r| r.pod_sandbox_status(id).map(|s| s.id))
    }

    fn container_owner(&self, id: &str) -> Result<&dyn PodRuntime, Error> {
        self.owner(id, |r| r.container_status(id).map(|c| c.sandbox_id))
    }

    fn forget(&self, id: &str) {
        self.owners.lock().unwrap_or_else(|e| e.into_inner()).forget(id);
    }
}

impl PodRuntime for PodRuntimes {
    /// The default runtime's: it runs the node's pods unless they name another handler, whose
    /// failures show on those pods (a node without QEMU still runs containers).
    fn health(&self) -> Result<(), Error> {
        self.default.health()
    }

    fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, Error> {
        let rt: &dyn PodRuntime = match config.runtime_handler.as_deref() {
            None | Some("") | Some("runc") => &*self.default,
            Some(h) => match self.others.get(h) {
                Some(r) => &**r,
                None => {
                    let why = self.unserved.get(h).map(|w| format!(": {w}")).unwrap_or_default();
                    return Err(Error::InvalidArgument(format!("runtime handler {h:?} is not served on this node{why}")));
                }
            },
        };
        rt.run_pod_sandbox(config)
    }

    fn stop_pod_sandbox(&self, id: &str) -> Result<(), Error> {
        self.sandbox_owner(id)?.stop_pod_sandbox(id)
    }

    fn remove_pod_sandbox(&self, id: &str) -> Result<(), Error> {
        let rt = match self.sandbox_owner(id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let r = rt.remove_pod_sandbox(id);
        if r.is_ok() {
            self.owners.lock().unwrap_or_else(|e| e.into_inner()).forget_sandbox(id);
        }
        r
    }

    fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus, Error> {
        self.sandbox_owner(id)?.pod_sandbox_status(id)
    }

    fn list_pod_sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<PodSandboxStatus>, Error> {
        let mut all = Vec::new();
        for r in self.all() {
            all.extend(r.list_pod_sandboxes(filter)?);
        }
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(all)
    }

    fn create_container(&self, sandbox_id: &str, config: &ContainerConfig) -> Result<String, Error> {
        self.sandbox_owner(sandbox_id)?.create_container(sandbox_id, config)
    }

    fn start_container(&self, id: &str) -> Result<(), Error> {
        self.container_owner(id)?.start_container(id)
    }

    fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        self.container_owner(id)?.stop_container(id, timeout)
    }

    fn remove_container(&self, id: &str) -> Result<(), Error> {
        let rt = match self.container_owner(id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let r = rt.remove_container(id);
        self.forget(id);
        r
    }

    fn container_status(&self, id: &str) -> Result<ContainerStatus, Error> {
        self.container_owner(id)?.container_status(id)
    }

    fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>, Error> {
        let mut all = Vec::new();
        for r in self.all() {
            all.extend(r.list_containers(filter)?);
        }
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(all)
    }

    fn exec_sync(&self, id: &str, cmd: &[String], timeout: Option<Duration>) -> Result<ExecSyncResult, Error> {
        self.container_owner(id)?.exec_sync(id, cmd, timeout)
    }

    fn exec_session(&self, id: &str, req: &ExecSessionRequest) -> Result<ExecSession, Error> {
        self.container_owner(id)?.exec_session(id, req)
    }

    fn container_logs(&self, id: &str, opts: &LogOptions, sink: &mut dyn FnMut(&LogRecord) -> bool) -> Result<(), Error> {
        self.container_owner(id)?.container_logs(id, opts, sink)
    }

    fn attach_container(&self, id: &str) -> Result<Attachment, Error> {
        self.container_owner(id)?.attach_container(id)
    }

    fn port_forward(&self, sandbox_id: &str, port: u16) -> Result<std::net::TcpStream, Error> {
        self.sandbox_owner(sandbox_id)?.port_forward(sandbox_id, port)
    }

    /// One feed of every runtime's events (a forwarding thread per runtime).
    fn subscribe(&self) -> Result<mpsc::Receiver<PodEvent>, Error> {
        let (tx, rx) = mpsc::channel();
        for r in self.all() {
            let feed = r.subscribe()?;
            let tx = tx.clone();
            std::thread::Builder::new()
                .name("pod-events-merge".into())
                .spawn(move || {
                    while let Ok(ev) = feed.recv() {
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                })
                .map_err(Error::io("starting an event forwarder"))?;
        }
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::Owners;

    #[test]
    fn a_removed_sandbox_takes_its_containers_entries_along() {
        let mut o = Owners::default();
        o.insert("s1", 0, "s1".into());
        o.insert("c1", 0, "s1".into());
        o.insert("c2", 0, "s1".into());
        o.insert("s2", 1, "s2".into());
        o.insert("c3", 1, "s2".into());
        assert_eq!((o.get("c1"), o.get("c3")), (Some(0), Some(1)));
        o.forget("c2");
        assert_eq!(o.get("c2"), None);
        o.forget_sandbox("s1");
        assert_eq!((o.get("s1"), o.get("c1")), (None, None));
        assert_eq!((o.get("s2"), o.get("c3")), (Some(1), Some(1)));
        o.forget_sandbox("s2");
        assert!(o.0.is_empty(), "nothing stays once every sandbox is removed");
    }
}
