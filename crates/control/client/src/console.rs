//! A VirtualMachine's serial console through the API server (`virtualmachines/console`): a
//! WebSocket GET with the subprotocol [`PROTOCOL`], after which every binary message carries
//! raw console bytes both ways (the guest's output from the server, keyboard input to it). The
//! connection is made with the client's own credentials and TLS (its kubeconfig), as kubectl
//! opens `pods/exec`. [`log`] reads the VM's captured serial console (`virtualmachines/log`,
//! the launcher pod's log).

use hyper_util::rt::TokioIo;
use kube::client::Body;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// The console's WebSocket subprotocol.
pub const PROTOCOL: &str = "plain.strata.dev";

/// An open console.
pub type Console = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server (or the node's agent behind it) refused: its HTTP status and message.
    #[error("{message}")]
    Refused { code: u16, message: String },
    #[error("connecting to the API server: {0}")]
    Connect(#[source] kube::Error),
    #[error("the console upgrade failed: {0}")]
    Upgrade(String),
    #[error("reading the log: {0}")]
    Stream(String),
}

/// The API path of VM `name`'s console in `namespace`.
pub fn path(namespace: &str, name: &str) -> String {
    format!("/apis/{}/{}/namespaces/{namespace}/virtualmachines/{name}/console", crate::vm::GROUP, crate::vm::VERSION)
}

/// Open the console of VM `namespace/name`.
pub async fn open(client: &kube::Client, namespace: &str, name: &str) -> Result<Console, Error> {
    use tokio_tungstenite::tungstenite::handshake::client::generate_key;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    let key = generate_key();
    let req = http::Request::get(path(namespace, name))
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::SEC_WEBSOCKET_VERSION, "13")
        .header(http::header::SEC_WEBSOCKET_KEY, &key)
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, PROTOCOL)
        .body(Body::empty())
        .map_err(|e| Error::Upgrade(e.to_string()))?;
    let resp = client.send(req).await.map_err(Error::Connect)?;
    let code = resp.status().as_u16();
    if code != 101 {
        let body = resp.into_body().collect_bytes().await.unwrap_or_default();
        return Err(Error::Refused { code, message: status_message(code, &body) });
    }
    let accept = resp.headers().get(http::header::SEC_WEBSOCKET_ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept != derive_accept_key(key.as_bytes()) {
        return Err(Error::Upgrade("the server's Sec-WebSocket-Accept does not match".into()));
    }
    let upgraded = hyper::upgrade::on(resp).await.map_err(|e| Error::Upgrade(e.to_string()))?;
    let mut cfg = WebSocketConfig::default();
    cfg.max_message_size = Some(16 << 20);
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, Some(cfg)).await)
}

/// What [`log`] asks for (as `kubectl logs`: `follow`, `tailLines`, `timestamps`).
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub tail_lines: Option<usize>,
    pub timestamps: bool,
}

/// Stream VM `namespace/name`'s serial log to `out` until it ends (with `follow`, until the
/// boot ends) or `out` returns false.
pub async fn log(client: &kube::Client, namespace: &str, name: &str, opts: &LogOptions, out: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Error> {
    use http_body_util::BodyExt;
    let mut q = Vec::new();
    if opts.follow {
        q.push("follow=true".to_string());
    }
    if let Some(n) = opts.tail_lines {
        q.push(format!("tailLines={n}"));
    }
    if opts.timestamps {
        q.push("timestamps=true".to_string());
    }
    let mut uri = format!("/apis/{}/{}/namespaces/{namespace}/virtualmachines/{name}/log", crate::vm::GROUP, crate::vm::VERSION);
    if !q.is_empty() {
        uri = format!("{uri}?{}", q.join("&"));
    }
    let req = http::Request::get(uri).body(Body::empty()).map_err(|e| Error::Upgrade(e.to_string()))?;
    let resp = client.send(req).await.map_err(Error::Connect)?;
    let code = resp.status().as_u16();
    if code != 200 {
        let body = resp.into_body().collect_bytes().await.unwrap_or_default();
        return Err(Error::Refused { code, message: status_message(code, &body) });
    }
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Stream(e.to_string()))?;
        if let Some(data) = frame.data_ref() {
            if !out(data) {
                break;
            }
        }
    }
    Ok(())
}

/// The message of a refusal: a `metav1.Status`'s, else the body's text, else the status line.
fn status_message(code: u16, body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(m) = v["message"].as_str().filter(|m| !m.is_empty()) {
            return m.to_string();
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).trim().to_string();
    if text.is_empty() {
        format!("the server answered {code}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_why() {
        let status = br#"{"kind":"Status","code":409,"message":"VirtualMachine demo is not running: its runStrategy is Halted"}"#;
        assert_eq!(status_message(409, status), "VirtualMachine demo is not running: its runStrategy is Halted");
        assert_eq!(status_message(502, b"bad gateway\n"), "bad gateway");
        assert_eq!(status_message(500, b""), "the server answered 500");
        assert_eq!(path("ns1", "demo"), "/apis/strata.dev/v1/namespaces/ns1/virtualmachines/demo/console");
    }
}
