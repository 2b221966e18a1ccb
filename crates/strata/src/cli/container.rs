//! Container commands: run, create, start, ps, logs, exec, stop, kill, rm, wait, inspect,
//! stats, pause. Each is a thin translation of flags into a driver call.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use strata_driver::{
    parse_cpus, parse_memory, parse_signal, ContainerDriver, ContainerSpec, CreateRequest, Driver, ExecRequest, Workload,
    LogOptions, LogStream, NetworkMode, PortMapping, Resources, Status,
};

use super::image::{pull_image, RegistryArgs};
use super::{ago, print_table, Ctx, ExitWith};

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
    if a.create.tty && !a.detach && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        anyhow::bail!("the input device is not a TTY: drop -t, or run from a terminal");
    }
    let driver = ctx.driver()?;
    let mut req = prepare(ctx, &driver, &a.create)?;
    req.auto_remove = a.rm;
    let id = driver.run(&req)?;
    if a.detach {
        println!("{id}");
        return Ok(());
    }
    let input = if interactive || a.create.tty { Some(driver.attach(&id)?) } else { None };
    // A terminal in raw mode for the whole session (restored when the guard drops).
    let _raw = if a.create.tty { RawTerminal::enter() } else { None };
    let input = input.map(|i| Arc::new(std::sync::Mutex::new(i)));
    if let Some(input) = &input {
        if a.create.tty {
            resize(input);
        }
        if interactive {
            let input = input.clone();
            std::thread::spawn(move || pump_stdin(&input));
        }
    }
    forward_signals(driver.clone(), id.clone(), if a.create.tty { input.clone() } else { None });
    attach_output(&*driver, &id, true)?;
    drop(_raw);
    let exit = driver.wait(&id, None)?;
    tracing::debug!(container = %id, code = exit.code, "exited");
    if a.rm {
        driver.delete(&id, true)?;
        tracing::debug!(container = %id, "removed");
    }
    Err(ExitWith(exit.code.clamp(0, 255) as u8).into())
}

/// Copy the container's output to our stdout/stderr until it exits.
fn attach_output(driver: &dyn Driver, id: &str, follow: bool) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    driver.logs(id, &LogOptions { follow, tail: None }, &mut |rec| {
        let mut buf = rec.content.clone();
        if !rec.partial {
            buf.push(b'\n');
        }
        let ok = match rec.stream {
            LogStream::Stdout => stdout.lock().write_all(&buf).and_then(|_| stdout.lock().flush()),
            LogStream::Stderr => stderr.lock().write_all(&buf),
        };
        ok.is_ok()
    })?;
    Ok(())
}

type SharedInput = Arc<std::sync::Mutex<Box<dyn strata_driver::AttachInput>>>;

/// Pass SIGINT, SIGTERM and SIGHUP on to the container while attached, as `docker run` does;
/// with a terminal, SIGWINCH resizes the container's terminal instead.
fn forward_signals(driver: Arc<ContainerDriver>, id: String, tty: Option<SharedInput>) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGWINCH] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || loop {
        match set.wait() {
            Ok(Signal::SIGWINCH) => {
                if let Some(t) = &tty {
                    resize(t);
                }
            }
            Ok(sig) => {
                let _ = driver.kill(&id, sig as i32);
            }
            Err(_) => return,
        }
    });
}

/// Copy our stdin to the container until EOF, then close its input.
fn pump_stdin(input: &SharedInput) {
    use std::io::Read;
    let mut buf = [0u8; 8192];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let ok = input.lock().map(|mut i| i.input(&buf[..n]).is_ok()).unwrap_or(false);
                if !ok {
                    return;
                }
            }
        }
    }
    if let Ok(mut i) = input.lock() {
        let _ = i.close_input();
    }
}

/// Tell the container's terminal our terminal's size.
fn resize(input: &SharedInput) {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ fills a winsize for a terminal fd; failure leaves it zeroed.
    let ok = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_row > 0 {
        if let Ok(mut i) = input.lock() {
            let _ = i.resize(ws.ws_row, ws.ws_col);
        }
    }
}

/// Our terminal in raw mode; restored on drop.
struct RawTerminal(nix::sys::termios::Termios);

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &self.0);
    }
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
    if failed {
        return Err(ExitWith(1).into());
    }
    Ok(())
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
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let mut cmd = c.command.join(" ");
            if !a.no_trunc && cmd.chars().count() > 30 {
                cmd = cmd.chars().take(29).collect::<String>() + "…";
            }
            let status = match (&c.status, &c.exit) {
                (Status::Exited, Some(e)) => format!("Exited ({}) {}", e.code, ago(&e.finished_at)),
                (Status::Running, _) => format!("Up {}", ago(c.started_at.as_deref().unwrap_or(&c.created_at)).trim_end_matches(" ago")),
                (Status::Paused, _) => "Paused".into(),
                (s, _) => capitalize(s.as_str()),
            };
            let ports = c
                .ports
                .iter()
                .map(|p| match p.host_ip {
                    Some(ip) => format!("{ip}:{}->{}/tcp", p.host_port, p.container_port),
                    None => format!("0.0.0.0:{}->{}/tcp", p.host_port, p.container_port),
                })
                .collect::<Vec<_>>()
                .join(", ");
            vec![id(&c.id), c.image.clone(), format!("\"{cmd}\""), ago(&c.created_at), status, ports, c.name.clone()]
        })
        .collect();
    print_table(&["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], &rows);
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
    pub container: String,
}

pub fn logs(ctx: &Ctx, a: LogsArgs) -> anyhow::Result<()> {
    let driver = ctx.driver()?;
    let id = driver.resolve(&a.container)?;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    driver.logs(&id, &LogOptions { follow: a.follow, tail: a.tail }, &mut |rec| {
        let mut buf = Vec::new();
        if a.timestamps {
            buf.extend_from_slice(rec.time.as_bytes());
            buf.push(b' ');
        }
        buf.extend_from_slice(&rec.content);
        if !rec.partial {
            buf.push(b'\n');
        }
        match rec.stream {
            LogStream::Stdout => stdout.lock().write_all(&buf).is_ok(),
            LogStream::Stderr => stderr.lock().write_all(&buf).is_ok(),
        }
    })?;
    Ok(())
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
    if a.tty && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        anyhow::bail!("the input device is not a TTY: drop -t, or run from a terminal");
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
    if r.code == 0 {
        Ok(())
    } else {
        Err(ExitWith(r.code.clamp(0, 255) as u8).into())
    }
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

