//! `strata server`: the control plane in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use strata_apiserver::{pki, Server, ServerConfig};
use strata_store::Store;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Holds the store, the CA, certificates and the kubeconfig.
    #[arg(long, env = "STRATA_DATA_DIR", default_value = "/var/lib/strata")]
    pub data_dir: PathBuf,
    /// Address and port of the HTTPS API.
    #[arg(long, default_value = "0.0.0.0:6443")]
    pub listen: SocketAddr,
    /// Store: `embedded` (default, in the data dir) or `etcd://HOST:PORT[,HOST:PORT...]`.
    #[arg(long, default_value = "embedded")]
    pub store: String,
    /// Run the control plane only (no node agent on this machine).
    #[arg(long)]
    pub no_agent: bool,
    /// The agent's Node name (default: the host name, lower case).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Most pods the agent runs on this node.
    #[arg(long, default_value = "110")]
    pub max_pods: u32,
    /// The agent's Node InternalIP (default: the address of the default route's interface).
    #[arg(long)]
    pub node_ip: Option<std::net::IpAddr>,
    /// Port of the agent's stream endpoint (logs, exec, attach, port-forward; kubelet's 10250).
    /// When it is taken, a free port is used (the Node publishes the one in use); 0: any.
    #[arg(long, default_value_t = strata_agent::streams::DEFAULT_PORT)]
    pub kubelet_port: u16,
    /// Seconds a VM may run without writing to its serial console before its launcher pod
    /// reports that it did not boot (condition strata.dev/ConsoleOutput, NoConsoleOutput).
    #[arg(long, default_value_t = 120)]
    pub vm_boot_timeout: u64,
    /// DNS and sysctls of the agent's pods.
    #[command(flatten)]
    pub pod_settings: super::node::PodSettingsArgs,
    /// Do not run the scheduler in this process (run `strata scheduler` or kube-scheduler
    /// elsewhere).
    #[arg(long)]
    pub no_scheduler: bool,
    /// How fast the scheduler in this process writes its Events.
    #[command(flatten)]
    pub scheduler_events: super::scheduler::EventRateArgs,
    /// Do not run the controllers (ReplicaSet, Deployment, garbage collection, ...) in this
    /// process (run `strata controllers` elsewhere, or none).
    #[arg(long)]
    pub no_controllers: bool,
    /// The controllers' settings.
    #[command(flatten)]
    pub controller_settings: super::controllers::SettingsArgs,
    /// tolerationSeconds of the `node.kubernetes.io/not-ready:NoExecute` toleration every pod
    /// without one gets.
    #[arg(long, default_value = "300")]
    pub default_not_ready_toleration_seconds: i64,
    /// tolerationSeconds of the `node.kubernetes.io/unreachable:NoExecute` toleration every pod
    /// without one gets.
    #[arg(long, default_value = "300")]
    pub default_unreachable_toleration_seconds: i64,
    /// Admission plugins to turn off (kube-apiserver's flag; comma-separated). Only
    /// `ServiceAccount` can be: without it pods get no ServiceAccount check and no token volume
    /// (for a control plane whose ServiceAccount controller does not run).
    #[arg(long, value_delimiter = ',')]
    pub disable_admission_plugins: Vec<String>,
    /// Bearer tokens: CSV lines `token,user,uid,"group1,group2"`.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Extra names or addresses for the serving certificate.
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// Compact the store's history every this many seconds, keeping at least one interval of
    /// it, as kube-apiserver compacts etcd every 5 minutes (watches and continue tokens older
    /// than that expire with 410). 0: only etcd's own settings, or the embedded store's bound
    /// on its history size.
    #[arg(long, default_value = "300")]
    pub etcd_compaction_interval: u64,
    /// Encrypt resources at rest as this kube-apiserver `EncryptionConfiguration` says
    /// (providers aescbc, aesgcm, secretbox, identity).
    #[arg(long)]
    pub encryption_provider_config: Option<PathBuf>,
    /// Write the audit log (JSON lines of audit.k8s.io/v1 Events) here; `-` is standard
    /// output. Without `--audit-policy-file`, Secrets, ConfigMaps and TokenReviews are logged
    /// at Metadata only, other reads at Metadata, other writes at Request.
    #[arg(long)]
    pub audit_log_path: Option<PathBuf>,
    /// An audit.k8s.io/v1 Policy deciding what is logged at which level.
    #[arg(long)]
    pub audit_policy_file: Option<PathBuf>,
    /// Rotate the audit log when it would grow past this many MiB (0: never).
    #[arg(long, default_value = "0")]
    pub audit_log_maxsize: u64,
    /// Rotated audit logs to keep (0: all).
    #[arg(long, default_value = "0")]
    pub audit_log_maxbackup: usize,
    /// Most long-running requests (watches) served at once; beyond it a watch is refused with
    /// 429 and Retry-After.
    #[arg(long, default_value_t = strata_apiserver::server::DEFAULT_MAX_LONG_RUNNING)]
    pub max_long_running_requests: usize,
    /// Events queued for one watcher before it counts as too slow and is disconnected (its
    /// client re-lists).
    #[arg(long, default_value_t = strata_apiserver::watchcache::Config::default().queue)]
    pub watch_queue_length: usize,
    /// Non-mutating requests executing at once, beyond Lease renewals and node heartbeats
    /// (which have seats of their own); more wait in a queue. 0: no limit. Default: 8 per CPU.
    #[arg(long)]
    pub max_requests_inflight: Option<usize>,
    /// Mutating requests executing at once, beyond Lease renewals and node heartbeats; more
    /// wait in a queue. 0: no limit. Default: 200 (upstream's; a write's seat mostly waits
    /// for the store's group commit, which these seats bound).
    #[arg(long)]
    pub max_mutating_requests_inflight: Option<usize>,
    /// Requests waiting for a seat, per priority level; beyond it a request is refused with
    /// 429 and Retry-After (clients retry it).
    #[arg(long, default_value_t = strata_apiserver::flowcontrol::Limits::for_this_machine().queued)]
    pub max_queued_requests: usize,
    /// How long a request that is not a watch or a stream may take before it is answered 504
    /// (a client's shorter `?timeout=` wins); a request waits at most a quarter of it for a
    /// seat. Go's duration syntax, as kube-apiserver's flag.
    #[arg(long, default_value = "1m", value_parser = strata_cron::duration::parse_std)]
    pub request_timeout: std::time::Duration,
    /// TEST ONLY: issue serving and client certificates for this many seconds instead of a
    /// year (to exercise renewal without waiting for it).
    #[arg(long, hide = true, env = "STRATA_TEST_ONLY_LEAF_LIFETIME_SECONDS")]
    pub test_only_leaf_lifetime_seconds: Option<i64>,
    /// TEST ONLY: the shortest lifetime a TokenRequest may ask for, in seconds, instead of
    /// upstream's 600 (to watch a token expire).
    #[arg(long, hide = true, default_value = "600")]
    pub test_only_service_account_min_token_seconds: i64,
}

