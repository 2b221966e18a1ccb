//! RBAC end to end, as Kubernetes enforces it: escalation prevention and the `escalate` and
//! `bind` verbs, the bootstrap policy, non-resource URLs, and the review APIs, driven with the
//! real `kubectl` (as limited users, through bearer tokens) and curl.

mod common;

on_both_backends!(
    escalation_is_refused_unless_escalate_or_bind_is_granted,
    bootstrap_policy_is_reconciled_and_non_resource_urls_are_rbac,
    invalid_credentials_are_401_on_every_path,
    can_i_and_whoami_with_kubectl,
    service_account_tokens,
);

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use std::time::Duration;

use common::eventually;
use common::server::{ApiServer, Auth, Backend};

/// A server with a token file holding `alice-token` (user alice, group dev).
fn server_with_alice(backend: Backend) -> (ApiServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "alice-token,alice,1001,\"dev\"\nbob-token,bob,1002\n").expect("tokens");
    let s = ApiServer::start_with(backend, &["--token-file", tokens.to_str().expect("path")]);
    (s, dir)
}

/// `kubectl ARGS` as the holder of `token` (no client certificate), with `stdin`.
fn kubectl_as(s: &ApiServer, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let ca: PathBuf = s.data_dir().join("pki/ca.crt");
    let mut c = Command::new("kubectl")
        .args(["--server", &s.url(), "--certificate-authority", ca.to_str().expect("path"), "--token", token])
        .args(args)
        .env("KUBECONFIG", s.data_dir().join("no-such-kubeconfig"))
        .env("HOME", s.data_dir())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(text) = stdin {
        c.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    c.wait_with_output().expect("kubectl output")
}

fn ok_as(s: &ApiServer, token: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl_as(s, token, args, stdin);
    assert!(out.status.success(), "kubectl {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails_as(s: &ApiServer, token: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl_as(s, token, args, stdin);
    assert!(!out.status.success(), "kubectl {args:?} unexpectedly succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `tests/python/sa_token.py`: list ConfigMaps of `ns` with the Python client and a token.
fn python_with_token(s: &ApiServer, token: &str, ns: &str) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sa_token.py");
    let ca = s.data_dir().join("pki/ca.crt");
    let out = Command::new("python3").arg(script).args([&s.url(), ca.to_str().expect("path"), token, ns]).output().expect("python3");
    assert!(out.status.success(), "sa_token.py: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const ALICE_GROUPS: &str = r#"user "alice" (groups=["dev" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#;

fn escalation_is_refused_unless_escalate_or_bind_is_granted(backend: Backend) {
    let (s, _tokens) = server_with_alice(backend);
    // alice may manage Roles and RoleBindings in "team" and read ConfigMaps there; nothing else.
    s.ok_stdin(&["apply", "-f", "-"], Some(r#"
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: team}
stringData: {password: hunter2}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: rbac-manager, namespace: team}
rules:
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [create, get, list, update, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-manages, namespace: team}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: Role, name: rbac-manager, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: cluster-admin}
rules:
- apiGroups: ["*"]
  resources: ["*"]
  verbs: ["*"]
- nonResourceURLs: ["*"]
  verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: secret-reader}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list]
"#));
    let alice = "alice-token";
    let everything = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: everything, namespace: team}
rules:
- apiGroups: ["*"]
  resources: ["*"]
  verbs: ["*"]
"#;
    let admin_binding = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-admin, namespace: team}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: ClusterRole, name: cluster-admin, apiGroup: rbac.authorization.k8s.io}
"#;
    let secrets_binding = admin_binding.replace("alice-admin", "alice-secrets").replace("name: cluster-admin", "name: secret-reader");
    let add_secrets = r#"[{"op": "add", "path": "/rules/-", "value": {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}}]"#;

    // 1. A new Role granting more than alice holds.
    let err = fails_as(&s, alice, &["create", "-f", "-"], Some(everything));
    assert!(err.contains(&format!("roles.rbac.authorization.k8s.io \"everything\" is forbidden: {ALICE_GROUPS}")), "{err}");
    assert!(err.contains(r#"{APIGroups:["*"], Resources:["*"], Verbs:["*"]}"#), "{err}");
    // A Role within what she holds is fine...
    ok_as(&s, alice, &["create", "role", "cm-reader", "-n", "team", "--verb=get", "--resource=configmaps"], None);
    // 2. ... but patching it beyond that is not.
    let err = fails_as(&s, alice, &["patch", "role", "cm-reader", "-n", "team", "--type=json", "-p", add_secrets], None);
    assert!(err.contains(&format!("roles.rbac.authorization.k8s.io \"cm-reader\" is forbidden: {ALICE_GROUPS}")), "{err}");
    assert!(err.contains(r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#), "{err}");
    // 3. Binding cluster-admin to herself.
    let err = fails_as(&s, alice, &["create", "-f", "-"], Some(admin_binding));
    assert!(err.contains(&format!("rolebindings.rbac.authorization.k8s.io \"alice-admin\" is forbidden: {ALICE_GROUPS}")), "{err}");
    assert!(err.contains(r#"{APIGroups:["*"], Resources:["*"], Verbs:["*"]}"#) && err.contains(r#"{NonResourceURLs:["*"], Verbs:["*"]}"#), "{err}");
    // Nothing of it was stored, and the secret stays out of reach.
    let roles = s.ok(&["get", "roles,rolebindings", "-n", "team", "-o", "name"]);
    assert!(!roles.contains("everything") && !roles.contains("alice-admin"), "{roles}");
    let rules = s.ok(&["get", "role", "cm-reader", "-n", "team", "-o", "jsonpath={.rules}"]);
    assert!(!rules.contains("secrets"), "{rules}");
    let err = fails_as(&s, alice, &["get", "secret", "creds", "-n", "team"], None);
    assert!(err.contains(r#"secrets "creds" is forbidden: User "alice" cannot get resource "secrets" in API group "" in the namespace "team""#), "{err}");

    // With `escalate` on roles and `bind` on the cluster-admin ClusterRole (by name), each succeeds.
    s.ok_stdin(&["apply", "-f", "-"], Some(r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: escalator, namespace: team}
rules:
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles]
  verbs: [escalate]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  verbs: [bind]
  resourceNames: [cluster-admin]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-escalates, namespace: team}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: Role, name: escalator, apiGroup: rbac.authorization.k8s.io}
"#));
    ok_as(&s, alice, &["create", "-f", "-"], Some(everything));
    ok_as(&s, alice, &["patch", "role", "cm-reader", "-n", "team", "--type=json", "-p", add_secrets], None);
    // `bind` is for cluster-admin only: another ClusterRole she does not hold stays refused
    // (its rules are not covered by hers until she is bound to cluster-admin).
    let err = fails_as(&s, alice, &["create", "-f", "-"], Some(&secrets_binding));
    assert!(err.contains(&format!("rolebindings.rbac.authorization.k8s.io \"alice-secrets\" is forbidden: {ALICE_GROUPS}")), "{err}");
    ok_as(&s, alice, &["create", "-f", "-"], Some(admin_binding));
    // Now she holds cluster-admin in "team" (only there).
    assert!(ok_as(&s, alice, &["get", "secret", "creds", "-n", "team", "-o", "name"], None).contains("secret/creds"));
    fails_as(&s, alice, &["get", "secrets", "-n", "default"], None);
    // bob holds nothing: with no escalate and no bind he can do none of it.
    let err = fails_as(&s, "bob-token", &["create", "-f", "-"], Some(everything));
    assert!(err.contains(r#"User "bob" cannot create resource "roles""#), "{err}");
    // Server-side apply is checked the same way.
    let err = fails_as(&s, "bob-token", &["apply", "--server-side", "-f", "-"], Some(&everything.replace("name: everything", "name: applied")));
    assert!(err.contains(r#"User "bob" cannot patch resource "roles""#), "{err}");
    s.ok(&["create", "role", "role-writer", "-n", "team", "--verb=create,patch,get", "--resource=roles"]);
    s.ok(&["create", "rolebinding", "bob-writes", "-n", "team", "--role=role-writer", "--user=bob"]);
    let err = fails_as(&s, "bob-token", &["apply", "--server-side", "-f", "-"], Some(&everything.replace("name: everything", "name: applied")));
    assert!(err.contains(r#"roles.rbac.authorization.k8s.io "applied" is forbidden: user "bob" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#), "{err}");
    // An aggregationRule can gather anything: it needs full authority, even with no rules.
    s.ok(&["create", "clusterrole", "cr-writer", "--verb=create", "--resource=clusterroles"]);
    s.ok(&["create", "clusterrolebinding", "bob-writes-cr", "--clusterrole=cr-writer", "--user=bob"]);
    let aggregated = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: gatherer}\naggregationRule:\n  clusterRoleSelectors: [{matchLabels: {gather: me}}]\n";
    let err = fails_as(&s, "bob-token", &["create", "-f", "-"], Some(aggregated));
    assert!(err.contains(r#"clusterroles.rbac.authorization.k8s.io "gatherer" is forbidden: must have cluster-admin privileges to use the aggregationRule"#), "{err}");
    s.ok_stdin(&["create", "-f", "-"], Some(aggregated));
}

fn bootstrap_policy_is_reconciled_and_non_resource_urls_are_rbac(backend: Backend) {
    let (mut s, _tokens) = server_with_alice(backend);
    // The default ClusterRoles and bindings are there, as kube-apiserver makes them.
    let roles = s.ok(&["get", "clusterroles", "-o", "name"]);
    for want in ["cluster-admin", "admin", "edit", "view", "system:basic-user", "system:discovery", "system:public-info-viewer", "system:monitoring", "system:node", "system:kube-scheduler", "system:kube-controller-manager", "system:aggregate-to-view"] {
        assert!(roles.lines().any(|l| l == format!("clusterrole.rbac.authorization.k8s.io/{want}")), "{want} missing: {roles}");
    }
    assert_eq!(subjects(&s, "cluster-admin"), "system:masters");
    assert_eq!(subjects(&s, "system:discovery"), "system:authenticated");
    assert_eq!(subjects(&s, "system:basic-user"), "system:authenticated");
    assert_eq!(subjects(&s, "system:public-info-viewer"), "system:authenticated system:unauthenticated");
    assert_eq!(subjects(&s, "system:monitoring"), "system:monitoring");
    assert_eq!(subjects(&s, "system:node"), "", "nodes are the Node authorizer's, as upstream");
    assert_eq!(subjects(&s, "system:kube-scheduler"), "system:kube-scheduler");
    // view, edit and admin are aggregated from the aggregate-to-* roles by the server.
    assert!(eventually(Duration::from_secs(20), || rules_of(&s, "view").contains("configmaps")), "view: {}", rules_of(&s, "view"));
    assert!(eventually(Duration::from_secs(20), || rules_of(&s, "admin").contains("rolebindings")), "admin: {}", rules_of(&s, "admin"));
    assert!(!rules_of(&s, "view").contains("secrets") && rules_of(&s, "edit").contains("secrets"));
    assert_eq!(s.ok(&["get", "clusterrole", "view", "-o", "jsonpath={.metadata.labels}"]).contains("aggregate-to-edit"), true);

    // A user bound to `view` in a namespace reads there but cannot write, nor read Secrets.
    s.ok(&["create", "namespace", "team"]);
    s.ok(&["create", "configmap", "settings", "-n", "team", "--from-literal=a=1"]);
    s.ok(&["create", "rolebinding", "alice-views", "-n", "team", "--clusterrole=view", "--user=alice"]);
    let alice = "alice-token";
    assert!(ok_as(&s, alice, &["get", "configmaps", "-n", "team", "-o", "name"], None).contains("configmap/settings"));
    let err = fails_as(&s, alice, &["create", "configmap", "mine", "-n", "team"], None);
    assert!(err.contains(r#"configmaps is forbidden: User "alice" cannot create resource "configmaps" in API group "" in the namespace "team""#), "{err}");
    let err = fails_as(&s, alice, &["delete", "configmap", "settings", "-n", "team"], None);
    assert!(err.contains("forbidden"), "{err}");
    fails_as(&s, alice, &["get", "secrets", "-n", "team"], None);
    fails_as(&s, alice, &["get", "configmaps", "-n", "default"], None);
    // A new aggregate-to-view role extends `view` at once.
    s.ok_stdin(&["apply", "-f", "-"], Some(r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: view-leases
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list]
"#));
    assert!(eventually(Duration::from_secs(20), || kubectl_as(&s, alice, &["get", "leases", "-n", "team"], None).status.success()), "view aggregates view-leases");

    // Non-resource URLs are RBAC: anonymous may read /version and the health checks
    // (system:public-info-viewer), not discovery.
    for path in ["/version", "/healthz", "/livez", "/readyz"] {
        let (code, body) = s.curl("GET", path, Auth::Anonymous, None, None);
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (code, body) = s.curl("GET", "/api", Auth::Anonymous, None, None);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains(r#"forbidden: User \"system:anonymous\" cannot get path \"/api\""#), "{body}");
    let (code, _) = s.curl("GET", "/openapi/v2", Auth::Anonymous, None, None);
    assert_eq!(code, 403);
    // Authenticated users have discovery (system:discovery); other paths are not theirs.
    let (code, _) = s.curl("GET", "/apis", Auth::Token(alice), None, None);
    assert_eq!(code, 200);
    let (code, body) = s.curl("GET", "/no-such-path", Auth::Token(alice), None, None);
    assert_eq!(code, 403, "{body}");
    let (code, _) = s.curl("GET", "/no-such-path", Auth::Admin, None, None);
    assert_eq!(code, 404);

    // Reconciled at every start: user additions stay, missing defaults come back, and
    // autoupdate=false is respected.
    s.ok(&["label", "clusterrole", "system:basic-user", "mine=yes"]);
    s.ok(&["patch", "clusterrole", "system:basic-user", "--type=json", "-p", r#"[{"op": "add", "path": "/rules/-", "value": {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]}}]"#]);
    s.ok(&["patch", "clusterrole", "system:monitoring", "--type=json", "-p", r#"[{"op": "replace", "path": "/rules", "value": []}]"#]);
    s.ok(&["annotate", "--overwrite", "clusterrole", "system:discovery", "rbac.authorization.kubernetes.io/autoupdate=false"]);
    s.ok(&["patch", "clusterrole", "system:discovery", "--type=json", "-p", r#"[{"op": "replace", "path": "/rules", "value": []}]"#]);
    s.ok(&["delete", "clusterrole", "system:public-info-viewer"]);
    s.ok(&["delete", "clusterrolebinding", "system:basic-user"]);
    s.restart(false);
    let basic = rules_of(&s, "system:basic-user");
    assert!(basic.contains("namespaces") && basic.contains("selfsubjectaccessreviews"), "{basic}");
    assert!(s.ok(&["get", "clusterrole", "system:basic-user", "--show-labels"]).contains("mine=yes"));
    assert!(rules_of(&s, "system:monitoring").contains("/metrics"), "missing rules are added back");
    assert_eq!(rules_of(&s, "system:discovery"), "[]", "autoupdate=false is left alone");
    assert!(rules_of(&s, "system:public-info-viewer").contains("/version"));
    assert_eq!(subjects(&s, "system:basic-user"), "system:authenticated");
    let (code, _) = s.curl("GET", "/version", Auth::Anonymous, None, None);
    assert_eq!(code, 200);
}

fn subjects(s: &ApiServer, binding: &str) -> String {
    s.ok(&["get", "clusterrolebinding", binding, "-o", "jsonpath={.subjects[*].name}"])
}

fn rules_of(s: &ApiServer, role: &str) -> String {
    s.ok(&["get", "clusterrole", role, "-o", "jsonpath={.rules}"])
}

fn invalid_credentials_are_401_on_every_path(backend: Backend) {
    let (s, _tokens) = server_with_alice(backend);
    for path in ["/version", "/healthz", "/api", "/apis", "/api/v1/namespaces", "/openapi/v2"] {
        let (code, body) = s.curl("GET", path, Auth::Token("made-up"), None, None);
        assert_eq!(code, 401, "{path}: {body}");
        assert!(body.contains(r#""reason":"Unauthorized""#), "{body}");
    }
    let (code, _) = s.curl("GET", "/version", Auth::Token("alice-token"), None, None);
    assert_eq!(code, 200);
    let (code, _) = s.curl("GET", "/version", Auth::Anonymous, None, None);
    assert_eq!(code, 200);
}

fn can_i_and_whoami_with_kubectl(backend: Backend) {
    let (s, _tokens) = server_with_alice(backend);
    s.ok(&["create", "namespace", "team"]);
    s.ok(&["create", "rolebinding", "alice-views", "-n", "team", "--clusterrole=view", "--user=alice"]);
    let alice = "alice-token";
    let can_i = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let out = kubectl_as(&s, alice, &all, None);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    assert_eq!(can_i(&["get", "configmaps", "-n", "team"]), (true, "yes".to_string()));
    assert_eq!(can_i(&["list", "pods", "-n", "team"]), (true, "yes".to_string()));
    assert_eq!(can_i(&["create", "configmaps", "-n", "team"]), (false, "no".to_string()));
    assert_eq!(can_i(&["get", "secrets", "-n", "team"]), (false, "no".to_string()));
    assert_eq!(can_i(&["get", "configmaps", "-n", "default"]), (false, "no".to_string()));
    assert_eq!(can_i(&["get", "/version"]), (true, "yes".to_string()));
    assert_eq!(can_i(&["get", "/metrics"]), (false, "no".to_string()));
    // The admin (system:masters) may do anything.
    assert_eq!(s.ok(&["auth", "can-i", "delete", "nodes"]).trim(), "yes");
    assert_eq!(s.ok(&["auth", "can-i", "*", "*"]).trim(), "yes");
    // --list: what alice may do in team.
    let list = ok_as(&s, alice, &["auth", "can-i", "--list", "-n", "team"], None);
    let line = |resource: &str| list.lines().find(|l| l.split_whitespace().next() == Some(resource)).unwrap_or_default().to_string();
    assert!(line("configmaps").contains("[get list watch]"), "{list}");
    assert!(line("selfsubjectaccessreviews.authorization.k8s.io").contains("[create]"), "{list}");
    assert!(line("secrets").is_empty(), "{list}");
    assert!(list.contains("/version"), "{list}");
    // SubjectAccessReview, as the admin, about alice.
    let sar = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"alice","groups":["dev"],"resourceAttributes":{"namespace":"team","verb":"list","resource":"configmaps"}}}"#;
    let (code, body) = s.curl("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", Auth::Admin, Some("application/json"), Some(sar.as_bytes()));
    assert_eq!(code, 201, "{body}");
    assert!(body.contains(r#""allowed":true"#), "{body}");
    let (code, body) = s.curl("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", Auth::Admin, Some("application/json"), Some(sar.replace("list", "delete").as_bytes()));
    assert_eq!(code, 201, "{body}");
    assert!(body.contains(r#""allowed":false"#), "{body}");
    // ... which alice herself may not ask.
    let (code, _) = s.curl("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", Auth::Token(alice), Some("application/json"), Some(sar.as_bytes()));
    assert_eq!(code, 403);
    // The review kinds are in discovery (create only).
    let kinds = ok_as(&s, alice, &["api-resources", "--verbs=create", "-o", "name"], None);
    for want in ["selfsubjectaccessreviews.authorization.k8s.io", "localsubjectaccessreviews.authorization.k8s.io", "selfsubjectreviews.authentication.k8s.io", "tokenreviews.authentication.k8s.io"] {
        assert!(kinds.lines().any(|l| l == want), "{want}: {kinds}");
    }
    let out = kubectl_as(&s, alice, &["auth", "can-i", "create", "selfsubjectaccessreviews"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("doesn't have a resource type"), "{}", String::from_utf8_lossy(&out.stderr));
    // Impersonation (`--as`): the admin may; alice, who may not impersonate, is refused.
    assert_eq!(s.ok(&["auth", "can-i", "list", "configmaps", "-n", "team", "--as", "alice"]).trim(), "yes");
    let out = s.kubectl(&["auth", "can-i", "delete", "configmaps", "-n", "team", "--as", "alice"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    s.ok(&["get", "configmaps", "-n", "team", "--as", "alice", "--as-group", "dev"]);
    let err = s.fails(&["get", "configmaps", "-n", "default", "--as", "alice"], None);
    assert!(err.contains(r#"User "alice" cannot list resource "configmaps""#), "{err}");
    let err = fails_as(&s, alice, &["get", "configmaps", "-n", "team", "--as", "bob"], None);
    assert!(err.contains(r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#), "{err}");
    let who = s.ok(&["auth", "whoami", "--as", "system:serviceaccount:team:builder", "-o", "jsonpath={.status.userInfo.groups}"]);
    assert_eq!(who, r#"["system:serviceaccounts","system:serviceaccounts:team","system:authenticated"]"#);
    // whoami.
    let who = ok_as(&s, alice, &["auth", "whoami"], None);
    assert!(who.contains("alice") && who.contains("[dev system:authenticated]") && who.contains("1001"), "{who}");
    let who = s.ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"]);
    assert_eq!(who, r#"admin ["system:masters","system:authenticated"]"#);
}

fn service_account_tokens(backend: Backend) {
    let (s, _tokens) = server_with_alice(backend);
    let setup = |srv: &ApiServer| {
        srv.ok(&["create", "namespace", "team"]);
        srv.ok(&["create", "serviceaccount", "builder", "-n", "team"]);
        srv.ok(&["create", "rolebinding", "builder-views", "-n", "team", "--clusterrole=view", "--serviceaccount=team:builder"]);
        srv.ok(&["create", "configmap", "settings", "-n", "team"]);
    };
    setup(&s);
    let token = s.ok(&["create", "token", "builder", "-n", "team"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    // It authenticates as the ServiceAccount, with its groups, and RBAC applies.
    assert!(ok_as(&s, &token, &["get", "configmaps", "-n", "team", "-o", "name"], None).contains("configmap/settings"));
    let who = ok_as(&s, &token, &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"], None);
    assert_eq!(who, r#"system:serviceaccount:team:builder ["system:serviceaccounts","system:serviceaccounts:team","system:authenticated"]"#);
    fails_as(&s, &token, &["get", "secrets", "-n", "team"], None);
    // TokenReview answers for it (and for nonsense).
    let review = |t: &str| {
        let body = format!(r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{t}"}}}}"#);
        let (code, out) = s.curl("POST", "/apis/authentication.k8s.io/v1/tokenreviews", Auth::Admin, Some("application/json"), Some(body.as_bytes()));
        assert_eq!(code, 201, "{out}");
        serde_json::from_str::<serde_json::Value>(&out).expect("json")
    };
    let r = review(&token);
    assert_eq!(r["status"]["authenticated"], true, "{r}");
    assert_eq!(r["status"]["user"]["username"], "system:serviceaccount:team:builder");
    assert_eq!(r["status"]["audiences"][0], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(review("made-up")["status"]["authenticated"], false);
    // The Python client authenticates with it too.
    assert_eq!(python_with_token(&s, &token, "team").trim(), "settings");
    // Upstream's minimum lifetime.
    let err = s.fails(&["create", "token", "builder", "-n", "team", "--duration=1m"], None);
    assert!(err.contains("spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"), "{err}");
    // Bound to a Pod: valid while that Pod exists, and it says which Pod.
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: v1\nkind: Pod\nmetadata: {name: worker, namespace: team}\nspec:\n  serviceAccountName: builder\n  containers: [{name: c, image: busybox}]\n"));
    let pod_bound = s.ok(&["create", "token", "builder", "-n", "team", "--bound-object-kind=Pod", "--bound-object-name=worker"]).trim().to_string();
    let who = ok_as(&s, &pod_bound, &["auth", "whoami", "-o", "jsonpath={.status.userInfo.extra.authentication\\.kubernetes\\.io/pod-name}"], None);
    assert_eq!(who, r#"["worker"]"#);
    s.ok(&["create", "serviceaccount", "other", "-n", "team"]);
    let err = s.fails(&["create", "token", "other", "-n", "team", "--bound-object-kind=Pod", "--bound-object-name=worker"], None);
    assert!(err.contains(r#"cannot bind token for serviceaccount "other" to pod running with different serviceaccount name."#), "{err}");
    s.ok(&["delete", "pod", "worker", "-n", "team", "--wait=false"]);
    assert!(eventually(Duration::from_secs(20), || s.curl("GET", "/api/v1/namespaces/team/configmaps", Auth::Token(&pod_bound), None, None).0 == 401));
    // Bound to a Secret: valid while that Secret exists.
    s.ok(&["create", "secret", "generic", "anchor", "-n", "team"]);
    let bound = s.ok(&["create", "token", "builder", "-n", "team", "--bound-object-kind=Secret", "--bound-object-name=anchor"]).trim().to_string();
    assert!(ok_as(&s, &bound, &["get", "configmaps", "-n", "team"], None).contains("settings"));
    s.ok(&["delete", "secret", "anchor", "-n", "team"]);
    let err = fails_as(&s, &bound, &["get", "configmaps", "-n", "team"], None);
    assert!(err.contains("Unauthorized"), "{err}");
    // Deleting the ServiceAccount ends every token of it, even if one of the same name returns.
    s.ok(&["delete", "serviceaccount", "builder", "-n", "team"]);
    let (code, _) = s.curl("GET", "/api/v1/namespaces/team/configmaps", Auth::Token(&token), None, None);
    assert_eq!(code, 401);
    s.ok(&["create", "serviceaccount", "builder", "-n", "team"]);
    let (code, _) = s.curl("GET", "/api/v1/namespaces/team/configmaps", Auth::Token(&token), None, None);
    assert_eq!(code, 401);
    assert_eq!(review(&token)["status"]["authenticated"], false);
    // Expiry (a server whose minimum lifetime is lowered for this test).
    let (mut short, _t2) = server_with_alice_and(backend, &["--test-only-service-account-min-token-seconds", "1"]);
    setup(&short);
    let brief = short.ok(&["create", "token", "builder", "-n", "team", "--duration=3s"]).trim().to_string();
    let (code, _) = short.curl("GET", "/api/v1/namespaces/team/configmaps", Auth::Token(&brief), None, None);
    assert_eq!(code, 200);
    assert!(eventually(Duration::from_secs(20), || short.curl("GET", "/api/v1/namespaces/team/configmaps", Auth::Token(&brief), None, None).0 == 401));
    // The signing key is the server's own, kept (0600) across restarts.
    let key = short.data_dir().join("pki/sa.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).expect("sa.key").permissions().mode() & 0o777, 0o600);
    let lasting = short.ok(&["create", "token", "builder", "-n", "team"]).trim().to_string();
    short.restart(false);
    let (code, _) = short.curl("GET", "/api/v1/namespaces/team/configmaps", Auth::Token(&lasting), None, None);
    assert_eq!(code, 200);
}

/// [`server_with_alice`] with extra server flags.
fn server_with_alice_and(backend: Backend, extra: &[&str]) -> (ApiServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "alice-token,alice,1001,\"dev\"\n").expect("tokens");
    let mut args = vec!["--token-file", tokens.to_str().expect("path")];
    args.extend_from_slice(extra);
    (ApiServer::start_with(backend, &args), dir)
}
