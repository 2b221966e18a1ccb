//! Container probes as kubelet runs them: startup, liveness and readiness, each exec (through
//! the driver's `exec_sync`), httpGet (HTTP or HTTPS from the node to the pod's IP, as kubelet:
//! `http_probe.rs`), tcpSocket (a connect) or grpc (`grpc.health.v1.Health/Check` to the
//! pod's IP, success for SERVING), with initialDelaySeconds, periodSeconds, timeoutSeconds,
//! successThreshold and failureThreshold. Lifecycle hooks (postStart, preStop) run the same
//! handlers once ([`hook`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use strata_driver::pod::PodRuntime;
use super::http_probe as http;
use crate::Shared;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    pub fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            Kind::Startup => c.startup_probe.as_ref(),
            Kind::Liveness => c.liveness_probe.as_ref(),
            Kind::Readiness => c.readiness_probe.as_ref(),
        }
    }
}

/// One probe's running tally for one container attempt.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub container_id: String,
    pub successes: i32,
    pub failures: i32,
    /// The verdict once a threshold was reached (`None`: none yet).
    pub ok: Option<bool>,
    pub last: Option<Instant>,
}

impl State {
    /// Count a result; returns the verdict when it changed.
    pub fn record(&mut self, probe: &Probe, success: bool) -> Option<bool> {
        let before = self.ok;
        if success {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= probe.success_threshold.unwrap_or(1).max(1) {
                self.ok = Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= probe.failure_threshold.unwrap_or(3).max(1) {
                self.ok = Some(false);
            }
        }
        (self.ok != before).then_some(self.ok).flatten()
    }

    /// Whether the probe is due for a container running for `running_for`.
    pub fn due(&self, probe: &Probe, running_for: Duration) -> bool {
        if running_for < Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64) {
            return false;
        }
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        self.last.is_none_or(|t| t.elapsed() >= period)
    }
}

fn port(p: &IntOrString, c: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(i) => u16::try_from(*i).map_err(|_| format!("invalid port {i}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no port named {name:?}")),
    }
}

/// Run a lifecycle hook (postStart or preStop) of container `id` once: its sleep, or its exec,
/// httpGet or tcpSocket handler as a probe would, given at most `limit`. Err is why it failed.
pub(crate) async fn hook(shared: &Arc<Shared>, hook: &LifecycleHandler, id: &str, c: &Container, pod_ip: Option<IpAddr>, limit: Duration) -> Result<(), String> {
    if let Some(s) = &hook.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(limit)).await;
        return Ok(());
    }
    let probe = Probe {
        exec: hook.exec.clone(),
        http_get: hook.http_get.clone(),
        tcp_socket: hook.tcp_socket.clone(),
        timeout_seconds: Some(limit.as_secs().clamp(1, i32::MAX as u64) as i32),
        ..Default::default()
    };
    run(shared, &probe, id, c, pod_ip).await.map(|_| ())
}

