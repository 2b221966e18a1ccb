//! `strata vm ...`: virtual machine commands. Each is a thin translation of flags into a call on
//! the VM driver (`strata_driver::VmDriver`), like the container commands.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use strata_driver::{
    parse_cpus, parse_memory, parse_signal, CreateRequest, Driver, Error, LogOptions, NetworkMode, PortMapping,
    Resources, VmDriver, VmSpec, Workload,
};

use super::{print_table, Ctx};

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Create and boot a VM from a kernel (and initrd) or from a disk image.
    Create(Box<CreateArgs>),
    /// List VMs.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Boot created or stopped VMs.
    Start(NamesArgs),
    /// Stop VMs: ACPI power button, then quit after the grace period.
    Stop(StopArgs),
    /// Send a signal to VMs' QEMU processes (default SIGKILL).
    Kill(KillArgs),
    /// Pause VMs' vCPUs.
    Pause(NamesArgs),
    /// Resume paused VMs.
    Resume(NamesArgs),
    /// Remove VMs.
    Rm(RmArgs),
    /// Attach the terminal to a VM's serial console (detach with Ctrl-]).
    Console(NameArg),
    /// Print a VM's serial console output.
    Logs(LogsArgs),
    /// Save a running VM (memory and devices) as a named snapshot.
    Snapshot(SnapshotArgs),
    /// Return a running VM to a snapshot.
    Restore(SnapshotArgs),
    /// Resize a running VM's memory with its balloon (up to its size at creation).
    SetMemory(SetMemoryArgs),
    /// Show QEMU's resource usage for running VMs.
    Stats(NamesArgs),
}

#[derive(Args, Debug)]
pub struct SetMemoryArgs {
    pub name: String,
    /// The memory the guest keeps (e.g. 128M).
    pub memory: String,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Name of the VM.
    pub name: String,
    /// Kernel to boot directly (bzImage).
    #[arg(long, required_unless_present = "disk")]
    pub kernel: Option<std::path::PathBuf>,
    /// Disk image to boot (qcow2, raw, ...): the VM writes to its own qcow2 overlay, never to
    /// this file, so many VMs can share one base image.
    #[arg(long)]
    pub disk: Option<std::path::PathBuf>,
    /// Virtual size of the VM's disk (e.g. 10G); at least the image's size.
    #[arg(long, requires = "disk")]
    pub disk_size: Option<String>,
    /// cloud-init user-data, served to the guest as a NoCloud seed (label CIDATA) with
    /// meta-data naming the instance and its hostname.
    #[arg(long)]
    pub cloud_init: Option<std::path::PathBuf>,
    /// Network: bridge (a tap on the node bridge strata0, address from its IPAM, given to the
    /// guest by cloud-init network-config), user (QEMU user-mode networking) or none. Default:
    /// bridge when running as root with the CNI plugins installed, else user.
    #[arg(long)]
    pub network: Option<String>,
    /// Forward a host TCP port to the guest ([ip:]host_port:guest_port).
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Initial ramdisk.
    #[arg(long)]
    pub initrd: Option<std::path::PathBuf>,
    /// Kernel command line (default: console=ttyS0 earlyprintk=ttyS0 panic=-1 tsc_early_khz=2000000 no_timer_check).
    #[arg(long)]
    pub append: Option<String>,
    /// Memory (e.g. 256M, 1G).
    #[arg(short = 'm', long, default_value = "256M")]
    pub memory: String,
    /// Number of vCPUs.
    #[arg(long, default_value = "1")]
    pub cpus: String,
    /// Set a label (KEY=VALUE).
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Stay attached to the console after booting (detach with Ctrl-] on a terminal).
    #[arg(short = 'a', long)]
    pub attach: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Output format: table or json.
    #[arg(short = 'o', long, default_value = "table")]
    pub output: String,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NameArg {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait for the guest to power off before quitting QEMU.
    #[arg(short = 't', long = "time", default_value = "60")]
    pub time: u64,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send (name or number).
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill running VMs first.
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep printing output until the VM stops.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    pub name: String,
    /// Snapshot name.
    pub snapshot: String,
}

fn driver(ctx: &Ctx) -> anyhow::Result<VmDriver> {
    let exe = std::env::current_exe().context("locating the strata executable")?;
    Ok(VmDriver::open(&ctx.root, exe)?)
}

/// The CLI's one place for VM-specific wording of driver errors.
fn vm_error(e: Error) -> anyhow::Error {
    match e {
        Error::NotFound(what) if !what.contains(' ') => anyhow::anyhow!("no such VM: {what}"),
        Error::NotFound(what) => anyhow::anyhow!("no such {what}"),
        other => other.into(),
    }
}

