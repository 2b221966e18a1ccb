//! End-to-end tests of the API server's hardening (issue 8, parts 4-7): private state at rest,
//! certificate lifetimes and rotation, request limits, encryption at rest and the audit log,
//! through the real `strata server` with real kubectl, curl, openssl and the Python client.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::server::{ApiServer, Auth, Backend, Options};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

/// Files of the data dir that hold credentials or Secrets, with the mode each must have.
fn private_files(data: &Path) -> Vec<(std::path::PathBuf, u32)> {
    vec![
        (data.to_path_buf(), 0o700),
        (data.join("pki"), 0o700),
        (data.join("store.redb"), 0o600),
        (data.join("store.redb-wal"), 0o600),
        (data.join("store.redb-wal2"), 0o600),
        (data.join("kubeconfig"), 0o600),
        (data.join("pki/ca.key"), 0o600),
        (data.join("pki/apiserver.key"), 0o600),
        (data.join("pki/admin.key"), 0o600),
    ]
}

/// Run `cmd args` as the unprivileged `nobody`; true if it succeeded.
fn as_nobody(cmd: &str, args: &[&Path]) -> bool {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", cmd])
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
        .status
        .success()
}

fn assert_private(data: &Path) {
    for (p, want) in private_files(data) {
        assert_eq!(mode(&p), want, "mode of {}", p.display());
    }
}

/// The server creates its data dir, the store, the PKI and the kubeconfig with private modes
/// itself: even with a umask of 0 nothing is ever readable by another local user.
#[test]
fn state_at_rest_is_private_from_creation() {
    let s = ApiServer::start_opts(Backend::Embedded, Options { data_subdir: Some("data".into()), umask: Some(0), ..Options::default() });
    // Let `nobody` reach the data dir itself (the test's own temp dir is 0700).
    chmod(s.dir.path(), 0o755);
    assert_private(s.data_dir());
    let store = s.data_dir().join("store.redb");
    assert!(as_nobody("true", &[]), "setpriv works");
    assert!(!as_nobody("cat", &[&store]), "nobody read the store");
    assert!(!as_nobody("cat", &[&s.data_dir().join("pki/admin.key")]), "nobody read the admin key");
    assert!(!as_nobody("ls", &[s.data_dir()]), "nobody listed the data dir");
    // The store works.
    s.ok(&["create", "secret", "generic", "private", "--from-literal=k=v"]);
}

/// A data dir left readable (by an older version or by hand) is tightened at start.
#[test]
fn loose_modes_are_tightened_at_start() {
    let mut s = ApiServer::start_opts(Backend::Embedded, Options { data_subdir: Some("data".into()), ..Options::default() });
    s.ok(&["create", "secret", "generic", "kept", "--from-literal=k=v"]);
    s.stop(false);
    for (p, want) in private_files(s.data_dir()) {
        chmod(&p, if want == 0o700 { 0o755 } else { 0o644 });
    }
    s.restart(false);
    assert_private(s.data_dir());
    assert!(s.ok(&["get", "secret", "kept", "-o", "name"]).contains("secret/kept"));
}

// ---- certificates ----------------------------------------------------------------------------

