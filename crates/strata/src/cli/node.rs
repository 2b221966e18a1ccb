//! The node agent as the binary starts it (`strata server` and `strata agent`): the drivers
//! over the strata root, handed to `strata_agent`.

use std::sync::Arc;

use anyhow::Context;

/// The node agent's settings of the pods it runs, shared by `strata server` and `strata agent`
/// (kubelet's flags of the same names).
#[derive(clap::Args, Debug, Clone)]
pub struct PodSettingsArgs {
    /// DNS servers of pods with `dnsPolicy: ClusterFirst` (comma-separated). Without one such
    /// pods use the node's resolver configuration, as kubelet's `Default`.
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Vec<std::net::IpAddr>,
    /// The cluster's DNS domain: pods' search domains and FQDNs.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The node's resolver configuration, the base of pods' `resolv.conf`.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: std::path::PathBuf,
    /// Namespaced sysctls pods may set beyond the safe ones (comma-separated names, or
    /// prefixes ending in `*`, e.g. `kernel.msg*,net.core.somaxconn`).
    #[arg(long, value_delimiter = ',')]
    pub allowed_unsafe_sysctls: Vec<String>,
}

impl PodSettingsArgs {
    pub fn apply(&self, config: &mut strata_agent::Config) {
        config.cluster_dns = self.cluster_dns.clone();
        config.cluster_domain = self.cluster_domain.clone();
        config.resolv_conf = self.resolv_conf.clone();
        config.allowed_unsafe_sysctls = self.allowed_unsafe_sysctls.clone();
    }
}

/// The VM driver over `ctx`'s root (one per process: the agent and its stream endpoint share it).
fn vm_driver(ctx: &super::Ctx) -> anyhow::Result<Arc<strata_driver::VmDriver>> {
    let exe = std::env::current_exe().context("locating the strata executable")?;
    Ok(Arc::new(strata_driver::VmDriver::open(&ctx.root, exe)?))
}

/// The agent for this machine, over the container driver of `ctx`'s root and `vms`; run it with
/// `.run().await`. `client` authenticates as `system:node:<config.node_name>`.
fn agent(
    config: strata_agent::Config,
    client: strata_client::kube::Client,
    runtimes: Arc<strata_driver::PodRuntimes>,
    vms: Arc<strata_driver::VmDriver>,
) -> anyhow::Result<strata_agent::Agent> {
    Ok(strata_agent::Agent::new(config, client, runtimes).with_vm_driver(vms))
}

