//! `/portForward/{ns}/{pod}`: TCP connections to the pod's ports, as kubelet forwards them.
//!
//! SPDY (`portforward.k8s.io`; kubectl up to 1.30 over an HTTP upgrade, 1.31+ tunnelled in
//! WebSocket binary messages as `SPDY/3.1+portforward.k8s.io`): each forwarded connection is a
//! pair of client-opened streams, `streamtype: error` and `streamtype: data`, with the same
//! `port` and `requestid` headers; a failure is written as text on the error stream. WebSocket
//! channels (`v4.channel.k8s.io`, the Python client): the ports are the `port` query parameters,
//! port i uses channel 2i for data and 2i+1 for errors, and each channel first carries its port
//! as two little-endian bytes.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::exec::{spdy_protocol, spdy_switching};
use super::{blocking, full, pod_error, query, spdy, switching, ws, Body, PodError, PodStreams};

const PORTFORWARD: &str = "portforward.k8s.io";
const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
const V4: &str = "v4.channel.k8s.io";

/// Connect to `port` of the pod (blocking call on a worker thread).
pub(super) async fn connect(pods: &Arc<dyn PodStreams>, ns: &str, pod: &str, port: u16) -> Result<tokio::net::TcpStream, PodError> {
    let (pods, ns2, pod2) = (pods.clone(), ns.to_string(), pod.to_string());
    let tcp = blocking(move || pods.port_forward(&ns2, &pod2, port)).await?;
    tcp.set_nonblocking(true).map_err(|e| PodError::Internal(e.to_string()))?;
    tokio::net::TcpStream::from_std(tcp).map_err(|e| PodError::Internal(e.to_string()))
}

fn forward_error(port: u16, pod: &str, e: &PodError) -> String {
    format!("error forwarding port {port} to pod {pod}, uid : {e}")
}

pub(super) async fn serve(pods: Arc<dyn PodStreams>, ns: String, pod: String, mut req: Request<hyper::body::Incoming>) -> Response<Body> {
    {
        let (pods, ns, pod) = (pods.clone(), ns.clone(), pod.clone());
        if let Err(e) = blocking(move || pods.check_pod(&ns, &pod)).await {
            return pod_error(&e);
        }
    }
    if ws::is_websocket(req.headers()) {
        let Some(protocol) = ws::choose(req.headers(), &[TUNNEL, V4, PORTFORWARD, ""]) else {
            return full(StatusCode::BAD_REQUEST, format!("requested protocol(s) are not supported: {:?}", ws::offered(req.headers())));
        };
        let ports = if protocol == TUNNEL {
            Vec::new()
        } else {
            match ports(&query(&req)) {
                Ok(p) => p,
                Err(e) => return full(StatusCode::BAD_REQUEST, e),
            }
        };
        let switch = match ws::accept_response(req.headers(), &protocol) {
            Ok(b) => b,
            Err(e) => return full(StatusCode::BAD_REQUEST, e),
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else { return };
            let socket = ws::server(upgraded).await;
            if protocol == TUNNEL {
                let (rd, wr) = tokio::io::split(ws::byte_stream(socket));
                spdy_forward(rd, wr, pods, ns, pod).await;
            } else {
                channel_forward(socket, pods, ns, pod, ports).await;
            }
        });
        return switching(switch);
    }
    let spdy = req.headers().get(http::header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
    if !spdy {
        return full(StatusCode::BAD_REQUEST, "Upgrade request required");
    }
    let protocol = match spdy_protocol(req.headers(), &[PORTFORWARD]) {
        Ok(p) => p,
        Err(e) => return full(StatusCode::FORBIDDEN, e),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let (rd, wr) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        spdy_forward(rd, wr, pods, ns, pod).await;
    });
    switching(spdy_switching(&protocol))
}

/// The `port` query parameters (each may be a comma-separated list).
fn ports(q: &[(String, String)]) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for (_, v) in q.iter().filter(|(k, _)| k == "port") {
        if v.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in v.split(',') {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => out.push(n),
                Ok(_) => return Err(format!("port {p:?} must be > 0")),
                Err(e) => return Err(format!("unable to parse {p:?} as a port: {e}")),
            }
        }
    }
    if out.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(out)
}

