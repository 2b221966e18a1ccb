//! A VM's serial console over WebSocket (`/vmConsole/{ns}/{pod}/{uid}`, what the API server's
//! `virtualmachines/console` reaches): subprotocol `plain.strata.dev` (or none), and every
//! binary message carries raw console bytes — the guest's output from here, keyboard input to
//! here (a text message is taken as its UTF-8 bytes, for browser terminals that send text). No
//! channels, no resize: a serial line has no window size. The session ends when either side
//! closes; the VM keeps running.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::{Request, Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::{blocking, full, pod_error, switching, ws, Body, PodStreams};

/// The console's WebSocket subprotocol.
pub const PROTOCOL: &str = "plain.strata.dev";

pub(crate) async fn serve(pods: Arc<dyn PodStreams>, ns: String, pod: String, uid: String, req: Request<hyper::body::Incoming>) -> Response<Body> {
    if !ws::is_websocket(req.headers()) {
        return full(StatusCode::BAD_REQUEST, "the console is a WebSocket: send a GET with Upgrade: websocket");
    }
    let Some(protocol) = ws::choose(req.headers(), &[PROTOCOL, ""]) else {
        return full(StatusCode::BAD_REQUEST, format!("unsupported WebSocket subprotocol: the console speaks {PROTOCOL}"));
    };
    let accept = match ws::accept_response(req.headers(), &protocol) {
        Ok(b) => b,
        Err(e) => return full(StatusCode::BAD_REQUEST, e),
    };
    let console = match blocking(move || pods.vm_console(&ns, &pod, &uid)).await {
        Ok(c) => c,
        Err(e) => return pod_error(&e),
    };
    let console = match console.set_nonblocking(true).and_then(|()| tokio::net::UnixStream::from_std(console)) {
        Ok(c) => c,
        Err(e) => return full(StatusCode::INTERNAL_SERVER_ERROR, format!("the VM's console: {e}")),
    };
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(up) => splice(ws::server(up).await, console).await,
            Err(e) => tracing::debug!(error = %e, "console upgrade failed"),
        }
    });
    switching(accept)
}

/// Carry bytes between the WebSocket and the console until either ends.
async fn splice(ws: ws::Ws, console: tokio::net::UnixStream) {
    let (mut sink, mut stream) = ws.split();
    let (mut rd, mut wr) = console.into_split();
    let inbound = async {
        while let Some(Ok(m)) = stream.next().await {
            let data: Bytes = match m {
                Message::Binary(b) => b,
                Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
                Message::Close(_) => break,
                _ => continue,
            };
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
    };
    let outbound = async {
        if !ws::send_binary(&mut rd, &mut sink).await {
            return;
        }
        // The console ended: the VM stopped.
        let frame = CloseFrame { code: CloseCode::Normal, reason: "the console closed (the VM stopped)".into() };
        let _ = sink.send(Message::Close(Some(frame))).await;
        let _ = sink.close().await;
    };
    tokio::select! {
        () = inbound => {}
        () = outbound => {}
    }
}
