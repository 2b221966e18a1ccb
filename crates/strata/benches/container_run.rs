//! Container run latency and a create/delete leak loop (issue 2).
//!
//! `cargo bench -p strata --bench container_run` (root; runc, podman, docker-registry and
//! busybox-static installed). One run does, against a real `docker-registry` holding the
//! testkit busybox image and a fresh strata root under /var/tmp:
//!
//! 1. Latency, `BENCH_ITERS` (default 50) interleaved iterations of, each timed end to end
//!    from spawning the command to its exit:
//!    - `strata run --rm --network none IMAGE true` (create, start, wait, delete via the CLI);
//!    - `runc run` of the very bundle strata generates (same config.json: namespaces, seccomp,
//!      capabilities, mounts; rootfs a plain copy of the merged overlay), one runc process;
//!    - the same bundle as `runc create` + `runc start` + wait + `runc delete` (the three
//!      runtime invocations strata makes), to split runtime cost from strata's own;
//!    - `podman run --rm` of the same image pulled from the same registry;
//!    - extras: `strata run --rm` on the default bridge network (CNI), and `strata run -d`
//!      (time until the CLI returns the id of a started container).
//!
//!    Reports p50/p90/p99/mean per peer, strata/runc and strata/podman at the median, and
//!    PASS/MISS against the target (strata under 1.5x raw `runc run` at the median).
//! 2. Leaks: `BENCH_LOOP` (default 1000) containers `run -d ... sleep 60`, removed alternately
//!    with `rm -f` and `stop -t 0` + `rm`, every 10th on the bridge network; then checks that no
//!    mount, cgroup, netns, process, runtime state, container dir, name or IPAM lease is left.
//!
//! The process exits non-zero only if leaks are found. Everything it creates is removed.
//! The `strata` binary measured is the one cargo builds for this bench (the bench profile,
//! i.e. optimized).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

use strata_testkit::{busybox_image, Registry};

const TARGET_RATIO: f64 = 1.5;
const PODMAN_GLOBAL: &[&str] = &["--cgroup-manager=cgroupfs", "--runtime=runc", "--events-backend=file"];
const PODMAN_RUN: &[&str] =
    &["--rm", "--network=none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"];

fn main() -> ExitCode {
    let iters = env_usize("BENCH_ITERS", 50);
    let loop_n = env_usize("BENCH_LOOP", 1000);
    let strata_bin = PathBuf::from(env!("CARGO_BIN_EXE_strata"));
    println!("container_run: strata binary {}", strata_bin.display());
    println!("container_run: {iters} latency iterations, {loop_n} leak-loop containers");
    println!("container_run: load average at start: {}", loadavg());

    let registry = Registry::start();
    registry.push(&busybox_image(), "busybox", "latest");
    let image = format!("{}/busybox:latest", registry.addr);
    let work = tempfile::Builder::new().prefix("strata-bench-").tempdir_in("/var/tmp").expect("bench tempdir in /var/tmp");
    let mut guard = Cleanup::new(work.path(), &strata_bin);
    let strata = Strata { bin: strata_bin, root: guard.root.clone() };
    fs::create_dir_all(&strata.root).expect("create strata root");

    let pulled = strata.run(&["pull", &image]);
    assert!(pulled.status.success(), "strata pull {image} failed: {}", stderr(&pulled));

    let runc = RuncBundle::prepare(&strata, &image, &work.path().join("runc")).expect("prepare the runc reference bundle");
    guard.runc_state = Some(runc.state.clone());
    guard.cgroup_parent = Some(runc.cgroup_parent.clone());

    let podman = match Podman::setup(&work.path().join("podman"), &registry.addr) {
        Ok(p) => Some(p),
        Err(why) => {
            println!("podman: skipped: {why}");
            None
        }
    };
    guard.podman = podman.clone();

    measure_latency(iters, &strata, &image, &runc, podman.as_ref());
    let leaks = leak_loop(loop_n, &strata, &image);

    println!();
    println!("container_run: load average at end: {}", loadavg());
    drop(guard);
    drop(registry);
    if leaks {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The 1/5/15-minute load averages: other work on a 2-core machine skews every peer.
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// Run `cmd` with null stdio and return (elapsed, success, stderr).
fn timed(mut cmd: Command) -> (Duration, Result<(), String>) {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let t = Instant::now();
    let out = cmd.output();
    let elapsed = t.elapsed();
    let result = match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("{}: {}", o.status, stderr(&o))),
        Err(e) => Err(format!("spawn: {e}")),
    };
    (elapsed, result)
}

