//! `/healthz`, `/livez` and `/readyz`, as kube-apiserver's healthz handlers answer them: `ok`, or
//! with `?verbose` one `[+]NAME ok` line per check and `livez check passed`; a failed check makes
//! the answer 500 and always verbose (`[-]NAME failed: reason withheld`, `readyz check failed`);
//! `?exclude=NAME` (repeatable) skips a check (`[+]NAME excluded: ok`, a warning line for a name no
//! check has); `/livez/NAME` runs one check (`ok`, or 500 `internal server error: ...`).
//!
//! The checks are the ones strata has a counterpart for: `ping`, `log` (nothing to flush: the
//! log is written as it goes), `etcd` (the store answers), `autoregister-completion` (the local
//! APIServices were written once, see [`crate::apiservices`]), and for readiness also
//! `etcd-readiness`. (Upstream also lists its post-start hooks, `poststarthook/...`, most of
//! them for parts strata does not have or does differently; they are not imitated.)

use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use strata_store::Store;

/// What the checks look at besides the store.
#[derive(Default)]
pub struct Started {
    /// The local APIServices' first pass is done.
    pub api_services: AtomicBool,
}

/// `autoregister-completion` is a boot-sequence check, which upstream adds to all three.
const LIVE: &[&str] = &["ping", "log", "etcd", "autoregister-completion"];
const READY: &[&str] = &["ping", "log", "etcd", "etcd-readiness", "autoregister-completion"];

async fn check(name: &str, store: &dyn Store, started: &Started) -> Result<(), String> {
    match name {
        "ping" | "log" => Ok(()),
        "etcd" | "etcd-readiness" => store.revision().await.map(|_| ()).map_err(|e| e.to_string()),
        "autoregister-completion" if started.api_services.load(Ordering::Acquire) => Ok(()),
        "autoregister-completion" => Err("missing APIServices: the local APIServices are not registered yet".into()),
        _ => Err(format!("no check {name}")),
    }
}

fn text(code: StatusCode, body: String) -> Response {
    (code, [("content-type", "text/plain; charset=utf-8"), ("x-content-type-options", "nosniff")], body).into_response()
}

/// The answer to GET `path` with `query`'s pairs, if `path` is a health endpoint.
pub async fn serve(path: &str, query: &[(String, String)], store: &dyn Store, started: &Started) -> Option<Response> {
    let (endpoint, one) = match path.trim_start_matches('/').split_once('/') {
        Some((e, one)) => (e, Some(one)),
        None => (path.trim_start_matches('/'), None),
    };
    let checks = match endpoint {
        "healthz" | "livez" => LIVE,
        "readyz" => READY,
        _ => return None,
    };
    if let Some(one) = one {
        if !checks.contains(&one) {
            return None;
        }
        return Some(match check(one, store, started).await {
            Ok(()) => text(StatusCode::OK, "ok".into()),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("internal server error: {e}\n")),
        });
    }
    let mut excluded: Vec<&str> = query.iter().filter(|(k, _)| k == "exclude").map(|(_, v)| v.as_str()).collect();
    let (mut lines, mut failed) = (String::new(), Vec::new());
    for name in checks {
        if excluded.contains(name) {
            excluded.retain(|e| e != name);
            lines.push_str(&format!("[+]{name} excluded: ok\n"));
            continue;
        }
        match check(name, store, started).await {
            Ok(()) => lines.push_str(&format!("[+]{name} ok\n")),
            Err(e) => {
                tracing::info!(check = name, endpoint, error = %e, "health check failed");
                lines.push_str(&format!("[-]{name} failed: reason withheld\n"));
                failed.push(*name);
            }
        }
    }
    if !excluded.is_empty() {
        excluded.sort_unstable();
        excluded.dedup();
        let quoted: Vec<String> = excluded.iter().map(|e| format!("{e:?}")).collect();
        lines.push_str(&format!("warn: some health checks cannot be excluded: no matches for {}\n", quoted.join(",")));
    }
    if !failed.is_empty() {
        return Some(text(StatusCode::INTERNAL_SERVER_ERROR, format!("{lines}{endpoint} check failed\n")));
    }
    if !query.iter().any(|(k, _)| k == "verbose") {
        return Some(text(StatusCode::OK, "ok".into()));
    }
    Some(text(StatusCode::OK, format!("{lines}{endpoint} check passed\n")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    async fn get(path: &str, query: &[(&str, &str)], started: &Started) -> Option<(u16, String)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(strata_store::embedded::Embedded::open(&dir.path().join("s.redb")).expect("store"));
        let query: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let resp = serve(path, &query, store.as_ref(), started).await?;
        let code = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        Some((code, String::from_utf8_lossy(&body).into_owned()))
    }

    #[tokio::test]
    async fn checks_answer_as_kube_apiservers() {
        let ready = Started::default();
        ready.api_services.store(true, Ordering::Release);
        assert_eq!(get("/livez", &[], &ready).await, Some((200, "ok".into())));
        assert_eq!(get("/livez", &[("verbose", "")], &ready).await, Some((200, "[+]ping ok\n[+]log ok\n[+]etcd ok\n[+]autoregister-completion ok\nlivez check passed\n".into())));
        assert_eq!(get("/readyz/etcd", &[], &ready).await, Some((200, "ok".into())));
        assert_eq!(get("/healthz/etcd-readiness", &[], &ready).await, None, "a readiness check only");
        assert_eq!(get("/version", &[], &ready).await, None);
        // Not registered yet: not ready (always verbose), nor healthy.
        let starting = Started::default();
        let want = "[+]ping ok\n[+]log ok\n[+]etcd ok\n[+]etcd-readiness ok\n[-]autoregister-completion failed: reason withheld\nreadyz check failed\n";
        assert_eq!(get("/readyz", &[], &starting).await, Some((500, want.into())));
        assert_eq!(get("/livez", &[], &starting).await.map(|(code, _)| code), Some(500));
        let (code, body) = get("/readyz/autoregister-completion", &[], &starting).await.expect("served");
        assert_eq!((code, body.starts_with("internal server error: missing APIServices")), (500, true), "{body}");
        // Excluded, and a name no check has.
        let (code, body) = get("/readyz", &[("verbose", ""), ("exclude", "autoregister-completion"), ("exclude", "nope")], &starting).await.expect("served");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("[+]autoregister-completion excluded: ok\n") && body.ends_with("warn: some health checks cannot be excluded: no matches for \"nope\"\nreadyz check passed\n"), "{body}");
    }
}
