//! `/containerLogs/{ns}/{pod}/{container}`: a container's log as a streamed `text/plain` body,
//! with kubelet's parameters (`follow`, `previous`, `sinceSeconds`, `sinceTime`, `tailLines`,
//! `limitBytes`, `timestamps`), and the formatting helper backends use. A WebSocket upgrade
//! gets the same bytes as WebSocket messages (what kube-apiserver's `wsstream` reader does for
//! `pods/log` over WebSocket: `binary.k8s.io` or no subprotocol, binary messages;
//! `base64.binary.k8s.io`, base64 text messages), then a close.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use hyper::{Request, Response, StatusCode};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{flag, full, query, Body, PodError, PodStreams, Target};

/// What to read of a container's log.
#[derive(Clone, Debug, Default)]
pub struct LogRequest {
    pub follow: bool,
    /// The previous attempt's log (the container restarted).
    pub previous: bool,
    /// Only records at or after this time (`sinceSeconds` is turned into one).
    pub since: Option<DateTime<Utc>>,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
    /// Each line starts with its RFC 3339 time (nanoseconds) and a space.
    pub timestamps: bool,
    /// Set once the client has gone away (a following read ends).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl LogRequest {
    /// kubelet's query parameters; a bad value is the message of a 400.
    pub fn parse(q: &[(String, String)], now: DateTime<Utc>) -> Result<Self, String> {
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
        let number = |k: &str| -> Result<Option<i64>, String> {
            get(k).map(|v| v.parse::<i64>().map_err(|_| format!("{k}: invalid value {v:?}: must be an integer"))).transpose()
        };
        let mut r = LogRequest { follow: flag(q, "follow"), previous: flag(q, "previous"), timestamps: flag(q, "timestamps"), ..Default::default() };
        if let Some(s) = number("sinceSeconds")? {
            if s < 1 {
                return Err("sinceSeconds: must be greater than 0".into());
            }
            r.since = Some(now - chrono::Duration::seconds(s));
        }
        if let Some(t) = get("sinceTime") {
            if r.since.is_some() {
                return Err("at most one of sinceTime or sinceSeconds may be specified".into());
            }
            r.since = Some(DateTime::parse_from_rfc3339(t).map_err(|e| format!("sinceTime: invalid value {t:?}: {e}"))?.with_timezone(&Utc));
        }
        if let Some(n) = number("tailLines")? {
            if n < 0 {
                return Err("tailLines: must be greater than or equal to 0".into());
            }
            r.tail_lines = Some(n as u64);
        }
        if let Some(n) = number("limitBytes")? {
            if n < 1 {
                return Err("limitBytes: must be greater than 0".into());
            }
            r.limit_bytes = Some(n as u64);
        }
        Ok(r)
    }
}

/// One log line as kubelet writes it: with `timestamps`, the record's time (RFC 3339 with
/// nanoseconds) and a space first; a partial record (a long line split by the runtime) gets no
/// newline.
pub fn format_line(time: &str, content: &[u8], partial: bool, timestamps: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(content.len() + 40);
    if timestamps {
        v.extend_from_slice(time.as_bytes());
        v.push(b' ');
    }
    v.extend_from_slice(content);
    if !partial {
        v.push(b'\n');
    }
    v
}

/// The WebSocket subprotocols of a log read (kube-apiserver's default reader protocols), with
/// whether their messages are binary (else base64 text).
const WS_PROTOCOLS: [(&str, bool); 3] = [("binary.k8s.io", true), ("base64.binary.k8s.io", false), ("", true)];