/// `openssl x509 -noout ARGS -in CERT`, stdout.
fn x509(cert: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl").args(["x509", "-noout"]).args(args).arg("-in").arg(cert).output().expect("openssl");
    assert!(out.status.success(), "openssl x509 {args:?} {}: {}", cert.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Does `cert` stay valid for the next `seconds`?
fn valid_for(cert: &Path, seconds: i64) -> bool {
    Command::new("openssl")
        .args(["x509", "-noout", "-checkend", &seconds.to_string(), "-in"])
        .arg(cert)
        .output()
        .expect("openssl")
        .status
        .success()
}

fn serial(cert: &Path) -> String {
    x509(cert, &["-serial"])
}

/// `notBefore` of a certificate.
fn not_before(cert: &Path) -> chrono::DateTime<chrono::Utc> {
    let line = x509(cert, &["-startdate"]);
    let date = line.trim_start_matches("notBefore=");
    let t = chrono::NaiveDateTime::parse_from_str(date, "%b %e %H:%M:%S %Y GMT").unwrap_or_else(|e| panic!("{date}: {e}"));
    t.and_utc()
}

/// The serial of the certificate the running server presents.
fn served_serial(s: &ApiServer) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("openssl s_client -connect 127.0.0.1:{} </dev/null 2>/dev/null | openssl x509 -noout -serial", s.port))
        .output()
        .expect("openssl s_client");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const DAY: i64 = 86400;

fn pki(s: &ApiServer, file: &str) -> std::path::PathBuf {
    s.data_dir().join("pki").join(file)
}

/// The admin's client certificate as the kubeconfig carries it.
fn kubeconfig_admin_cert(s: &ApiServer) -> Vec<u8> {
    use base64::Engine;
    let kc = std::fs::read_to_string(s.kubeconfig()).expect("kubeconfig");
    let b64 = kc.lines().find_map(|l| l.trim().strip_prefix("client-certificate-data: ")).expect("client-certificate-data");
    base64::engine::general_purpose::STANDARD.decode(b64.trim()).expect("base64")
}

/// CA 10 years, serving and admin certificates 1 year, all from now (backdated a little for
/// clock skew), the serving certificate naming the host, the listen address and `--tls-san`s.
#[test]
fn certificates_have_real_lifetimes_and_names() {
    let s = ApiServer::start_with(Backend::Embedded, &["--tls-san", "api.strata.test", "--tls-san", "10.9.8.7"]);
    let now = chrono::Utc::now();
    let ca = pki(&s, "ca.crt");
    assert!(valid_for(&ca, 3649 * DAY) && !valid_for(&ca, 3651 * DAY), "CA: {}", x509(&ca, &["-dates"]));
    for leaf in ["apiserver.crt", "admin.crt"] {
        let c = pki(&s, leaf);
        assert!(valid_for(&c, 364 * DAY) && !valid_for(&c, 366 * DAY), "{leaf}: {}", x509(&c, &["-dates"]));
        let nb = not_before(&c);
        assert!(nb <= now && now - nb < chrono::Duration::hours(2), "{leaf} not before {nb}, now {now}");
    }
    let sans = x509(&pki(&s, "apiserver.crt"), &["-ext", "subjectAltName"]);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    for want in ["DNS:localhost", "IP Address:127.0.0.1", "DNS:api.strata.test", "IP Address:10.9.8.7", &format!("DNS:{}", host.trim())] {
        assert!(sans.contains(want), "{want} missing from {sans}");
    }
    s.ok(&["get", "ns", "default"]);
}

/// Leaf certificates within 90 days of expiry are re-issued from the same CA at start (as k3s
/// does), the kubeconfig is rewritten with the new admin certificate, and the old admin
/// certificate keeps working until it expires. Leaf lifetimes are shortened with the
/// test-only flag.
#[test]
fn leaf_certificates_near_expiry_are_renewed_at_start() {
    let short = ("STRATA_TEST_ONLY_LEAF_LIFETIME_SECONDS".to_string(), (30 * DAY).to_string());
    let mut s = ApiServer::start_opts(Backend::Embedded, Options { env: vec![short], ..Options::default() });
    let (ca, server, admin) = (pki(&s, "ca.crt"), pki(&s, "apiserver.crt"), pki(&s, "admin.crt"));
    assert!(valid_for(&server, 29 * DAY) && !valid_for(&server, 31 * DAY), "{}", x509(&server, &["-dates"]));
    let before = (serial(&ca), serial(&server), serial(&admin));
    let old_admin = (s.dir.path().join("old-admin.crt"), s.dir.path().join("old-admin.key"));
    std::fs::copy(&admin, &old_admin.0).expect("copy");
    std::fs::copy(pki(&s, "admin.key"), &old_admin.1).expect("copy");

    // 30 days left: renewed at the next start, with the normal lifetime now.
    s.opts.env.clear();
    s.restart(false);
    let after = (serial(&ca), serial(&server), serial(&admin));
    assert_eq!(after.0, before.0, "the CA is kept");
    assert_ne!(after.1, before.1, "serving certificate renewed");
    assert_ne!(after.2, before.2, "admin certificate renewed");
    assert!(valid_for(&server, 364 * DAY) && valid_for(&admin, 364 * DAY));
    assert_eq!(served_serial(&s), after.1, "the server presents the new certificate");
    assert_eq!(kubeconfig_admin_cert(&s), std::fs::read(&admin).expect("admin.crt"), "kubeconfig rewritten");
    s.ok(&["get", "ns", "default"]);
    // The old admin certificate is still valid (client certificates cannot be revoked; it
    // expires on its own date).
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&ca)
        .arg("--cert")
        .arg(&old_admin.0)
        .arg("--key")
        .arg(&old_admin.1)
        .arg(format!("{}/api/v1/namespaces", s.url()))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");

    // A year left: nothing renewed.
    s.restart(false);
    assert_eq!((serial(&ca), serial(&server), serial(&admin)), after);

    // A new --tls-san: the serving certificate is re-issued to cover it, the admin's is kept.
    s.extra.extend(["--tls-san".to_string(), "new-name.strata.test".to_string()]);
    s.restart(false);
    assert!(x509(&server, &["-ext", "subjectAltName"]).contains("DNS:new-name.strata.test"));
    assert_ne!(serial(&server), after.1);
    assert_eq!(serial(&admin), after.2);
}

