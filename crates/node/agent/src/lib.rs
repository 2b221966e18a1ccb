//! The node agent (strata's kubelet): registers this machine as a Node, keeps its Lease, runs the pods bound to it through the driver interface only, and reports their status. Talks to the API server only over HTTPS with its own node identity.
//!
//! One code path whether it runs inside `strata server` or as `strata agent`: the caller builds a
//! [`Config`], a `kube::Client` authenticating as `system:node:<name>` (`strata-client`) and the
//! driver, then calls [`run`] (or [`Agent::new`] and [`Agent::run`]).

pub mod machine;
pub mod node;
pub mod pods;
pub mod streams;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use strata_driver::{PodRuntimes, VmDriver};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API server: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Driver(#[from] strata_driver::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

/// How the agent runs. [`Config::new`] gives kubelet's defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Node's name (kubelet: the host name, lower case).
    pub node_name: String,
    /// The agent's own state (pod volumes) lives here; its filesystem is the node's
    /// `ephemeral-storage` (kubelet's `--root-dir`).
    pub root_dir: PathBuf,
    /// Most pods this node runs (`--max-pods`, 110).
    pub max_pods: u32,
    /// The node's InternalIP; default: the address of the default route's interface.
    pub node_ip: Option<IpAddr>,
    /// The port of the agent's stream endpoint (`status.daemonEndpoints.kubeletEndpoint`), 0
    /// when it serves none.
    pub kubelet_port: u16,
    /// `leaseDurationSeconds` of the node Lease (40 s).
    pub lease_duration: Duration,
    /// How often the Lease is renewed (10 s).
    pub lease_renew_interval: Duration,
    /// How often node status is computed (10 s).
    pub status_update_frequency: Duration,
    /// Node status is written at least this often even when nothing changed (5 minutes).
    pub status_report_frequency: Duration,
    /// A VM that has written nothing to its serial console this long after it started did not
    /// boot: its launcher pod says so (condition `strata.dev/ConsoleOutput` False, reason
    /// `NoConsoleOutput`, and a Warning event). 120 s.
    pub vm_boot_timeout: Duration,
    /// The cluster DNS servers of pods with `dnsPolicy: ClusterFirst` (kubelet's
    /// `--cluster-dns`); none: such pods fall back to `Default`, with an event.
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain (kubelet's `--cluster-domain`): the search domains of
    /// ClusterFirst pods and the FQDN of pods with a `subdomain`. `cluster.local`.
    pub cluster_domain: String,
    /// The node's resolver configuration, the base of `Default` pods' (kubelet's `--resolv-conf`).
    pub resolv_conf: PathBuf,
    /// Sysctls pods may set beyond kubelet's safe ones (`--allowed-unsafe-sysctls`): names, or
    /// prefixes ending in `*`, of namespaced sysctls.
    pub allowed_unsafe_sysctls: Vec<String>,
}

impl Config {
    pub fn new(node_name: impl Into<String>, root_dir: PathBuf) -> Config {
        Config {
            node_name: node_name.into(),
            root_dir,
            max_pods: 110,
            node_ip: None,
            kubelet_port: 0,
            lease_duration: Duration::from_secs(40),
            lease_renew_interval: Duration::from_secs(10),
            status_update_frequency: Duration::from_secs(10),
            status_report_frequency: Duration::from_secs(300),
            vm_boot_timeout: Duration::from_secs(120),
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".to_string(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            allowed_unsafe_sysctls: Vec::new(),
        }
    }
}

/// What every task of the agent shares.
pub(crate) struct Shared {
    pub config: Config,
    pub client: kube::Client,
    pub driver: Arc<PodRuntimes>,
    /// The VM driver (launcher pods of VirtualMachines), when this node runs VMs.
    pub vms: std::sync::OnceLock<Arc<VmDriver>>,
    /// Whether VMs here run under KVM, once the probe has answered.
    pub kvm: std::sync::OnceLock<bool>,
    /// The Event recorder (`kubelet`), started by [`Agent::run`] on its runtime.
    pub events: std::sync::OnceLock<strata_client::events::Recorder>,
    /// The node's InternalIP and every pod's hostIP: `config.node_ip`, else found once at start
    /// (finding it lists every interface on the machine, one veth per pod: never per sync).
    pub node_ip: IpAddr,
    /// The sysctls pods may set here (kubelet's safe ones this kernel has, and the allowed
    /// unsafe ones), or why the allowed ones are not acceptable.
    pub sysctls: Result<pods::sysctls::Allowlist, String>,
    /// Every Service of the cluster (kubelet's service informer: the services' environment
    /// variables of containers), set once its first list is complete.
    pub services: std::sync::OnceLock<kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Service>>,
}

/// The node agent. Construct with [`Agent::new`], optionally give it the VM driver (for the
/// `strata.dev/kvm` label), then [`Agent::run`].
pub struct Agent {
    shared: Arc<Shared>,
    vms: Option<Arc<VmDriver>>,
}

impl Agent {
    /// `client` must authenticate as `system:node:<config.node_name>` (group `system:nodes`).
    pub fn new(config: Config, client: kube::Client, driver: Arc<PodRuntimes>) -> Agent {
        Agent {
            shared: Arc::new(Shared {
                node_ip: config.node_ip.unwrap_or_else(machine::internal_ip),
                sysctls: pods::sysctls::Allowlist::new(&machine::info().kernel_version, &config.allowed_unsafe_sysctls),
                config,
                client,
                driver,
                vms: std::sync::OnceLock::new(),
                kvm: std::sync::OnceLock::new(),
                events: std::sync::OnceLock::new(),
                services: std::sync::OnceLock::new(),
            }),
            vms: None,
        }
    }

    /// The VM driver: it runs the launcher pods of VirtualMachines, and its KVM probe decides
    /// the `strata.dev/kvm` label (`false` without one).
    pub fn with_vm_driver(mut self, vms: Arc<VmDriver>) -> Agent {
        let _ = self.shared.vms.set(vms.clone());
        self.vms = Some(vms);
        self
    }

    /// Register the node and keep it, its Lease and its pods up to date. Runs until the
    /// process ends; returns only on an error it cannot recover from (an API server that never
    /// answers is retried, not an error).
    pub async fn run(self) -> Result<(), Error> {
        let shared = self.shared;
        if let Err(e) = &shared.sysctls {
            return Err(Error::Internal(format!("--allowed-unsafe-sysctls: {e}")));
        }
        let _ = shared.events.set(strata_client::events::Recorder::with_correlator(shared.client.clone(), "kubelet"));
        std::fs::create_dir_all(&shared.config.root_dir).map_err(|source| Error::Io { context: format!("creating {}", shared.config.root_dir.display()), source })?;
        // The KVM probe may boot a guest (seconds, once per host boot): register without the
        // label and add it when the probe answers.
        match self.vms {
            None => {
                let _ = shared.kvm.set(false);
            }
            Some(vms) => {
                let s = shared.clone();
                tokio::spawn(async move {
                    let (kvm, why) = tokio::task::spawn_blocking(move || vms.kvm()).await.unwrap_or((false, "the KVM probe failed".into()));
                    tracing::info!(kvm, reason = %why, "VM acceleration");
                    let _ = s.kvm.set(kvm);
                    loop {
                        match node::label_kvm(&s, kvm).await {
                            Ok(()) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "labelling the node");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                });
            }
        }
        let mut delay = Duration::from_millis(200);
        let node = loop {
            match node::register(&shared).await {
                Ok(n) => break n,
                Err(e) => {
                    tracing::warn!(error = %e, "registering the node; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(7));
                }
            }
        };
        let lease = tokio::spawn(node::lease_loop(shared.clone(), node));
        let status = tokio::spawn(node::status_loop(shared.clone()));
        let pods = tokio::spawn(pods::run(shared.clone()));
        let (a, b, c) = tokio::join!(lease, status, pods);
        a.and(b).and(c).map_err(|e| Error::Internal(format!("agent task ended: {e}")))
    }
}

/// [`Agent::new`] then [`Agent::run`].
pub async fn run(config: Config, client: kube::Client, driver: Arc<PodRuntimes>) -> Result<(), Error> {
    Agent::new(config, client, driver).run().await
}
