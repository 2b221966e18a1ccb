//! Registry behaviours the Debian `docker-registry` cannot be configured for, exercised
//! through a small HTTP proxy in front of the real registry: Bearer token auth (with and
//! without basic credentials at the token endpoint) and a server that ignores `Range`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use strata_image::{Error, ImageStore, Progress, PullOptions};
use strata_testkit::{add_file, digest, hex_of, image_from_layers, tar_gz, Registry, TestImage};

const TOKEN: &str = "tok-123";

struct Proxy {
    addr: String,
    token_requests: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Mode {
    bearer: bool,
    /// `Some("user:pass" base64)` when the token endpoint requires basic credentials.
    token_basic: Option<String>,
    strip_range: bool,
}

fn start_proxy(upstream: String, mode: Mode) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let token_requests = Arc::new(AtomicUsize::new(0));
    let counter = token_requests.clone();
    let me = addr.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (upstream, mode, counter, me) = (upstream.clone(), mode.clone(), counter.clone(), me.clone());
            std::thread::spawn(move || {
                let _ = serve(stream, &upstream, &mode, &counter, &me);
            });
        }
    });
    Proxy { addr, token_requests }
}

fn respond(mut s: &TcpStream, status: u16, headers: &[(String, String)], body: &[u8]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

fn serve(stream: TcpStream, upstream: &str, mode: &Mode, counter: &AtomicUsize, me: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end().to_string();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if path.starts_with("/token") {
        counter.fetch_add(1, Ordering::SeqCst);
        if let Some(expected) = &mode.token_basic {
            if header("authorization").as_deref() != Some(&format!("Basic {expected}")) {
                return respond(&stream, 401, &[], br#"{"details":"bad credentials"}"#);
            }
        }
        assert!(path.contains("scope=repository%3A"), "scope passed to the token server: {path}");
        return respond(&stream, 200, &[], format!(r#"{{"access_token":"{TOKEN}"}}"#).as_bytes());
    }
    if mode.bearer && header("authorization").as_deref() != Some(&format!("Bearer {TOKEN}")) {
        let challenge = format!(r#"Bearer realm="http://{me}/token",service="proxy",scope="repository:app:pull""#);
        return respond(&stream, 401, &[("WWW-Authenticate".into(), challenge)], br#"{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}"#);
    }
    let mut req = ureq::get(&format!("http://{upstream}{path}"));
    if let Some(a) = header("accept") {
        req = req.set("Accept", &a);
    }
    if let (Some(r), false) = (header("range"), mode.strip_range) {
        req = req.set("Range", &r);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return respond(&stream, 502, &[], e.to_string().as_bytes()),
    };
    let status = resp.status();
    let mut out_headers = Vec::new();
    for name in ["Content-Type", "Docker-Content-Digest", "Content-Range"] {
        if let Some(v) = resp.header(name) {
            out_headers.push((name.to_string(), v.to_string()));
        }
    }
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body)?;
    respond(&stream, status, &out_headers, &body)
}

fn image(tag: &str) -> TestImage {
    image_from_layers(vec![tar_gz(|b| add_file(b, "f", 0o644, format!("{tag}{}", "z".repeat(200_000)).as_bytes()))], &["sh"])
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.as_bytes().chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            out.push(if i <= c.len() { T[(n >> shift) as usize & 63] as char } else { '=' });
        }
    }
    out
}

#[test]
fn bearer_token_auth() {
    let reg = Registry::start();
    let img = image("bearer");
    reg.push(&img, "app", "latest");
    let proxy = start_proxy(reg.addr.clone(), Mode { bearer: true, token_basic: None, strip_range: false });
    let dir = tempfile::tempdir().expect("tempdir");
    let s = ImageStore::open(dir.path()).expect("open");
    let image = s.pull(&format!("{}/app", proxy.addr), &PullOptions::default(), &strata_image::NoProgress).expect("pull");
    assert_eq!(image.id, img.config_digest());
    assert!(proxy.token_requests.load(Ordering::SeqCst) >= 1);
}

#[test]
fn bearer_token_endpoint_with_basic_credentials() {
    let reg = Registry::start();
    let img = image("bearer-basic");
    reg.push(&img, "app", "latest");
    let proxy = start_proxy(reg.addr.clone(), Mode { bearer: true, token_basic: Some(b64("bob:pw")), strip_range: false });
    let dir = tempfile::tempdir().expect("tempdir");
    let s = ImageStore::open(dir.path()).expect("open");
    let reference = format!("{}/app", proxy.addr);
    let e = s.pull(&reference, &PullOptions::default(), &strata_image::NoProgress).expect_err("no creds");
    assert!(matches!(e, Error::AccessDenied { .. }), "{e}");
    assert!(e.to_string().contains("denied access to app"), "{e}");
    let opts = PullOptions { username: Some("bob".into()), password: Some("pw".into()), ..Default::default() };
    s.pull(&reference, &opts, &strata_image::NoProgress).expect("pull with creds");
}

struct Messages(std::sync::Mutex<Vec<String>>);
impl Progress for Messages {
    fn layer_start(&self, _: &str, _: u64) {}
    fn layer_advance(&self, _: &str, _: u64) {}
    fn layer_done(&self, _: &str, _: bool) {}
    fn message(&self, msg: &str) {
        self.0.lock().expect("lock").push(msg.to_string());
    }
}

#[test]
fn server_ignoring_range_restarts_the_download() {
    let reg = Registry::start();
    let img = image("norange");
    reg.push(&img, "app", "latest");
    let proxy = start_proxy(reg.addr.clone(), Mode { bearer: false, token_basic: None, strip_range: true });
    let dir = tempfile::tempdir().expect("tempdir");
    let s = ImageStore::open(dir.path()).expect("open");
    let layer = &img.layers[0];
    fs_seed(&s, layer);
    let msgs = Messages(Default::default());
    let image = s.pull(&format!("{}/app", proxy.addr), &PullOptions::default(), &msgs).expect("pull");
    let msgs = msgs.0.into_inner().expect("lock");
    assert!(msgs.iter().any(|m| m.contains("ignored the range request")), "{msgs:?}");
    assert!(s.blob_path(&digest(layer)).expect("path").is_file());
    s.layers(&image).expect("layer is intact");
}

fn fs_seed(s: &ImageStore, layer: &[u8]) {
    let partial = s.root().join("ingest").join(hex_of(&digest(layer)));
    std::fs::write(partial, &layer[..layer.len() / 3]).expect("seed partial");
}