#[derive(clap::Subcommand, Debug)]
pub enum CertsCommand {
    /// Re-issue the API server's serving certificate and the admin's client certificate from
    /// the cluster's CA now, and rewrite the admin kubeconfig. A running server presents the
    /// new serving certificate from its next connection on; the old admin certificate stays
    /// valid until it expires.
    Rotate(RotateArgs),
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    /// The server's data directory.
    #[arg(long, env = "STRATA_DATA_DIR", default_value = "/var/lib/strata")]
    pub data_dir: PathBuf,
    /// TEST ONLY: see `strata server`.
    #[arg(long, hide = true, env = "STRATA_TEST_ONLY_LEAF_LIFETIME_SECONDS")]
    pub test_only_leaf_lifetime_seconds: Option<i64>,
}

fn leaf_lifetime(test_only_seconds: Option<i64>) -> time::Duration {
    match test_only_seconds {
        Some(s) if s > 0 => {
            tracing::warn!(seconds = s, "TEST ONLY: short certificate lifetimes");
            time::Duration::seconds(s)
        }
        _ => pki::LEAF_LIFETIME,
    }
}

pub fn certs(c: CertsCommand) -> anyhow::Result<()> {
    match c {
        CertsCommand::Rotate(a) => {
            let issue = pki::Issue { leaf_lifetime: leaf_lifetime(a.test_only_leaf_lifetime_seconds), names: Vec::new() };
            let pki = pki::rotate(&a.data_dir.join("pki"), &issue, &a.data_dir.join("kubeconfig"))?;
            println!("re-issued {} and {}", pki.server_cert().display(), pki.admin_cert().display());
            Ok(())
        }
    }
}

/// The names the serving certificate must carry: the listen address (every address of the
/// host when it listens on all of them), the host name and `--tls-san`.
fn certificate_names(listen: SocketAddr, tls_san: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    if listen.ip().is_unspecified() {
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                let Some(addr) = a.address else { continue };
                let ip: Option<std::net::IpAddr> = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
                    (Some(v4), _) => Some(std::net::Ipv4Addr::from(v4.ip()).into()),
                    (_, Some(v6)) if listen.is_ipv6() && (v6.ip().segments()[0] & 0xffc0) != 0xfe80 => Some(v6.ip().into()),
                    _ => None,
                };
                if let Some(ip) = ip {
                    names.push(ip.to_string());
                }
            }
        }
    } else {
        names.push(listen.ip().to_string());
    }
    names.extend(pki::hostname());
    names.extend(tls_san.iter().cloned());
    names
}

