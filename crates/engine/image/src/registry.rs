//! A synchronous OCI distribution (registry v2) client: manifests, blobs, authentication,
//! resumable layer downloads.
//!
//! Transport: plain HTTP for loopback hosts (`127.0.0.0/8`, `::1`, `localhost`) and hosts in
//! `PullOptions::insecure_registries`; HTTPS everywhere else.
//! Auth: on a 401 the `WWW-Authenticate` challenge is answered once — `Bearer` (token fetched
//! from the realm with service/scope, with basic credentials when given) or `Basic`.
//! Downloads: partial layer data is kept in `ROOT/ingest/<hex>` and resumed with a `Range`
//! request on the next attempt, after re-hashing the bytes already there; a server that
//! ignores `Range` (answers 200) makes the download restart from zero.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::blob::{digest_hex, sha256_digest, BlobStore, TempPath, MAX_JSON_BLOB};
use crate::db::lock_file;
use crate::error::{Error, Result};
use crate::reference::{is_loopback_host, ImageRef};
use crate::{Progress, PullOptions};

pub(crate) const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What a manifest body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ManifestKind {
    Manifest,
    Index,
}

/// Classify a manifest by media type, falling back to its shape when the type is generic.
pub(crate) fn manifest_kind(media_type: &str, body: &[u8], reference: &str) -> Result<ManifestKind> {
    match media_type {
        MT_OCI_MANIFEST | MT_DOCKER_MANIFEST => Ok(ManifestKind::Manifest),
        MT_OCI_INDEX | MT_DOCKER_LIST => Ok(ManifestKind::Index),
        "" | "application/json" => {
            let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| Error::MalformedManifest {
                reference: reference.to_string(),
                detail: e.to_string(),
            })?;
            if v.get("manifests").is_some() {
                Ok(ManifestKind::Index)
            } else if v.get("config").is_some() && v.get("layers").is_some() {
                Ok(ManifestKind::Manifest)
            } else {
                Err(Error::MalformedManifest {
                    reference: reference.to_string(),
                    detail: "neither a manifest nor an index".to_string(),
                })
            }
        }
        other => Err(Error::UnsupportedMediaType { reference: reference.to_string(), media_type: other.to_string() }),
    }
}

/// The `mediaType` field of a JSON manifest, if any.
pub(crate) fn body_media_type(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("mediaType")?.as_str().map(str::to_string)
}

/// A client for one repository on one registry.
pub(crate) struct Client {
    registry: String,
    repository: String,
    base: String,
    agent: ureq::Agent,
    username: Option<String>,
    password: Option<String>,
    /// The `Authorization` header value learned from the last challenge.
    auth: Mutex<Option<String>>,
}

impl Client {
    pub(crate) fn new(r: &ImageRef, opts: &PullOptions) -> Client {
        let host = if r.registry == "docker.io" { "registry-1.docker.io".to_string() } else { r.registry.clone() };
        let insecure = is_loopback_host(&r.registry) || opts.insecure_registries.iter().any(|h| h == &r.registry);
        let scheme = if insecure { "http" } else { "https" };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(120))
            .redirects(5)
            .build();
        Client {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            base: format!("{scheme}://{host}"),
            agent,
            username: opts.username.clone(),
            password: opts.password.clone(),
            auth: Mutex::new(None),
        }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> Error {
        Error::RegistryUnreachable { registry: self.registry.clone(), detail: e.to_string() }
    }

    fn denied(&self, detail: String) -> Error {
        Error::AccessDenied { registry: self.registry.clone(), repository: self.repository.clone(), detail }
    }

    fn current_auth(&self) -> Option<String> {
        self.auth.lock().map(|g| g.clone()).unwrap_or(None)
    }

