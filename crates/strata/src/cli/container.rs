//! Container commands: run, create, start, attach, ps, logs, exec, stop, restart, kill, rm,
//! wait, inspect, stats, top, port, pause. Each is a thin translation of flags into a driver
//! call.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Args;
use strata_driver::{
    parse_cpus, parse_memory, parse_signal, ContainerDriver, ContainerSpec, CreateRequest, Driver, ExecRequest, Workload,
    LogOptions, LogStream, NetworkMode, OutputChunk, PortMapping, Resources, Status,
};

use super::attach::{self, Ended, Session};
use super::image::{pull_image, RegistryArgs};
use super::{ago, exit_code, print_table, Ctx};

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Keep stdin open (attach it with `run`).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Name of the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Publish a container port: [IP:]HOST_PORT:CONTAINER_PORT[/tcp].
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub publish: Vec<String>,
    /// Set environment variables (KEY=VALUE, or KEY to copy it from this environment).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User to run as: name, uid, name:group or uid:gid.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Number of CPUs (e.g. 0.5).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Maximum number of processes.
    #[arg(long)]
    pub pids_limit: Option<u32>,
    /// Network: bridge (default), host or none.
    #[arg(long, default_value = "bridge")]
    pub network: String,
    /// Container hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Set a label (KEY=VALUE).
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Give the container all capabilities, no seccomp filter, unmasked /proc.
    #[arg(long)]
    pub privileged: bool,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Pull policy: missing (default), always or never.
    #[arg(long, default_value = "missing")]
    pub pull: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Image to run.
    pub image: String,
    /// Command and arguments (replace the image's cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Keys that detach from a terminal, leaving the container running ("" for none).
    #[arg(long, default_value = attach::DEFAULT_DETACH_KEYS)]
    pub detach_keys: String,
    #[command(flatten)]
    pub create: CreateArgs,
}

impl CreateArgs {
    fn request(&self) -> anyhow::Result<CreateRequest> {
        let network = match self.network.as_str() {
            "bridge" | "default" => NetworkMode::Bridge,
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            other => anyhow::bail!("unknown network {other:?}: use bridge, host or none"),
        };
        let env = self
            .env
            .iter()
            .map(|e| match e.split_once('=') {
                Some(_) => e.clone(),
                None => format!("{e}={}", std::env::var(e).unwrap_or_default()),
            })
            .collect();
        let mut labels = std::collections::BTreeMap::new();
        for l in &self.labels {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            labels.insert(k.to_string(), v.to_string());
        }
        Ok(CreateRequest {
            auto_remove: false,
            name: self.name.clone(),
            labels,
            resources: Resources {
                memory_bytes: self.memory.as_deref().map(parse_memory).transpose()?,
                cpus: self.cpus.as_deref().map(parse_cpus).transpose()?,
                pids: self.pids_limit,
            },
            network,
            ports: self.publish.iter().map(|p| p.parse::<PortMapping>()).collect::<Result<_, _>>()?,
            workload: Workload::Container(ContainerSpec {
                image: self.image.clone(),
                entrypoint: self.entrypoint.as_ref().map(|e| if e.is_empty() { vec![] } else { vec![e.clone()] }),
                command: self.command.clone(),
                env,
                workdir: self.workdir.clone(),
                user: self.user.clone(),
                hostname: self.hostname.clone(),
                privileged: self.privileged,
                read_only: self.read_only,
                stdin: self.interactive,
                tty: self.tty,
            }),
        })
    }
}

/// The request for `a`, pulling its image first if the pull policy says so.
fn prepare(ctx: &Ctx, driver: &ContainerDriver, a: &CreateArgs) -> anyhow::Result<CreateRequest> {
    let req = a.request()?;
    let have = driver.images().get(&a.image);
    match (a.pull.as_str(), have) {
        ("always", _) | ("missing", Err(strata_driver::images::Error::ImageNotFound(_))) => {
            pull_image(ctx, &a.image, &a.registry, false)?;
        }
        ("missing" | "never", Ok(_)) => {}
        ("never" | "missing", Err(e)) => return Err(e.into()),
        (other, _) => anyhow::bail!("unknown pull policy {other:?}: use missing, always or never"),
    }
    Ok(req)
}

pub fn create(ctx: &Ctx, a: CreateArgs) -> anyhow::Result<()> {
    let driver = ctx.driver()?;
    let req = prepare(ctx, &driver, &a)?;
    println!("{}", driver.create(&req)?);
    Ok(())
}

