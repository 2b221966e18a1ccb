//! `strata scheduler`: the scheduler against any API server (strata's or another
//! Kubernetes'), with the identity of its kubeconfig; and how `strata server` starts it in
//! its own process as `system:kube-scheduler`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// The kubeconfig to reach the API server with (its current context).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// The API server's address (`https://HOST:PORT`), instead of the kubeconfig's; the
    /// kubeconfig still supplies the CA and the credentials (kube-scheduler's `--master`).
    #[arg(long, alias = "master")]
    pub server: Option<String>,
    /// Schedule the pods whose `spec.schedulerName` is this.
    #[arg(long, default_value = "default-scheduler")]
    pub scheduler_name: String,
    /// Stand for leadership of the Lease kube-system/kube-scheduler and schedule only while
    /// leading (as kube-scheduler's `--leader-elect`), so several schedulers can run.
    #[arg(long, default_value = "true", action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// This scheduler's identity in the Lease (default: host name and a random suffix).
    #[arg(long)]
    pub identity: Option<String>,
    /// How long the Lease stands after its holder's last renewal (kube-scheduler's flag).
    #[arg(long, default_value = "15s", value_parser = strata_cron::duration::parse_std)]
    pub leader_elect_lease_duration: std::time::Duration,
    /// A leader that could not renew for this long stops scheduling.
    #[arg(long, default_value = "10s", value_parser = strata_cron::duration::parse_std)]
    pub leader_elect_renew_deadline: std::time::Duration,
    /// Pause between attempts to acquire or renew the Lease.
    #[arg(long, default_value = "2s", value_parser = strata_cron::duration::parse_std)]
    pub leader_elect_retry_period: std::time::Duration,
    /// Bindings sent and not yet answered, at most: the next pod waits for a slot (the
    /// scheduler logs at info how long it waited, at most every 10 s).
    #[arg(long, default_value_t = strata_scheduler::MAX_BINDINGS_IN_FLIGHT as u32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_bindings_in_flight: u32,
    /// The scheduler's Events: how fast they are written.
    #[command(flatten)]
    pub events: EventRateArgs,
}

/// How fast the scheduler writes its Events (kube-scheduler's event client is limited by its
/// `clientConnection` qps and burst, 50 and 100 by default): the rest wait in a queue, so a
/// burst of thousands of bindings is not also thousands of Event creates at once.
#[derive(Args, Debug, Clone)]
pub struct EventRateArgs {
    /// The scheduler's Events written per second after the burst; 0 writes them as fast as
    /// the API server takes them.
    #[arg(long, default_value_t = 50.0, value_parser = parse_qps)]
    pub event_qps: f64,
    /// The scheduler's Events written at once before the rate applies.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub event_burst: u32,
}

impl EventRateArgs {
    pub fn rate(&self) -> Option<strata_client::events::WriteRate> {
        (self.event_qps > 0.0).then_some(strata_client::events::WriteRate { qps: self.event_qps, burst: self.event_burst })
    }
}

fn parse_qps(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a rate: a number of events per second, 0 or more")),
    }
}

pub fn run(a: SchedulerArgs) -> anyhow::Result<()> {
    if !(a.leader_elect_retry_period < a.leader_elect_renew_deadline && a.leader_elect_renew_deadline < a.leader_elect_lease_duration) {
        anyhow::bail!("--leader-elect-retry-period must be shorter than --leader-elect-renew-deadline, and that shorter than --leader-elect-lease-duration");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async move {
        let client = strata_client::from_kubeconfig_at(&a.kubeconfig, a.server.as_deref(), "strata-scheduler").await?;
        let lease_client = strata_client::from_kubeconfig_at(&a.kubeconfig, a.server.as_deref(), "strata-scheduler/leader-election").await?;
        let mut config = strata_scheduler::Config { scheduler_name: a.scheduler_name, max_bindings_in_flight: a.max_bindings_in_flight as usize, event_rate: a.events.rate(), ..Default::default() };
        config.leader_election = a.leader_elect.then(|| {
            let mut e = strata_scheduler::Election::default();
            if let Some(id) = a.identity {
                e.identity = id;
            }
            e.timing = strata_client::leader::Timing {
                lease_duration: a.leader_elect_lease_duration,
                renew_deadline: a.leader_elect_renew_deadline,
                retry_period: a.leader_elect_retry_period,
            };
            e
        });
        match &config.leader_election {
            Some(e) => eprintln!("strata scheduler: scheduling pods of {} while leading (identity {})", config.scheduler_name, e.identity),
            None => eprintln!("strata scheduler: scheduling pods of {}", config.scheduler_name),
        }
        strata_scheduler::run_elected(client, lease_client, config, async {
            super::shutdown_signal().await;
            eprintln!("strata scheduler: shutting down");
        })
        .await;
        Ok(())
    })
}

/// Start the scheduler inside `strata server`, as `system:kube-scheduler` with a client
/// certificate from the cluster CA.
/// It runs until `stop` resolves, and then releases its Lease if it leads.
pub async fn start_in_server(server: &strata_apiserver::server::Server, events: &EventRateArgs, stop: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // In-process: the scheduler's identity, its requests served without a socket.
    let client = strata_client::in_process(server.local("system:kube-scheduler", &[]), "strata-scheduler");
    let lease_client = strata_client::in_process(server.local("system:kube-scheduler", &[]), "strata-scheduler/leader-election");
    // Servers sharing one etcd elect one scheduler among them.
    let config = strata_scheduler::Config { event_rate: events.rate(), ..Default::default() };
    Ok(tokio::spawn(strata_scheduler::run_elected(client, lease_client, config, stop)))
}