/// `strata certs rotate` re-issues the serving and admin certificates on demand; the running
/// server presents the new serving certificate without a restart.
#[test]
fn certs_rotate_reissues_and_the_running_server_picks_it_up() {
    let s = ApiServer::start(Backend::Embedded);
    let (ca, server, admin) = (pki(&s, "ca.crt"), pki(&s, "apiserver.crt"), pki(&s, "admin.crt"));
    let before = (serial(&ca), serial(&server), serial(&admin));
    assert_eq!(served_serial(&s), before.1);
    let out = Command::new(env!("CARGO_BIN_EXE_strata")).args(["certs", "rotate", "--data-dir"]).arg(s.data_dir()).output().expect("strata");
    assert!(out.status.success(), "certs rotate: {}", String::from_utf8_lossy(&out.stderr));
    let after = (serial(&ca), serial(&server), serial(&admin));
    assert_eq!(after.0, before.0);
    assert_ne!(after.1, before.1);
    assert_ne!(after.2, before.2);
    assert!(common::eventually(std::time::Duration::from_secs(10), || served_serial(&s) == after.1), "still serving {}", served_serial(&s));
    assert_eq!(kubeconfig_admin_cert(&s), std::fs::read(&admin).expect("admin.crt"));
    s.ok(&["get", "ns", "default"]);
    assert_private(s.data_dir());
}

// ---- request limits and validation messages ---------------------------------------------------

fn json_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", &body[..body.len().min(500)]))
}

