//! Joining a cluster, end to end against a real `strata server` with the real `kubectl`:
//! bootstrap tokens (`strata token create|list|delete`, the bootstrap-token authenticator, the
//! cleaner of expired ones), CertificateSigningRequests (`kubectl certificate approve|deny`,
//! the node client approver and signer), and `strata agent` (CA pin, refusals, the node's
//! kubeconfig, reuse on restart).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{eventually, openssl_csr, text};
use common::server::{ApiServer, Backend, Options};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).stdin(Stdio::null()).output().expect("run strata")
}

/// `strata token create` against `s`; returns the printed token.
fn create_token(s: &ApiServer, extra: &[&str]) -> String {
    let data = s.data_dir().to_str().expect("path").to_string();
    let mut args = vec!["token", "create", "--data-dir", &data];
    args.extend_from_slice(extra);
    let out = strata(&args);
    assert!(out.status.success(), "strata token create: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// sha256 (hex) of the cluster CA in DER, computed with openssl (not strata's code).
fn ca_hash(s: &ApiServer) -> String {
    let ca = s.data_dir().join("pki/ca.crt");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("openssl x509 -in {} -outform DER | sha256sum", ca.display()))
        .output()
        .expect("openssl");
    assert!(out.status.success());
    text(&out.stdout).split_whitespace().next().expect("hash").to_string()
}

/// `kubectl ARGS` with a bearer token only (no client certificate).
fn kubectl_token(s: &ApiServer, token: &str, args: &[&str]) -> Output {
    let ca: PathBuf = s.data_dir().join("pki/ca.crt");
    Command::new("kubectl")
        .args(["--server", &s.url(), "--certificate-authority", ca.to_str().expect("path"), "--token", token])
        .args(args)
        .env("KUBECONFIG", s.data_dir().join("no-such-kubeconfig"))
        .env("HOME", s.data_dir())
        .stdin(Stdio::null())
        .output()
        .expect("kubectl")
}

/// `kubectl ARGS` with another kubeconfig.
fn kubectl_with(s: &ApiServer, kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl").args(args).env("KUBECONFIG", kubeconfig).env("HOME", s.data_dir()).stdin(Stdio::null()).output().expect("kubectl")
}

/// `strata agent` in the background, its output in `<dir>/agent.log`.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(s: &ApiServer, token: Option<&str>, name: &str, data: &Path) -> Agent {
        let log = data.with_extension("log");
        let f = std::fs::File::create(&log).expect("log");
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.arg("--root").arg(data.with_extension("root"));
        c.args(["agent", "--server", &s.url(), "--name", name, "--data-dir"]).arg(data);
        if let Some(t) = token {
            c.args(["--token", t]);
        }
        let child = c.stdin(Stdio::null()).stdout(f.try_clone().expect("log")).stderr(f).spawn().expect("strata agent");
        Agent { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `strata agent` to completion (a refused join ends it); returns (success, stderr).
fn agent_once(s: &ApiServer, token: &str, name: &str, data: &Path) -> (bool, String) {
    let out = Command::new("timeout")
        .args(["60", env!("CARGO_BIN_EXE_strata"), "--root"])
        .arg(data.with_extension("root"))
        .args(["agent", "--server", &s.url(), "--name", name, "--join-timeout", "20s", "--data-dir"])
        .arg(data)
        .args(["--token", token])
        .stdin(Stdio::null())
        .output()
        .expect("strata agent");
    (out.status.success(), text(&out.stderr))
}

#[test]
fn tokens_are_created_listed_used_and_deleted() {
    let s = ApiServer::start(Backend::Embedded);
    let token = create_token(&s, &["--ttl", "1h", "--description", "for node two"]);
    // K10<sha256 of the CA (DER)>::<id>.<secret>
    let hash = ca_hash(&s);
    let rest = token.strip_prefix(&format!("K10{hash}::")).unwrap_or_else(|| panic!("{token} does not pin the CA {hash}"));
    let (id, secret) = rest.split_once('.').expect("id.secret");
    assert!(id.len() == 6 && secret.len() == 16 && rest.bytes().all(|b| b == b'.' || b.is_ascii_lowercase() || b.is_ascii_digit()), "{rest}");

    // Stored as upstream's bootstrap token Secret.
    let name = format!("bootstrap-token-{id}");
    let secret_json: serde_json::Value = serde_json::from_str(&s.ok(&["get", "secret", "-n", "kube-system", &name, "-o", "json"])).expect("json");
    assert_eq!(secret_json["type"], "bootstrap.kubernetes.io/token");
    let field = |k: &str| {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.decode(secret_json["data"][k].as_str().unwrap_or_default()).expect("base64");
        String::from_utf8(b).expect("utf8")
    };
    assert_eq!(field("token-id"), id);
    assert_eq!(field("token-secret"), secret);
    assert_eq!(field("usage-bootstrap-authentication"), "true");
    assert_eq!(field("auth-extra-groups"), "system:bootstrappers:strata:default-node-token");
    assert_eq!(field("description"), "for node two");
    let expires = chrono::DateTime::parse_from_rfc3339(&field("expiration")).expect("RFC 3339 expiration");
    let left = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds();
    assert!((3500..=3600).contains(&left), "expires in {left} s");

    let data = s.data_dir().to_str().expect("path").to_string();
    let list = strata(&["token", "list", "--data-dir", &data]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let list = text(&list.stdout);
    assert!(list.lines().any(|l| l.starts_with(id) && l.contains("for node two") && l.contains(&token)), "{list}");

    // The bearer <id>.<secret> is system:bootstrap:<id> in the bootstrappers' groups.
    let bearer = format!("{id}.{secret}");
    let who = kubectl_token(&s, &bearer, &["auth", "whoami", "-o", "json"]);
    assert!(who.status.success(), "{}", text(&who.stderr));
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).expect("json");
    assert_eq!(who["status"]["userInfo"]["username"], format!("system:bootstrap:{id}"));
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("\"system:bootstrappers\"") && groups.contains("system:bootstrappers:strata:default-node-token"), "{groups}");
    // It may ask for certificates, and nothing else of note.
    assert_eq!(text(&kubectl_token(&s, &bearer, &["auth", "can-i", "create", "certificatesigningrequests"]).stdout).trim(), "yes");
    assert_eq!(text(&kubectl_token(&s, &bearer, &["auth", "can-i", "get", "secrets", "-n", "kube-system"]).stdout).trim(), "no");

    // A wrong secret for a real id is 401.
    let wrong = format!("{id}.{}", "0".repeat(16));
    let out = kubectl_token(&s, &wrong, &["get", "namespaces"]);
    assert!(!out.status.success() && text(&out.stderr).contains("Unauthorized"), "{}", text(&out.stderr));

    // Deleted (by the whole token): gone from the list, and refused.
    let out = strata(&["token", "delete", "--data-dir", &data, &token]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = text(&strata(&["token", "list", "--data-dir", &data]).stdout);
    assert!(!list.contains(id), "{list}");
    assert!(eventually(Duration::from_secs(10), || text(&kubectl_token(&s, &bearer, &["get", "namespaces"]).stderr).contains("Unauthorized")));
    // Deleting again says so.
    let out = strata(&["token", "delete", "--data-dir", &data, id]);
    assert!(!out.status.success() && text(&out.stderr).contains("not found"), "{}", text(&out.stderr));
    // Bad input.
    let out = strata(&["token", "create", "--data-dir", &data, "--ttl", "5d"]);
    assert!(!out.status.success() && text(&out.stderr).contains(r#"time: unknown unit "d" in duration "5d""#), "{}", text(&out.stderr));
}

#[test]
fn expired_tokens_are_refused_and_cleaned_up() {
    let s = ApiServer::start(Backend::Embedded);
    let token = create_token(&s, &["--ttl", "3s"]);
    let bearer = token.split("::").nth(1).expect("credential").to_string();
    let id = bearer.split('.').next().expect("id").to_string();
    // Good while it lasts...
    let who = kubectl_token(&s, &bearer, &["auth", "whoami"]);
    assert!(who.status.success(), "{}", text(&who.stderr));
    // ...then refused, and its Secret deleted by the cleaner.
    std::thread::sleep(Duration::from_secs(4));
    let out = kubectl_token(&s, &bearer, &["auth", "whoami"]);
    assert!(!out.status.success() && text(&out.stderr).contains("Unauthorized"), "{}", text(&out.stderr));
    let name = format!("bootstrap-token-{id}");
    assert!(
        eventually(Duration::from_secs(20), || text(&s.kubectl(&["get", "secret", "-n", "kube-system", &name]).stderr).contains("NotFound")),
        "the expired token's Secret was not deleted"
    );
    // An agent with it is refused, and writes nothing.
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("agent");
    let (ok, err) = agent_once(&s, &token, "expired-node", &data);
    assert!(!ok && err.contains("refused the token"), "{err}");
    assert!(!data.exists(), "a refused join wrote {}", data.display());
}

#[test]
fn agent_joins_with_a_token_and_refuses_the_wrong_ones() {
    let s = ApiServer::start(Backend::Embedded);
    let token = create_token(&s, &[]);
    let dir = tempfile::tempdir().expect("tmp");

    // A token pinning another CA: refused before the secret is sent; nothing written.
    let hash = ca_hash(&s);
    let other = token.replacen(&hash, &"0".repeat(64), 1);
    let data = dir.path().join("wrong-ca");
    let (ok, err) = agent_once(&s, &other, "wrong-ca", &data);
    assert!(!ok && err.contains("is not the one the token pins") && err.contains(&hash), "{err}");
    assert!(!data.exists());
    // An unknown token (right CA, made-up credential): refused; nothing written.
    let unknown = format!("K10{hash}::zzzzzz.0123456789abcdef");
    let data = dir.path().join("unknown");
    let (ok, err) = agent_once(&s, &unknown, "unknown", &data);
    assert!(!ok && err.contains("refused the token"), "{err}");
    assert!(!data.exists());
    // Not a token at all.
    let data = dir.path().join("garbage");
    let (ok, err) = agent_once(&s, "not-a-token", "garbage", &data);
    assert!(!ok && err.contains("invalid join token"), "{err}");
    assert!(!data.exists());

    // A good token: the node's kubeconfig, 0600, for system:node:NAME in system:nodes.
    let data = dir.path().join("node-2");
    let agent = Agent::start(&s, Some(&token), "node-2", &data);
    let kubeconfig = data.join("kubeconfig");
    assert!(eventually(Duration::from_secs(60), || kubeconfig.exists()), "no kubeconfig: {}", agent.log());
    assert_eq!(std::fs::metadata(&kubeconfig).expect("kubeconfig").permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&data).expect("data dir").permissions().mode() & 0o777, 0o700);
    let who = kubectl_with(&s, &kubeconfig, &["auth", "whoami", "-o", "json"]);
    assert!(who.status.success(), "{}", text(&who.stderr));
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).expect("json");
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:node-2");
    assert!(who["status"]["userInfo"]["groups"].to_string().contains("\"system:nodes\""));
    // The CSR it sent: requested by the token, approved by the approver, issued by the signer.
    let csrs = s.ok(&["get", "csr"]);
    let id = token.split("::").nth(1).and_then(|c| c.split('.').next()).expect("id");
    assert!(
        csrs.lines().any(|l| l.contains("kubernetes.io/kube-apiserver-client-kubelet") && l.contains(&format!("system:bootstrap:{id}")) && l.contains("Approved,Issued")),
        "{csrs}"
    );

    // It runs the node agent as that node: the Node registers.
    assert!(eventually(Duration::from_secs(60), || s.kubectl(&["get", "node", "node-2"]).status.success()), "{}", agent.log());
    drop(agent);

    // Restarted without a token, it uses its kubeconfig.
    let before = std::fs::read(&kubeconfig).expect("kubeconfig");
    let mut agent = Agent::start(&s, None, "node-2", &data);
    assert!(eventually(Duration::from_secs(30), || agent.log().contains("running node node-2")), "{}", agent.log());
    assert!(agent.child.try_wait().expect("wait").is_none(), "{}", agent.log());
    assert!(!agent.log().contains("joined"), "{}", agent.log());
    assert_eq!(std::fs::read(&kubeconfig).expect("kubeconfig"), before, "the kubeconfig was replaced");
    drop(agent);
    // Without kubeconfig or token: a clear error.
    let out = strata(&["agent", "--server", &s.url(), "--name", "x", "--data-dir", dir.path().join("none").to_str().expect("path")]);
    assert!(!out.status.success() && text(&out.stderr).contains("--token is needed"), "{}", text(&out.stderr));
}

fn csr_manifest(name: &str, pem: &str, signer: &str) -> String {
    use base64::Engine;
    let req = base64::engine::general_purpose::STANDARD.encode(pem);
    format!("apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {req}\n  signerName: {signer}\n  expirationSeconds: 86400\n  usages: [\"digital signature\", \"client auth\"]\n")
}

#[test]
fn certificate_signing_requests_with_kubectl() {
    let s = ApiServer::start(Backend::Embedded);
    let dir = tempfile::tempdir().expect("tmp");
    let (key, pem) = openssl_csr(dir.path(), "alice", "alice", &["dev"]);
    s.ok_stdin(&["apply", "-f", "-"], Some(&csr_manifest("alice", &pem, "kubernetes.io/kube-apiserver-client")));
    let row = s.ok(&["get", "csr", "alice"]);
    assert!(row.contains("SIGNERNAME") && row.contains("REQUESTOR") && row.contains("kubernetes.io/kube-apiserver-client") && row.contains("admin") && row.contains("24h") && row.contains("Pending"), "{row}");
    // The requester's identity is the server's to set.
    assert_eq!(s.ok(&["get", "csr", "alice", "-o", "jsonpath={.spec.username}"]), "admin");
    // Not a node client certificate: nobody approves it on their own.
    std::thread::sleep(Duration::from_secs(1));
    assert!(s.ok(&["get", "csr", "alice"]).contains("Pending"));

    let out = s.ok(&["certificate", "approve", "alice"]);
    assert!(out.contains("approved"), "{out}");
    assert!(eventually(Duration::from_secs(20), || s.ok(&["get", "csr", "alice"]).contains("Approved,Issued")), "{}", s.ok(&["get", "csr", "alice"]));
    let cert = s.ok(&["get", "csr", "alice", "-o", "jsonpath={.status.certificate}"]);
    let cert = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(cert.trim()).expect("base64")
    };
    let cert_path = dir.path().join("alice.crt");
    std::fs::write(&cert_path, &cert).expect("cert");
    // Signed by the cluster CA, for the requested duration; it works as alice.
    let verify = Command::new("openssl").args(["verify", "-CAfile"]).arg(s.data_dir().join("pki/ca.crt")).arg(&cert_path).output().expect("openssl");
    assert!(verify.status.success(), "{}{}", text(&verify.stdout), text(&verify.stderr));
    let ca = s.data_dir().join("pki/ca.crt");
    let who = Command::new("kubectl")
        .args(["--server", &s.url(), "--certificate-authority", ca.to_str().expect("path"), "--client-certificate", cert_path.to_str().expect("path"), "--client-key", key.to_str().expect("path")])
        .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
        .env("KUBECONFIG", s.data_dir().join("none"))
        .output()
        .expect("kubectl");
    assert_eq!(text(&who.stdout), "alice", "{}", text(&who.stderr));
    let enddate = Command::new("openssl").args(["x509", "-noout", "-enddate", "-in"]).arg(&cert_path).output().expect("openssl");
    let end = text(&enddate.stdout);
    let end = end.trim().trim_start_matches("notAfter=");
    let end = chrono::NaiveDateTime::parse_from_str(end.trim_end_matches(" GMT"), "%b %e %H:%M:%S %Y").expect("date").and_utc();
    let secs = (end - chrono::Utc::now()).num_seconds();
    assert!((86000..=86400).contains(&secs), "valid for {secs} s, asked for a day");

    // Denied: no certificate, and approving it afterwards is refused.
    let (_, pem) = openssl_csr(dir.path(), "bob", "bob", &[]);
    s.ok_stdin(&["create", "-f", "-"], Some(&csr_manifest("bob", &pem, "kubernetes.io/kube-apiserver-client")));
    s.ok(&["certificate", "deny", "bob"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(s.ok(&["get", "csr", "bob"]).contains("Denied"));
    assert_eq!(s.ok(&["get", "csr", "bob", "-o", "jsonpath={.status.certificate}"]), "");
    // (kubectl itself refuses to approve a denied request; the server does too.)
    let mut bob: serde_json::Value = serde_json::from_str(&s.ok(&["get", "csr", "bob", "-o", "json"])).expect("json");
    bob["status"]["conditions"].as_array_mut().expect("conditions").push(serde_json::json!({"type": "Approved", "status": "True", "reason": "Because"}));
    let err = s.fails(&["replace", "--raw", "/apis/certificates.k8s.io/v1/certificatesigningrequests/bob/approval", "-f", "-"], Some(&bob.to_string()));
    assert!(err.contains("mutually exclusive"), "{err}");

    // Bad input: not a CSR; a node client CSR's shape asked of the wrong signer still needs
    // a human.
    let err = s.fails(&["create", "-f", "-"], Some(&csr_manifest("junk", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "kubernetes.io/kube-apiserver-client")));
    assert!(err.contains("spec.request"), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some(&csr_manifest("nosigner", &pem, "nosigner")));
    assert!(err.contains("spec.signerName"), "{err}");

    // Approving needs `approve` on the signer: a user allowed to update approvals but not
    // to approve for the signer is refused.
    let (_, pem) = openssl_csr(dir.path(), "carol", "carol", &[]);
    s.ok_stdin(&["create", "-f", "-"], Some(&csr_manifest("carol", &pem, "kubernetes.io/kube-apiserver-client")));
    s.ok(&["create", "clusterrole", "csr-approval-only", "--verb=get,list,update", "--resource=certificatesigningrequests,certificatesigningrequests/approval"]);
    s.ok(&["create", "clusterrolebinding", "csr-approval-only", "--clusterrole=csr-approval-only", "--user=system:serviceaccount:default:approver"]);
    s.ok(&["create", "serviceaccount", "approver"]);
    let sa_token = s.ok(&["create", "token", "approver"]);
    let out = kubectl_token(&s, sa_token.trim(), &["certificate", "approve", "carol"]);
    assert!(!out.status.success() && text(&out.stderr).contains("user not permitted to approve requests with signerName"), "{}", text(&out.stderr));
}

/// Node credentials for `node` (key and certificate files) through a CSR that the cluster's
/// approver approves (the admin may create node client CSRs) and its signer signs.
fn node_credentials(s: &ApiServer, dir: &Path, node: &str) -> (PathBuf, PathBuf) {
    let (key, pem) = openssl_csr(dir, node, &format!("system:node:{node}"), &["system:nodes"]);
    let name = format!("creds-{node}");
    s.ok_stdin(&["create", "-f", "-"], Some(&csr_manifest(&name, &pem, "kubernetes.io/kube-apiserver-client-kubelet")));
    let mut cert = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            cert = s.ok(&["get", "csr", &name, "-o", "jsonpath={.status.certificate}"]);
            !cert.is_empty()
        }),
        "no certificate for {node}: {}",
        s.ok(&["get", "csr", &name])
    );
    use base64::Engine;
    let crt = dir.join(format!("{node}.crt"));
    std::fs::write(&crt, base64::engine::general_purpose::STANDARD.decode(cert.trim()).expect("base64")).expect("cert");
    (key, crt)
}

