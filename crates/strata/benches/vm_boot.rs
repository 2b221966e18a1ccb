//! VM boot benchmark (not a timed test): create-to-first-console-line and create-to-guest-marker
//! of `strata vm create` against QEMU started by hand with the same arguments, and strata's own
//! memory per VM (the supervisor's RSS). TCG here; run as root:
//! `cargo bench -p strata --bench vm_boot` (VM_BOOT_RUNS=N, default 3).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MARKER: &str = "STRATA-GUEST-UP";
const APPEND: &str = "console=ttyS0 earlyprintk=ttyS0 quiet panic=-1 tsc_early_khz=2000000 no_timer_check";

fn strata_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strata"))
}

fn assets() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/vm-assets.sh");
    let out = Command::new("bash").arg(script).output().expect("vm-assets.sh");
    assert!(out.status.success(), "vm-assets.sh failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// (first console line, marker) for one `strata vm create`, plus the supervisor's RSS in KiB.
fn strata_once(bin: &Path, root: &Path, assets: &Path, i: usize) -> (Duration, Duration, u64) {
    let name = format!("bench{i}");
    let t0 = Instant::now();
    let mut child = Command::new(bin)
        .arg("--root")
        .arg(root)
        .args(["vm", "create", &name, "--attach", "--kernel"])
        .arg(assets.join("vmlinuz"))
        .arg("--initrd")
        .arg(assets.join("initrd.gz"))
        .args(["--append", APPEND, "--network", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("strata");
    let (first, marker) = first_line_and_marker(child.stdout.take().expect("stdout"), t0);
    let rss = supervisor_rss(root);
    let _ = child.kill();
    let _ = child.wait();
    let _ = Command::new(bin).arg("--root").arg(root).args(["vm", "rm", "-f", &name]).output();
    (first, marker, rss)
}

fn supervisor_rss(root: &Path) -> u64 {
    for e in std::fs::read_dir(root.join("vms")).expect("vms").flatten() {
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path().join("record.json")).expect("record")).expect("json");
        if let Some(pid) = rec["supervisor_pid"].as_i64() {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if let Some(l) = status.lines().find(|l| l.starts_with("VmRSS:")) {
                return l.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
    }
    0
}

/// QEMU by hand: the arguments strata used (from its supervisor.json), minus `-S`, with the
/// serial port on stdout.
fn qemu_once(args: &[String], qemu: &str, dir: &Path) -> (Duration, Duration) {
    let mut a: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(x) = it.next() {
        match x.as_str() {
            "-S" => {}
            "-chardev" => {
                it.next();
            }
            "-serial" => {
                it.next();
                a.extend(["-serial".into(), "stdio".into()]);
            }
            "-drive" => {
                it.next();
                a.extend(["-drive".into(), format!("if=none,id=state,format=qcow2,file={}", dir.join("s.qcow2").display())]);
            }
            _ => a.push(x.clone()),
        }
    }
    let _ = std::fs::remove_file(dir.join("qmp.sock"));
    let t0 = Instant::now();
    let mut child = Command::new(qemu)
        .args(&a)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu");
    let r = first_line_and_marker(child.stdout.take().expect("stdout"), t0);
    let _ = child.kill();
    let _ = child.wait();
    r
}

fn first_line_and_marker(out: impl std::io::Read, t0: Instant) -> (Duration, Duration) {
    let mut first = None;
    for line in BufReader::new(out).split(b'\n') {
        let Ok(line) = line else { break };
        let now = t0.elapsed();
        if first.is_none() && !line.iter().all(|b| b.is_ascii_whitespace()) {
            first = Some(now);
        }
        if String::from_utf8_lossy(&line).contains(MARKER) {
            return (first.unwrap_or(now), now);
        }
    }
    panic!("the guest never printed {MARKER}");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("VM_BOOT_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let bin = strata_bin();
    let assets = assets();
    let root = tempfile::Builder::new().prefix("svmb-").tempdir_in("/var/tmp").expect("root");
    // Warm-up: the acceleration probe (cached) and the page cache.
    strata_once(&bin, root.path(), &assets, 0);
    let qemu = String::from_utf8_lossy(&Command::new("which").arg("qemu-system-x86_64").output().expect("which").stdout)
        .trim()
        .to_string();
    // The exact arguments strata passes: create one VM without starting a bench timer.
    let out = Command::new(&bin)
        .arg("--root")
        .arg(root.path())
        .args(["vm", "create", "probe", "--kernel"])
        .arg(assets.join("vmlinuz"))
        .arg("--initrd")
        .arg(assets.join("initrd.gz"))
        .args(["--append", APPEND, "--network", "none"])
        .output()
        .expect("create");
    assert!(out.status.success());
    let vm_dir = std::fs::read_dir(root.path().join("vms")).expect("vms").flatten().next().expect("a vm").path();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vm_dir.join("supervisor.json")).expect("cfg")).expect("json");
    let args: Vec<String> = serde_json::from_value(cfg["args"].clone()).expect("args");
    let _ = Command::new(&bin).arg("--root").arg(root.path()).args(["vm", "rm", "-f", "probe"]).output();
    let qdir = tempfile::tempdir_in("/var/tmp").expect("qemu dir");
    let img = Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(qdir.path().join("s.qcow2")).arg("64M").status();
    assert!(img.is_ok_and(|s| s.success()));

    let (mut sf, mut sm, mut qf, mut qm, mut rss) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 1..=runs {
        let (f, m, r) = strata_once(&bin, root.path(), &assets, i);
        sf.push(f);
        sm.push(m);
        rss.push(r);
        let (f, m) = qemu_once(&args, &qemu, qdir.path());
        qf.push(f);
        qm.push(m);
    }
    let (sf, sm, qf, qm) = (median(sf), median(sm), median(qf), median(qm));
    let rss_max = rss.iter().copied().max().unwrap_or(0);
    println!("vm_boot ({runs} runs, TCG, medians)");
    println!("  first console line: strata {:>7.0} ms   qemu by hand {:>7.0} ms   ratio {:.3}", ms(sf), ms(qf), ms(sf) / ms(qf));
    println!("  guest marker:       strata {:>7.0} ms   qemu by hand {:>7.0} ms   ratio {:.3}", ms(sm), ms(qm), ms(sm) / ms(qm));
    println!("  strata memory per VM (supervisor RSS): {:.1} MiB", rss_max as f64 / 1024.0);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