fn post(s: &ApiServer, path: &str, obj: &serde_json::Value) -> (u16, String) {
    s.curl("POST", path, Auth::Admin, Some("application/json"), Some(obj.to_string().as_bytes()))
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";

/// ConfigMaps and Secrets over 1 MiB of data, stored objects over 1.5 MiB and request bodies
/// over 3 MiB are refused as Kubernetes refuses them, and nothing is stored.
#[test]
fn size_limits_match_kubernetes() {
    use base64::Engine;
    let s = ApiServer::start(Backend::Embedded);
    let mib = 1usize << 20;
    let cm = |name: &str, n: usize| serde_json::json!({"metadata": {"name": name}, "data": {"k": "x".repeat(n)}});

    let (code, body) = post(&s, CMS, &cm("big", mib + 1));
    assert_eq!(code, 422, "{}", &body[..body.len().min(300)]);
    let st = json_of(&body);
    assert_eq!(st["message"], "ConfigMap \"big\" is invalid: []: Too long: may not be more than 1048576 bytes");
    assert_eq!(st["details"]["causes"][0]["reason"], "FieldValueTooLong");
    let (code, _) = post(&s, CMS, &cm("exactly-one-mib", mib));
    assert_eq!(code, 201);

    let b64 = base64::engine::general_purpose::STANDARD.encode(vec![7u8; mib + 1]);
    let (code, body) = post(&s, SECRETS, &serde_json::json!({"metadata": {"name": "bigsecret"}, "data": {"k": b64}}));
    assert_eq!(code, 422);
    assert_eq!(json_of(&body)["message"], "Secret \"bigsecret\" is invalid: data: Too long: may not be more than 1048576 bytes");

    // kubectl shows the same.
    let file = s.dir.path().join("big.txt");
    std::fs::write(&file, "y".repeat(mib + 1)).expect("write");
    let err = s.fails(&["create", "configmap", "big-from-file", &format!("--from-file=big.txt={}", file.display())], None);
    assert!(err.contains("Too long: may not be more than 1048576 bytes"), "{err}");

    // A kind without a data limit: the whole stored object is limited to 1.5 MiB.
    let pod = serde_json::json!({"metadata": {"name": "huge"}, "spec": {"containers": [{"name": "c", "image": "busybox",
        "env": [{"name": "BIG", "value": "z".repeat(mib + mib / 2 + 10)}]}]}});
    let (code, body) = post(&s, "/api/v1/namespaces/default/pods", &pod);
    assert_eq!(code, 413, "{}", &body[..body.len().min(300)]);
    assert_eq!(json_of(&body)["reason"], "RequestEntityTooLarge");

    // Request bodies over 3 MiB.
    let (code, body) = post(&s, CMS, &cm("huge-body", 3 * mib + 100));
    assert_eq!(code, 413);
    assert_eq!(json_of(&body)["message"], "Request entity too large: limit is 3145728");

    for gone in ["configmap/big", "configmap/big-from-file", "secret/bigsecret", "pod/huge", "configmap/huge-body"] {
        assert!(s.fails(&["get", gone], None).contains("NotFound"), "{gone} was stored");
    }
}

/// Errors never echo a large input: a 422 for an invalid 3 MB object stays small.
#[test]
fn error_bodies_are_bounded() {
    let s = ApiServer::start(Backend::Embedded);
    let junk = "%".repeat(3_000_000);
    let (code, body) = post(&s, SECRETS, &serde_json::json!({"metadata": {"name": "junk"}, "data": {"k": junk}}));
    assert_eq!(code, 422);
    assert!(body.len() < 16 * 1024, "a {} byte error body", body.len());
    assert!(json_of(&body)["message"].as_str().unwrap_or("").contains("must be base64"), "{body}");
    let name = "n".repeat(1_000_000);
    let (code, body) = post(&s, CMS, &serde_json::json!({"metadata": {"name": name}}));
    assert_eq!(code, 422);
    assert!(body.len() < 16 * 1024, "a {} byte error body", body.len());
    assert!(body.contains("must be no more than 253 characters"), "{}", &body[..body.len().min(500)]);
}

/// Names and labels get upstream's messages, the length first.
#[test]
fn name_and_label_messages_match_kubernetes() {
    let s = ApiServer::start(Backend::Embedded);
    let long = "a".repeat(300);
    let (code, body) = post(&s, CMS, &serde_json::json!({"metadata": {"name": long}}));
    assert_eq!(code, 422);
    let st = json_of(&body);
    let msg = st["message"].as_str().unwrap_or("");
    assert_eq!(msg, format!("ConfigMap \"{long}\" is invalid: metadata.name: Invalid value: \"{long}\": must be no more than 253 characters"));
    // Both problems, length first, when the name is long and malformed.
    let bad = format!("{}_", "b".repeat(299));
    let st = json_of(&post(&s, CMS, &serde_json::json!({"metadata": {"name": bad}})).1);
    let causes = st["details"]["causes"].as_array().cloned().unwrap_or_default();
    assert_eq!(causes.len(), 2, "{st}");
    assert!(causes[0]["message"].as_str().unwrap_or("").ends_with("must be no more than 253 characters"));
    assert!(causes[1]["message"].as_str().unwrap_or("").contains("a lowercase RFC 1123 subdomain must consist of"));
    // Namespaces are labels: 63 characters; services DNS-1035 labels.
    let st = json_of(&post(&s, "/api/v1/namespaces", &serde_json::json!({"metadata": {"name": "c".repeat(64)}})).1);
    assert!(st["message"].as_str().unwrap_or("").ends_with("must be no more than 63 characters"), "{st}");
    let svc = serde_json::json!({"metadata": {"name": "1web"}, "spec": {"ports": [{"port": 80}]}});
    let st = json_of(&post(&s, "/api/v1/namespaces/default/services", &svc).1);
    assert_eq!(st["message"], "Service \"1web\" is invalid: metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')");

    // Labels: keys are qualified names, values at most 63 characters.
    let value = "v".repeat(64);
    let st = json_of(&post(&s, CMS, &serde_json::json!({"metadata": {"name": "l1", "labels": {"app": value}}})).1);
    assert_eq!(st["message"], format!("ConfigMap \"l1\" is invalid: metadata.labels: Invalid value: \"{value}\": must be no more than 63 characters"));
    let st = json_of(&post(&s, CMS, &serde_json::json!({"metadata": {"name": "l2", "labels": {"bad key": "ok"}}})).1);
    assert_eq!(st["message"], "ConfigMap \"l2\" is invalid: metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')");
    let st = json_of(&post(&s, CMS, &serde_json::json!({"metadata": {"name": "l3", "labels": {"app": "-x"}}})).1);
    assert_eq!(st["message"], "ConfigMap \"l3\" is invalid: metadata.labels: Invalid value: \"-x\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')");
    let st = json_of(&post(&s, CMS, &serde_json::json!({"metadata": {"name": "l4", "labels": {"Example.com/app": "x"}}})).1);
    assert!(st["message"].as_str().unwrap_or("").contains("prefix part a lowercase RFC 1123 subdomain must consist of"), "{st}");
    // Annotations: 256 KiB in all.
    let st = json_of(&post(&s, CMS, &serde_json::json!({"metadata": {"name": "a1", "annotations": {"a": "q".repeat(256 * 1024)}}})).1);
    assert_eq!(st["message"], "ConfigMap \"a1\" is invalid: metadata.annotations: Too long: may not be more than 262144 bytes");
    // Valid ones pass.
    let (code, _) = post(&s, CMS, &serde_json::json!({"metadata": {"name": "fine", "labels": {"example.com/app": "My_value.1", "empty": ""}}}));
    assert_eq!(code, 201);
}

// ---- encryption at rest -----------------------------------------------------------------------

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// An EncryptionConfiguration for Secrets: `provider` with `keys` (name, fill byte) in order,
/// then identity.
fn encryption_config(provider: &str, keys: &[(&str, u8)]) -> String {
    let mut y = format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - {provider}:\n      keys:\n");
    for (name, fill) in keys {
        y += &format!("      - name: {name}\n        secret: {}\n", b64(&[*fill; 32]));
    }
    y + "  - identity: {}\n"
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The raw stored value of a key of a stopped server's embedded store.
fn raw_embedded(s: &ApiServer, key: &str) -> Vec<u8> {
    use strata_store::Store;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let store = strata_store::embedded::Embedded::open(&s.data_dir().join("store.redb")).expect("store");
        store.get(key).await.expect("get").expect("stored").value
    })
}