pub(super) async fn serve(pods: Arc<dyn PodStreams>, target: Target, mut req: Request<hyper::body::Incoming>) -> Response<Body> {
    let websocket = if super::ws::is_websocket(req.headers()) {
        let supported: Vec<&str> = WS_PROTOCOLS.iter().map(|(p, _)| *p).collect();
        let Some(protocol) = super::ws::choose(req.headers(), &supported) else {
            return full(StatusCode::BAD_REQUEST, format!("none of the offered WebSocket subprotocols is supported (supported: {})", supported[..2].join(", ")));
        };
        let accept = match super::ws::accept_response(req.headers(), &protocol) {
            Ok(b) => b,
            Err(e) => return full(StatusCode::BAD_REQUEST, e),
        };
        let binary = WS_PROTOCOLS.iter().any(|(p, b)| *p == protocol && *b);
        Some((accept, binary, hyper::upgrade::on(&mut req)))
    } else {
        None
    };
    let mut r = match LogRequest::parse(&query(&req), Utc::now()) {
        Ok(r) => r,
        Err(e) => return full(StatusCode::BAD_REQUEST, e),
    };
    // The backend writes from a blocking thread; the first write (or its end) decides the
    // status, so a missing container is a 404 rather than an empty 200.
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, PodError>>(32);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Option<PodError>>();
    // A client that goes away cancels a following read, even when no output comes.
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    r.cancel = Some(cancel.clone());
    let weak = tx.downgrade();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            match weak.upgrade() {
                None => return,
                Some(s) if s.is_closed() => {
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                Some(_) => {}
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let mut first = Some(first_tx);
        let mut remaining = r.limit_bytes;
        let result = pods.logs(&target, &r, &mut |b: &[u8]| {
            if let Some(f) = first.take() {
                let _ = f.send(None);
            }
            if b.is_empty() {
                return !tx.is_closed();
            }
            let b = match remaining {
                Some(0) => return false,
                Some(n) if (b.len() as u64) > n => &b[..n as usize],
                _ => b,
            };
            if let Some(n) = remaining.as_mut() {
                *n -= b.len() as u64;
            }
            tx.blocking_send(Ok(Bytes::copy_from_slice(b))).is_ok() && remaining != Some(0)
        });
        match (result, first.take()) {
            (Err(e), Some(f)) => {
                let _ = f.send(Some(e));
            }
            (Err(e), None) => {
                let _ = tx.blocking_send(Err(e));
            }
            (Ok(()), Some(f)) => {
                let _ = f.send(None);
            }
            (Ok(()), None) => {}
        }
    });
    match first_rx.await {
        Ok(Some(e)) => return super::pod_error(&e),
        Ok(None) => {}
        Err(_) => return full(StatusCode::INTERNAL_SERVER_ERROR, "log reader ended"),
    }
    if let Some((accept, binary, upgrade)) = websocket {
        tokio::spawn(async move {
            let upgraded = match upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "log WebSocket upgrade failed");
                    return;
                }
            };
            let mut ws = super::ws::server(upgraded).await;
            use base64::Engine;
            use futures_util::SinkExt;
            use tokio_tungstenite::tungstenite::Message;
            while let Some(Ok(b)) = rx.recv().await {
                let m = if binary { Message::Binary(b) } else { Message::Text(base64::engine::general_purpose::STANDARD.encode(&b).into()) };
                if ws.send(m).await.is_err() {
                    return;
                }
            }
            let _ = ws.send(Message::Close(None)).await;
            let _ = ws.close(None).await;
        });
        return super::switching(accept);
    }
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|item| match item {
        Ok(b) => Ok(hyper::body::Frame::data(b)),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    });
    let body = BodyExt::boxed(http_body_util::StreamBody::new(stream));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(s.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
    }

    #[test]
    fn parameters_as_kubelet_takes_them() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:01:00Z").expect("time").with_timezone(&Utc);
        let r = LogRequest::parse(&q("follow=true&previous=1&timestamps=true&tailLines=3&limitBytes=10&sinceSeconds=60"), now).expect("parse");
        assert!(r.follow && r.previous && r.timestamps);
        assert_eq!((r.tail_lines, r.limit_bytes), (Some(3), Some(10)));
        assert_eq!(r.since.map(|t| t.to_rfc3339()), Some("2026-01-01T00:00:00+00:00".into()));
        let r = LogRequest::parse(&q("sinceTime=2026-01-01T00:00:30Z"), now).expect("parse");
        assert_eq!(r.since.map(|t| t.timestamp()), Some(now.timestamp() - 30));
        for bad in ["tailLines=-1", "limitBytes=0", "sinceSeconds=0", "tailLines=x", "sinceTime=yesterday", "sinceSeconds=5&sinceTime=2026-01-01T00:00:30Z"] {
            assert!(LogRequest::parse(&q(bad), now).is_err(), "{bad}");
        }
        let r = LogRequest::parse(&q(""), now).expect("empty");
        assert!(!r.follow && !r.previous && !r.timestamps && r.since.is_none() && r.tail_lines.is_none() && r.limit_bytes.is_none());
    }

    #[test]
    fn lines() {
        assert_eq!(format_line("2026-01-01T00:00:00.000000001Z", b"hi", false, true), b"2026-01-01T00:00:00.000000001Z hi\n");
        assert_eq!(format_line("t", b"part", true, false), b"part");
    }
}
