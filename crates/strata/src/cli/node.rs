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
