//! exec and attach: a process's stdin, stdout, stderr, terminal resizes and final status
//! carried over WebSocket channels or SPDY streams, as kubelet carries them.
//!
//! WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`, `channel.k8s.io`): each binary message
//! starts with its channel, 0 stdin, 1 stdout, 2 stderr, 3 error (the final `metav1.Status`;
//! before v4 a plain message, on failure only), 4 resize (`{"Width":W,"Height":H}`); v5 adds
//! the client's half-close `[255, channel]` (end of stdin, which `kubectl cp` needs). The server
//! first sends an empty message on its lowest output channel. SPDY (`X-Stream-Protocol-Version`
//! v4..v1): the client opens one stream per channel, named by its `streamtype` header.
//!
//! The exit code travels in the Status (`reason: NonZeroExitCode`, a cause `ExitCode` with the
//! code as its message), which is how kubectl exits with the command's code.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::{blocking, flag, full, pod_error, query, spdy, switching, ws, Body, PodStreams, Process, Target};
use strata_driver::LogStream;

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";
const V3: &str = "v3.channel.k8s.io";
const V2: &str = "v2.channel.k8s.io";
const V1: &str = "channel.k8s.io";
/// WebSocket subprotocols for exec and attach, best first ("" is a client that names none).
const WS_PROTOCOLS: &[&str] = &[V5, V4, V1, ""];
/// SPDY protocol versions (`X-Stream-Protocol-Version`); V5 is V4 on SPDY, as kubelet treats it.
const SPDY_PROTOCOLS: &[&str] = &[V5, V4, V3, V2, V1];
/// How long a SPDY client has to open its streams.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Input to the process.
enum Input {
    Data(Bytes),
    Eof,
    Resize { width: u16, height: u16 },
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Success,
    ExitCode(i32),
    Failed(String),
}

/// The final `metav1.Status` (v4 and v5).
fn status_json(o: &Outcome) -> Vec<u8> {
    let v = match o {
        Outcome::Success => json!({ "metadata": {}, "status": "Success" }),
        Outcome::ExitCode(code) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": { "causes": [{ "reason": "ExitCode", "message": code.to_string() }] },
        }),
        Outcome::Failed(msg) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("error executing command in container: {msg}"),
            "reason": "InternalError", "code": 500,
            "details": { "causes": [{ "message": msg }] },
        }),
    };
    v.to_string().into_bytes()
}

/// The final message of v1-v3: text, on failure only.
fn status_text(o: &Outcome) -> Option<Vec<u8>> {
    match o {
        Outcome::Success => None,
        Outcome::ExitCode(code) => Some(format!("command terminated with non-zero exit code: exit status {code}").into_bytes()),
        Outcome::Failed(msg) => Some(format!("error executing command in container: {msg}").into_bytes()),
    }
}

/// A resize message: `{"Width":80,"Height":24}`.
fn parse_resize(b: &[u8]) -> Option<(u16, u16)> {
    let v: serde_json::Value = serde_json::from_slice(b).ok()?;
    Some((v["Width"].as_u64()? as u16, v["Height"].as_u64()? as u16))
}