    /// GET `path` (below `/v2/<repo>/`), answering one auth challenge. Non-2xx answers other
    /// than 401/403 come back as `Err(Ok(status, detail))` for the caller to map.
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<ureq::Response, Result<(u16, String)>> {
        let url = format!("{}/v2/{}/{}", self.base, self.repository, path);
        let mut challenged = false;
        loop {
            let mut req = self.agent.get(&url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(a) = self.current_auth() {
                req = req.set("Authorization", &a);
            }
            match req.call() {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if !challenged => {
                    challenged = true;
                    let challenge = resp.header("WWW-Authenticate").unwrap_or("").to_string();
                    self.authenticate(&challenge).map_err(Err)?;
                }
                Err(ureq::Error::Status(code @ (401 | 403), resp)) => {
                    return Err(Err(self.denied(format!("HTTP {code} {}", error_detail(resp)))));
                }
                Err(ureq::Error::Status(code, resp)) => return Err(Ok((code, error_detail(resp)))),
                Err(ureq::Error::Transport(t)) => return Err(Err(self.unreachable(t))),
            }
        }
    }

    /// Answer a `WWW-Authenticate` challenge, storing the resulting `Authorization` value.
    fn authenticate(&self, challenge: &str) -> Result<()> {
        let (scheme, params) = parse_challenge(challenge);
        let basic = match (&self.username, &self.password) {
            (Some(u), p) => Some(format!("Basic {}", base64(format!("{u}:{}", p.as_deref().unwrap_or("")).as_bytes()))),
            _ => None,
        };
        let header = match scheme.to_ascii_lowercase().as_str() {
            "basic" => match basic {
                Some(b) => b,
                None => return Err(self.denied("authentication required and no credentials were given".to_string())),
            },
            "bearer" => {
                let realm = params
                    .iter()
                    .find(|(k, _)| k == "realm")
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| self.denied("bearer challenge without a realm".to_string()))?;
                let mut query = Vec::new();
                if let Some((_, s)) = params.iter().find(|(k, _)| k == "service") {
                    query.push(format!("service={}", url_encode(s)));
                }
                let scope = params
                    .iter()
                    .find(|(k, _)| k == "scope")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                query.push(format!("scope={}", url_encode(&scope)));
                let sep = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{sep}{}", query.join("&"));
                let mut req = self.agent.get(&url);
                if let Some(b) = &basic {
                    req = req.set("Authorization", b);
                }
                let resp = match req.call() {
                    Ok(r) => r,
                    Err(ureq::Error::Status(code, r)) => {
                        return Err(self.denied(format!("token server answered HTTP {code} {}", error_detail(r))))
                    }
                    Err(ureq::Error::Transport(t)) => return Err(self.unreachable(format!("token server {realm}: {t}"))),
                };
                let mut body = Vec::new();
                resp.into_reader().take(1 << 20).read_to_end(&mut body).map_err(|e| self.unreachable(e))?;
                let v: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| self.denied(format!("token server sent invalid JSON: {e}")))?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| self.denied("token server sent no token".to_string()))?;
                format!("Bearer {token}")
            }
            _ => return Err(self.denied(format!("unsupported authentication challenge {challenge:?}"))),
        };
        if let Ok(mut g) = self.auth.lock() {
            *g = Some(header);
        }
        Ok(())
    }

    /// Fetch a manifest or index by tag or digest. Returns `(body, media type, digest)`.
    /// When `reference` is a digest the body is verified against it.
    pub(crate) fn manifest(&self, reference: &str, image: &str) -> Result<(Vec<u8>, String, String)> {
        let accept = [MT_OCI_MANIFEST, MT_OCI_INDEX, MT_DOCKER_MANIFEST, MT_DOCKER_LIST].join(", ");
        let resp = match self.get(&format!("manifests/{reference}"), &[("Accept", &accept)]) {
            Ok(r) => r,
            Err(Ok((404, _))) => return Err(Error::ImageNotFound(image.to_string())),
            Err(Ok((code, detail))) => {
                return Err(Error::Registry {
                    registry: self.registry.clone(),
                    what: format!("manifest of {image}"),
                    detail: format!("HTTP {code} {detail}"),
                })
            }
            Err(Err(e)) => return Err(e),
        };
        let content_type = resp.header("Content-Type").unwrap_or("").split(';').next().unwrap_or("").trim().to_string();
        let mut body = Vec::new();
        resp.into_reader().take(MAX_JSON_BLOB + 1).read_to_end(&mut body).map_err(|e| self.unreachable(e))?;
        if body.len() as u64 > MAX_JSON_BLOB {
            return Err(Error::MalformedManifest { reference: image.to_string(), detail: "manifest is too large".to_string() });
        }
        let digest = sha256_digest(&body);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(Error::DigestMismatch { digest: reference.to_string(), actual: digest });
        }
        let media_type = body_media_type(&body).unwrap_or(content_type);
        Ok((body, media_type, digest))
    }

    fn blob_response(&self, digest: &str, headers: &[(&str, &str)]) -> Result<ureq::Response, Result<(u16, String)>> {
        self.get(&format!("blobs/{digest}"), headers)
    }

    fn blob_error(&self, digest: &str, code: u16, detail: String) -> Error {
        Error::Registry {
            registry: self.registry.clone(),
            what: format!("blob {digest} of {}", self.repository),
            detail: format!("HTTP {code} {detail}"),
        }
    }

    /// Fetch a small blob (a config) into memory and verify it.
    pub(crate) fn small_blob(&self, digest: &str, size: u64) -> Result<Vec<u8>> {
        if size > MAX_JSON_BLOB {
            return Err(Error::SizeMismatch { digest: digest.to_string(), expected: MAX_JSON_BLOB, actual: size });
        }
        let resp = match self.blob_response(digest, &[]) {
            Ok(r) => r,
            Err(Ok((code, detail))) => return Err(self.blob_error(digest, code, detail)),
            Err(Err(e)) => return Err(e),
        };
        let mut body = Vec::new();
        resp.into_reader().take(size + 1).read_to_end(&mut body).map_err(|e| self.unreachable(e))?;
        if body.len() as u64 != size {
            return Err(Error::SizeMismatch { digest: digest.to_string(), expected: size, actual: body.len() as u64 });
        }
        let actual = sha256_digest(&body);
        if actual != digest {
            return Err(Error::DigestMismatch { digest: digest.to_string(), actual });
        }
        Ok(body)
    }

    /// Download a layer blob into the store, resuming a partial download in `ingest`.
    /// Returns true when the blob was already present.
    pub(crate) fn download_layer(
        &self,
        digest: &str,
        size: u64,
        blobs: &BlobStore,
        ingest: &Path,
        progress: &dyn Progress,
    ) -> Result<bool> {
        let hex = digest_hex(digest)?.to_string();
        if blobs.contains(digest) {
            progress.layer_done(digest, true);
            return Ok(true);
        }
        // One downloader per blob across threads and processes.
        let _lock = lock_file(&ingest.join(format!("{hex}.lock")), true)?;
        if blobs.contains(digest) {
            progress.layer_done(digest, true);
            return Ok(true);
        }
        progress.layer_start(digest, size);
        let partial = ingest.join(&hex);
        let mut hasher = Sha256::new();
        let mut have = match fs::metadata(&partial) {
            Ok(m) => m.len(),
            Err(_) => 0,
        };
        if have > size {
            let _ = fs::remove_file(&partial);
            have = 0;
        }
        if have > 0 {
            // Re-hash what we already have before trusting it as a prefix.
            let f = File::open(&partial).map_err(|e| Error::io(&partial, e))?;
            let mut hr = crate::blob::HashReader::new(f.take(have));
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = hr.read(&mut buf).map_err(|e| Error::io(&partial, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            progress.message(&format!("resuming {digest} at byte {have}"));
            progress.layer_advance(digest, have);
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .map_err(|e| Error::io(&partial, e))?;
        if have < size {
            let range = format!("bytes={have}-");
            let headers: Vec<(&str, &str)> = if have > 0 { vec![("Range", range.as_str())] } else { vec![] };
            let resp = match self.blob_response(digest, &headers) {
                Ok(r) => r,
                Err(Ok((416, _))) => {
                    // Our partial is not a prefix the server agrees with: start over next time.
                    let _ = fs::remove_file(&partial);
                    return Err(self.blob_error(digest, 416, "range not satisfiable; partial download discarded".to_string()));
                }
                Err(Ok((code, detail))) => return Err(self.blob_error(digest, code, detail)),
                Err(Err(e)) => return Err(e),
            };
            let resumed = resp.status() == 206 && content_range_start(resp.header("Content-Range")) == Some(have);
            if have > 0 && !resumed {
                progress.message(&format!("registry {} ignored the range request for {digest}; restarting", self.registry));
                file.set_len(0).map_err(|e| Error::io(&partial, e))?;
                hasher = Sha256::new();
                have = 0;
            }
            let mut reader = resp.into_reader().take(size - have + 1);
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Keep the partial data for the next attempt.
                        let _ = file.sync_all();
                        return Err(self.unreachable(format!("download of {digest} interrupted at byte {have}: {e}")));
                    }
                };
                if let Err(e) = file.write_all(&buf[..n]) {
                    drop(file);
                    let _ = fs::remove_file(&partial);
                    return Err(Error::io(&partial, e));
                }
                hasher.update(&buf[..n]);
                have += n as u64;
                progress.layer_advance(digest, n as u64);
            }
        }
        if let Err(e) = file.sync_all() {
            drop(file);
            let _ = fs::remove_file(&partial);
            return Err(Error::io(&partial, e));
        }
        drop(file);
        let tmp = TempPath::new(partial);
        if have != size {
            if have < size {
                // Truncated by the server: keep what we have for a resume.
                tmp.keep();
            }
            return Err(Error::SizeMismatch { digest: digest.to_string(), expected: size, actual: have });
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            // `tmp` drops here and deletes the partial: it can never become valid.
            return Err(Error::DigestMismatch { digest: digest.to_string(), actual });
        }
        blobs.commit(tmp, digest)?;
        progress.layer_done(digest, false);
        Ok(false)
    }
}

