//! WebSocket on the stream server: the upgrade handshake (answered by hyper, the frames then
//! by tokio-tungstenite), subprotocol negotiation, and a byte-stream view of binary messages
//! for SPDY tunnelled in WebSocket (kubectl 1.31+ port-forward, `SPDY/3.1+portforward.k8s.io`).

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The upgraded connection as a WebSocket.
pub type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Is this a WebSocket upgrade request (`Upgrade: websocket`, `Connection: ... upgrade ...`)?
pub fn is_websocket(h: &HeaderMap) -> bool {
    let upgrade = h.get(http::header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    upgrade && connection
}

/// The subprotocols the client offers, in its order of preference.
pub fn offered(h: &HeaderMap) -> Vec<String> {
    h.get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The first offered subprotocol this server supports; "" when the client offered none and
/// `""` is supported (the legacy unnamed protocol); `None` when nothing fits.
pub fn choose(h: &HeaderMap, supported: &[&str]) -> Option<String> {
    let offered = offered(h);
    if offered.is_empty() {
        return supported.contains(&"").then(String::new);
    }
    offered.into_iter().find(|p| supported.contains(&p.as_str()))
}

/// The `101 Switching Protocols` answer to a WebSocket upgrade with `protocol` chosen, or the
/// reason the request is not a valid one.
pub fn accept_response(h: &HeaderMap, protocol: &str) -> Result<http::response::Builder, String> {
    let key = h.get(http::header::SEC_WEBSOCKET_KEY).ok_or("missing Sec-WebSocket-Key")?;
    if h.get(http::header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        return Err("unsupported Sec-WebSocket-Version (13 is spoken)".into());
    }
    let mut b = http::Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()));
    if !protocol.is_empty() {
        b = b.header(http::header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    Ok(b)
}

/// The WebSocket over a connection hyper upgraded.
pub async fn server(upgraded: hyper::upgrade::Upgraded) -> Ws {
    let mut cfg = WebSocketConfig::default();
    // Messages are at most a few MiB (a stdin or port-forward chunk).
    cfg.max_message_size = Some(16 << 20);
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(cfg)).await
}

/// Bytes carried in binary messages, seen as one byte stream (each write is one message, as
/// client-go's tunnelling connection does). Ends when the WebSocket closes.
pub fn byte_stream(ws: Ws) -> DuplexStream {
    let (mine, theirs) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(mine);
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        // Messages in -> bytes; bytes -> messages out; a closing side ends both.
        let inbound = async {
            while let Some(Ok(m)) = stream.next().await {
                match m {
                    Message::Binary(b) => {
                        if wr.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            if send_binary(&mut rd, &mut sink).await {
                let _ = sink.send(Message::Close(None)).await;
                let _ = sink.close().await;
            }
        };
        tokio::select! {
            () = inbound => {}
            () = outbound => {}
        }
    });
    theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn negotiation() {
        let h = headers(&[("upgrade", "WebSocket"), ("connection", "keep-alive, Upgrade"), ("sec-websocket-protocol", "v5.channel.k8s.io, v4.channel.k8s.io")]);
        assert!(is_websocket(&h));
        assert_eq!(choose(&h, &["v4.channel.k8s.io", "v5.channel.k8s.io"]).as_deref(), Some("v5.channel.k8s.io"));
        assert_eq!(choose(&h, &["channel.k8s.io"]), None);
        let none = headers(&[("upgrade", "websocket"), ("connection", "upgrade")]);
        assert_eq!(choose(&none, &["", "v4.channel.k8s.io"]).as_deref(), Some(""));
        assert!(!is_websocket(&headers(&[("upgrade", "SPDY/3.1"), ("connection", "Upgrade")])));
        // RFC 6455's example key.
        let h = headers(&[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="), ("sec-websocket-version", "13")]);
        let r = accept_response(&h, "v5.channel.k8s.io").expect("accept").body(()).expect("response");
        assert_eq!(r.headers()["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(accept_response(&headers(&[("sec-websocket-key", "x"), ("sec-websocket-version", "8")]), "").is_err());
    }
}

/// Sends what `rd` yields as binary messages until it ends (true) or the WebSocket is gone
/// (false); the caller then closes the WebSocket as its protocol wants.
pub async fn send_binary<R, S>(rd: &mut R, sink: &mut S) -> bool
where
    R: tokio::io::AsyncRead + Unpin,
    S: futures_util::Sink<Message> + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(n) => {
                if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                    return false;
                }
            }
        }
    }
}