fn secret_value(s: &ApiServer, name: &str) -> String {
    use base64::Engine;
    let v = s.ok(&["get", "secret", name, "-o", "jsonpath={.data.v}"]);
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v.trim()).expect("base64")).expect("utf8")
}

/// With `--encryption-provider-config`, a Secret's value is nowhere in the store file, kubectl
/// reads it back, and keys rotate by re-writing the objects (kube-apiserver's procedure).
#[test]
fn secrets_are_encrypted_at_rest_and_keys_rotate() {
    let base = tempfile::Builder::new().prefix("strata-enc-").tempdir_in("/var/tmp").expect("tempdir");
    let config = base.path().join("encryption.yaml");
    std::fs::write(&config, encryption_config("aescbc", &[("key1", 1)])).expect("config");
    let mut s = ApiServer::start_with(Backend::Embedded, &["--encryption-provider-config", config.to_str().expect("utf8")]);
    let secret = format!("hunter2-{}", std::process::id());
    let visible = format!("not-secret-{}", std::process::id());
    s.ok(&["create", "secret", "generic", "creds", &format!("--from-literal=v={secret}")]);
    s.ok(&["create", "configmap", "plain", &format!("--from-literal=v={visible}")]);
    assert_eq!(secret_value(&s, "creds"), secret);
    s.stop(false);
    // The store file and its write-ahead log's two files (where the latest writes may still be).
    let mut file = std::fs::read(s.data_dir().join("store.redb")).expect("store file");
    for log in ["store.redb-wal", "store.redb-wal2"] {
        file.extend(std::fs::read(s.data_dir().join(log)).expect("store log"));
    }
    assert!(!contains(&file, secret.as_bytes()) && !contains(&file, b64(secret.as_bytes()).as_bytes()), "the secret is in the store file");
    assert!(contains(&file, visible.as_bytes()), "ConfigMaps are not in the configuration: stored plain");
    let key = "/registry/core/secrets/default/creds";
    assert!(raw_embedded(&s, key).starts_with(b"k8s:enc:aescbc:v1:key1:"));

    // Rotation: the new key first, the old one still readable; re-write every Secret. Twice:
    // the second time the replace changes nothing in the object (its manager is recorded
    // already), and the stale encryption alone makes it write.
    for (new, old) in [(("key2", 2), ("key1", 1)), (("key3", 3), ("key2", 2))] {
        std::fs::write(&config, encryption_config("aescbc", &[new, old])).expect("config");
        s.restart(false);
        assert_eq!(secret_value(&s, "creds"), secret);
        let all = s.ok(&["get", "secrets", "-A", "-o", "json"]);
        s.ok_stdin(&["replace", "-f", "-"], Some(&all));
        s.stop(false);
        let prefix = format!("k8s:enc:aescbc:v1:{}:", new.0);
        assert!(raw_embedded(&s, key).starts_with(prefix.as_bytes()), "not re-written with {}", new.0);
    }
    // The old keys can go.
    std::fs::write(&config, encryption_config("aescbc", &[("key3", 3)])).expect("config");
    s.restart(false);
    assert_eq!(secret_value(&s, "creds"), secret);
}

