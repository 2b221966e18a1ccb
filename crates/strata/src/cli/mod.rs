//! Command-line parsing and dispatch. Front end only: every action goes through the driver
//! interface (`strata_driver::Driver`) or the image store it re-exports.

mod attach;
mod console;
mod container;
mod controllers;
mod image;
mod join;
mod node;
mod progress;
mod scheduler;
mod server;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata_driver::images::{parse_size, ImageStore, Reserve, UnpackLimits};
use strata_driver::ContainerDriver;

/// Containers and virtual machines side by side.
#[derive(Parser, Debug)]
#[command(name = "strata", version, about, propagate_version = true)]
pub struct Cli {
    /// Where strata keeps its state (images, containers).
    #[arg(long, global = true, env = "STRATA_ROOT", default_value = "/var/lib/strata")]
    root: PathBuf,
    /// OCI runtime: runc, crun, youki, or a path to a compatible binary.
    #[arg(long, global = true, env = "STRATA_RUNTIME", default_value = "runc")]
    runtime: String,
    /// Log level for strata's own diagnostics (error, warn, info, debug, trace).
    #[arg(long, global = true, env = "STRATA_LOG", default_value = "warn")]
    log_level: String,
    /// Free space unpacking an image layer must leave on the store's filesystem: a share of
    /// it (5%) or a size (2GiB).
    #[arg(long, global = true, env = "STRATA_UNPACK_RESERVE", default_value = "5%")]
    unpack_reserve: Reserve,
    /// Largest uncompressed size of one image layer (e.g. 64GiB).
    #[arg(long, global = true, env = "STRATA_MAX_LAYER_SIZE", default_value = "64GiB", value_parser = parse_size_arg)]
    max_layer_size: u64,
    /// Most entries (files, directories, links) in one image layer.
    #[arg(long, global = true, env = "STRATA_MAX_LAYER_ENTRIES", default_value_t = 1_000_000)]
    max_layer_entries: u64,
    /// A guest kernel for VM-isolated pods (`runtimeClassName: strata-vm`): a kernel tree such
    /// as an unpacked linux-image package (boot/vmlinuz-<release>, lib/modules/<release>/).
    /// Without it this node runs no VM-isolated pods.
    #[arg(long, global = true, env = "STRATA_VM_KERNEL")]
    vm_kernel: Option<PathBuf>,
    /// The static guest agent of VM-isolated pods (default: strata-guest beside this executable).
    #[arg(long, global = true, env = "STRATA_GUEST_AGENT")]
    vm_guest_agent: Option<PathBuf>,
    /// Under TCG, the translation-block cache of each VM-isolated pod's QEMU in MiB (0: QEMU's
    /// default, 1 GiB on 64-bit hosts; an idle pod fills the cache it is given, MiB for MiB of
    /// QEMU's memory: see docs/benchmarks.md).
    #[arg(long, global = true, env = "STRATA_VM_TB_SIZE", default_value_t = strata_driver::microvm::DEFAULT_TB_SIZE_MIB)]
    vm_tb_size: u32,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pull an image from a registry.
    Pull(image::PullArgs),
    /// List images.
    Images(image::ImagesArgs),
    /// Remove images.
    Rmi(image::RmiArgs),
    /// Manage images (import, ls, rm, gc).
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Create and start a container.
    Run(container::RunArgs),
    /// Create a container without starting it.
    Create(container::CreateArgs),
    /// Start created or exited containers.
    Start(container::NamesArgs),
    /// Attach to a running container's output and input (detach with ctrl-p ctrl-q).
    Attach(container::AttachArgs),
    /// Stop containers (as `stop`) and start them again.
    Restart(container::StopArgs),
    /// List the processes of a container.
    Top(container::TopArgs),
    /// List a container's published ports.
    Port(container::PortArgs),
    /// List containers.
    Ps(container::PsArgs),
    /// Print a container's output.
    Logs(container::LogsArgs),
    /// Run a command in a running container.
    Exec(container::ExecArgs),
    /// Stop containers: the stop signal, then SIGKILL after a grace period.
    Stop(container::StopArgs),
    /// Send a signal to containers.
    Kill(container::KillArgs),
    /// Remove containers.
    Rm(container::RmArgs),
    /// Wait for containers to exit and print their exit codes.
    Wait(container::NamesArgs),
    /// Show a container's full state as JSON.
    Inspect(container::NamesArgs),
    /// Show resource usage of running containers.
    Stats(container::NamesArgs),
    /// Freeze all processes of containers.
    Pause(container::NamesArgs),
    /// Thaw paused containers.
    Unpause(container::NamesArgs),
    /// Run the control plane: a Kubernetes-compatible API server (HTTPS) on the embedded store
    /// or etcd, writing a CA and an admin kubeconfig on first start.
    Server(server::ServerArgs),
    /// Manage join tokens (bootstrap tokens) for `strata agent`.
    #[command(subcommand)]
    Token(join::TokenCommand),
    /// Join a cluster as a node (with a token from `strata token create`) and run the node agent.
    Agent(join::AgentArgs),
    /// Run the scheduler against an API server (`strata server` runs one itself unless
    /// `--no-scheduler`).
    Scheduler(scheduler::SchedulerArgs),
    /// Run the controllers (ReplicaSet, Deployment, garbage collection, ServiceAccount) against
    /// an API server, as kube-controller-manager; only the leader of the
    /// `kube-system/kube-controller-manager` Lease acts.
    Controllers(controllers::ControllersArgs),
    /// Manage the control plane's certificates (`rotate`).
    #[command(subcommand)]
    Certs(server::CertsCommand),
    /// Manage virtual machines (QEMU): create, list, start, stop, console, snapshot, ...
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Attach to a VirtualMachine's serial console through the API server (kubeconfig, like
    /// kubectl): `strata console vm/NAME [-n NAMESPACE]`; detach with Ctrl-].
    Console(console::ConsoleArgs),
}