pub fn run(ctx: &Ctx, cmd: VmCommand) -> anyhow::Result<()> {
    let d = driver(ctx)?;
    let each = |names: &[String], f: &dyn Fn(&str) -> Result<(), Error>| -> anyhow::Result<()> {
        if let [n] = names {
            d.resolve(n).and_then(|id| f(&id)).map_err(vm_error)?;
            println!("{n}");
            return Ok(());
        }
        let mut failed = 0;
        for n in names {
            match d.resolve(n).and_then(|id| f(&id)) {
                Ok(()) => println!("{n}"),
                Err(e) => {
                    eprintln!("strata: {n}: {:#}", vm_error(e));
                    failed += 1;
                }
            }
        }
        if failed > 0 {
            anyhow::bail!("{failed} of {} VMs failed", names.len());
        }
        Ok(())
    };
    match cmd {
        VmCommand::Create(a) => create(&d, *a),
        VmCommand::List(a) => list(&d, a),
        VmCommand::Start(a) => each(&a.names, &|id| d.start(id)),
        VmCommand::Stop(a) => each(&a.names, &|id| d.stop(id, Duration::from_secs(a.time)).map(drop)),
        VmCommand::Kill(a) => {
            let sig = parse_signal(&a.signal)?;
            each(&a.names, &|id| d.kill(id, sig))
        }
        VmCommand::Pause(a) => each(&a.names, &|id| d.pause(id)),
        VmCommand::Resume(a) => each(&a.names, &|id| d.resume(id)),
        VmCommand::Rm(a) => each(&a.names, &|id| d.delete(id, a.force)),
        VmCommand::Console(a) => {
            let id = d.resolve(&a.name).map_err(vm_error)?;
            attach(&d, &id)
        }
        VmCommand::Logs(a) => {
            let id = d.resolve(&a.name).map_err(vm_error)?;
            let stdout = std::io::stdout();
            d.logs(&id, &LogOptions { follow: a.follow, tail: a.tail, ..Default::default() }, &mut |rec| {
                let mut out = stdout.lock();
                out.write_all(&rec.content).is_ok() && (rec.partial || out.write_all(b"\n").is_ok())
            })
            .map_err(vm_error)
        }
        VmCommand::Snapshot(a) => {
            let id = d.resolve(&a.name).map_err(vm_error)?;
            d.snapshot(&id, &a.snapshot).map_err(vm_error)
        }
        VmCommand::Stats(a) => {
            let mut rows = Vec::new();
            for n in &a.names {
                let id = d.resolve(n).map_err(vm_error)?;
                let s = d.stats(&id).map_err(vm_error)?;
                let guest = s.memory_limit_bytes.map(super::human_size).unwrap_or_default();
                rows.push(vec![
                    n.clone(),
                    format!("{:.2}s", s.cpu_usage_ns as f64 / 1e9),
                    super::human_size(s.memory_bytes),
                    guest,
                    s.pids.to_string(),
                ]);
            }
            print_table(&["NAME", "CPU TIME", "QEMU RSS", "GUEST MEMORY", "THREADS"], &rows);
            Ok(())
        }
        VmCommand::SetMemory(a) => {
            let bytes = parse_memory(&a.memory)?;
            let id = d.resolve(&a.name).map_err(vm_error)?;
            d.set_memory(&id, bytes).map_err(vm_error)
        }
        VmCommand::Restore(a) => {
            let id = d.resolve(&a.name).map_err(vm_error)?;
            d.restore(&id, &a.snapshot).map_err(vm_error)
        }
    }
}

fn create(d: &VmDriver, a: CreateArgs) -> anyhow::Result<()> {
    let mut labels = std::collections::BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let network = match a.network.as_deref() {
        None => VmDriver::default_network(),
        Some("user") => NetworkMode::User,
        Some("none") => NetworkMode::None,
        Some("bridge") => NetworkMode::Bridge,
        Some(other) => anyhow::bail!("invalid network {other:?}: use bridge, user or none"),
    };
    let ports = a.publish.iter().map(|p| p.parse::<PortMapping>()).collect::<Result<Vec<_>, _>>()?;
    let req = CreateRequest {
        name: Some(a.name.clone()),
        labels,
        resources: Resources {
            memory_bytes: Some(parse_memory(&a.memory)?),
            cpus: Some(parse_cpus(&a.cpus)?),
            pids: None,
        },
        network,
        ports,
        workload: Workload::Vm(VmSpec {
            kernel: a.kernel,
            initrd: a.initrd,
            append: a.append,
            disk: a.disk,
            cloud_init: a.cloud_init,
            network_config: None,
            disk_size_bytes: a
                .disk_size
                .as_deref()
                .map(|s| {
                    parse_memory(s).map_err(|_| anyhow::anyhow!("invalid disk size {s:?}: expected a size such as 10G"))
                })
                .transpose()?,
        }),
        ..Default::default()
    };
    let id = d.create(&req).map_err(vm_error)?;
    // Attach before the vCPUs run, so not a byte of the boot is missed.
    let console = if a.attach { Some(d.console(&id).map_err(vm_error)?) } else { None };
    if let Err(e) = d.start(&id) {
        let _ = d.delete(&id, true);
        return Err(vm_error(e));
    }
    match console {
        Some(c) => relay(c),
        None => {
            println!("{}", a.name);
            Ok(())
        }
    }
}

