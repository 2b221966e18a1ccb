//! SPDY/3.1 as kubectl's `httpstream` package speaks it (moby/spdystream): the frames, header
//! blocks compressed as one zlib stream per direction with the protocol's preset dictionary, and
//! a connection that accepts the client's streams and multiplexes writes.
//!
//! kubectl 1.27-1.29 exec/attach (and 1.27-1.30 port-forward) upgrade an HTTP/1.1 request to
//! `SPDY/3.1`; 1.31+ tunnel the same frames in WebSocket binary messages for port-forward. Every
//! stream is opened by the client (`SYN_STREAM` with a `streamtype` header); the server answers
//! each with a `SYN_REPLY` before any data (spdystream drops data on a stream it has no reply
//! for), ends its side with a `FIN` flag and the connection with `GOAWAY`. spdystream does no
//! flow control, so neither does this: `WINDOW_UPDATE` and `SETTINGS` are read and ignored.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Mutex};

/// A control frame's type.
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 1;
/// The only version spoken.
const VERSION: u16 = 3;
/// Largest header block accepted once decompressed (a client's streams carry a few short headers).
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Largest control frame accepted.
const MAX_CONTROL_FRAME: usize = 256 * 1024;
/// Data written per frame.
const MAX_DATA_FRAME: usize = 32 * 1024;
/// RST_STREAM status: the stream is refused.
pub const REFUSED_STREAM: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
}

fn protocol(msg: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(msg.into())
}

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): 65 header names and
/// values each preceded by its length as a 32-bit big-endian number, then a block of common
/// status lines, dates and media types.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding", "accept-language",
            "accept-ranges", "age", "allow", "authorization", "cache-control", "connection", "content-base", "content-encoding",
            "content-language", "content-length", "content-location", "content-md5", "content-range", "content-type", "date", "etag",
            "expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
            "last-modified", "location", "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
            "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
            "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
            "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,",
            "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1500);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream { id: u32, fin: bool, headers: Vec<(String, String)> },
    SynReply { id: u32, fin: bool, headers: Vec<(String, String)> },
    RstStream { id: u32, status: u32 },
    Settings,
    Ping(u32),
    GoAway { last: u32, status: u32 },
    Headers { id: u32, fin: bool, headers: Vec<(String, String)> },
    WindowUpdate { id: u32, delta: u32 },
    Data { id: u32, fin: bool, data: Bytes },
}

/// Header blocks of one direction: a zlib stream that spans the connection.
pub struct HeaderCodec {
    deflate: Compress,
    inflate: Decompress,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCodec {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Cannot fail on a fresh stream.
        let _ = deflate.set_dictionary(dictionary());
        Self { deflate, inflate: Decompress::new(true) }
    }