/// Start offset of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range_start(h: Option<&str>) -> Option<u64> {
    let rest = h?.trim().strip_prefix("bytes")?.trim();
    rest.split('-').next()?.trim().parse().ok()
}

/// A one-line summary of a registry error body (`errors[0].code: message`) or the status text.
fn error_detail(resp: ureq::Response) -> String {
    let status_text = resp.status_text().to_string();
    let mut body = Vec::new();
    let _ = resp.into_reader().take(64 * 1024).read_to_end(&mut body);
    let parsed: Option<String> = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| {
        let e = v.get("errors")?.get(0)?;
        let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
        let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
        Some(format!("{code}: {msg}"))
    });
    parsed.unwrap_or(status_text).replace('\n', " ")
}

/// Parse `Scheme k="v", k2=v2` into the scheme and its parameters.
pub(crate) fn parse_challenge(h: &str) -> (String, Vec<(String, String)>) {
    let h = h.trim();
    let (scheme, rest) = match h.split_once(char::is_whitespace) {
        Some((s, r)) => (s.to_string(), r),
        None => return (h.to_string(), Vec::new()),
    };
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    (scheme, params)
}

fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if chunk.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(
            p,
            vec![
                ("realm".to_string(), "https://auth.example/token".to_string()),
                ("service".to_string(), "registry.example".to_string()),
                ("scope".to_string(), "repository:a/b:pull".to_string()),
            ]
        );
        let (s, p) = parse_challenge(r#"Basic realm="strata""#);
        assert_eq!((s.as_str(), p.len()), ("Basic", 1));
        let (s, p) = parse_challenge("Bearer");
        assert_eq!((s.as_str(), p.len()), ("Bearer", 0));
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("user:pass", "dXNlcjpwYXNz")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn content_range() {
        assert_eq!(content_range_start(Some("bytes 100-199/200")), Some(100));
        assert_eq!(content_range_start(Some("bytes */200")), None);
        assert_eq!(content_range_start(None), None);
    }

    #[test]
    fn manifest_kinds() {
        assert_eq!(manifest_kind(MT_DOCKER_LIST, b"", "r").expect("kind"), ManifestKind::Index);
        assert_eq!(manifest_kind("", br#"{"manifests":[]}"#, "r").expect("kind"), ManifestKind::Index);
        let e = manifest_kind("application/vnd.docker.distribution.manifest.v1+prettyjws", b"{}", "r").expect_err("v1");
        assert!(matches!(e, Error::UnsupportedMediaType { .. }), "{e}");
        let e = manifest_kind("", b"not json", "r").expect_err("garbage");
        assert!(matches!(e, Error::MalformedManifest { .. }), "{e}");
    }
}