pub fn run(ctx: &super::Ctx, mut a: ServerArgs) -> anyhow::Result<()> {
    // The data dir's paths reach pods (local volumes) and kubeconfigs: absolute from here on.
    a.data_dir = std::path::absolute(&a.data_dir).with_context(|| format!("resolving --data-dir {}", a.data_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let outcome = rt.block_on(serve(ctx, a));
    // Dropping the tasks closes the store (its writer checkpoints); a blocking read that would
    // not end (a container's log followed, a pipe held open) does not hold the exit up.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    outcome
}

async fn serve(ctx: &super::Ctx, a: ServerArgs) -> anyhow::Result<()> {
    // Everything in the data dir is the cluster's state and credentials: 0700, created so.
    strata_apiserver::files::private_dir(&a.data_dir).context("preparing the data directory")?;
    strata_apiserver::files::tighten(&a.data_dir.join("kubeconfig"), 0o600)?;
    let store: Arc<dyn Store> = match a.store.as_str() {
        "embedded" => {
            let path = a.data_dir.join("store.redb");
            let embedded: Arc<dyn Store> =
                Arc::new(strata_store::embedded::Embedded::open(&path).with_context(|| format!("opening the store {}", path.display()))?);
            if a.etcd_compaction_interval > 0 {
                tokio::spawn(strata_store::compact_periodically(embedded.clone(), std::time::Duration::from_secs(a.etcd_compaction_interval)));
            }
            embedded
        }
        other if other.starts_with("etcd://") => {
            let endpoints: Vec<String> = other["etcd://".len()..]
                .split(',')
                .filter(|e| !e.is_empty())
                .map(|e| if e.contains("://") { e.to_string() } else { format!("http://{e}") })
                .collect();
            let etcd = strata_store::etcd::Etcd::connect(&endpoints).await.with_context(|| format!("connecting to {other}"))?;
            let etcd: Arc<dyn Store> = Arc::new(etcd.with_namespace("/strata"));
            if a.etcd_compaction_interval > 0 {
                let interval = std::time::Duration::from_secs(a.etcd_compaction_interval);
                tokio::spawn(strata_store::compact_periodically(etcd.clone(), interval));
            }
            etcd
        }
        other => anyhow::bail!("unknown store {other:?}: use embedded or etcd://HOST:PORT"),
    };
    let issue = pki::Issue { leaf_lifetime: leaf_lifetime(a.test_only_leaf_lifetime_seconds), names: certificate_names(a.listen, &a.tls_san) };
    // Servers on one etcd are one cluster: one CA and one token signing key, kept in the store.
    let (pki, renewed) = if a.store == "embedded" {
        pki::ensure(&a.data_dir.join("pki"), &issue)?
    } else {
        strata_apiserver::shared_pki::ensure_shared(&*store, &a.data_dir.join("pki"), &issue).await?
    };
    let store: Arc<dyn Store> = match &a.encryption_provider_config {
        Some(path) => Arc::new(strata_apiserver::encryption::EncryptedStore::from_file(store, path)?),
        None => store,
    };
    if renewed.server || renewed.admin {
        tracing::info!(serving = renewed.server, admin = renewed.admin, "issued certificates");
    }
    let audit = match &a.audit_log_path {
        Some(path) => Some(strata_apiserver::audit::Auditor::new(&strata_apiserver::audit::AuditConfig {
            log_path: path.clone(),
            policy_file: a.audit_policy_file.clone(),
            max_size_mb: a.audit_log_maxsize,
            max_backups: a.audit_log_maxbackup,
        })?),
        None => None,
    };
    anyhow::ensure!(a.watch_queue_length > 0, "--watch-queue-length must be at least 1");
    let watch_cache = strata_apiserver::watchcache::Config { queue: a.watch_queue_length, ..Default::default() };
    if let Some(p) = a.disable_admission_plugins.iter().find(|p| p.as_str() != "ServiceAccount") {
        anyhow::bail!("--disable-admission-plugins: {p:?} is not an admission plugin strata can turn off (only ServiceAccount)");
    }
    let defaults = strata_apiserver::flowcontrol::Limits::for_this_machine();
    let flow_limits = strata_apiserver::flowcontrol::Limits {
        readonly: a.max_requests_inflight.unwrap_or(defaults.readonly),
        mutating: a.max_mutating_requests_inflight.unwrap_or(defaults.mutating),
        queued: a.max_queued_requests,
        wait: a.request_timeout / 4,
        request_timeout: a.request_timeout,
    };
    anyhow::ensure!(!a.request_timeout.is_zero(), "--request-timeout must be more than 0");
    let server = Server::bind(ServerConfig {
        service_account_admission: !a.disable_admission_plugins.iter().any(|p| p == "ServiceAccount"),
        audit,
        listen: a.listen,
        pki: pki.clone(),
        token_file: a.token_file,
        store,
        service_account_min_token_seconds: a.test_only_service_account_min_token_seconds,
        watch_cache,
        max_long_running: a.max_long_running_requests,
        flow_limits,
        default_tolerations: strata_apiserver::tolerations::Defaults {
            not_ready_seconds: a.default_not_ready_toleration_seconds,
            unreachable_seconds: a.default_unreachable_toleration_seconds,
        },
        local_volumes: a.data_dir.join("volumes"),
    })
    .await?;
    let addr = server.local_addr().unwrap_or(a.listen);
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let kubeconfig = a.data_dir.join("kubeconfig");
    let url = format!("https://{host}:{}", addr.port());
    pki::write_kubeconfig(&pki, &kubeconfig, &url)?;
    // Joining nodes read the CA here (and check it against their token's hash).
    let ca_pem = std::fs::read(pki.ca_cert()).with_context(|| format!("reading {}", pki.ca_cert().display()))?;
    server.publish_cluster_info(&url, &ca_pem).await?;
    // The one CA signs the clients' certificates too.
    server.publish_system_config_maps(&ca_pem).await?;
    // The `default/kubernetes` Service's endpoint: the listen address, or this machine's
    // InternalIP when listening on all addresses or on loopback (an Endpoints address may not be
    // a loopback one; pods reach the server there only when it listens on it).
    let advertise = if addr.ip().is_unspecified() || addr.ip().is_loopback() { a.node_ip.unwrap_or_else(strata_agent::machine::internal_ip) } else { addr.ip() };
    server.publish_kubernetes_service(advertise, addr.port());
    // Told to stop, the scheduler and controllers stop acting and release their leader Leases
    // (so that this server started again, or another one on the same etcd, leads at once).
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let stop = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let mut leaders = Vec::new();
    if !a.no_scheduler {
        leaders.push(super::scheduler::start_in_server(&server, &a.scheduler_events, stop()).await?);
    }
    let agent = if a.no_agent {
        None
    } else {
        // This machine's agent, with its own node identity, over HTTPS like any other node's.
        let node_name = a.node_name.clone().unwrap_or_else(strata_agent::machine::hostname);
        let user = format!("system:node:{node_name}");
        let (cert_pem, key_pem, ca_pem) = pki::component_identity(&pki, &user, &["system:nodes"], pki::LEAF_LIFETIME)?;
        let creds = strata_client::Credentials { server: format!("https://{host}:{}", addr.port()), ca_pem, cert_pem, key_pem };
        let client = creds.client("strata-agent").await?;
        let mut config = strata_agent::Config::new(node_name, ctx.root.join("agent"));
        config.max_pods = a.max_pods;
        config.vm_boot_timeout = std::time::Duration::from_secs(a.vm_boot_timeout);
        config.node_ip = a.node_ip;
        a.pod_settings.apply(&mut config);
        Some(super::node::agent_serving_streams(ctx, config, client, &pki, a.kubelet_port).await?)
    };
    if !a.no_controllers {
        leaders.push(super::controllers::start_in_server(&pki, &server, addr.port(), a.controller_settings.settings(), stop()).await.context("starting the controllers")?);
    }
    eprintln!("strata server listening on https://{addr}");
    eprintln!("kubeconfig: {}", kubeconfig.display());
    eprintln!("  export KUBECONFIG={}", kubeconfig.display());
    let agent = async move {
        match agent {
            Some(agent) => agent.run().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        _ = server.run() => Ok(()),
        r = agent => r.context("node agent"),
        _ = super::shutdown_signal() => {
            eprintln!("strata server: shutting down");
            Ok(())
        }
    };
    let _ = stopping.send(true);
    // Each gives up releasing after 5 s (the Lease then expires as if the server had died).
    let released = tokio::time::timeout(std::time::Duration::from_secs(6), async {
        for leader in leaders {
            let _ = leader.await;
        }
    });
    if released.await.is_err() {
        tracing::warn!("the scheduler and controllers did not stop in time");
    }
    outcome
}