pub fn run(ctx: &Ctx, a: RunArgs) -> anyhow::Result<()> {
    tracing::debug!("run: start");
    if a.detach && a.rm {
        // Allowed by Docker too: the container is removed when it exits, by whoever notices.
        tracing::debug!("--rm with -d: removal happens on the next ps/rm after exit");
    }
    let interactive = a.create.interactive && !a.detach;
    if a.create.tty && !a.detach {
        attach::require_terminal("drop -t, or run from a terminal")?;
    }
    let detach_keys = attach::parse_detach_keys(&a.detach_keys)?;
    let driver = ctx.driver()?;
    let mut req = prepare(ctx, &driver, &a.create)?;
    req.auto_remove = a.rm;
    let id = driver.run(&req)?;
    if a.detach {
        println!("{id}");
        return Ok(());
    }
    let input = if interactive || a.create.tty { Some(driver.attach(&id)?) } else { None };
    let session = Session { input, stdin: interactive, tty: a.create.tty, detach_keys };
    // All the output since the start: the container started before we could attach.
    let (d, log_id) = (driver.clone(), id.clone());
    let output = move || print_logs(&*d, &log_id, &LogOptions { follow: true, ..Default::default() }, false);
    if attach::run(driver.clone(), &id, session, output)? == Ended::Detached {
        return Ok(());
    }
    let exit = driver.wait(&id, None)?;
    tracing::debug!(container = %id, code = exit.code, "exited");
    if a.rm {
        driver.delete(&id, true)?;
        tracing::debug!(container = %id, "removed");
    }
    exit_code(exit.code)
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach stdin (output only).
    #[arg(long)]
    pub no_stdin: bool,
    /// Keys that detach from a terminal, leaving the container running ("" for none).
    #[arg(long, default_value = attach::DEFAULT_DETACH_KEYS)]
    pub detach_keys: String,
    pub container: String,
}

/// Attach to a running container: its output from now on, our stdin to it when it was created
/// with -i; exits with its exit code, or 0 when detached.
pub fn attach(ctx: &Ctx, a: AttachArgs) -> anyhow::Result<()> {
    let detach_keys = attach::parse_detach_keys(&a.detach_keys)?;
    let driver = ctx.driver()?;
    let id = driver.resolve(&a.container)?;
    let attached = driver.attach_session(&id)?;
    let stdin = attached.stdin && !a.no_stdin;
    if attached.tty && stdin {
        attach::require_terminal("attach with --no-stdin, or from a terminal")?;
    }
    let output = attached.output;
    let session = Session { input: attached.input, stdin, tty: attached.tty, detach_keys };
    if attach::run(driver.clone(), &id, session, move || print_chunks(output))? == Ended::Detached {
        return Ok(());
    }
    exit_code(driver.wait(&id, None)?.code)
}

/// Copy output chunks to our stdout/stderr as they come.
fn print_chunks(chunks: impl Iterator<Item = std::io::Result<OutputChunk>>) -> anyhow::Result<()> {
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    for chunk in chunks {
        let chunk = chunk?;
        match chunk.stream {
            LogStream::Stdout => stdout.write_all(&chunk.data).and_then(|()| stdout.flush())?,
            LogStream::Stderr => stderr.write_all(&chunk.data)?,
        }
    }
    Ok(())
}

/// Copy the container's logged output to our stdout/stderr (with `follow`, until it exits).
fn print_logs(driver: &dyn Driver, id: &str, opts: &LogOptions, timestamps: bool) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    driver.logs(id, opts, &mut |rec| {
        let mut buf = Vec::with_capacity(rec.content.len() + 40);
        if timestamps {
            buf.extend_from_slice(rec.time.as_bytes());
            buf.push(b' ');
        }
        buf.extend_from_slice(&rec.content);
        if !rec.partial {
            buf.push(b'\n');
        }
        let ok = match rec.stream {
            // Flushed at once: a partial record may be a prompt.
            LogStream::Stdout => stdout.lock().write_all(&buf).and_then(|_| stdout.lock().flush()),
            LogStream::Stderr => stderr.lock().write_all(&buf),
        };
        ok.is_ok()
    })?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// Apply `f` to each named container, reporting failures per container like Docker does.
fn each(
    ctx: &Ctx,
    names: &[String],
    mut f: impl FnMut(&ContainerDriver, &str, &str) -> Result<(), anyhow::Error>,
) -> anyhow::Result<()> {
    let driver = ctx.driver()?;
    let mut failed = false;
    for name in names {
        let r = driver.resolve(name).map_err(anyhow::Error::from).and_then(|id| f(&driver, &id, name));
        if let Err(e) = r {
            eprintln!("strata: {e:#}");
            failed = true;
        }
    }
    exit_code(if failed { 1 } else { 0 })
}

pub fn start(ctx: &Ctx, a: NamesArgs) -> anyhow::Result<()> {
    each(ctx, &a.containers, |d, id, name| {
        d.start(id)?;
        println!("{name}");
        Ok(())
    })
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short, long)]
    pub all: bool,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate ids and commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format: table or json.
    #[arg(long, default_value = "table")]
    pub format: String,
}