/// The same on etcd, with secretbox: the raw etcd value (read through etcd's own API) carries
/// the provider's prefix and not the secret.
#[test]
fn secrets_are_encrypted_in_etcd() {
    use base64::Engine;
    let base = tempfile::Builder::new().prefix("strata-enc-").tempdir_in("/var/tmp").expect("tempdir");
    let config = base.path().join("encryption.yaml");
    std::fs::write(&config, encryption_config("secretbox", &[("box1", 3)])).expect("config");
    let s = ApiServer::start_with(Backend::Etcd, &["--encryption-provider-config", config.to_str().expect("utf8")]);
    let secret = format!("etcd-secret-{}", std::process::id());
    s.ok(&["create", "secret", "generic", "creds", &format!("--from-literal=v={secret}")]);
    assert_eq!(secret_value(&s, "creds"), secret);
    let ep = s.etcd_endpoint().expect("etcd");
    let body = format!(r#"{{"key":"{}"}}"#, b64(b"/strata/registry/core/secrets/default/creds"));
    let out = Command::new("curl").args(["-sS", "-X", "POST", "-d", &body, &format!("http://{ep}/v3/kv/range")]).output().expect("curl");
    let resp = json_of(&String::from_utf8_lossy(&out.stdout));
    let raw = base64::engine::general_purpose::STANDARD.decode(resp["kvs"][0]["value"].as_str().expect("a value")).expect("base64");
    assert!(raw.starts_with(b"k8s:enc:secretbox:v1:box1:"), "{}", String::from_utf8_lossy(&raw[..raw.len().min(40)]));
    assert!(!contains(&raw, secret.as_bytes()) && !contains(&raw, b64(secret.as_bytes()).as_bytes()));
}

// ---- audit log --------------------------------------------------------------------------------

fn audit_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l}: {e}"))).collect()
}

fn find_event<'a>(events: &'a [serde_json::Value], verb: &str, resource: &str, name: &str, stage: &str) -> Option<&'a serde_json::Value> {
    events.iter().find(|e| e["verb"] == verb && e["objectRef"]["resource"] == resource && e["objectRef"]["name"] == name && e["stage"] == stage)
}

const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  nonResourceURLs: ["/api*", "/openapi*", /version]
- level: RequestResponse
  resources: [{group: "", resources: [configmaps]}]
- level: Metadata
"#;