async fn spdy_forward<R, W>(rd: R, wr: W, pods: Arc<dyn PodStreams>, ns: String, pod: String)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (writer, mut incoming) = spdy::serve(rd, wr);
    // requestid -> (error stream, data stream)
    let mut pending: HashMap<String, (Option<spdy::Incoming>, Option<spdy::Incoming>)> = HashMap::new();
    let mut last = 0;
    while let Some(s) = incoming.recv().await {
        last = last.max(s.id);
        let port = s.header("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
        let kind = s.header("streamtype").map(str::to_string);
        let (Some(_), Some(kind @ ("error" | "data"))) = (port, kind.as_deref()) else {
            let _ = writer.reset(s.id, spdy::REFUSED_STREAM).await;
            continue;
        };
        // Old clients send no request id: pair the error stream N with the data stream N+2.
        let id = match s.header("requestid") {
            Some(r) => r.to_string(),
            None if kind == "error" => s.id.to_string(),
            None => s.id.saturating_sub(2).to_string(),
        };
        let entry = pending.entry(id.clone()).or_default();
        if kind == "error" {
            entry.0 = Some(s);
        } else {
            entry.1 = Some(s);
        }
        if matches!(pending.get(&id), Some((Some(_), Some(_)))) {
            if let Some((Some(error), Some(data))) = pending.remove(&id) {
                tokio::spawn(forward_pair(writer.clone(), pods.clone(), ns.clone(), pod.clone(), error, data));
            }
        }
    }
    let _ = writer.goaway(last).await;
}

async fn forward_pair(writer: spdy::Writer, pods: Arc<dyn PodStreams>, ns: String, pod: String, error: spdy::Incoming, data: spdy::Incoming) {
    let port = data.header("port").and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
    let tcp = match connect(&pods, &ns, &pod, port).await {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(namespace = %ns, %pod, port, error = %e, "port-forward: cannot connect");
            let _ = writer.data(error.id, forward_error(port, &pod, &e).as_bytes(), true).await;
            let _ = writer.data(data.id, &[], true).await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let mut input = data.data;
    let up = tokio::spawn(async move {
        while let Some(b) = input.recv().await {
            if to_pod.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = to_pod.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from_pod.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if writer.data(data.id, &buf[..n], false).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = writer.data(data.id, &[], true).await;
    let _ = writer.data(error.id, &[], true).await;
    up.abort();
}

async fn channel_forward(socket: ws::Ws, pods: Arc<dyn PodStreams>, ns: String, pod: String, ports: Vec<u16>) {
    let (mut sink, mut stream) = socket.split();
    for (i, port) in ports.iter().enumerate() {
        let p = port.to_le_bytes();
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            if sink.send(Message::Binary(Bytes::from(vec![ch, p[0], p[1]]))).await.is_err() {
                return;
            }
        }
    }
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(32);
    let mut inputs: Vec<Option<mpsc::Sender<Bytes>>> = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(32);
        inputs.push(Some(in_tx));
        let out = out_tx.clone();
        let (pods, ns, pod) = (pods.clone(), ns.clone(), pod.clone());
        tokio::spawn(async move {
            let data_ch = 2 * i as u8;
            let tcp = match connect(&pods, &ns, &pod, port).await {
                Ok(t) => t,
                Err(e) => {
                    let mut m = vec![data_ch + 1];
                    m.extend_from_slice(forward_error(port, &pod, &e).as_bytes());
                    let _ = out.send(m).await;
                    return;
                }
            };
            let (mut from_pod, mut to_pod) = tcp.into_split();
            let up = tokio::spawn(async move {
                while let Some(b) = in_rx.recv().await {
                    if to_pod.write_all(&b).await.is_err() {
                        return;
                    }
                }
                let _ = to_pod.shutdown().await;
            });
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match from_pod.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut m = Vec::with_capacity(n + 1);
                        m.push(data_ch);
                        m.extend_from_slice(&buf[..n]);
                        if out.send(m).await.is_err() {
                            break;
                        }
                    }
                }
            }
            up.abort();
        });
    }
    drop(out_tx);
    loop {
        tokio::select! {
            m = out_rx.recv() => match m {
                Some(m) => if sink.send(Message::Binary(m.into())).await.is_err() { break },
                // Every forward ended.
                None => break,
            },
            m = stream.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    let Some(&ch) = b.first() else { continue };
                    let i = usize::from(ch / 2);
                    if ch % 2 == 0 {
                        if let Some(Some(tx)) = inputs.get(i) {
                            if tx.send(b.slice(1..)).await.is_err() {
                                inputs[i] = None;
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = sink.send(Message::Close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_parameters() {
        let q = |s: &str| form_urlencoded::parse(s.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect::<Vec<_>>();
        assert_eq!(ports(&q("port=80&port=8080,9090")), Ok(vec![80, 8080, 9090]));
        assert!(ports(&q("")).is_err());
        assert!(ports(&q("port=0")).is_err());
        assert!(ports(&q("port=http")).is_err());
    }
}