pub fn ps(ctx: &Ctx, a: PsArgs) -> anyhow::Result<()> {
    let driver = ctx.driver()?;
    let list: Vec<_> = driver
        .list()?
        .into_iter()
        .filter(|c| a.all || matches!(c.status, Status::Running | Status::Paused))
        .collect();
    let id = |s: &str| if a.no_trunc { s.to_string() } else { s[..s.len().min(12)].to_string() };
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if a.quiet {
        for c in &list {
            println!("{}", id(&c.id));
        }
        return Ok(());
    }
    // Pod containers (made by the node agent) carry their pod and namespace as labels.
    let with_pods = list.iter().any(|c| c.labels.contains_key(strata_driver::pod::labels::POD_NAME));
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let mut cmd = c.command.join(" ");
            if !a.no_trunc && cmd.chars().count() > 30 {
                cmd = cmd.chars().take(29).collect::<String>() + "…";
            }
            let status = match (&c.status, &c.exit) {
                (Status::Exited, Some(e)) => format!("Exited ({}) {}", e.summary(), ago(&e.finished_at)),
                (Status::Running, _) => format!("Up {}", ago(c.started_at.as_deref().unwrap_or(&c.created_at)).trim_end_matches(" ago")),
                (Status::Paused, _) => "Paused".into(),
                (s, _) => capitalize(s.as_str()),
            };
            let ports =
                c.ports.iter().map(|p| format!("{}->{}/tcp", host_addr(p), p.container_port)).collect::<Vec<_>>().join(", ");
            let mut row = vec![id(&c.id), c.image.clone(), format!("\"{cmd}\""), ago(&c.created_at), status, ports, c.name.clone()];
            if with_pods {
                let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
                row.push(label(strata_driver::pod::labels::POD_NAME));
                row.push(label(strata_driver::pod::labels::POD_NAMESPACE));
            }
            row
        })
        .collect();
    let mut header = vec!["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"];
    if with_pods {
        header.extend(["POD", "NAMESPACE"]);
    }
    print_table(&header, &rows);
    Ok(())
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep printing new output until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(short = 'n', long)]
    pub tail: Option<usize>,
    /// Prefix each line with its timestamp.
    #[arg(short, long)]
    pub timestamps: bool,
    /// For vm/NAME: the VM's namespace (default: the kubeconfig context's, else "default").
    #[arg(long)]
    pub namespace: Option<String>,
    /// For vm/NAME: the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// For vm/NAME: the kubeconfig context (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// A container, or vm/NAME: a VirtualMachine's serial console through the API server.
    pub container: String,
}