    /// Compress a header block (ends with a sync flush: the peer decodes it alone).
    pub fn encode(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, SpdyError> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            let k = k.to_ascii_lowercase();
            plain.extend_from_slice(&(k.len() as u32).to_be_bytes());
            plain.extend_from_slice(k.as_bytes());
            plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut used = 0usize;
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&plain[used..], &mut out, FlushCompress::Sync)
                .map_err(|e| protocol(format!("compressing headers: {e}")))?;
            used += (self.deflate.total_in() - before) as usize;
            // Done when all input is in and the flush fit in the space we gave it.
            if used == plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Decompress one frame's header block and parse it. Names are lower case; a value
    /// holding several NUL-separated values gives one pair each.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut out: Vec<u8> = Vec::with_capacity(block.len() * 4 + 256);
        let mut used = 0usize;
        loop {
            if out.len() > MAX_HEADER_BLOCK {
                return Err(protocol("header block too large"));
            }
            out.reserve(1024);
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            match self.inflate.decompress_vec(&block[used..], &mut out, FlushDecompress::Sync) {
                Ok(Status::StreamEnd) => return Err(protocol("header compression stream ended")),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(dictionary()).map_err(|e| protocol(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(protocol(format!("decompressing headers: {e}"))),
            }
            used += (self.inflate.total_in() - before_in) as usize;
            let progressed = self.inflate.total_in() != before_in || self.inflate.total_out() != before_out;
            if used == block.len() && out.len() < out.capacity() {
                break;
            }
            if !progressed && used == block.len() {
                break;
            }
        }
        parse_header_block(&out)
    }
}

fn parse_header_block(b: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let mut pos = 0usize;
    let u32_at = |pos: &mut usize| -> Result<u32, SpdyError> {
        let s = b.get(*pos..*pos + 4).ok_or_else(|| protocol("truncated header block"))?;
        *pos += 4;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    };
    let count = u32_at(&mut pos)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let n = u32_at(&mut pos)? as usize;
        let name = b.get(pos..pos + n).ok_or_else(|| protocol("truncated header name"))?;
        pos += n;
        let n = u32_at(&mut pos)? as usize;
        let value = b.get(pos..pos + n).ok_or_else(|| protocol("truncated header value"))?;
        pos += n;
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        for v in value.split(|c| *c == 0) {
            out.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(out)
}

/// Encode a frame (header blocks through `codec`).
pub fn encode(codec: &mut HeaderCodec, frame: &Frame) -> Result<Vec<u8>, SpdyError> {
    let control = |ty: u16, flags: u8, payload: &[u8]| {
        let mut v = Vec::with_capacity(8 + payload.len());
        v.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        v.extend_from_slice(&ty.to_be_bytes());
        v.extend_from_slice(&((u32::from(flags) << 24) | payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    };
    let fin = |f: bool| if f { FLAG_FIN } else { 0 };
    Ok(match frame {
        Frame::SynStream { id, fin: f, headers } => {
            let mut p = Vec::new();
            p.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
            p.extend_from_slice(&0u32.to_be_bytes());
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(&codec.encode(headers)?);
            control(SYN_STREAM, fin(*f), &p)
        }
        Frame::SynReply { id, fin: f, headers } | Frame::Headers { id, fin: f, headers } => {
            let mut p = Vec::new();
            p.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
            p.extend_from_slice(&codec.encode(headers)?);
            let ty = if matches!(frame, Frame::SynReply { .. }) { SYN_REPLY } else { HEADERS };
            control(ty, fin(*f), &p)
        }
        Frame::RstStream { id, status } => control(RST_STREAM, 0, &[id.to_be_bytes(), status.to_be_bytes()].concat()),
        Frame::Settings => control(SETTINGS, 0, &0u32.to_be_bytes()),
        Frame::Ping(id) => control(PING, 0, &id.to_be_bytes()),
        Frame::GoAway { last, status } => control(GOAWAY, 0, &[last.to_be_bytes(), status.to_be_bytes()].concat()),
        Frame::WindowUpdate { id, delta } => control(WINDOW_UPDATE, 0, &[id.to_be_bytes(), delta.to_be_bytes()].concat()),
        Frame::Data { id, fin: f, data } => {
            let mut v = Vec::with_capacity(8 + data.len());
            v.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
            v.extend_from_slice(&((u32::from(fin(*f)) << 24) | data.len() as u32).to_be_bytes());
            v.extend_from_slice(data);
            v
        }
    })
}

/// Read one frame; `None` at a clean end of the connection (between frames).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, codec: &mut HeaderCodec) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    r.read_exact(&mut head[1..]).await?;
    let w0 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let w1 = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let flags = (w1 >> 24) as u8;
    let len = (w1 & 0x00ff_ffff) as usize;
    let fin = flags & FLAG_FIN != 0;
    if w0 & 0x8000_0000 == 0 {
        let mut data = vec![0u8; len];
        r.read_exact(&mut data).await?;
        return Ok(Some(Frame::Data { id: w0 & 0x7fff_ffff, fin, data: data.into() }));
    }
    let version = ((w0 >> 16) & 0x7fff) as u16;
    let ty = (w0 & 0xffff) as u16;
    if version != VERSION {
        return Err(protocol(format!("SPDY version {version} (only 3 is spoken)")));
    }
    if len > MAX_CONTROL_FRAME {
        return Err(protocol(format!("control frame of {len} bytes")));
    }
    let mut p = vec![0u8; len];
    r.read_exact(&mut p).await?;
    let word = |i: usize| -> Result<u32, SpdyError> {
        let s = p.get(i..i + 4).ok_or_else(|| protocol(format!("short control frame (type {ty})")))?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    };
    Ok(Some(match ty {
        SYN_STREAM => {
            let id = word(0)? & 0x7fff_ffff;
            if p.len() < 10 {
                return Err(protocol("short SYN_STREAM"));
            }
            Frame::SynStream { id, fin, headers: codec.decode(&p[10..])? }
        }
        SYN_REPLY => Frame::SynReply { id: word(0)? & 0x7fff_ffff, fin, headers: codec.decode(&p[4..])? },
        HEADERS => Frame::Headers { id: word(0)? & 0x7fff_ffff, fin, headers: codec.decode(&p[4..])? },
        RST_STREAM => Frame::RstStream { id: word(0)? & 0x7fff_ffff, status: word(4)? },
        SETTINGS => Frame::Settings,
        PING => Frame::Ping(word(0)?),
        GOAWAY => Frame::GoAway { last: word(0)? & 0x7fff_ffff, status: word(4).unwrap_or(0) },
        WINDOW_UPDATE => Frame::WindowUpdate { id: word(0)? & 0x7fff_ffff, delta: word(4)? },
        // Unknown control frames are ignored (as the draft says).
        _ => Frame::Settings,
    }))
}

/// A stream the client opened.
pub struct Incoming {
    pub id: u32,
    pub headers: Vec<(String, String)>,
    /// The client's data on it; ends with the client's FIN (or a reset, or the connection's end).
    pub data: mpsc::Receiver<Bytes>,
}

impl Incoming {
    /// A header's (first) value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Writes frames on a connection; cheap to clone, one writer at a time.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<Mutex<(Box<dyn AsyncWrite + Send + Unpin>, HeaderCodec)>>,
}

impl Writer {
    async fn frame(&self, frame: &Frame) -> Result<(), SpdyError> {
        let mut g = self.inner.lock().await;
        let (w, codec) = &mut *g;
        let bytes = encode(codec, frame)?;
        w.write_all(&bytes).await?;
        w.flush().await?;
        Ok(())
    }

    /// Data on stream `id` (split into frames), ending the stream when `fin`.
    pub async fn data(&self, id: u32, data: &[u8], fin: bool) -> Result<(), SpdyError> {
        if data.is_empty() {
            return self.frame(&Frame::Data { id, fin, data: Bytes::new() }).await;
        }
        let mut chunks = data.chunks(MAX_DATA_FRAME).peekable();
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            self.frame(&Frame::Data { id, fin: fin && last, data: Bytes::copy_from_slice(c) }).await?;
        }
        Ok(())
    }

    pub async fn reset(&self, id: u32, status: u32) -> Result<(), SpdyError> {
        self.frame(&Frame::RstStream { id, status }).await
    }

    /// The end of the connection: no more streams; the last one the server accepted.
    pub async fn goaway(&self, last: u32) -> Result<(), SpdyError> {
        self.frame(&Frame::GoAway { last, status: 0 }).await?;
        let mut g = self.inner.lock().await;
        let _ = g.0.shutdown().await;
        Ok(())
    }
}

/// Serve a SPDY connection: every stream the client opens is answered with a `SYN_REPLY` and
/// handed out on the returned channel; the channel ends with the connection.
pub fn serve<R, W>(mut r: R, w: W) -> (Writer, mpsc::Receiver<Incoming>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let writer = Writer { inner: Arc::new(Mutex::new((Box::new(w), HeaderCodec::new()))) };
    let (tx, rx) = mpsc::channel(16);
    let wr = writer.clone();
    tokio::spawn(async move {
        let mut codec = HeaderCodec::new();
        let mut streams: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
        loop {
            let frame = match read_frame(&mut r, &mut codec).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY connection ended");
                    break;
                }
            };
            match frame {
                Frame::SynStream { id, fin, headers } => {
                    if id % 2 == 0 || streams.contains_key(&id) {
                        let _ = wr.reset(id, 1).await;
                        continue;
                    }
                    if wr.frame(&Frame::SynReply { id, fin: false, headers: Vec::new() }).await.is_err() {
                        break;
                    }
                    let (dtx, drx) = mpsc::channel(64);
                    if !fin {
                        streams.insert(id, dtx);
                    }
                    if tx.send(Incoming { id, headers, data: drx }).await.is_err() {
                        let _ = wr.reset(id, REFUSED_STREAM).await;
                    }
                }
                Frame::Data { id, fin, data } => {
                    if let Some(s) = streams.get(&id) {
                        if !data.is_empty() && s.send(data).await.is_err() {
                            // Nobody reads this stream's input: drop it.
                            streams.remove(&id);
                        }
                    }
                    if fin {
                        streams.remove(&id);
                    }
                }
                Frame::RstStream { id, .. } => {
                    streams.remove(&id);
                }
                Frame::Ping(id) => {
                    if wr.frame(&Frame::Ping(id)).await.is_err() {
                        break;
                    }
                }
                Frame::GoAway { .. } => break,
                Frame::Headers { .. } | Frame::SynReply { .. } | Frame::Settings | Frame::WindowUpdate { .. } => {}
            }
        }
    });
    (writer, rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_drafts() {
        let d = dictionary();
        // The draft's dictionary is 1423 bytes, starting with "options" and ending with "enq=0.".
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b"utf-,*,enq=0."));
    }

    #[tokio::test]
    async fn frames_round_trip_through_one_compression_stream() {
        let mut tx = HeaderCodec::new();
        let mut rx = HeaderCodec::new();
        let frames = vec![
            Frame::SynStream { id: 1, fin: false, headers: vec![("streamtype".into(), "error".into())] },
            Frame::SynStream { id: 3, fin: true, headers: vec![("streamtype".into(), "data".into()), ("port".into(), "80".into())] },
            Frame::SynReply { id: 1, fin: false, headers: vec![] },
            Frame::Data { id: 3, fin: true, data: Bytes::from_static(b"hello") },
            Frame::RstStream { id: 5, status: 3 },
            Frame::Ping(7),
            Frame::GoAway { last: 3, status: 0 },
            Frame::WindowUpdate { id: 1, delta: 100 },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(encode(&mut tx, f).expect("encode"));
        }
        let mut r = wire.as_slice();
        for f in &frames {
            assert_eq!(read_frame(&mut r, &mut rx).await.expect("read").as_ref(), Some(f));
        }
        assert_eq!(read_frame(&mut r, &mut rx).await.expect("eof"), None);
    }

    #[tokio::test]
    async fn refuses_other_versions_and_truncated_blocks() {
        let mut c = HeaderCodec::new();
        let v2 = [0x80u8, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(read_frame(&mut &v2[..], &mut c).await.is_err());
        assert!(parse_header_block(&[0, 0, 0, 2, 0, 0, 0, 9, b'a']).is_err());
    }
}