/// Which streams the request asked for (kubelet's `input`, `output`, `error`, `tty`).
#[derive(Clone, Copy, Debug)]
struct Opts {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

/// Run the process to its end: input from `input`, output to `out`; the outcome.
async fn pump(process: Process, input: mpsc::Receiver<Input>, out: mpsc::Sender<strata_driver::OutputChunk>) -> Outcome {
    let Process { input: sink, output, wait, .. } = process;
    // An attached client shares the container's stdin: its end of input or its leaving does not
    // close it for the container (that is the container's `stdinOnce`, the runtime's business).
    let attach = wait.is_none();
    if let Some(mut sink) = sink {
        let mut input = input;
        tokio::task::spawn_blocking(move || {
            while let Some(i) = input.blocking_recv() {
                let r = match i {
                    Input::Data(d) => sink.input(&d),
                    Input::Eof if attach => Ok(()),
                    Input::Eof => sink.close_input(),
                    Input::Resize { width, height } => sink.resize(height, width),
                };
                if let Err(e) = r {
                    tracing::debug!(error = %e, "exec input");
                }
            }
            if !attach {
                let _ = sink.close_input();
            }
        });
    }
    let copied = tokio::task::spawn_blocking(move || {
        for chunk in output {
            match chunk {
                Ok(c) => {
                    if out.blocking_send(c).is_err() {
                        break;
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    })
    .await;
    match copied {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Outcome::Failed(e),
        Err(e) => return Outcome::Failed(e.to_string()),
    }
    match wait {
        None => Outcome::Success,
        Some(w) => match blocking(w).await {
            Ok(0) => Outcome::Success,
            Ok(code) => Outcome::ExitCode(code),
            Err(e) => Outcome::Failed(e.to_string()),
        },
    }
}

fn is_spdy(h: &http::HeaderMap) -> bool {
    h.get(http::header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"))
}

/// The first of the client's `X-Stream-Protocol-Version`s this server speaks (client order,
/// as httpstream.Handshake); `Ok("")` when it names none.
pub(super) fn spdy_protocol(h: &http::HeaderMap, supported: &[&str]) -> Result<String, String> {
    let offered: Vec<&str> = h.get_all("x-stream-protocol-version").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim).collect();
    if offered.is_empty() {
        return Ok(String::new());
    }
    offered
        .iter()
        .find(|p| supported.contains(p))
        .map(|p| p.to_string())
        .ok_or_else(|| format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"))
}

pub(super) fn spdy_switching(protocol: &str) -> http::response::Builder {
    let mut b = http::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "SPDY/3.1");
    if !protocol.is_empty() {
        b = b.header("X-Stream-Protocol-Version", protocol);
    }
    b
}

pub(super) async fn serve(pods: Arc<dyn PodStreams>, attach: bool, target: Target, mut req: Request<hyper::body::Incoming>) -> Response<Body> {
    let q = query(&req);
    let tty = flag(&q, "tty");
    let opts = Opts { stdin: flag(&q, "input"), stdout: flag(&q, "output"), stderr: flag(&q, "error") && !tty, tty };
    if !opts.stdin && !opts.stdout && !opts.stderr {
        return full(StatusCode::BAD_REQUEST, "you must specify at least 1 of stdin, stdout, stderr");
    }
    let command: Vec<String> = q.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
    if !attach && command.is_empty() {
        return full(StatusCode::BAD_REQUEST, "you must specify a command");
    }
    let websocket = ws::is_websocket(req.headers());
    let (switch, protocol) = if websocket {
        let Some(p) = ws::choose(req.headers(), WS_PROTOCOLS) else {
            return full(
                StatusCode::BAD_REQUEST,
                format!("requested protocol(s) are not supported: {:?}; supports {WS_PROTOCOLS:?}", ws::offered(req.headers())),
            );
        };
        match ws::accept_response(req.headers(), &p) {
            Ok(b) => (b, p),
            Err(e) => return full(StatusCode::BAD_REQUEST, e),
        }
    } else if is_spdy(req.headers()) {
        match spdy_protocol(req.headers(), SPDY_PROTOCOLS) {
            Ok(p) => (spdy_switching(&p), p),
            Err(e) => return full(StatusCode::FORBIDDEN, e),
        }
    } else {
        return full(StatusCode::BAD_REQUEST, "Upgrade request required");
    };
    // Start the process before switching protocols: a missing pod or container is an HTTP
    // error the client shows ("unable to upgrade connection: ...").
    let started = {
        let target = target.clone();
        let command = command.clone();
        blocking(move || if attach { pods.attach(&target, opts.stdin, opts.tty) } else { pods.exec(&target, &command, opts.stdin, opts.tty) }).await
    };
    let process = match started {
        Ok(p) => p,
        Err(e) => return pod_error(&e),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "exec: upgrade failed");
                return;
            }
        };
        if websocket {
            websocket_session(ws::server(upgraded).await, &protocol, opts, process).await;
        } else {
            let (rd, wr) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
            spdy_session(rd, wr, &protocol, opts, process).await;
        }
        tracing::debug!(namespace = %target.namespace, pod = %target.pod, container = %target.container, attach, "stream session ended");
    });
    switching(switch)
}

async fn websocket_session(socket: ws::Ws, protocol: &str, opts: Opts, process: Process) {
    let (mut sink, mut stream) = socket.split();
    let v5 = protocol == V5;
    let first = if opts.stdout {
        1
    } else if opts.stderr {
        2
    } else {
        3
    };
    if sink.send(Message::Binary(Bytes::from(vec![first]))).await.is_err() {
        return;
    }
    let (in_tx, in_rx) = mpsc::channel(16);
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            let b = match m {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            let input = match b.first() {
                Some(0) if opts.stdin => Input::Data(b.slice(1..)),
                Some(4) => match parse_resize(&b[1..]) {
                    Some((width, height)) => Input::Resize { width, height },
                    None => continue,
                },
                Some(255) if v5 && b.get(1) == Some(&0) => Input::Eof,
                _ => continue,
            };
            if in_tx.send(input).await.is_err() {
                // The process takes no input; keep reading for the close.
                continue;
            }
        }
    });
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let pumped = tokio::spawn(pump(process, in_rx, out_tx));
    while let Some(c) = out_rx.recv().await {
        let ch = match c.stream {
            LogStream::Stdout if opts.stdout => 1u8,
            LogStream::Stderr if opts.tty && opts.stdout => 1,
            LogStream::Stderr if opts.stderr => 2,
            _ => continue,
        };
        let mut m = Vec::with_capacity(c.data.len() + 1);
        m.push(ch);
        m.extend_from_slice(&c.data);
        if sink.send(Message::Binary(m.into())).await.is_err() {
            break;
        }
    }
    drop(out_rx);
    let outcome = pumped.await.unwrap_or_else(|e| Outcome::Failed(e.to_string()));
    let status = if protocol == V5 || protocol == V4 { Some(status_json(&outcome)) } else { status_text(&outcome) };
    if let Some(s) = status {
        let mut m = vec![3u8];
        m.extend_from_slice(&s);
        let _ = sink.send(Message::Binary(m.into())).await;
    }
    let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
    // Give the client a moment to answer the close, then drop the connection.
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
}