pub fn logs(ctx: &Ctx, a: LogsArgs) -> anyhow::Result<()> {
    if a.container.contains('/') {
        return super::console::vm_logs(&a.container, &a);
    }
    let driver = ctx.driver()?;
    let id = driver.resolve(&a.container)?;
    print_logs(&*driver, &id, &LogOptions { follow: a.follow, tail: a.tail, ..Default::default() }, a.timestamps)
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep stdin open and connected to the process.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal (needs a terminal on stdin).
    #[arg(short = 't', long)]
    pub tty: bool,
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn exec(ctx: &Ctx, a: ExecArgs) -> anyhow::Result<()> {
    let driver = ctx.driver()?;
    let id = driver.resolve(&a.container)?;
    if a.tty {
        attach::require_terminal("drop -t, or run from a terminal")?;
    }
    let r = driver.exec(
        &id,
        &ExecRequest {
            command: a.command,
            env: a.env,
            workdir: a.workdir,
            user: a.user,
            capture: false,
            interactive: a.interactive,
            tty: a.tty,
        },
    )?;
    exit_code(r.code)
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn stop(ctx: &Ctx, a: StopArgs) -> anyhow::Result<()> {
    each(ctx, &a.containers, |d, id, name| {
        d.stop(id, Duration::from_secs(a.time))?;
        println!("{name}");
        Ok(())
    })
}

/// Stop (with the same grace period as `stop`) and start again; exited containers just start.
pub fn restart(ctx: &Ctx, a: StopArgs) -> anyhow::Result<()> {
    each(ctx, &a.containers, |d, id, name| {
        d.restart(id, Duration::from_secs(a.time))?;
        println!("{name}");
        Ok(())
    })
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send.
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn kill(ctx: &Ctx, a: KillArgs) -> anyhow::Result<()> {
    let sig = parse_signal(&a.signal)?;
    each(ctx, &a.containers, |d, id, name| {
        d.kill(id, sig)?;
        println!("{name}");
        Ok(())
    })
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill and remove running containers.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn rm(ctx: &Ctx, a: RmArgs) -> anyhow::Result<()> {
    each(ctx, &a.containers, |d, id, name| {
        d.delete(id, a.force)?;
        println!("{name}");
        Ok(())
    })
}

pub fn wait(ctx: &Ctx, a: NamesArgs) -> anyhow::Result<()> {
    each(ctx, &a.containers, |d, id, _| {
        println!("{}", d.wait(id, None)?.code);
        Ok(())
    })
}

pub fn inspect(ctx: &Ctx, a: NamesArgs) -> anyhow::Result<()> {
    let driver = ctx.driver()?;
    let mut out = Vec::new();
    for name in &a.containers {
        let id = driver.resolve(name)?;
        out.push(driver.state(&id)?);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub fn stats(ctx: &Ctx, a: NamesArgs) -> anyhow::Result<()> {
    let driver = ctx.driver()?;
    let mut rows = Vec::new();
    for name in &a.containers {
        let id = driver.resolve(name)?;
        let st = driver.state(&id)?;
        let s = driver.stats(&id)?;
        let limit = s.memory_limit_bytes.map(super::human_size).unwrap_or_else(|| "unlimited".into());
        rows.push(vec![
            id[..12].to_string(),
            st.name,
            format!("{:.2}s", s.cpu_usage_ns as f64 / 1e9),
            format!("{} / {limit}", super::human_size(s.memory_bytes)),
            s.pids.to_string(),
        ]);
    }
    print_table(&["CONTAINER ID", "NAME", "CPU TIME", "MEM USAGE / LIMIT", "PIDS"], &rows);
    Ok(())
}

pub fn pause(ctx: &Ctx, a: NamesArgs, pause: bool) -> anyhow::Result<()> {
    each(ctx, &a.containers, |d, id, name| {
        if pause { d.pause(id)? } else { d.resume(id)? }
        println!("{name}");
        Ok(())
    })
}

/// Where a published port listens on the host.
fn host_addr(p: &PortMapping) -> SocketAddr {
    SocketAddr::new(p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), p.host_port)
}

#[derive(Args, Debug)]
pub struct PortArgs {
    pub container: String,
    /// Only this container port: PORT[/tcp].
    pub port: Option<String>,
}

/// The container's published ports, as `podman port` prints them.
pub fn port(ctx: &Ctx, a: PortArgs) -> anyhow::Result<()> {
    let driver = ctx.driver()?;
    let state = driver.state(&driver.resolve(&a.container)?)?;
    let Some(wanted) = a.port else {
        for p in &state.ports {
            println!("{}/tcp -> {}", p.container_port, host_addr(p));
        }
        return Ok(());
    };
    let (number, proto) = wanted.split_once('/').unwrap_or((wanted.as_str(), "tcp"));
    let number: u16 = match (number.parse(), proto) {
        (Ok(n), "tcp") => n,
        _ => anyhow::bail!("invalid port {wanted:?}: use PORT or PORT/tcp (only tcp ports are published)"),
    };
    let found: Vec<_> = state.ports.iter().filter(|p| p.container_port == number).collect();
    if found.is_empty() {
        anyhow::bail!("no public port {number}/tcp published for {}", state.name);
    }
    for p in found {
        println!("{}", host_addr(p));
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct TopArgs {
    pub container: String,
}

/// The container's processes with podman top's default columns.
pub fn top(ctx: &Ctx, a: TopArgs) -> anyhow::Result<()> {
    let driver = ctx.driver()?;
    let procs = driver.processes(&driver.resolve(&a.container)?)?;
    let rows: Vec<Vec<String>> = procs
        .into_iter()
        .map(|p| {
            let cpu = if p.elapsed.is_zero() { 0.0 } else { 100.0 * p.cpu_time.as_secs_f64() / p.elapsed.as_secs_f64() };
            vec![
                p.user,
                p.pid.to_string(),
                p.ppid.to_string(),
                format!("{cpu:.3}"),
                duration(p.elapsed),
                p.tty.unwrap_or_else(|| "?".into()),
                duration(p.cpu_time),
                p.command,
            ]
        })
        .collect();
    print_table(&["USER", "PID", "PPID", "%CPU", "ELAPSED", "TTY", "TIME", "COMMAND"], &rows);
    Ok(())
}

/// A duration as podman top (Go) writes one, to the millisecond: `1h2m3.5s`, `8.848s`, `0s`.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    let secs = format!("{s}.{frac:03}");
    out.push_str(secs.trim_end_matches('0').trim_end_matches('.'));
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_podman_top() {
        for (ms, text) in [(0, "0s"), (8_848, "8.848s"), (62_500, "1m2.5s"), (3_723_000, "1h2m3s"), (3_600_010, "1h0m0.01s")] {
            assert_eq!(duration(Duration::from_millis(ms)), text);
        }
    }
}