// ---------------------------------------------------------------------------------------------
// strata

struct Strata {
    bin: PathBuf,
    root: PathBuf,
}

impl Strata {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root).args(args).stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap_or_else(|e| panic!("cannot run strata {args:?}: {e}"))
    }

    /// Run and return trimmed stdout, or an error with stderr.
    fn ok(&self, args: &[&str]) -> Result<String, String> {
        let o = self.run(args);
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        } else {
            Err(format!("strata {args:?}: {}: {}", o.status, stderr(&o)))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// runc reference bundle

/// strata's own bundle for `IMAGE true`, lifted out of strata's root so plain runc can run it.
struct RuncBundle {
    bundle: PathBuf,
    state: PathBuf,
    config: serde_json::Value,
    /// cgroup parent used for the bench's runc containers (`/strata-bench-<pid>`).
    cgroup_parent: String,
    /// The image's unpacked layers as strata mounts them (overlayfs `lowerdir=`).
    lowerdir: String,
}

impl RuncBundle {
    fn prepare(strata: &Strata, image: &str, dir: &Path) -> Result<RuncBundle, String> {
        let id = strata.ok(&["create", "--network", "none", "--name", "bench-ref", image, "true"])?;
        let result = Self::copy_out(strata, &id, dir);
        let removed = strata.ok(&["rm", "-f", &id]);
        let bundle = result?;
        removed?;
        Ok(bundle)
    }

    fn copy_out(strata: &Strata, id: &str, dir: &Path) -> Result<RuncBundle, String> {
        let cdir = strata.root.join("containers").join(id);
        let src_bundle = cdir.join("bundle");
        let bundle = dir.join("bundle");
        let files = dir.join("files");
        let state = dir.join("state");
        for d in [&bundle, &files, &state] {
            fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
        // The overlay strata mounted for the container: its lower layers (the shared snapshots).
        let mountpoint = src_bundle.join("rootfs").display().to_string();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("mountinfo: {e}"))?;
        let lowerdir = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(mountpoint.as_str()))
            .and_then(|l| l.split(',').find_map(|o| o.strip_prefix("lowerdir=")))
            .map(str::to_string)
            .ok_or("the reference container's overlay mount was not found")?;
        // A plain copy of the merged overlay (mounted while the container exists).
        let cp = Command::new("cp")
            .arg("-a")
            .arg(src_bundle.join("rootfs/."))
            .arg(bundle.join("rootfs"))
            .output()
            .map_err(|e| format!("cp: {e}"))?;
        if !cp.status.success() {
            return Err(format!("cp -a rootfs: {}", stderr(&cp)));
        }
        let text = fs::read_to_string(src_bundle.join("config.json")).map_err(|e| format!("read config.json: {e}"))?;
        let mut config: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("config.json: {e}"))?;
        // Bind-mounted files that live in the container dir (/etc/hosts, hostname, resolv.conf)
        // go away with it: copy them next to the bundle and point the mounts there.
        let cdir_s = cdir.display().to_string();
        if let Some(mounts) = config["mounts"].as_array_mut() {
            for m in mounts {
                let Some(src) = m["source"].as_str().map(str::to_string) else { continue };
                if src.starts_with(&cdir_s) {
                    let name = Path::new(&src).file_name().ok_or("mount source without a name")?.to_os_string();
                    let to = files.join(&name);
                    fs::copy(&src, &to).map_err(|e| format!("copy {src}: {e}"))?;
                    m["source"] = serde_json::Value::String(to.display().to_string());
                }
            }
        }
        // Nothing else may point into the container dir (the cgroup path, which names the
        // container too, is replaced per run).
        if config.to_string().contains(&cdir_s) {
            return Err(format!("config.json refers to {cdir_s} in a way this bench does not rewrite"));
        }
        Ok(RuncBundle { bundle, state, config, cgroup_parent: format!("/strata-bench-{}", std::process::id()), lowerdir })
    }

    /// Write config.json with a fresh cgroup path for container `name` (not timed).
    fn set_name(&self, name: &str) {
        let mut c = self.config.clone();
        c["linux"]["cgroupsPath"] = serde_json::Value::String(format!("{}/{name}", self.cgroup_parent));
        fs::write(self.bundle.join("config.json"), c.to_string()).expect("write bench config.json");
    }

    fn runc(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&self.state);
        c
    }

    /// `runc run`: create, start, wait and delete in one runtime process.
    fn run_once(&self, name: &str) -> (Duration, Result<(), String>) {
        self.set_name(name);
        let mut c = self.runc();
        c.arg("run").arg("--bundle").arg(&self.bundle).arg(name);
        timed(c)
    }

    /// `runc run` of the bundle with its rootfs as strata makes it: an overlay of the shared
    /// layers with a fresh upper dir, mounted and unmounted inside the timing (strata does both
    /// on every `run --rm`).
    fn run_overlay(&self, name: &str) -> (Duration, Result<(), String>) {
        let dir = self.bundle.parent().unwrap_or(&self.bundle).join("ovl");
        let rootfs = dir.join("rootfs");
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        let _ = fs::create_dir_all(&rootfs);
        let mut c = self.config.clone();
        c["linux"]["cgroupsPath"] = serde_json::Value::String(format!("{}/{name}", self.cgroup_parent));
        fs::write(dir.join("config.json"), c.to_string()).expect("write overlay bench config.json");
        let t = Instant::now();
        for d in [&upper, &work] {
            let _ = fs::create_dir_all(d);
        }
        let data = format!("lowerdir={},upperdir={},workdir={}", self.lowerdir, upper.display(), work.display());
        if let Err(e) = nix::mount::mount(Some("overlay"), &rootfs, Some("overlay"), nix::mount::MsFlags::empty(), Some(data.as_str())) {
            return (t.elapsed(), Err(format!("overlay mount: {e}")));
        }
        let mut cmd = self.runc();
        cmd.arg("run").arg("--bundle").arg(&dir).arg(name).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let r = match cmd.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("runc run exited with {s}")),
            Err(e) => Err(format!("runc: {e}")),
        };
        let _ = nix::mount::umount(&rootfs);
        let _ = fs::remove_dir_all(&upper);
        let _ = fs::remove_dir_all(&work);
        (t.elapsed(), r)
    }

    /// What strata does with the runtime: `create`, `start`, wait for init, `delete`.
    fn three_step(&self, name: &str) -> (Duration, Result<(), String>) {
        self.set_name(name);
        let pid_file = self.bundle.parent().unwrap_or(&self.bundle).join("init.pid");
        let t = Instant::now();
        // stderr to a file, not a pipe: the container's init inherits runc create's stdio and
        // would hold a pipe open until it exits.
        let err_path = self.bundle.parent().unwrap_or(&self.bundle).join("runc.stderr");
        let step = |args: &[&str]| -> Result<(), String> {
            let err = fs::File::create(&err_path).map_err(|e| format!("{}: {e}", err_path.display()))?;
            let status = self
                .runc()
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err)
                .status()
                .map_err(|e| format!("runc {}: {e}", args[0]))?;
            if status.success() {
                Ok(())
            } else {
                let msg = fs::read_to_string(&err_path).unwrap_or_default();
                Err(format!("runc {}: {status}: {}", args[0], msg.trim()))
            }
        };
        let bundle = self.bundle.display().to_string();
        let pid_s = pid_file.display().to_string();
        let r = (|| {
            step(&["create", "--bundle", &bundle, "--pid-file", &pid_s, name])?;
            let pid: i32 = fs::read_to_string(&pid_file)
                .map_err(|e| format!("pid file: {e}"))?
                .trim()
                .parse()
                .map_err(|e| format!("pid file: {e}"))?;
            let pidfd = pidfd_open(pid);
            step(&["start", name])?;
            if let Some(fd) = pidfd {
                wait_pidfd(&fd);
            }
            step(&["delete", name])
        })();
        (t.elapsed(), r)
    }
}