fn list(d: &VmDriver, a: ListArgs) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for s in d.list()? {
        let (state, details) = match d.details(&s.id) {
            Ok(x) => x,
            Err(_) => continue, // removed meanwhile
        };
        let uptime = state
            .started_at
            .as_deref()
            .filter(|_| state.pid.is_some())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds().max(0));
        rows.push((state, details, uptime));
    }
    if a.output == "json" {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(s, d, up)| {
                serde_json::json!({
                    "name": s.name,
                    "id": s.id,
                    "state": s.status.as_str(),
                    "accelerator": d.accelerator,
                    "accelerator_reason": d.accelerator_reason,
                    "qemu_status": d.qemu_status,
                    "pid": s.pid,
                    "ip": s.ip,
                    "network": d.network,
                    "mac": d.mac,
                    "ports": s.ports.iter().map(|p| format!("{}:{}->{}/tcp", p.host_ip.map(|i| i.to_string()).unwrap_or_else(|| "0.0.0.0".into()), p.host_port, p.container_port)).collect::<Vec<_>>(),
                    "image": s.image,
                    "uptime_seconds": up,
                    "memory_mib": d.memory_mib,
                    "memory_actual_mib": d.memory_actual_mib,
                    "cpus": d.cpus,
                    "exit_code": s.exit.as_ref().map(|e| e.code),
                    "exit_signal": s.exit.as_ref().and_then(|e| e.signal_name.clone()),
                    "exit_reason": s.exit.as_ref().map(|e| e.reason.as_str()),
                    "exit_message": s.exit.as_ref().and_then(|e| e.message.clone()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if a.output != "table" {
        anyhow::bail!("unknown output format {:?}: use table or json", a.output);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(s, d, up)| {
            vec![
                s.name.clone(),
                match &s.exit {
                    Some(e) => format!("exited ({})", e.summary()),
                    None => s.status.as_str().to_string(),
                },
                d.accelerator.clone(),
                s.pid.map(|p| p.to_string()).unwrap_or_default(),
                up.map(|u| format!("{u}s")).unwrap_or_default(),
                format!("{}M/{}cpu", d.memory_mib, d.cpus),
            ]
        })
        .collect();
    print_table(&["NAME", "STATE", "ACCEL", "PID", "UPTIME", "SIZE"], &table);
    Ok(())
}

/// Ctrl-]: detach from the console, as telnet and virsh do.
const DETACH: u8 = 0x1d;

fn attach(d: &VmDriver, id: &str) -> anyhow::Result<()> {
    let console = d.console(id).map_err(vm_error)?;
    relay(console)
}

/// Copy the console to stdout and stdin to the console. On a terminal, the terminal is raw
/// (restored on the way out) and Ctrl-] detaches; otherwise output is copied until the VM
/// stops.
fn relay(console: std::os::unix::net::UnixStream) -> anyhow::Result<()> {
    let raw = super::attach::RawTerminal::enter();
    if raw.is_some() {
        eprint!("[attached to the serial console; detach with Ctrl-]]\r\n");
    }
    let mut from_vm = console.try_clone()?;
    let out = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut stdout = std::io::stdout();
        while let Ok(n) = from_vm.read(&mut buf) {
            if n == 0 || stdout.write_all(&buf[..n]).and_then(|_| stdout.flush()).is_err() {
                break;
            }
        }
    });
    let tty = raw.is_some();
    let mut to_vm = console.try_clone()?;
    let input = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    let chunk = &buf[..n];
                    if tty {
                        if let Some(pos) = chunk.iter().position(|&b| b == DETACH) {
                            let _ = to_vm.write_all(&chunk[..pos]);
                            return true;
                        }
                    }
                    if to_vm.write_all(chunk).is_err() {
                        return false;
                    }
                }
            }
        }
    });
    if tty {
        // A terminal user ends the session with Ctrl-] (or the VM ends it).
        loop {
            if input.is_finished() || out.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = console.shutdown(std::net::Shutdown::Both);
    }
    let _ = out.join();
    drop(raw);
    if tty {
        eprintln!();
    }
    Ok(())
}