/// Run `probe` once against container `id` (of `c`, in a pod at `pod_ip`): `Ok` (with a warning
/// that still counts as success, kubelet's `ProbeWarning`), or why it failed (kubelet's wording
/// where it has one).
pub(crate) async fn run(shared: &Arc<Shared>, probe: &Probe, id: &str, c: &Container, pod_ip: Option<IpAddr>) -> Result<Option<String>, String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &probe.exec {
        let cmd = e.command.clone().unwrap_or_default();
        let driver = shared.driver.clone();
        let id = id.to_string();
        let r = tokio::task::spawn_blocking(move || driver.exec_sync(&id, &cmd, Some(timeout))).await.map_err(|e| e.to_string())?;
        return match r {
            Ok(r) if r.exit_code == 0 => Ok(None),
            Ok(r) => {
                let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
                out.push_str(&String::from_utf8_lossy(&r.stderr));
                Err(if out.trim().is_empty() { format!("command exited with {}", r.exit_code) } else { out.trim_end().to_string() })
            }
            Err(strata_driver::Error::Timeout(_)) => Err(format!("command timed out after {}s", timeout.as_secs())),
            Err(e) => Err(e.to_string()),
        };
    }
    if let Some(h) = &probe.http_get {
        let host: IpAddr = match h.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => h.parse().map_err(|_| format!("host {h:?} is not an IP address"))?,
            None => pod_ip.ok_or("the pod has no IP")?,
        };
        let scheme = match h.scheme.as_deref().unwrap_or("HTTP") {
            s if s.eq_ignore_ascii_case("HTTP") => "http",
            s if s.eq_ignore_ascii_case("HTTPS") => "https",
            s => return Err(format!("unsupported scheme {s:?}")),
        };
        let url = http::target(scheme, SocketAddr::new(host, port(&h.port, c)?), h.path.as_deref().unwrap_or(""))?;
        let headers: Vec<(String, String)> = h.http_headers.iter().flatten().map(|hd| (hd.name.clone(), hd.value.clone())).collect();
        return http::probe(url, &headers, timeout).await;
    }
    if let Some(t) = &probe.tcp_socket {
        let host: IpAddr = match t.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => h.parse().map_err(|_| format!("host {h:?} is not an IP address"))?,
            None => pod_ip.ok_or("the pod has no IP")?,
        };
        let addr = SocketAddr::new(host, port(&t.port, c)?);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(None),
            Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
            Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
        };
    }
    if let Some(g) = &probe.grpc {
        let host = pod_ip.ok_or("the pod has no IP")?;
        let port = u16::try_from(g.port).map_err(|_| format!("invalid port {}", g.port))?;
        return grpc_check(SocketAddr::new(host, port), g.service.as_deref().unwrap_or(""), timeout).await.map(|()| None);
    }
    Err("the probe has no handler (exec, httpGet, tcpSocket or grpc)".into())
}

/// The grpc.health.v1 client (generated from `proto/health.proto` by build.rs).
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}

/// A gRPC probe (kubelet's `pkg/probe/grpc`): `grpc.health.v1.Health/Check` for `service` at
/// `addr` over plain HTTP/2; SERVING is success, any other answer, error or timeout is failure
/// with kubelet's message.
pub async fn grpc_check(addr: SocketAddr, service: &str, timeout: Duration) -> Result<(), String> {
    use health::health_check_response::ServingStatus;
    let secs = timeout.as_secs();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .and_then(|e| e.user_agent("kube-probe/1.32"))
        .map_err(|e| format!("error: failed to connect service at \"{addr}\": {e}"))?
        .connect_timeout(timeout);
    // As kubelet's blocking dial: a refused connection is tried again until the timeout.
    let connect = async {
        loop {
            match endpoint.connect().await {
                Ok(c) => return c,
                Err(e) => {
                    tracing::debug!(%addr, error = %chain(&e), "gRPC probe: connecting");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    let Ok(channel) = tokio::time::timeout(timeout, connect).await else {
        return Err(format!("timeout: failed to connect service \"{addr}\" within {secs}s: context deadline exceeded"));
    };
    let mut client = health::health_client::HealthClient::new(channel);
    let answer = tokio::time::timeout(timeout, client.check(health::HealthCheckRequest { service: service.to_string() })).await;
    match answer {
        Err(_) => Err(format!("timeout: health rpc did not complete within {secs}s")),
        Ok(Err(status)) => Err(match status.code() {
            tonic::Code::Unimplemented => format!("error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}", status.message()),
            tonic::Code::DeadlineExceeded => format!("timeout: health rpc did not complete within {secs}s"),
            _ => format!("error: health rpc probe failed: rpc error: code = {:?} desc = {}", status.code(), status.message()),
        }),
        Ok(Ok(resp)) => match resp.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(format!("service unhealthy (responded with {:?})", other.as_str_name())),
        },
    }
}

/// An error with its sources, `: `-separated (tonic's transport errors say little on top).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let p = Probe { failure_threshold: Some(2), success_threshold: Some(1), period_seconds: Some(5), initial_delay_seconds: Some(3), ..Default::default() };
        let mut s = State::default();
        assert!(!s.due(&p, Duration::from_secs(1)), "initial delay");
        assert!(s.due(&p, Duration::from_secs(3)));
        assert_eq!(s.record(&p, false), None);
        assert_eq!(s.record(&p, false), Some(false));
        assert_eq!(s.record(&p, false), None, "no change");
        assert_eq!(s.record(&p, true), Some(true));
        s.last = Some(Instant::now());
        assert!(!s.due(&p, Duration::from_secs(60)), "period");
    }
}
