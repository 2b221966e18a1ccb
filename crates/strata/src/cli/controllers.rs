//! `strata controllers`: the controller manager against a (remote) API server, and the
//! in-process start `strata server` uses.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use strata_apiserver::pki;

#[derive(Args, Debug)]
pub struct ControllersArgs {
    /// The kubeconfig to reach the API server with (its current context); `$KUBECONFIG` or
    /// `~/.kube/config` by default.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The API server's address (`https://HOST:PORT`), instead of the kubeconfig's; the
    /// kubeconfig still supplies the CA and the credentials (kube-controller-manager's
    /// `--master`).
    #[arg(long, alias = "master")]
    pub server: Option<String>,
    /// This manager's identity in the leader-election Lease (default: host name and a random
    /// suffix).
    #[arg(long)]
    pub identity: Option<String>,
    /// The CA bundle published as `kube-root-ca.crt` in every namespace (default: the
    /// kubeconfig's inline cluster CA).
    #[arg(long)]
    pub root_ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// kube-controller-manager's flags of the same names.
#[derive(Args, Debug, Clone)]
pub struct SettingsArgs {
    /// How long a node may stay silent (no status, no Lease renewal) before it is marked
    /// Unknown, e.g. `40s`.
    #[arg(long, default_value = "40s", value_parser = strata_cron::duration::parse_std)]
    pub node_monitor_grace_period: std::time::Duration,
    /// The same for a node that never posted its Ready condition.
    #[arg(long, default_value = "60s", value_parser = strata_cron::duration::parse_std)]
    pub node_startup_grace_period: std::time::Duration,
    /// How often node health is checked.
    #[arg(long, default_value = "5s", value_parser = strata_cron::duration::parse_std)]
    pub node_monitor_period: std::time::Duration,
    /// Nodes per second that get NoExecute taints (so their pods are evicted), per zone.
    #[arg(long, default_value = "0.1")]
    pub node_eviction_rate: f64,
    /// The same in an unhealthy zone of a large cluster.
    #[arg(long, default_value = "0.01")]
    pub secondary_node_eviction_rate: f64,
    /// Terminated pods (Succeeded or Failed) kept before the pod garbage collector deletes the
    /// oldest; 0 or less: never.
    #[arg(long, default_value = "12500", allow_negative_numbers = true)]
    pub terminated_pod_gc_threshold: i64,
}

impl SettingsArgs {
    pub fn settings(&self) -> strata_controllers::Settings {
        strata_controllers::Settings {
            node_lifecycle: strata_controllers::nodelifecycle::Settings {
                monitor_grace_period: self.node_monitor_grace_period,
                startup_grace_period: self.node_startup_grace_period,
                monitor_period: self.node_monitor_period,
                eviction_rate: self.node_eviction_rate,
                secondary_eviction_rate: self.secondary_node_eviction_rate,
                ..Default::default()
            },
            pod_gc: strata_controllers::podgc::Settings { terminated_pod_threshold: self.terminated_pod_gc_threshold },
            root_ca: None,
        }
    }
}

pub fn run(a: ControllersArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async move {
        let path = match a.kubeconfig.or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from)) {
            Some(p) => p,
            None => PathBuf::from(std::env::var_os("HOME").context("no --kubeconfig, $KUBECONFIG or $HOME")?).join(".kube/config"),
        };
        let client = strata_client::from_kubeconfig_at(&path, a.server.as_deref(), "kube-controller-manager").await?;
        let mut config = strata_controllers::Config::default();
        config.settings = a.settings.settings();
        config.settings.root_ca = match &a.root_ca_file {
            Some(f) => Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?),
            None => match strata_client::ca_of_kubeconfig(&path) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    eprintln!("strata controllers: no CA bundle to publish as kube-root-ca.crt ({e}); pass --root-ca-file");
                    None
                }
            },
        };
        if let Some(id) = a.identity {
            config.identity = id;
        }
        eprintln!("strata controllers: standing for leadership as {}", config.identity);
        strata_controllers::run(strata_controllers::Clients::single(client), config, async {
            super::shutdown_signal().await;
            eprintln!("strata controllers: shutting down");
        })
        .await;
        Ok(())
    })
}

/// The controllers inside `strata server`: the manager watches and elects as
/// `system:kube-controller-manager`, and each controller writes as its own ServiceAccount user
/// (`system:serviceaccount:kube-system:<controller>`, which upstream's bootstrap policy binds to
/// `system:controller:<controller>`), each with a client certificate from the cluster CA.
/// They run until `stop` resolves, and then release their Lease if they lead.
pub async fn start_in_server(
    pki: &pki::Pki,
    server: &strata_apiserver::server::Server,
    port: u16,
    settings: strata_controllers::Settings,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // In-process: each controller is its own user (as with its own client certificate), its
    // requests served without a socket.
    let root = strata_client::in_process(server.local(strata_controllers::MANAGER_USER, &[]), "kube-controller-manager");
    let mut clients = strata_controllers::Clients::single(root);
    for id in strata_controllers::CONTROLLERS {
        let c = strata_client::in_process(server.local(&strata_controllers::user_of(id), &["system:serviceaccounts", "system:serviceaccounts:kube-system"]), id);
        clients.per_controller.insert(id.to_string(), c);
    }
    // `<host>_<port>_<random>`: which server of several leads shows in the Lease.
    let mut config = strata_controllers::Config::default();
    config.settings = settings;
    config.settings.root_ca = Some(std::fs::read_to_string(pki.ca_cert()).context("reading the cluster CA")?);
    config.identity = match config.identity.split_once('_') {
        Some((host, rest)) => format!("{host}_{port}_{rest}"),
        None => format!("{}_{port}", config.identity),
    };
    Ok(tokio::spawn(strata_controllers::run(clients, config, stop)))
}