/// `kubectl ARGS` as a node (its client certificate), with `stdin`.
fn kubectl_node(s: &ApiServer, creds: &(PathBuf, PathBuf), args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let ca = s.data_dir().join("pki/ca.crt");
    let mut c = Command::new("kubectl")
        .args(["--server", &s.url(), "--certificate-authority", ca.to_str().expect("path")])
        .arg("--client-certificate")
        .arg(&creds.1)
        .arg("--client-key")
        .arg(&creds.0)
        .args(args)
        .env("KUBECONFIG", s.data_dir().join("none"))
        .env("HOME", s.data_dir())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(t) = stdin {
        c.stdin.take().expect("stdin").write_all(t.as_bytes()).expect("stdin");
    }
    c.wait_with_output().expect("kubectl")
}

/// A merge PATCH as a node (with curl: kubectl's patch reads the subresource first, which
/// kubelet never does and nodes may not); returns the HTTP code.
fn patch_node(s: &ApiServer, creds: &(PathBuf, PathBuf), path: &str, body: &str) -> u16 {
    let ca = s.data_dir().join("pki/ca.crt");
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca.to_str().expect("path")])
        .arg("--cert")
        .arg(&creds.1)
        .arg("--key")
        .arg(&creds.0)
        .args(["-X", "PATCH", "-H", "Content-Type: application/merge-patch+json", "--data", body, &format!("{}{path}", s.url())])
        .output()
        .expect("curl");
    text(&out.stdout).trim().parse().unwrap_or(0)
}