/// A container's exit code to pass through, as opposed to an error of strata's own.
#[derive(Debug)]
pub struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// Finish with a workload's exit code (passed through as ours).
pub fn exit_code(code: i32) -> anyhow::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(ExitWith(code.clamp(0, 255) as u8).into())
    }
}

/// Exit code for errors of strata itself (Docker uses 125 the same way).
const EXIT_STRATA_ERROR: u8 = 125;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log_level);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(ExitWith(code)) = e.downcast_ref::<ExitWith>() {
                return ExitCode::from(*code);
            }
            // One line: the whole cause chain, outermost first.
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let mut line = String::new();
            for c in chain {
                if !line.contains(&c) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&c);
                }
            }
            eprintln!("strata: {line}");
            ExitCode::from(EXIT_STRATA_ERROR)
        }
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).ok_or_else(|| format!("invalid size {s:?}: expected a number with an optional unit k, m, g or t (e.g. 64GiB)"))
}

/// The pieces commands need, opened on demand so that image commands work without a runtime.
pub struct Ctx {
    root: PathBuf,
    runtime: String,
    limits: UnpackLimits,
    vm_kernel: Option<PathBuf>,
    vm_guest_agent: Option<PathBuf>,
    vm_tb_size: u32,
}

impl Ctx {
    fn images(&self) -> anyhow::Result<Arc<ImageStore>> {
        // The root first: created by the store below, it would get the default 0755.
        strata_driver::images::private_dir(&self.root).with_context(|| format!("opening {}", self.root.display()))?;
        let dir = self.root.join("images");
        let store = ImageStore::open(&dir).with_context(|| format!("opening image store {}", dir.display()))?;
        Ok(Arc::new(store.with_limits(self.limits)))
    }

    fn driver(&self) -> anyhow::Result<Arc<ContainerDriver>> {
        let exe = std::env::current_exe().context("locating the strata executable")?;
        Ok(Arc::new(ContainerDriver::open(&self.root, &self.runtime, self.images()?, exe)?))
    }

