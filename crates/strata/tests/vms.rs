//! End-to-end VM tests: the real `strata` binary, real QEMU (TCG here), a Debian guest kernel
//! and a busybox initramfs built by `scripts/vm-assets.sh` (cached in /var/tmp). Run as root.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn assets() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/vm-assets.sh");
        let out = Command::new("bash").arg(script).output().expect("run vm-assets.sh");
        assert!(out.status.success(), "vm-assets.sh: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

struct Env {
    root: tempfile::TempDir,
    names: Vec<String>,
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// One VM test at a time: TCG guests on a loaded 2-core machine boot slowly, and Debian's
/// kernel on `microvm,acpi=on` can stall in early timer calibration when starved of CPU.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Env {
    fn new() -> Env {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        assets();
        // A short root: QEMU's socket paths must fit in sun_path.
        let root = tempfile::Builder::new().prefix("svm-").tempdir_in("/var/tmp").expect("root");
        Env { root, names: Vec::new(), _serial: serial }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.arg("--root").arg(self.root.path()).stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run strata")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?}: {}\nstdout={}\nstderr={}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fail(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "strata {args:?} unexpectedly succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn create_args(&mut self, name: &str) -> Vec<String> {
        self.names.push(name.to_string());
        let a = assets();
        vec![
            "vm".into(),
            "create".into(),
            name.into(),
            "--kernel".into(),
            a.join("vmlinuz").display().to_string(),
            "--initrd".into(),
            a.join("initrd.gz").display().to_string(),
            "--append".into(),
            "console=ttyS0 earlyprintk=ttyS0 quiet panic=-1 tsc_early_khz=2000000 no_timer_check".into(),
            "--memory".into(),
            "256M".into(),
        ]
    }

    fn logs(&self, name: &str) -> String {
        self.ok(&["vm", "logs", name])
    }

    fn wait_log(&self, name: &str, pred: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            // Empty until `create` has written the VM's record.
            let out = self.run(&["vm", "logs", name]);
            let l = String::from_utf8_lossy(&out.stdout).into_owned();
            if pred(&l) {
                return l;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; console log:\n{l}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn info(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["vm", "list", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v.as_array().expect("array").iter().find(|x| x["name"] == name).cloned().unwrap_or(serde_json::Value::Null)
    }

    fn console(&self, name: &str) -> Child {
        self.cmd().args(["vm", "console", name]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("console")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.run(&["vm", "rm", "-f", n]);
        }
    }
}

/// QEMU processes whose command line carries `-name NAME`.
fn qemu_processes(name: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        let is_qemu = args.first().is_some_and(|a| String::from_utf8_lossy(a).contains("qemu-system"));
        if is_qemu && args.windows(2).any(|w| w[0] == b"-name" && w[1] == name.as_bytes()) {
            n += 1;
        }
    }
    n
}

fn wait_until(mut pred: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ticks(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.strip_prefix("TICK "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn vm_lifecycle_console_pause_snapshot_stop() {
    let mut env = Env::new();
    let name = format!("life{}", std::process::id());
    let args = env.create_args(&name);
    let out = env.cmd().args(&args).output().expect("create");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "create: {stderr}");
    assert!(stderr.contains("TCG"), "the TCG fallback is announced: {stderr}");
    env.wait_log(&name, |l| l.contains("STRATA-GUEST-UP"), "the guest marker");

    let info = env.info(&name);
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(info["accelerator"], "tcg", "{info}");
    assert!(info["pid"].as_i64().is_some_and(|p| p > 0), "{info}");
    assert!(info["uptime_seconds"].as_i64().is_some(), "{info}");
    assert_eq!(qemu_processes(&name), 1);

    // Console input reaches the guest.
    let mut console = env.console(&name);
    let mut stdin = console.stdin.take().expect("stdin");
    stdin.write_all(b"hello strata\n").expect("write");
    env.wait_log(&name, |l| l.contains("GOT: hello strata"), "the echoed console line");

    // QEMU's usage: CPU time spent booting, resident memory, the guest's size.
    let stats = env.ok(&["vm", "stats", &name]);
    let row: Vec<&str> = stats.lines().nth(1).expect("a row").split_whitespace().collect();
    assert_eq!(row[0], name, "{stats}");
    let cpu: f64 = row[1].trim_end_matches('s').parse().expect("cpu seconds");
    assert!(cpu > 0.5, "booting under TCG takes CPU: {stats}");
    assert!(row[2].ends_with("MB") && row[3] == "268.435MB", "{stats}");
        // The balloon: the guest gives memory back, and takes it again; never above its size.
    assert_eq!(env.info(&name)["memory_actual_mib"], 256);
    env.ok(&["vm", "set-memory", &name, "128M"]);
    wait_until(|| env.info(&name)["memory_actual_mib"] == 128, "the balloon to inflate to 128 MiB");
    let err = env.fail(&["vm", "set-memory", &name, "1G"]);
    assert!(err.contains("between 32 MiB and 256 MiB"), "{err}");
    env.ok(&["vm", "set-memory", &name, "256M"]);
    wait_until(|| env.info(&name)["memory_actual_mib"] == 256, "the balloon to deflate");

    // Pause: QEMU reports paused and the guest clock stops.
    stdin.write_all(b"ticker\n").expect("write");
    env.wait_log(&name, |l| ticks(l).len() >= 3, "ticks");
    env.ok(&["vm", "pause", &name]);
    let info = env.info(&name);
    assert_eq!(info["state"], "paused", "{info}");
    assert_eq!(info["qemu_status"], "paused", "{info}");
    std::thread::sleep(Duration::from_millis(500));
    let before = ticks(&env.logs(&name)).len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ticks(&env.logs(&name)).len(), before, "no guest output while paused");
    env.fail(&["vm", "pause", &name]);
    env.ok(&["vm", "resume", &name]);
    env.wait_log(&name, |l| ticks(l).len() >= before + 3, "ticks after resume");
    assert_eq!(env.info(&name)["state"], "running");

    // Snapshot and restore: the guest's tick counter (in guest memory) goes back.
    env.ok(&["vm", "snapshot", &name, "s1"]);
    let at_snapshot = *ticks(&env.logs(&name)).last().expect("a tick");
    let n = ticks(&env.logs(&name)).len();
    env.wait_log(&name, |l| ticks(l).len() >= n + 10, "ticks after the snapshot");
    let latest = *ticks(&env.logs(&name)).last().expect("a tick");
    assert!(latest >= at_snapshot + 5.0, "{latest} vs {at_snapshot}");
    env.ok(&["vm", "restore", &name, "s1"]);
    let n = ticks(&env.logs(&name)).len();
    let log = env.wait_log(&name, |l| ticks(l).len() >= n + 2, "ticks after the restore");
    let after = ticks(&log)[n..].to_vec();
    assert!(after.last().is_some_and(|&t| t < latest), "the counter went back: {after:?} vs {latest}");
    let err = env.fail(&["vm", "restore", &name, "nope"]);
    assert!(err.contains("no such snapshot nope"), "{err}");
    assert_eq!(env.info(&name)["state"], "running", "a failed restore leaves the VM running");

    // Graceful stop: the guest sees the ACPI power button and powers off.
    drop(stdin);
    let t = Instant::now();
    env.ok(&["vm", "stop", "--time", "60", &name]);
    assert!(t.elapsed() < Duration::from_secs(60), "powered off before the timeout");
    assert!(env.logs(&name).contains("STRATA-POWER-BUTTON"), "the guest saw the power button");
    let info = env.info(&name);
    assert_eq!(info["state"], "exited", "{info}");
    assert_eq!(info["exit_code"], 0, "{info}");
    assert_eq!(qemu_processes(&name), 0);
    let _ = console.wait();

    // Start again (a new QEMU), then kill it.
    env.ok(&["vm", "start", &name]);
    env.wait_log(&name, |l| l.matches("STRATA-GUEST-UP").count() >= 2, "the second boot");
    assert_eq!(qemu_processes(&name), 1);
    env.ok(&["vm", "kill", &name]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.info(&name)["state"] != "exited" {
        assert!(Instant::now() < deadline, "kill took effect");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(env.info(&name)["exit_code"], 137);
    assert_eq!(qemu_processes(&name), 0);

    env.ok(&["vm", "rm", &name]);
    assert!(env.info(&name).is_null());
    assert_eq!(std::fs::read_dir(env.root.path().join("vms")).expect("ls").count(), 0);
    assert_eq!(std::fs::read_dir(env.root.path().join("vm-names")).expect("ls").count(), 0);
}

#[test]
fn vm_outlives_a_killed_cli_and_is_readopted() {
    let mut env = Env::new();
    let name = format!("surv{}", std::process::id());
    let mut args = env.create_args(&name);
    args.push("--attach".into());
    let mut cli = env.cmd().args(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("create");
    env.wait_log(&name, |l| l.contains("STRATA-GUEST-UP"), "the guest marker");
    cli.kill().expect("SIGKILL the CLI");
    let _ = cli.wait();
    std::thread::sleep(Duration::from_millis(300));

    let info = env.info(&name);
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(info["qemu_status"], "running", "re-adopted over QMP: {info}");
    assert_eq!(qemu_processes(&name), 1);
    let err = env.fail(&["vm", "start", &name]);
    assert!(err.contains("running"), "{err}");
    let out = env.run(&args[..args.len() - 1].iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success(), "a second create with the same name fails");
    assert_eq!(qemu_processes(&name), 1, "never a second QEMU");

    // Still controllable from a new process.
    let mut console = env.console(&name);
    console.stdin.take().expect("stdin").write_all(b"still here\n").expect("write");
    env.wait_log(&name, |l| l.contains("GOT: still here"), "console after re-adoption");
    env.ok(&["vm", "rm", "-f", &name]);
    assert_eq!(qemu_processes(&name), 0);
    let _ = console.wait();
}

#[test]
fn vm_errors_are_clear_and_leave_nothing() {
    let mut env = Env::new();
    let a = assets();
    let name = format!("bad{}", std::process::id());
    env.names.push(name.clone());
    let empty = |env: &Env| {
        for d in ["vms", "vm-names"] {
            let p = env.root.path().join(d);
            let n = std::fs::read_dir(&p).map(|r| r.count()).unwrap_or(0);
            assert_eq!(n, 0, "{} is empty", p.display());
        }
        assert_eq!(qemu_processes(&name), 0);
    };

    let err = env.fail(&["vm", "create", &name, "--kernel", "/nonexistent/vmlinuz"]);
    assert!(err.contains("kernel /nonexistent/vmlinuz") && err.lines().count() == 1, "{err}");
    empty(&env);

    let kernel = a.join("vmlinuz").display().to_string();
    let out = env
        .cmd()
        .args(["vm", "create", &name, "--kernel", &kernel])
        .env("STRATA_QEMU", "/nonexistent/qemu")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/nonexistent/qemu") && err.lines().count() == 1, "{err}");
    empty(&env);

    // A file QEMU cannot boot: QEMU itself refuses, and everything is cleaned up.
    let junk = env.root.path().join("junk");
    std::fs::write(&junk, b"not a kernel").expect("junk");
    let err = env.fail(&["vm", "create", &name, "--kernel", &junk.display().to_string()]);
    assert!(err.contains("QEMU failed to start") && err.lines().count() == 1, "{err}");
    std::fs::remove_file(&junk).expect("rm junk");
    empty(&env);

    for verb in ["stop", "kill", "rm", "logs", "console", "pause", "start"] {
        let err = env.fail(&["vm", verb, "nosuchvm"]);
        assert!(err.contains("no such VM: nosuchvm"), "{verb}: {err}");
    }
    empty(&env);
}

/// QEMU dropped root once the machine was built: a uid of its own, no capabilities.
fn assert_unprivileged(pid: i64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("QEMU's status");
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(str::trim).unwrap_or("").to_string();
    let uid: u64 = field("Uid:").split_whitespace().next().and_then(|u| u.parse().ok()).expect("uid");
    assert!(uid >= 1_900_000_000, "QEMU runs as uid {uid}");
    assert_eq!(field("CapEff:"), "0000000000000000", "QEMU has no capabilities");
    assert_eq!(field("NoNewPrivs:"), "1", "seccomp sandbox implies no_new_privs");
}

fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn http_get(port: u16) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// A disk image boots through firmware (SeaBIOS + SYSLINUX on q35) from a per-VM qcow2 overlay:
/// the guest's writes persist across restarts of that VM, a second VM from the same base starts
/// clean, and the base file is never written. The cloud-init seed reaches the guest (the guest
/// mounts the CIDATA disk and prints its meta-data and user-data), and `-p` forwards a host
/// port to the guest's HTTP server through user-mode networking.
#[test]
fn vm_boots_a_disk_image_with_cloud_init_and_port_forward() {
    let mut env = Env::new();
    let base = env.root.path().join("base.qcow2");
    std::fs::copy(assets().join("disk.qcow2"), &base).expect("copy base");
    let base_sum = sha256(&base);
    let user_data = env.root.path().join("user-data.yaml");
    std::fs::write(&user_data, "#cloud-config\nruncmd:\n  - echo strata-user-data-marker\n").expect("user-data");
    let port = free_port();
    let (a, b) = (format!("disk{}", std::process::id()), format!("disk{}b", std::process::id()));
    env.names.extend([a.clone(), b.clone()]);
    let base_s = base.display().to_string();
    let publish = format!("127.0.0.1:{port}:80");
    env.ok(&[
        "vm",
        "create",
        &a,
        "--disk",
        &base_s,
        "--disk-size",
        "64M",
        "--cloud-init",
        &user_data.display().to_string(),
        "--network",
        "user",
        "-p",
        &publish,
    ]);
    let log = env.wait_log(&a, |l| l.contains("STRATA-GUEST-UP"), "the disk VM to boot");
    assert!(log.contains("BOOTCOUNT 1"), "{log}");
    assert!(log.contains(&format!("SEED-HOSTNAME {a}")), "meta-data names the host: {log}");
    assert!(log.contains("SEED-USERDATA   - echo strata-user-data-marker"), "user-data reaches the guest: {log}");
    assert!(log.contains("STRATA-NET-UP 10.0.2.15/24"), "{log}");
    let body = http_get(port).expect("the forwarded port answers");
    assert!(body.contains("served by the strata test guest"), "{body}");

    let info = env.info(&a);
    assert_eq!(info["network"], "user", "{info}");
    assert_eq!(info["image"], base_s.as_str(), "{info}");
    assert_eq!(info["ports"][0], format!("127.0.0.1:{port}->80/tcp"), "{info}");
    assert_eq!(info["state"], "running", "{info}");
    assert_unprivileged(info["pid"].as_i64().expect("pid"));
    // The VM's disk is an overlay on the base, grown to the asked size.
    let id = info["id"].as_str().expect("id");
    let overlay = env.root.path().join("vms").join(id).join("disk.qcow2");
    let out = Command::new("qemu-img").args(["info", "--output=json", "-U"]).arg(&overlay).output().expect("qemu-img");
    let qi: serde_json::Value = serde_json::from_slice(&out.stdout).expect("qemu-img json");
    assert_eq!(qi["backing-filename"], base_s.as_str(), "{qi}");
    assert_eq!(qi["virtual-size"], 64 << 20, "{qi}");

    // Snapshots live in the overlay.
    env.ok(&["vm", "snapshot", &a, "s1"]);
    env.ok(&["vm", "restore", &a, "s1"]);

    // Graceful stop, start again: the guest's write to its disk survived.
    env.ok(&["vm", "stop", "--time", "60", &a]);
    assert_eq!(env.info(&a)["exit_code"], 0);
    env.ok(&["vm", "start", &a]);
    env.wait_log(&a, |l| l.contains("BOOTCOUNT 2"), "the second boot to see the first boot's write");
    env.ok(&["vm", "rm", "-f", &a]);
    assert!(!env.root.path().join("vms").join(id).exists());

    // A second VM from the same base starts from the base's content: nothing leaked into it.
    env.ok(&["vm", "create", &b, "--disk", &base_s, "--network", "none"]);
    let log = env.wait_log(&b, |l| l.contains("STRATA-GUEST-UP"), "the second disk VM to boot");
    assert!(log.contains("BOOTCOUNT 1") && !log.contains("SEED-") && !log.contains("STRATA-NET-UP"), "{log}");
    assert_eq!(env.info(&b)["network"], "none");
    env.ok(&["vm", "rm", "-f", &b]);
    assert_eq!(sha256(&base), base_sum, "the base image was never written");
    assert_eq!(qemu_processes(&a) + qemu_processes(&b), 0);
}

/// Bad disk, seed and network requests: one-line errors naming the problem, nothing left.
#[test]
fn vm_disk_and_network_errors_leave_nothing() {
    let mut env = Env::new();
    let name = format!("baddisk{}", std::process::id());
    env.names.push(name.clone());
    let disk = assets().join("disk.qcow2").display().to_string();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = format!("127.0.0.1:{}:80", busy.local_addr().expect("addr").port());
    let cases: &[(&[&str], &str)] = &[
        (&["--disk", "/nonexistent/disk.qcow2"], "disk image /nonexistent/disk.qcow2"),
        (&["--disk", &disk, "--disk-size", "8M"], "smaller than the image"),
        (&["--disk", &disk, "--disk-size", "lots"], "invalid disk size"),
        (&["--disk", &disk, "--cloud-init", "/nonexistent/ud"], "cloud-init user-data /nonexistent/ud"),
        (&["--disk", &disk, "-p", &busy_port], "cannot be published"),
        (&["--disk", &disk, "--network", "none", "-p", "8080:80"], "without a network"),
        (&["--disk", &disk, "--network", "host"], "invalid network"),
        (&["--disk", &disk, "--append", "x"], "needs a kernel"),
        (&[], "--kernel"),
    ];
    for (args, want) in cases {
        let mut full = vec!["vm", "create", name.as_str()];
        full.extend_from_slice(args);
        let err = env.fail(&full);
        assert!(err.contains(want), "{args:?}: {err}");
        // strata's own errors are one line; clap's usage errors (no --kernel/--disk) are longer.
        assert!(args.is_empty() || err.trim().lines().count() == 1, "{args:?}: one-line error: {err}");
        for d in ["vms", "vm-names"] {
            let n = std::fs::read_dir(env.root.path().join(d)).map(|r| r.count()).unwrap_or(0);
            assert_eq!(n, 0, "{args:?} left something in {d}");
        }
        assert_eq!(qemu_processes(&name), 0);
    }
}

/// Bridge networking: a tap on the node bridge, an address from the bridge's IPAM handed to
/// the guest through the cloud-init seed's network-config, the guest reachable at that address
/// and through a published port (proxied by the VM's supervisor); the address survives a
/// restart, and removal deletes the tap and releases the lease.
#[test]
fn vm_on_the_node_bridge_is_reachable_and_cleaned_up() {
    let mut env = Env::new();
    let name = format!("br{}", std::process::id());
    let port = free_port();
    let mut args = env.create_args(&name);
    args.extend(["--network".into(), "bridge".into(), "-p".into(), format!("127.0.0.1:{port}:80")]);
    env.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let log = env.wait_log(&name, |l| l.contains("STRATA-GUEST-UP"), "the bridged VM to boot");
    let info = env.info(&name);
    assert_eq!(info["network"], "bridge", "{info}");
    let ip = info["ip"].as_str().expect("the VM has an address").to_string();
    assert!(ip.starts_with("10.89."), "{ip}");
    assert!(log.contains(&format!("STRATA-NET-UP {ip}/16")), "the guest configured its leased address: {log}");
    let id = info["id"].as_str().expect("id").to_string();
    assert_unprivileged(info["pid"].as_i64().expect("pid"));
    let tap = format!("stv{}", &id[..12]);
    let master = std::fs::read_link(format!("/sys/class/net/{tap}/master")).expect("the tap is on a bridge");
    assert_eq!(master.file_name().and_then(|n| n.to_str()), Some("strata0"));

    let direct = {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect((ip.as_str(), 80)).expect("connect to the guest");
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
        let mut b = String::new();
        s.read_to_string(&mut b).expect("read");
        b
    };
    assert!(direct.contains("served by the strata test guest"), "{direct}");
    let proxied = http_get(port).expect("the published port answers");
    assert!(proxied.contains("served by the strata test guest"), "{proxied}");

    env.ok(&["vm", "stop", "--time", "60", &name]);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the port closes with the VM");
    // A tap that disappeared while the VM was stopped (by hand, or a host reboot) is made again.
    let del = Command::new("ip").args(["link", "delete", &tap]).status().expect("ip link delete");
    assert!(del.success() && !Path::new("/sys/class/net").join(&tap).exists());
    env.ok(&["vm", "start", &name]);
    env.wait_log(&name, |l| l.matches("STRATA-GUEST-UP").count() == 2, "the second boot");
    assert_eq!(env.info(&name)["ip"], ip.as_str(), "the address is kept across restarts");
    assert!(http_get(port).expect("published again").contains("served by the strata test guest"));

    env.ok(&["vm", "rm", "-f", &name]);
    assert!(!Path::new("/sys/class/net").join(&tap).exists(), "the tap is removed");
    let leased = std::fs::read_dir("/run/strata/ipam/strata")
        .map(|d| d.flatten().any(|e| std::fs::read_to_string(e.path()).is_ok_and(|c| c.contains(&id))))
        .unwrap_or(false);
    assert!(!leased, "the lease is released");
}