/// Bind the stream endpoint (`kubectl logs`, `exec`, `attach`, `port-forward` through the API
/// server, and VM consoles) on `port` for the pods of `ctx`'s driver and the VMs of `vms`,
/// presenting `serving` (cert, key PEM) if given. A taken port is replaced by a free one (the
/// Node publishes the port in use).
async fn bind_streams(
    runtimes: Arc<strata_driver::PodRuntimes>,
    vms: Arc<strata_driver::VmDriver>,
    ca_pem: String,
    serving: Option<(String, String)>,
    port: u16,
) -> anyhow::Result<strata_agent::streams::StreamServer> {
    use strata_agent::streams;
    let (serving_cert_pem, serving_key_pem) = serving.unwrap_or_default();
    let mut cfg = streams::Config {
        listen: std::net::SocketAddr::from(([0, 0, 0, 0], port)),
        serving_cert_pem,
        serving_key_pem,
        client_ca_pem: ca_pem,
        allowed_users: vec![streams::API_SERVER_USER.to_string()],
    };
    let pods: Arc<dyn streams::PodStreams> = Arc::new(streams::DriverPods::new(runtimes).with_vms(vms));
    let server = match streams::bind(cfg.clone(), pods.clone()).await {
        Ok(s) => s,
        Err(streams::Error::Listen { source, .. }) if source.kind() == std::io::ErrorKind::AddrInUse && port != 0 => {
            tracing::warn!(port, "the stream endpoint's port is taken; using a free one");
            cfg.listen.set_port(0);
            streams::bind(cfg, pods).await?
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(addr = %server.local_addr(), "node agent stream endpoint");
    Ok(server)
}

/// The agent for this machine, as `agent`, serving its stream endpoint on `port` with a
/// serving certificate for the node's address signed by the cluster CA (the API server
/// verifies it): `strata server`'s own node.
pub async fn agent_serving_streams(
    ctx: &super::Ctx,
    mut config: strata_agent::Config,
    client: strata_client::kube::Client,
    pki: &strata_apiserver::pki::Pki,
    port: u16,
) -> anyhow::Result<strata_agent::Agent> {
    let ip = config.node_ip.unwrap_or_else(strata_agent::machine::internal_ip);
    let names = vec![ip.to_string(), "127.0.0.1".to_string()];
    let serving = strata_apiserver::pki::serving_identity(pki, &format!("system:node:{}", config.node_name), &names, strata_apiserver::pki::LEAF_LIFETIME)?;
    let ca = std::fs::read_to_string(pki.ca_cert()).with_context(|| format!("reading {}", pki.ca_cert().display()))?;
    let vms = vm_driver(ctx)?;
    // One set of runtimes for the agent and its stream endpoint (a microVM's channel has one holder).
    let runtimes = ctx.pod_runtimes()?;
    let server = bind_streams(runtimes.clone(), vms.clone(), ca, Some(serving), port).await?;
    config.kubelet_port = server.local_addr().port();
    tokio::spawn(server.run());
    agent(config, client, runtimes, vms)
}

/// The agent of a joined machine (`strata agent`), serving its stream endpoint on `port`. Its
/// serving certificate comes from the cluster (`kubernetes.io/kubelet-serving`, as kubelet's
/// server TLS bootstrap): requested once the Node is registered, for the node's InternalIP and
/// name, kept in `<data dir>/serving.{crt,key}` (0600) and reused while it is valid for those
/// names. Until it is issued the endpoint refuses handshakes (the API server reports the node
/// unreachable for streams).
pub async fn joined_agent(ctx: &super::Ctx, mut config: strata_agent::Config, client: strata_client::kube::Client, ca_pem: String, port: u16) -> anyhow::Result<strata_agent::Agent> {
    let ip = config.node_ip.unwrap_or_else(strata_agent::machine::internal_ip);
    let names = vec![ip.to_string(), config.node_name.clone()];
    let (crt, key) = (config.root_dir.join("serving.crt"), config.root_dir.join("serving.key"));
    let stored = stored_serving(&crt, &key, &names);
    let have = stored.is_some();
    let vms = vm_driver(ctx)?;
    let runtimes = ctx.pod_runtimes()?;
    let server = bind_streams(runtimes.clone(), vms.clone(), ca_pem, stored, port).await?;
    config.kubelet_port = server.local_addr().port();
    let slot = server.certificate();
    tokio::spawn(server.run());
    if !have {
        let (client, node) = (client.clone(), config.node_name.clone());
        tokio::spawn(async move {
            let nodes: strata_client::kube::Api<strata_client::k8s_openapi::api::core::v1::Node> = strata_client::kube::Api::all(client.clone());
            let mut delay = std::time::Duration::from_millis(200);
            loop {
                // Approval checks the names against the registered Node's addresses.
                if matches!(nodes.get_opt(&node).await, Ok(Some(_))) {
                    match strata_client::join::serving_certificate(&client, &node, &names, std::time::Duration::from_secs(60)).await {
                        Ok((cert, key_pem)) => match slot.set(&cert, &key_pem) {
                            Ok(()) => {
                                if let Err(e) = store_serving(&crt, &key, &cert, &key_pem, &names) {
                                    tracing::warn!(error = %e, "keeping the serving certificate");
                                }
                                tracing::info!(node = %node, "serving certificate issued; the stream endpoint is up");
                                return;
                            }
                            Err(e) => tracing::warn!(error = %e, "the issued serving certificate does not load"),
                        },
                        Err(e) => tracing::warn!(error = %e, "requesting a serving certificate"),
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
        });
    }
    agent(config, client, runtimes, vms)
}

/// The kept serving certificate, if it names exactly `names` and is less than half its
/// lifetime (the signer's, one year) old.
fn stored_serving(crt: &std::path::Path, key: &std::path::Path, names: &[String]) -> Option<(String, String)> {
    let meta = std::fs::read_to_string(crt.with_extension("names")).ok()?;
    if meta.lines().map(str::to_string).collect::<Vec<_>>() != names {
        return None;
    }
    let age = std::fs::metadata(crt).ok()?.modified().ok()?.elapsed().ok()?;
    if age > strata_apiserver::csr::SIGNING_DURATION / 2 {
        return None;
    }
    Some((std::fs::read_to_string(crt).ok()?, std::fs::read_to_string(key).ok()?))
}

fn store_serving(crt: &std::path::Path, key: &std::path::Path, cert: &str, key_pem: &str, names: &[String]) -> anyhow::Result<()> {
    strata_apiserver::files::write_atomic(key, key_pem.as_bytes(), true)?;
    strata_apiserver::files::write_atomic(crt, cert.as_bytes(), true)?;
    strata_apiserver::files::write_atomic(&crt.with_extension("names"), names.join("\n").as_bytes(), true)?;
    Ok(())
}