fn pod_manifest(name: &str, node: &str, secret: &str, configmap: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: team\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox\n    env:\n    - name: FROM_CM\n      valueFrom:\n        configMapKeyRef: {{name: {configmap}, key: k}}\n  volumes:\n  - name: s\n    secret:\n      secretName: {secret}\n"
    )
}

#[test]
fn node_credentials_reach_only_their_own_node_and_pods() {
    let s = ApiServer::start(Backend::Embedded);
    let dir = tempfile::tempdir().expect("tmp");
    let a = node_credentials(&s, dir.path(), "node-a");
    let b = node_credentials(&s, dir.path(), "node-b");
    s.ok(&["create", "namespace", "team"]);
    for (kind, name) in [("secret generic", "secret-a"), ("secret generic", "secret-b"), ("secret generic", "unused"), ("configmap", "cm-a"), ("configmap", "cm-b")] {
        let mut args: Vec<&str> = vec!["create"];
        args.extend(kind.split(' '));
        args.extend([name, "-n", "team", "--from-literal=k=v"]);
        s.ok(&args);
    }
    s.ok_stdin(&["apply", "-f", "-"], Some(&pod_manifest("pod-a", "node-a", "secret-a", "cm-a")));
    s.ok_stdin(&["apply", "-f", "-"], Some(&pod_manifest("pod-b", "node-b", "secret-b", "cm-b")));
    let ok = |creds, args: &[&str], stdin: Option<&str>| {
        let out = kubectl_node(&s, creds, args, stdin);
        assert!(out.status.success(), "kubectl {args:?} as a node: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let forbidden = |creds, args: &[&str], stdin: Option<&str>| {
        let out = kubectl_node(&s, creds, args, stdin);
        assert!(!out.status.success(), "kubectl {args:?} as a node was allowed: {}", text(&out.stdout));
        assert!(text(&out.stderr).contains("forbidden"), "kubectl {args:?}: {}", text(&out.stderr));
    };

    // Secrets and ConfigMaps: those of its own pods only.
    ok(&a, &["get", "secret", "secret-a", "-n", "team"], None);
    ok(&a, &["get", "configmap", "cm-a", "-n", "team"], None);
    forbidden(&a, &["get", "secret", "secret-b", "-n", "team"], None);
    forbidden(&a, &["get", "configmap", "cm-b", "-n", "team"], None);
    forbidden(&a, &["get", "secret", "unused", "-n", "team"], None);
    forbidden(&a, &["get", "secrets", "-n", "team"], None);
    ok(&b, &["get", "secret", "secret-b", "-n", "team"], None);
    forbidden(&b, &["get", "secret", "secret-a", "-n", "team"], None);

    // Pods: its own; a list only of those bound to it.
    ok(&a, &["get", "pod", "pod-a", "-n", "team"], None);
    forbidden(&a, &["get", "pod", "pod-b", "-n", "team"], None);
    let listed = ok(&a, &["get", "pods", "-A", "--field-selector", "spec.nodeName=node-a", "-o", "name"], None);
    assert_eq!(listed.trim(), "pod/pod-a");
    forbidden(&a, &["get", "pods", "-A"], None);
    forbidden(&a, &["get", "pods", "-A", "--field-selector", "spec.nodeName=node-b"], None);
    // Status of its own pods; not of others'; deletes likewise.
    let status = r#"{"status":{"message":"hi"}}"#;
    assert_eq!(patch_node(&s, &a, "/api/v1/namespaces/team/pods/pod-a/status", status), 200);
    assert_eq!(patch_node(&s, &a, "/api/v1/namespaces/team/pods/pod-b/status", status), 403);
    assert_eq!(s.ok(&["get", "pod", "pod-a", "-n", "team", "-o", "jsonpath={.status.message}"]), "hi");
    forbidden(&a, &["delete", "pod", "pod-b", "-n", "team", "--wait=false"], None);
    // A pod that is gone is NotFound, as upstream's NodeRestriction answers (a kubelet's final
    // delete of a pod someone removed meanwhile is done, not forbidden).
    let out = kubectl_node(&s, &a, &["delete", "pod", "gone", "-n", "team", "--wait=false"], None);
    assert!(!out.status.success() && (text(&out.stderr).contains("NotFound") || text(&out.stderr).contains("not found")), "delete of a missing pod as a node: {}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("forbidden"), "delete of a missing pod as a node: {}", text(&out.stderr));
    // A pod it is not bound to cannot be created by it.
    forbidden(&a, &["apply", "-f", "-"], Some(&pod_manifest("pod-c", "node-a", "secret-b", "cm-b")));

    // Nodes: its own, not another's.
    ok(&a, &["apply", "-f", "-"], Some("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n"));
    ok(&b, &["apply", "-f", "-"], Some("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-b\n"));
    forbidden(&a, &["apply", "-f", "-"], Some("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-c\n"));
    ok(&a, &["label", "node", "node-a", "mine=yes"], None);
    forbidden(&a, &["label", "node", "node-b", "mine=yes"], None);
    let phase = r#"{"status":{"phase":"Running"}}"#;
    assert_eq!(patch_node(&s, &b, "/api/v1/nodes/node-a/status", phase), 403);
    assert_eq!(patch_node(&s, &a, "/api/v1/nodes/node-a/status", phase), 200);
    ok(&a, &["get", "node", "node-a"], None);
    forbidden(&a, &["get", "node", "node-b"], None);
    forbidden(&a, &["get", "nodes"], None);
    assert!(!s.ok(&["get", "node", "node-b", "--show-labels"]).contains("mine=yes"));

    // Leases: its own in kube-node-lease.
    let lease = |n: &str| format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {n}\n  namespace: kube-node-lease\nspec:\n  holderIdentity: {n}\n");
    ok(&a, &["create", "-f", "-"], Some(&lease("node-a")));
    forbidden(&a, &["create", "-f", "-"], Some(&lease("node-b")));
    ok(&b, &["create", "-f", "-"], Some(&lease("node-b")));
    forbidden(&a, &["get", "lease", "node-b", "-n", "kube-node-lease"], None);
    // Events, as kubelet writes them.
    ok(&a, &["create", "-f", "-"], Some("apiVersion: v1\nkind: Event\nmetadata:\n  name: ev-a\n  namespace: team\ninvolvedObject:\n  kind: Pod\n  name: pod-a\n  namespace: team\nreason: Started\nmessage: hi\n"));

    // The graph follows pods: a new pod bound to node-a that uses secret-b opens it to node-a,
    // and deleting the pod closes it again.
    s.ok_stdin(&["apply", "-f", "-"], Some(&pod_manifest("pod-a2", "node-a", "secret-b", "cm-a")));
    ok(&a, &["get", "secret", "secret-b", "-n", "team"], None);
    // (Deleting a bound pod is graceful until its node confirms; node-a is simulated here, so
    // the deletion is forced, as for a node that is gone.)
    s.ok(&["delete", "pod", "pod-a2", "-n", "team", "--grace-period=0", "--force"]);
    assert!(eventually(Duration::from_secs(10), || !kubectl_node(&s, &a, &["get", "secret", "secret-b", "-n", "team"], None).status.success()));
    // Its own pods it may delete.
    ok(&a, &["delete", "pod", "pod-a", "-n", "team", "--wait=false"], None);

    // RBAC no longer grants nodes anything by itself.
    assert_eq!(s.ok(&["get", "clusterrolebinding", "system:node", "-o", "jsonpath={.subjects}"]), "");
}

/// A network namespace with a veth to a bridge on this host: the bridge has `<net>.1/24`, the
/// namespace `<net>.2/24` (and a default route through the bridge). Removed on drop.
struct NetnsNode {
    ns: String,
    bridge: String,
    host_ip: String,
    ns_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
}

impl NetnsNode {
    fn new() -> NetnsNode {
        let tag = format!("{:x}", std::process::id() as u64 * 1000 + (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").subsec_millis() as u64));
        let tag = &tag[tag.len().saturating_sub(8)..];
        let third = 1 + (std::process::id() % 250);
        let n = NetnsNode { ns: format!("sjn{tag}"), bridge: format!("sjb{tag}"), host_ip: format!("10.251.{third}.1"), ns_ip: format!("10.251.{third}.2") };
        let (vh, vp) = (format!("sjh{tag}"), format!("sjp{tag}"));
        ip(&["link", "add", &n.bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}/24", n.host_ip), "dev", &n.bridge]);
        ip(&["link", "set", &n.bridge, "up"]);
        ip(&["netns", "add", &n.ns]);
        ip(&["link", "add", &vh, "type", "veth", "peer", "name", &vp]);
        ip(&["link", "set", &vp, "netns", &n.ns]);
        ip(&["link", "set", &vh, "master", &n.bridge, "up"]);
        ip(&["-n", &n.ns, "addr", "add", &format!("{}/24", n.ns_ip), "dev", &vp]);
        ip(&["-n", &n.ns, "link", "set", &vp, "up"]);
        ip(&["-n", &n.ns, "link", "set", "lo", "up"]);
        ip(&["-n", &n.ns, "route", "add", "default", "via", &n.host_ip]);
        n
    }
}

impl Drop for NetnsNode {
    fn drop(&mut self) {
        // The veth goes with the namespace.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

/// The second node's agent process and its strata root: on drop (a failed assertion
/// included) the agent is killed and whatever it left running is removed, before the
/// namespace goes.
struct NodeGuard {
    agent: Option<Child>,
    root: PathBuf,
    dir: PathBuf,
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        use strata_driver::PodRuntime;
        let images = strata_driver::images::ImageStore::open(self.root.join("images")).map(std::sync::Arc::new);
        if let Ok(Ok(driver)) = images.map(|i| strata_driver::ContainerDriver::open(&self.root, "runc", i, env!("CARGO_BIN_EXE_strata").into())) {
            for sb in driver.list_pod_sandboxes(&strata_driver::pod::SandboxFilter::default()).unwrap_or_default() {
                let _ = driver.remove_pod_sandbox(&sb.id);
            }
        }
        let out = Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(&self.root).args(["ps", "-aq", "--no-trunc"]).output();
        for id in out.map(|o| text(&o.stdout)).unwrap_or_default().split_whitespace() {
            let _ = Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(&self.root).args(["rm", "-f", id]).output();
        }
        let prefix = format!("{}/", self.dir.display());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts.lines().filter_map(|l| l.split_whitespace().nth(4)).filter(|m| m.starts_with(&prefix)).collect();
        points.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in points {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}

#[test]
fn a_second_agent_joins_from_a_network_namespace_and_runs_a_pod() {
    let net = NetnsNode::new();
    let registry = strata_testkit::Registry::start();
    registry.push(&strata_testkit::busybox_image(), "busybox", "latest");
    let image = format!("{}/busybox:latest", registry.addr);
    let s = ApiServer::start_opts(Backend::Embedded, Options { listen_host: Some(net.host_ip.clone()), ..Options::default() });
    let token = create_token(&s, &["--ttl", "10m"]);
    let dir = tempfile::Builder::new().prefix("strata-join-").tempdir_in("/var/tmp").expect("tmp");
    let (root, data) = (dir.path().join("root"), dir.path().join("agent"));
    let strata_in = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(&root).args(args).env("STRATA_UNPACK_RESERVE", "512MiB").stdin(Stdio::null()).output().expect("strata");
    // The registry listens on the host's loopback, which the namespace cannot reach: the
    // image is pulled into the second node's store beforehand (the pod says Never).
    let out = strata_in(&["pull", &image]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The agent runs inside the namespace: the API server only at the bridge's address.
    let log = dir.path().join("agent.log");
    let f = std::fs::File::create(&log).expect("log");
    // nsenter, not `ip netns exec`: that one mounts a sysfs of its own, without the cgroup
    // hierarchies pods need.
    let netns = format!("--net=/run/netns/{}", net.ns);
    let agent = Command::new("nsenter")
        .args([netns.as_str(), env!("CARGO_BIN_EXE_strata"), "--root"])
        .arg(&root)
        .args(["agent", "--server", &s.url(), "--name", "ns-node", "--node-ip", &net.ns_ip, "--data-dir"])
        .arg(&data)
        .args(["--token", &token])
        .env("STRATA_VM_ACCEL", "tcg")
        .env("STRATA_UNPACK_RESERVE", "512MiB")
        .stdin(Stdio::null())
        .stdout(f.try_clone().expect("log"))
        .stderr(f)
        .spawn()
        .expect("strata agent");
    let _guard = NodeGuard { agent: Some(agent), root: root.clone(), dir: dir.path().to_path_buf() };
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let ready = eventually(Duration::from_secs(90), || {
        let out = s.kubectl(&["get", "node", "ns-node", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.addresses[?(@.type==\"InternalIP\")].address}"]);
        text(&out.stdout) == format!("True {}", net.ns_ip)
    });
    if !ready {
        panic!("the node in the namespace is not Ready at {}: {}\n{}", net.ns_ip, s.ok(&["get", "node", "ns-node", "-o", "yaml"]), agent_log());
    }

    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: far\nspec:\n  nodeName: ns-node\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {image}\n    imagePullPolicy: Never\n    command: [httpd, -f, -p, '8080', -h, /var/www]\n"
    );
    s.ok_stdin(&["apply", "-f", "-"], Some(&pod));
    let mut last = String::new();
    let running = eventually(Duration::from_secs(90), || {
        last = s.ok(&["get", "pod", "far", "-o", "jsonpath={.status.phase} {.status.hostIP} {.status.podIP}"]);
        last.starts_with("Running ") && last.split(' ').nth(2).is_some_and(|ip| !ip.is_empty())
    });
    if !running {
        let events = s.kubectl(&["get", "events", "-o", "wide"]);
        panic!("pod not running: {last}\n{}\n{}", text(&events.stdout), agent_log());
    }
    assert_eq!(last.split(' ').nth(1), Some(net.ns_ip.as_str()), "{last}");
    // Its IP answers from its node (inside the namespace).
    let pod_ip = last.split(' ').nth(2).expect("pod ip").to_string();
    let mut body = String::new();
    let answered = eventually(Duration::from_secs(20), || {
        let out = Command::new("nsenter").args([netns.as_str(), "curl", "-sS", "--max-time", "5", &format!("http://{pod_ip}:8080/index.html")]).output().expect("curl");
        body = text(&out.stdout);
        body.contains("hello from strata")
    });
    assert!(answered, "{pod_ip}:8080 answered {body:?} in the namespace");

    // Streams through the API server reach the joined node: it asked for a serving certificate
    // (kubelet-serving) for its own address, which was approved and signed.
    let mut out = String::new();
    let exec = eventually(Duration::from_secs(90), || {
        let o = s.kubectl(&["exec", "far", "--", "cat", "/var/www/index.html"]);
        out = format!("{}{}", text(&o.stdout), text(&o.stderr));
        out.contains("hello from strata")
    });
    assert!(exec, "kubectl exec on the joined node: {out}\n{}", agent_log());
    let logs = s.kubectl(&["logs", "far"]);
    assert!(logs.status.success(), "kubectl logs on the joined node: {}", text(&logs.stderr));
    let csrs = s.ok(&["get", "csr", "-o", "jsonpath={range .items[?(@.spec.signerName==\"kubernetes.io/kubelet-serving\")]}{.spec.username} {.status.conditions[0].type} {.status.certificate}{\"\\n\"}{end}"]);
    assert!(csrs.lines().any(|l| l.starts_with("system:node:ns-node Approved ") && l.len() > "system:node:ns-node Approved ".len() + 100), "{csrs}");
    // The same node asking for an address that is not its own is not approved.
    let key = dir.path().join("other.key");
    let req = Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout"])
        .arg(&key)
        .args(["-subj", "/O=system:nodes/CN=system:node:ns-node", "-addext", "subjectAltName=IP:10.9.9.9"])
        .output()
        .expect("openssl");
    assert!(req.status.success(), "openssl: {}", text(&req.stderr));
    use base64::Engine as _;
    let csr = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: not-mine\nspec:\n  signerName: kubernetes.io/kubelet-serving\n  usages: [digital signature, key encipherment, server auth]\n  request: {}\n",
        base64::engine::general_purpose::STANDARD.encode(&req.stdout)
    );
    let node_kubeconfig = data.join("kubeconfig");
    let created = Command::new(common::server::kubectl_of("1.32"))
        .arg("--kubeconfig")
        .arg(&node_kubeconfig)
        .args(["create", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().expect("stdin").write_all(csr.as_bytes())?;
            c.wait_with_output()
        })
        .expect("kubectl");
    assert!(created.status.success(), "the node creates a CSR: {}", text(&created.stderr));
    std::thread::sleep(Duration::from_secs(3));
    let other = s.ok(&["get", "csr", "not-mine", "-o", "jsonpath={.status}"]);
    assert!(!other.contains("Approved") && !other.contains("certificate"), "a serving certificate for another address: {other}");

    // Deleted: the agent in the namespace stops it and removes it.
    s.ok(&["delete", "pod", "far", "--wait=false"]);
    let gone = eventually(Duration::from_secs(60), || text(&s.kubectl(&["get", "pod", "far"]).stderr).contains("NotFound"));
    assert!(gone, "the pod was not removed: {}", agent_log());
    let mut left = String::new();
    let cleaned = eventually(Duration::from_secs(30), || {
        left = text(&strata_in(&["ps", "-a"]).stdout);
        left.lines().count() <= 1
    });
    assert!(cleaned, "containers left behind: {left}");
}