async fn spdy_session<R, W>(rd: R, wr: W, protocol: &str, opts: Opts, process: Process)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (writer, mut incoming) = spdy::serve(rd, wr);
    let resize_supported = matches!(protocol, V5 | V4 | V3);
    let expected = 1 + usize::from(opts.stdin) + usize::from(opts.stdout) + usize::from(opts.stderr) + usize::from(opts.tty && resize_supported);
    let mut streams: Vec<spdy::Incoming> = Vec::new();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while streams.len() < expected {
        match tokio::time::timeout_at(deadline, incoming.recv()).await {
            Ok(Some(s)) => streams.push(s),
            Ok(None) => return,
            Err(_) => {
                tracing::info!("exec: timed out waiting for the client to create streams");
                let _ = writer.goaway(0).await;
                return;
            }
        }
    }
    let id_of = |t: &str| streams.iter().find(|s| s.header("streamtype") == Some(t)).map(|s| s.id);
    let (error_id, stdout_id, stderr_id) = (id_of("error"), id_of("stdout"), id_of("stderr"));
    let last = streams.iter().map(|s| s.id).max().unwrap_or(0);
    let (in_tx, in_rx) = mpsc::channel(16);
    for s in streams {
        match s.header("streamtype") {
            Some("stdin") => {
                let tx = in_tx.clone();
                let mut data = s.data;
                tokio::spawn(async move {
                    while let Some(d) = data.recv().await {
                        if tx.send(Input::Data(d)).await.is_err() {
                            return;
                        }
                    }
                    let _ = tx.send(Input::Eof).await;
                });
            }
            Some("resize") => {
                let tx = in_tx.clone();
                let mut data = s.data;
                tokio::spawn(async move {
                    let mut buf: Vec<u8> = Vec::new();
                    while let Some(d) = data.recv().await {
                        buf.extend_from_slice(&d);
                        // A stream of JSON objects, possibly split across frames.
                        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<serde_json::Value>();
                        let mut used = 0;
                        while let Some(Ok(v)) = it.next() {
                            used = it.byte_offset();
                            if let (Some(w), Some(h)) = (v["Width"].as_u64(), v["Height"].as_u64()) {
                                if tx.send(Input::Resize { width: w as u16, height: h as u16 }).await.is_err() {
                                    return;
                                }
                            }
                        }
                        buf.drain(..used);
                    }
                });
            }
            _ => {}
        }
    }
    drop(in_tx);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let pumped = tokio::spawn(pump(process, in_rx, out_tx));
    while let Some(c) = out_rx.recv().await {
        let id = match c.stream {
            LogStream::Stdout => stdout_id,
            LogStream::Stderr if opts.tty => stdout_id,
            LogStream::Stderr => stderr_id,
        };
        let Some(id) = id else { continue };
        if writer.data(id, &c.data, false).await.is_err() {
            break;
        }
    }
    drop(out_rx);
    let outcome = pumped.await.unwrap_or_else(|e| Outcome::Failed(e.to_string()));
    for id in [stdout_id, stderr_id].into_iter().flatten() {
        let _ = writer.data(id, &[], true).await;
    }
    if let Some(id) = error_id {
        let status = if matches!(protocol, V5 | V4) { Some(status_json(&outcome)) } else { status_text(&outcome) };
        let _ = writer.data(id, &status.unwrap_or_default(), true).await;
    }
    // Wait (a little) for the client to finish reading and close the connection; then close it.
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while incoming.recv().await.is_some() {} }).await;
    let _ = writer.goaway(last).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_as_kubectl_reads_them() {
        let s: serde_json::Value = serde_json::from_slice(&status_json(&Outcome::ExitCode(3))).expect("json");
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        let ok: serde_json::Value = serde_json::from_slice(&status_json(&Outcome::Success)).expect("json");
        assert_eq!(ok, json!({ "metadata": {}, "status": "Success" }));
        assert_eq!(status_text(&Outcome::Success), None);
        assert_eq!(parse_resize(br#"{"Width":80,"Height":24}"#), Some((80, 24)));
    }

    #[test]
    fn spdy_negotiation_follows_the_clients_order() {
        let mut h = http::HeaderMap::new();
        for p in ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"] {
            h.append("x-stream-protocol-version", p.parse().expect("value"));
        }
        assert_eq!(spdy_protocol(&h, SPDY_PROTOCOLS).as_deref(), Ok("v4.channel.k8s.io"));
        assert_eq!(spdy_protocol(&http::HeaderMap::new(), SPDY_PROTOCOLS).as_deref(), Ok(""));
        let mut odd = http::HeaderMap::new();
        odd.append("x-stream-protocol-version", "v9.channel.k8s.io".parse().expect("value"));
        assert!(spdy_protocol(&odd, SPDY_PROTOCOLS).is_err());
    }
}