fn pidfd_open(pid: i32) -> Option<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    // SAFETY: a fresh fd we own.
    (fd >= 0).then(|| unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Wait (up to 10 s) for the process behind `fd` to exit; a stuck one makes `delete` fail.
fn wait_pidfd(fd: &std::os::fd::OwnedFd) {
    let mut pfd = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(fd), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    while unsafe { libc::poll(&mut pfd, 1, 10_000) } < 0
        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
    {}
}

// ---------------------------------------------------------------------------------------------
// podman

#[derive(Clone)]
struct Podman {
    dir: PathBuf,
    image: String,
}

impl Podman {
    /// A podman with private storage under `dir`, with the image pulled from the registry.
    fn setup(dir: &Path, registry: &str) -> Result<Podman, String> {
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let p = Podman { dir: dir.to_path_buf(), image: format!("{registry}/busybox:latest") };
        let o = p.cmd().args(["pull", "-q", "--tls-verify=false", &p.image]).stdin(Stdio::null()).output();
        match o {
            Err(e) => return Err(format!("cannot run podman: {e}")),
            Ok(o) if !o.status.success() => return Err(format!("podman pull failed: {}", stderr(&o))),
            Ok(_) => {}
        }
        let (_, r) = p.run_once();
        r.map_err(|e| format!("podman run failed: {e}"))?;
        Ok(p)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(PODMAN_GLOBAL);
        c
    }

    fn run_once(&self) -> (Duration, Result<(), String>) {
        let mut c = self.cmd();
        c.arg("run").args(PODMAN_RUN).arg(&self.image).arg("true");
        timed(c)
    }

    fn cleanup(&self) {
        for args in [&["rm", "-a", "-f"][..], &["rmi", "-a", "-f"][..]] {
            let _ = self.cmd().args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        unmount_under(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// latency

struct Series {
    name: &'static str,
    ms: Vec<f64>,
    failures: Vec<String>,
}

impl Series {
    fn new(name: &'static str) -> Series {
        Series { name, ms: Vec::new(), failures: Vec::new() }
    }

    fn record(&mut self, (d, r): (Duration, Result<(), String>)) {
        match r {
            Ok(()) => self.ms.push(d.as_secs_f64() * 1000.0),
            Err(e) => self.failures.push(e),
        }
    }

    fn stats(&self) -> Option<Stats> {
        if self.ms.is_empty() {
            return None;
        }
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        // Nearest rank.
        let pct = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Stats {
            p50: pct(0.50),
            p90: pct(0.90),
            p99: pct(0.99),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v[0],
            n: v.len(),
        })
    }
}

struct Stats {
    p50: f64,
    p90: f64,
    p99: f64,
    mean: f64,
    min: f64,
    n: usize,
}

fn measure_latency(iters: usize, strata: &Strata, image: &str, runc: &RuncBundle, podman: Option<&Podman>) {
    const WARMUP: usize = 3;
    let mut s_none = Series::new("strata run --rm --network none");
    let mut r_run = Series::new("runc run (same bundle, rootfs copied to a plain dir)");
    let mut r_ovl = Series::new("runc run (same bundle, overlay rootfs as strata mounts it)");
    let mut r_three = Series::new("runc create+start+delete");
    let mut pod = Series::new("podman run --rm --network=none");
    let mut s_bridge = Series::new("strata run --rm (bridge, CNI)");
    let mut s_detach = Series::new("strata run -d --network none");
    let mut detach_failures_cleanup = Vec::new();

    for i in 0..WARMUP + iters {
        let warm = i < WARMUP;
        let rec = |s: &mut Series, m: (Duration, Result<(), String>)| {
            if !warm {
                s.record(m)
            } else if let Err(e) = m.1 {
                eprintln!("warm-up {}: {e}", s.name);
            }
        };
        rec(&mut s_none, timed(strata.cmd(&["run", "--rm", "--network", "none", image, "true"])));
        rec(&mut r_run, runc.run_once(&format!("bench-run-{i}")));
        rec(&mut r_ovl, runc.run_overlay(&format!("bench-ovl-{i}")));
        rec(&mut r_three, runc.three_step(&format!("bench-3s-{i}")));
        if let Some(p) = podman {
            rec(&mut pod, p.run_once());
        }
        rec(&mut s_bridge, timed(strata.cmd(&["run", "--rm", image, "true"])));
        // -d: time until the CLI prints the id of a started container; remove it untimed.
        let t = Instant::now();
        let o = strata.run(&["run", "-d", "--network", "none", image, "sleep", "60"]);
        let d = t.elapsed();
        if o.status.success() {
            let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
            rec(&mut s_detach, (d, Ok(())));
            if let Err(e) = strata.ok(&["rm", "-f", &id]) {
                detach_failures_cleanup.push(e);
            }
        } else {
            rec(&mut s_detach, (d, Err(stderr(&o))));
        }
    }

    let series = vec![s_none, r_run, r_three, pod, s_bridge, s_detach, r_ovl];
    println!();
    println!("## Container run latency ({iters} iterations after {WARMUP} warm-up, interleaved; ms, wall clock)");
    println!();
    println!("| peer | n | p50 | p90 | p99 | mean | min |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for s in &series {
        match s.stats() {
            Some(st) => println!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                s.name, st.n, st.p50, st.p90, st.p99, st.mean, st.min
            ),
            None if s.failures.is_empty() => println!("| {} | 0 | skipped | | | | |", s.name),
            None => println!("| {} | 0 | failed | | | | |", s.name),
        }
    }
    for s in &series {
        if !s.failures.is_empty() {
            println!("{}: {} failures, first: {}", s.name, s.failures.len(), s.failures[0]);
        }
    }
    for e in detach_failures_cleanup.iter().take(3) {
        println!("cleanup of a -d container failed: {e}");
    }
    let p50 = |i: usize| series[i].stats().map(|s| s.p50);
    println!();
    if let (Some(s), Some(r)) = (p50(0), p50(6)) {
        let ratio = s / r;
        println!(
            "strata/runc (same bundle, overlay rootfs) at p50: {ratio:.2}x  (target < {TARGET_RATIO}x: {})",
            if ratio < TARGET_RATIO { "PASS" } else { "MISS" }
        );
    }
    if let (Some(s), Some(r)) = (p50(0), p50(1)) {
        println!("strata/runc (rootfs copied to a plain dir) at p50: {:.2}x", s / r);
    }
    if let (Some(s), Some(r)) = (p50(0), p50(2)) {
        println!("strata/(runc create+start+delete) at p50: {:.2}x", s / r);
    }
    match (p50(0), p50(3)) {
        (Some(s), Some(p)) => println!("strata/podman at p50: {:.2}x", s / p),
        _ => println!("strata/podman at p50: n/a (podman skipped)"),
    }
}

// ---------------------------------------------------------------------------------------------
// leak loop

/// Returns true if leaks were found.
fn leak_loop(n: usize, strata: &Strata, image: &str) -> bool {
    println!();
    if n == 0 {
        println!("## Leak loop: skipped (BENCH_LOOP=0)");
        return false;
    }
    println!("## Leak loop: {n} containers (run -d sleep 60; rm -f or stop -t 0 + rm; every 10th on the bridge)");
    let mut ids: Vec<String> = Vec::with_capacity(n);
    let mut failures: Vec<String> = Vec::new();
    let t = Instant::now();
    for i in 0..n {
        let net = if i % 10 == 0 { "bridge" } else { "none" };
        let id = match strata.ok(&["run", "-d", "--network", net, image, "sleep", "60"]) {
            Ok(id) => id,
            Err(e) => {
                failures.push(format!("#{i} run: {e}"));
                continue;
            }
        };
        ids.push(id.clone());
        let r = if i % 2 == 0 {
            strata.ok(&["rm", "-f", &id])
        } else {
            strata.ok(&["stop", "-t", "0", &id]).and_then(|_| strata.ok(&["rm", &id]))
        };
        if let Err(e) = r {
            failures.push(format!("#{i} remove: {e}"));
        }
        if (i + 1) % 100 == 0 {
            eprintln!("  leak loop: {}/{n} in {:.1} s", i + 1, t.elapsed().as_secs_f64());
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    println!(
        "{} containers created, started, stopped and removed in {elapsed:.1} s: {:.1} containers/s ({:.0} ms each)",
        ids.len(),
        ids.len() as f64 / elapsed,
        elapsed * 1000.0 / ids.len().max(1) as f64
    );
    println!("command failures: {}", failures.len());
    for f in failures.iter().take(5) {
        println!("  {f}");
    }

    let ids: HashSet<String> = ids.into_iter().collect();
    let mut leaks = find_leaks(&strata.root, &ids);
    if !leaks.is_empty() {
        // A supervisor may still be on its way out: look again after a grace period.
        std::thread::sleep(Duration::from_secs(5));
        leaks = find_leaks(&strata.root, &ids);
    }
    if leaks.is_empty() {
        println!("leak check: CLEAN (mounts, cgroups, netns, processes, runc state, containers/, names/, trash/, IPAM leases)");
        false
    } else {
        println!("leak check: {} LEAKS", leaks.len());
        for l in leaks.iter().take(40) {
            println!("  {l}");
        }
        true
    }
}

/// Every trace the containers `ids` (and the root) could leave on the host.
fn find_leaks(root: &Path, ids: &HashSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    let root_s = root.display().to_string();
    let names_id = |s: &str| ids.iter().any(|id| s.contains(id.as_str()));

    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for l in mounts.lines() {
        if l.contains(&root_s) || names_id(l) {
            found.push(format!("mount: {l}"));
        }
    }
    let mut cgroup_parents = vec![PathBuf::from("/sys/fs/cgroup/strata")];
    for e in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        cgroup_parents.push(e.path().join("strata"));
    }
    for parent in cgroup_parents {
        for e in fs::read_dir(&parent).into_iter().flatten().flatten() {
            if ids.contains(&*e.file_name().to_string_lossy()) {
                found.push(format!("cgroup: {}", e.path().display()));
            }
        }
    }
    for e in fs::read_dir("/run/strata/netns").into_iter().flatten().flatten() {
        if ids.contains(&*e.file_name().to_string_lossy()) {
            found.push(format!("netns: {}", e.path().display()));
        }
    }
    for e in fs::read_dir("/run/strata/ipam/strata").into_iter().flatten().flatten() {
        let owner = fs::read_to_string(e.path()).unwrap_or_default();
        if owner.lines().next().is_some_and(|l| ids.contains(l.trim())) {
            found.push(format!("ipam lease: {} -> {}", e.file_name().to_string_lossy(), owner.replace('\n', " ")));
        }
    }
    for p in fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = fs::read(p.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if names_id(&cmd) {
                found.push(format!("process {}: {cmd}", p.file_name().to_string_lossy()));
            }
        }
    }
    // "trash": removed containers' files, deleted in the background (checked after a retry).
    for sub in ["containers", "names", "trash"] {
        for e in fs::read_dir(root.join(sub)).into_iter().flatten().flatten() {
            found.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
        }
    }
    for rt in fs::read_dir(root.join("run")).into_iter().flatten().flatten() {
        for e in fs::read_dir(rt.path()).into_iter().flatten().flatten() {
            found.push(format!("runtime state: {}", e.path().display()));
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// cleanup

/// Removes everything the bench made, also when it panics.
struct Cleanup {
    work: PathBuf,
    root: PathBuf,
    strata_bin: PathBuf,
    runc_state: Option<PathBuf>,
    cgroup_parent: Option<String>,
    podman: Option<Podman>,
}

impl Cleanup {
    fn new(work: &Path, strata_bin: &Path) -> Cleanup {
        Cleanup {
            work: work.to_path_buf(),
            root: work.join("root"),
            strata_bin: strata_bin.to_path_buf(),
            runc_state: None,
            cgroup_parent: None,
            podman: None,
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let strata = Strata { bin: self.strata_bin.clone(), root: self.root.clone() };
        if let Ok(ids) = strata.ok(&["ps", "-aq", "--no-trunc"]) {
            for id in ids.split_whitespace() {
                let _ = strata.run(&["rm", "-f", id]);
            }
        }
        if let Some(state) = &self.runc_state {
            for e in fs::read_dir(state).into_iter().flatten().flatten() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(state)
                    .args(["delete", "--force"])
                    .arg(e.file_name())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Some(parent) = &self.cgroup_parent {
            for e in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
                let dir = e.path().join(parent.trim_start_matches('/'));
                for child in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if child.path().is_dir() {
                        let _ = fs::remove_dir(child.path());
                    }
                }
                let _ = fs::remove_dir(&dir);
            }
        }
        if let Some(p) = &self.podman {
            p.cleanup();
        }
        unmount_under(&self.work);
        // The TempDir removes the directory itself.
    }
}

/// Unmount (lazily, deepest first) every mount at or below `dir`.
fn unmount_under(dir: &Path) {
    let prefix = dir.display().to_string();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    points.dedup();
    for m in points {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
}
