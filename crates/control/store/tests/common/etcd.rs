//! A single-member etcd on free loopback ports with a throwaway data dir, killed on drop: the
//! peer of `tests/conformance.rs` and of `benches/store.rs` (each includes this file).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_store::etcd::Etcd;
use strata_testkit::free_port;

pub struct EtcdServer {
    child: Child,
    pub endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EtcdServer {
    /// Whether the machine has an `etcd` binary on PATH.
    pub fn available() -> bool {
        Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    /// Start one and wait until it serves requests; its last output if it never did.
    pub async fn start() -> Result<EtcdServer, String> {
        let mut last_log = String::new();
        // A port picked free may be taken before etcd binds it: try again with new ones.
        for _ in 0..3 {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let (client, peer) = (free_port(), free_port());
            let log = dir.path().join("etcd.log");
            let data = dir.path().join("data");
            let file = |name: &str| std::fs::File::create(dir.path().join(name)).map_err(|e| e.to_string());
            let child = Command::new("etcd")
                .args(["--name", "default", "--data-dir"])
                .arg(&data)
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer}")])
                .args(["--logger", "zap", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(file("etcd.log")?)
                .stderr(file("etcd.stderr")?)
                .spawn()
                .map_err(|e| format!("spawning etcd: {e}"))?;
            let mut server = EtcdServer { child, endpoint: format!("http://127.0.0.1:{client}"), log, _dir: dir };
            if server.wait_ready().await {
                return Ok(server);
            }
            last_log = server.logs();
        }
        Err(last_log)
    }

    /// Wait until etcd serves requests (it has elected itself leader).
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if Etcd::connect(std::slice::from_ref(&self.endpoint)).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    #[allow(dead_code)] // the bench reads its CPU time; the tests do not
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        let stderr = self.log.with_file_name("etcd.stderr");
        format!("{}{}", std::fs::read_to_string(&self.log).unwrap_or_default(), std::fs::read_to_string(stderr).unwrap_or_default())
    }
}
