//! The node agent as the binary starts it (`strata server` and `strata agent`): the drivers
//! over the strata root, handed to `strata_agent`.

use std::sync::Arc;

use anyhow::Context;

/// The agent for this machine, over the container and VM drivers of `ctx`'s root; run it with
/// `.run().await`. `client` authenticates as `system:node:<config.node_name>`.
pub fn agent(ctx: &super::Ctx, config: strata_agent::Config, client: strata_client::kube::Client) -> anyhow::Result<strata_agent::Agent> {
    let driver = ctx.driver()?;
    let exe = std::env::current_exe().context("locating the strata executable")?;
    let vms = strata_driver::VmDriver::open(&ctx.root, exe)?;
    Ok(strata_agent::Agent::new(config, client, driver).with_vm_driver(Arc::new(vms)))
}

/// The agent for this machine, as [`agent`], serving its stream endpoint (`kubectl logs`,
/// `exec`, `attach`, `port-forward` through the API server) on `port` with a serving
/// certificate for the node's address signed by the cluster CA (the API server verifies it).
/// A taken port is replaced by a free one (the Node publishes the port in use).
pub async fn agent_serving_streams(
    ctx: &super::Ctx,
    mut config: strata_agent::Config,
    client: strata_client::kube::Client,
    pki: &strata_apiserver::pki::Pki,
    port: u16,
) -> anyhow::Result<strata_agent::Agent> {
    use strata_agent::streams;
    let driver = ctx.driver()?;
    let ip = config.node_ip.unwrap_or_else(strata_agent::machine::internal_ip);
    let names = vec![ip.to_string(), "127.0.0.1".to_string()];
    let (cert, key) = strata_apiserver::pki::serving_identity(pki, &format!("system:node:{}", config.node_name), &names, strata_apiserver::pki::LEAF_LIFETIME)?;
    let ca = std::fs::read_to_string(pki.ca_cert()).with_context(|| format!("reading {}", pki.ca_cert().display()))?;
    let mut cfg = streams::Config {
        listen: std::net::SocketAddr::from(([0, 0, 0, 0], port)),
        serving_cert_pem: cert,
        serving_key_pem: key,
        client_ca_pem: ca,
        allowed_users: vec![streams::API_SERVER_USER.to_string()],
    };
    let pods: Arc<dyn streams::PodStreams> = Arc::new(streams::DriverPods::new(driver.clone()));
    let server = match streams::bind(cfg.clone(), pods.clone()).await {
        Ok(s) => s,
        Err(streams::Error::Listen { source, .. }) if source.kind() == std::io::ErrorKind::AddrInUse && port != 0 => {
            tracing::warn!(port, "the stream endpoint's port is taken; using a free one");
            cfg.listen.set_port(0);
            streams::bind(cfg, pods).await?
        }
        Err(e) => return Err(e.into()),
    };
    config.kubelet_port = server.local_addr().port();
    tracing::info!(addr = %server.local_addr(), "node agent stream endpoint");
    tokio::spawn(server.run());
    let exe = std::env::current_exe().context("locating the strata executable")?;
    let vms = strata_driver::VmDriver::open(&ctx.root, exe)?;
    Ok(strata_agent::Agent::new(config, client, driver).with_vm_driver(Arc::new(vms)))
}