/// `--audit-policy-file` and `--audit-log-path`: a create is logged at the policy's level with
/// the audit.k8s.io/v1 Event fields, in a file only root can read.
#[test]
fn audit_log_records_a_create_at_the_policys_level() {
    let base = tempfile::Builder::new().prefix("strata-audit-").tempdir_in("/var/tmp").expect("tempdir");
    let policy = base.path().join("policy.yaml");
    std::fs::write(&policy, AUDIT_POLICY).expect("policy");
    let log = base.path().join("audit.log");
    let s = ApiServer::start_with(Backend::Embedded, &["--audit-policy-file", policy.to_str().expect("utf8"), "--audit-log-path", log.to_str().expect("utf8")]);
    s.ok(&["create", "configmap", "audited", "--from-literal=colour=blue"]);
    s.ok(&["create", "namespace", "audited-ns"]);
    let events = audit_events(&log);
    let done = find_event(&events, "create", "configmaps", "audited", "ResponseComplete").unwrap_or_else(|| panic!("no create event in {events:#?}"));
    assert_eq!(done["kind"], "Event");
    assert_eq!(done["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(done["level"], "RequestResponse");
    assert_eq!(done["user"]["username"], "admin");
    assert!(done["user"]["groups"].as_array().is_some_and(|g| g.contains(&serde_json::json!("system:masters"))));
    assert_eq!(done["sourceIPs"], serde_json::json!(["127.0.0.1"]));
    assert!(done["userAgent"].as_str().unwrap_or("").starts_with("kubectl"), "{done}");
    assert_eq!(done["objectRef"]["namespace"], "default");
    assert_eq!(done["objectRef"]["apiVersion"], "v1");
    assert!(done["requestURI"].as_str().unwrap_or("").starts_with("/api/v1/namespaces/default/configmaps"));
    assert_eq!(done["responseStatus"]["code"], 201);
    assert_eq!(done["requestObject"]["data"]["colour"], "blue");
    assert_eq!(done["responseObject"]["metadata"]["name"], "audited");
    assert!(done["requestReceivedTimestamp"].is_string() && done["stageTimestamp"].is_string());
    let received = find_event(&events, "create", "configmaps", "audited", "RequestReceived").expect("RequestReceived stage");
    assert_eq!(received["auditID"], done["auditID"]);
    assert!(received.get("responseStatus").is_none());
    // Namespaces fall to the Metadata rule: no objects logged.
    let ns = find_event(&events, "create", "namespaces", "audited-ns", "ResponseComplete").expect("namespace create");
    assert_eq!(ns["level"], "Metadata");
    assert!(ns.get("requestObject").is_none() && ns.get("responseObject").is_none());
    // Discovery is at level None.
    assert!(!events.iter().any(|e| e["requestURI"] == "/api" || e["requestURI"] == "/version"));
    // An impersonated request (here refused: jane may not create) is logged as its real
    // requester, with whom it acted as.
    let out = s.kubectl(&["create", "configmap", "as-someone", "--as", "jane", "--as-group", "devs"]);
    assert!(!out.status.success(), "jane has no grants");
    let events = audit_events(&log);
    let imp = find_event(&events, "create", "configmaps", "as-someone", "ResponseComplete").unwrap_or_else(|| panic!("no impersonated create in {events:#?}"));
    assert_eq!(imp["responseStatus"]["code"], 403, "{imp}");
    assert_eq!(imp["user"]["username"], "admin", "{imp}");
    assert_eq!(imp["impersonatedUser"]["username"], "jane", "{imp}");
    assert!(imp["impersonatedUser"]["groups"].as_array().is_some_and(|g| g.contains(&serde_json::json!("devs"))), "{imp}");
    assert_eq!(mode(&log), 0o600);
}

/// With only `--audit-log-path`, the default policy logs Secrets at Metadata (their data never
/// reaches the log), other writes with their request; watches log ResponseStarted and
/// ResponseComplete; the log rotates by size.
#[test]
fn default_audit_policy_keeps_secrets_out_and_the_log_rotates() {
    let base = tempfile::Builder::new().prefix("strata-audit-").tempdir_in("/var/tmp").expect("tempdir");
    let log = base.path().join("audit.log");
    let s = ApiServer::start_with(Backend::Embedded, &["--audit-log-path", log.to_str().expect("utf8"), "--audit-log-maxsize", "1", "--audit-log-maxbackup", "1"]);
    let secret = format!("s3cr3t-{}", std::process::id());
    s.ok(&["create", "secret", "generic", "creds", &format!("--from-literal=password={secret}")]);
    s.ok(&["get", "secret", "creds", "-o", "yaml"]);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains(&secret) && !text.contains(&b64(secret.as_bytes())), "the secret is in the audit log");
    let events = audit_events(&log);
    let create = find_event(&events, "create", "secrets", "creds", "ResponseComplete").unwrap_or_else(|| panic!("no secret create in {events:#?}"));
    assert_eq!(create["level"], "Metadata");
    assert!(find_event(&events, "create", "secrets", "creds", "RequestReceived").is_none(), "RequestReceived is omitted by default");

    // A watch: started, then complete when it ends.
    let (code, _) = s.curl("GET", "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1", Auth::Admin, None, None);
    assert_eq!(code, 200);
    assert!(common::eventually(std::time::Duration::from_secs(10), || {
        let events = audit_events(&log);
        let watch: Vec<_> = events.iter().filter(|e| e["verb"] == "watch" && e["objectRef"]["resource"] == "configmaps").map(|e| e["stage"].clone()).collect();
        watch.contains(&serde_json::json!("ResponseStarted")) && watch.contains(&serde_json::json!("ResponseComplete"))
    }));

    // Writes of other kinds carry their request: ~200 KB each, past 1 MiB in all.
    for i in 0..7 {
        let cm = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("big-{i}"), "annotations": {"filler": "f".repeat(200_000)}},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        let (code, body) = post(&s, "/apis/apps/v1/namespaces/default/deployments", &cm);
        assert_eq!(code, 201, "{}", &body[..body.len().min(300)]);
    }
    let backups: Vec<_> = std::fs::read_dir(base.path()).expect("dir").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("audit-") && n.ends_with(".log")).collect();
    assert_eq!(backups.len(), 1, "one backup kept: {backups:?}");
    assert!(std::fs::metadata(&log).expect("log").len() <= 1024 * 1024);
    let recent = audit_events(&log);
    let all: Vec<serde_json::Value> = recent.into_iter().chain(audit_events(&base.path().join(&backups[0]))).collect();
    let d = find_event(&all, "create", "deployments", "big-6", "ResponseComplete").expect("the last deployment");
    assert_eq!(d["level"], "Request");
    assert_eq!(d["objectRef"]["apiGroup"], "apps");
    assert!(d["requestObject"]["metadata"]["annotations"]["filler"].is_string());
    assert!(d.get("responseObject").is_none());
}