    /// The node's pod runtimes: containers, and VM-isolated pods (handler `strata-vm`) when a
    /// guest kernel is given.
    fn pod_runtimes(&self) -> anyhow::Result<Arc<strata_driver::PodRuntimes>> {
        let exe = std::env::current_exe().context("locating the strata executable")?;
        let images = self.images()?;
        let containers = Arc::new(ContainerDriver::open(&self.root, &self.runtime, images.clone(), exe.clone())?);
        let mut runtimes = strata_driver::PodRuntimes::new(containers);
        if let Some(kernel) = &self.vm_kernel {
            let agent = match &self.vm_guest_agent {
                Some(a) => a.clone(),
                None => exe.parent().map(|d| d.join("strata-guest")).context("locating strata-guest beside the executable")?,
            };
            let mut config = strata_driver::MicroVmConfig::new(kernel.clone(), agent);
            config.tcg_tb_size_mib = (self.vm_tb_size > 0).then_some(self.vm_tb_size);
            let vms = strata_driver::MicroVmRuntime::open(&self.root, images, exe, config).context("opening the runtime of VM-isolated pods")?;
            tracing::info!(kernel = vms.kernel_release(), "VM-isolated pods (runtime handler strata-vm) enabled");
            runtimes = runtimes.with_handler(strata_driver::VM_HANDLER, Arc::new(vms));
        } else {
            runtimes = runtimes.without_handler(strata_driver::VM_HANDLER, "it was started without a guest kernel (strata server|agent --vm-kernel PATH)");
        }
        Ok(Arc::new(runtimes))
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let limits = UnpackLimits {
        reserve: cli.unpack_reserve,
        max_layer_bytes: cli.max_layer_size,
        max_layer_entries: cli.max_layer_entries,
    };
    // Paths under the root end up in OCI specs and mounts, which need them absolute: a relative
    // `--root` is taken from the working directory once, here.
    let root = std::path::absolute(&cli.root).with_context(|| format!("resolving --root {}", cli.root.display()))?;
    let ctx = Ctx { root, runtime: cli.runtime, limits, vm_kernel: cli.vm_kernel, vm_guest_agent: cli.vm_guest_agent, vm_tb_size: cli.vm_tb_size };
    match cli.command {
        Command::Pull(a) => image::pull(&ctx, a),
        Command::Images(a) => image::images(&ctx, a),
        Command::Rmi(a) => image::rmi(&ctx, a),
        Command::Image(c) => image::image(&ctx, c),
        Command::Run(a) => container::run(&ctx, a),
        Command::Create(a) => container::create(&ctx, a),
        Command::Start(a) => container::start(&ctx, a),
        Command::Attach(a) => container::attach(&ctx, a),
        Command::Restart(a) => container::restart(&ctx, a),
        Command::Top(a) => container::top(&ctx, a),
        Command::Port(a) => container::port(&ctx, a),
        Command::Ps(a) => container::ps(&ctx, a),
        Command::Logs(a) => container::logs(&ctx, a),
        Command::Exec(a) => container::exec(&ctx, a),
        Command::Stop(a) => container::stop(&ctx, a),
        Command::Kill(a) => container::kill(&ctx, a),
        Command::Rm(a) => container::rm(&ctx, a),
        Command::Wait(a) => container::wait(&ctx, a),
        Command::Inspect(a) => container::inspect(&ctx, a),
        Command::Stats(a) => container::stats(&ctx, a),
        Command::Pause(a) => container::pause(&ctx, a, true),
        Command::Unpause(a) => container::pause(&ctx, a, false),
        Command::Server(a) => server::run(&ctx, a),
        Command::Scheduler(a) => scheduler::run(a),
        Command::Certs(c) => server::certs(c),
        Command::Token(c) => join::token(c),
        Command::Agent(a) => join::agent(&ctx, a),
        Command::Controllers(a) => controllers::run(a),
        Command::Vm(c) => vm::run(&ctx, c),
        Command::Console(a) => console::run(a),
    }
}

/// Print rows as left-aligned columns separated by three spaces (like `docker ps`).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// "3 minutes ago" style ages.
pub fn ago(rfc3339: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(rfc3339) else { return rfc3339.to_string() };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds().max(0);
    let (n, unit) = match secs {
        0..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        3600..=86399 => (secs / 3600, "hour"),
        _ => (secs / 86400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Human-readable byte counts (`1.2MB`), decimal units like Docker.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + units[i]
    }
}

/// Resolves at the first SIGINT or SIGTERM (what `kill`, systemd and Kubernetes send to stop a
/// process): the control-plane commands then stop acting and release their leader Leases
/// before they exit, so the next leader need not wait for the Leases to expire.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