/// Servers on one etcd are one cluster: a second server takes the first's CA and ServiceAccount
/// token signing key from the store, so the admin kubeconfig and a pod's token made by one are
/// good on the other; a data dir of another cluster is refused with what to do, and left as it
/// was. Before: each server made its own CA and key, and B answered A's token with 401.
#[test]
fn servers_on_one_etcd_share_one_ca_and_token_signing_key() {
    let a = ApiServer::start(Backend::Etcd);
    let ep = a.etcd_endpoint().expect("etcd").to_string();
    let b = ApiServer::start_opts(Backend::Etcd, Options { etcd_endpoint: Some(ep.clone()), ..Options::default() });
    let read = |s: &ApiServer, f: &str| std::fs::read_to_string(s.data_dir().join("pki").join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    assert_eq!(read(&a, "ca.crt"), read(&b, "ca.crt"), "one CA");
    assert_eq!(read(&a, "sa.key"), read(&b, "sa.key"), "one token signing key");
    assert_eq!(mode(&b.data_dir().join("pki/ca.key")), 0o600);
    assert_eq!(mode(&b.data_dir().join("pki/sa.key")), 0o600);
    assert_ne!(read(&a, "apiserver.key"), read(&b, "apiserver.key"), "each server its own serving key");
    let kubectl = common::server::kubectl_of("1.33");
    let run = |args: &[&str]| {
        let out = Command::new(&kubectl).args(args).output().expect("kubectl");
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let a_config = a.kubeconfig().to_str().expect("utf8").to_string();
    let (ok, out) = run(&["--kubeconfig", &a_config, "--server", &b.url(), "get", "namespace", "default", "-o", "name"]);
    assert!(ok && out.trim() == "namespace/default", "A's kubeconfig against B: {out}");
    a.ok(&["create", "serviceaccount", "robot"]);
    let token = a.ok(&["create", "token", "robot"]);
    let ca = a.data_dir().join("pki/ca.crt");
    for s in [&a, &b] {
        let (ok, out) = run(&["--kubeconfig", "/dev/null", "--server", &s.url(), "--certificate-authority", ca.to_str().expect("utf8"), "--token", token.trim(), "auth", "whoami"]);
        assert!(ok && out.contains("system:serviceaccount:default:robot"), "A's token against {}: {out}", s.url());
    }
    // A data dir with a CA of its own (another cluster) is refused, and left as it was.
    let mut c = ApiServer::start(Backend::Embedded);
    c.stop(false);
    let before = read(&c, "ca.crt");
    assert_ne!(before, read(&a, "ca.crt"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(c.root())
        .args(["server", "--no-agent", "--no-controllers", "--no-scheduler", "--listen", &format!("127.0.0.1:{}", common::free_port()), "--store", &format!("etcd://{ep}"), "--data-dir"])
        .arg(c.data_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strata server");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("pki/ca.crt is not the CA of the cluster this store holds") && err.contains("data directory without pki/"), "{err}");
    assert_eq!(read(&c, "ca.crt"), before, "the refused server's CA is untouched");
}
