//! Pods run by the node agent inside `strata server`, driven with the real kubectl, images from
//! a real local docker-registry: Running with an IP that answers from the node, init
//! containers, a shared emptyDir, configMap/secret volumes and env, the downward API, restarts,
//! and bad input turned into pod status.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::eventually;
use common::server::{ApiServer, Auth, Backend, Options};
use serde_json::Value;
use strata_testkit::{add_file, busybox_image, busybox_layer_tar_gz, image_from_layers, tar_gz, Registry};

struct Cluster {
    server: ApiServer,
    _registry: Registry,
    image: String,
}

fn cluster(extra: &[&str]) -> Cluster {
    cluster_opts(extra, false)
}

/// A cluster whose server also runs the controllers (ServiceAccounts, the root-CA publisher).
fn cluster_opts(extra: &[&str], controllers: bool) -> Cluster {
    cluster_env(extra, controllers, Vec::new())
}

/// A cluster whose server has `more_env` in its environment too.
fn cluster_env(extra: &[&str], controllers: bool, more_env: Vec<(String, String)>) -> Cluster {
    let registry = Registry::start();
    registry.push(&busybox_image(), "busybox", "latest");
    let image = format!("{}/busybox:latest", registry.addr);
    let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    extra.extend(["--node-name".to_string(), "node-a".to_string()]);
    // The VM acceleration probe is tests/nodes.rs' business; here it would only cost time. The
    // shared test disk may be fuller than the default unpack reserve (5%) allows.
    let mut env = vec![("STRATA_VM_ACCEL".to_string(), "tcg".to_string()), ("STRATA_UNPACK_RESERVE".to_string(), "512MiB".to_string())];
    env.extend(more_env);
    let server = ApiServer::start_opts(Backend::Embedded, Options { agent: true, controllers, extra, env, ..Options::default() });
    Cluster { server, _registry: registry, image }
}

impl Cluster {
    fn apply(&self, yaml: &str) {
        self.server.ok_stdin(&["apply", "-f", "-"], Some(yaml));
    }

    fn pod(&self, name: &str) -> Value {
        self.pod_in("default", name)
    }

    fn pod_in(&self, namespace: &str, name: &str) -> Value {
        let out = self.server.kubectl(&["get", "pod", "-n", namespace, name, "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Wait until `f(pod)` holds; panics with the pod and the server log otherwise.
    fn wait_pod(&self, name: &str, what: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
        self.wait_pod_in("default", name, what, timeout, f)
    }

    fn wait_pod_in(&self, namespace: &str, name: &str, what: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let ok = eventually(timeout, || {
            last = self.pod_in(namespace, name);
            f(&last)
        });
        if !ok {
            let events = self.server.kubectl(&["get", "events", "-A", "-o", "wide"]);
            panic!("pod {name}: {what} not reached: {last:#}\nevents: {}\nlog: {}", String::from_utf8_lossy(&events.stdout), self.server.log());
        }
        last
    }

    fn volume_dir(&self, pod: &Value, volume: &str) -> PathBuf {
        self.server.root().join("agent/pods").join(pod["metadata"]["uid"].as_str().expect("uid")).join("volumes").join(volume)
    }

    fn events_for(&self, name: &str) -> Vec<(String, String)> {
        let out = self.server.ok(&["get", "events", "--field-selector", &format!("involvedObject.name={name}"), "-o", "json"]);
        let v: Value = serde_json::from_str(&out).expect("events json");
        v["items"].as_array().cloned().unwrap_or_default().iter().map(|e| (e["reason"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string())).collect()
    }

    /// Pod containers the driver still has, from `strata ps -a`.
    fn driver_containers(&self) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(self.server.root()).args(["ps", "-a", "--no-trunc"]).output().expect("strata ps");
        String::from_utf8_lossy(&out.stdout).lines().skip(1).collect::<Vec<_>>().join("\n")
    }
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn condition(p: &Value, t: &str) -> String {
    p["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == t)).and_then(|c| c["status"].as_str()).unwrap_or("").to_string()
}

fn waiting_reason(p: &Value, container: usize) -> String {
    p["status"]["containerStatuses"][container]["state"]["waiting"]["reason"].as_str().unwrap_or("").to_string()
}

#[test]
fn pod_runs_and_its_ip_answers_from_the_node() {
    let c = cluster(&[]);
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {{app: web}}\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: httpd\n    image: {}\n    command: [httpd, -f, -p, '8080', -h, /var/www]\n",
        c.image
    ));
    let p = c.wait_pod("web", "Running and Ready", Duration::from_secs(90), |p| phase(p) == "Running" && condition(p, "Ready") == "True" && p["status"]["podIP"].is_string());
    let ip = p["status"]["podIP"].as_str().expect("podIP").to_string();
    assert_eq!(p["status"]["podIPs"][0]["ip"], ip.as_str());
    assert!(p["status"]["hostIP"].is_string(), "{p}");
    assert!(p["status"]["startTime"].is_string(), "{p}");
    assert_eq!(p["status"]["qosClass"], "BestEffort");
    for t in ["PodScheduled", "PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(condition(&p, t), "True", "{t}: {p}");
    }
    let cs = &p["status"]["containerStatuses"][0];
    assert_eq!(cs["name"], "httpd");
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["started"], true);
    assert_eq!(cs["restartCount"], 0);
    assert!(cs["containerID"].as_str().is_some_and(|id| id.starts_with("strata://") && id.len() == "strata://".len() + 64), "{cs}");
    assert!(cs["imageID"].as_str().is_some_and(|id| id.contains("sha256:")), "{cs}");
    assert!(cs["state"]["running"]["startedAt"].is_string(), "{cs}");

    // The pod's IP answers from the node.
    let mut body = String::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            let out = std::process::Command::new("curl").args(["-sS", "--max-time", "5", &format!("http://{ip}:8080/index.html")]).output().expect("curl");
            body = String::from_utf8_lossy(&out.stdout).into_owned();
            body.contains("hello from strata")
        }),
        "{ip}:8080 answered {body:?}"
    );
    // Status is written only when it changes: a running pod's object stays as it is.
    let rv = c.pod("web")["metadata"]["resourceVersion"].clone();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(c.pod("web")["metadata"]["resourceVersion"], rv, "the pod was rewritten without a change");
    let wide = c.server.ok(&["get", "pod", "web", "-o", "wide", "--no-headers"]);
    assert!(wide.contains("1/1") && wide.contains("Running") && wide.contains(&ip) && wide.contains("node-a"), "{wide}");
    let reasons: Vec<String> = c.events_for("web").into_iter().map(|(r, _)| r).collect();
    for want in ["Pulling", "Pulled", "Created", "Started"] {
        assert!(reasons.iter().any(|r| r == want), "no {want} event: {reasons:?}");
    }

    // Two containers of one pod talk over localhost.
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pair\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: server\n    image: {img}\n    command: [httpd, -f, -p, '8081', -h, /var/www]\n  - name: client\n    image: {img}\n    command: [sh, -c, 'until wget -qO- http://127.0.0.1:8081/index.html; do sleep 0.2; done; sleep 3600']\n",
        img = c.image
    ));
    c.wait_pod("pair", "Running", Duration::from_secs(90), |p| phase(p) == "Running");
    let mut got = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            got = String::from_utf8_lossy(&c.server.kubectl(&["logs", "pair", "-c", "client"]).stdout).into_owned();
            got.contains("hello from strata")
        }),
        "the client container's log: {got:?}"
    );
    // The Python client: create, a watch of the phase changes, the log.
    let out = c.server.python("pod_watch.py", &["default", "watched", "node-a", &c.image]);
    assert!(out.contains("phases=Pending,Running,Succeeded\n"), "{out}");
    assert!(out.contains("log=from-python-pod"), "{out}");
    c.server.ok(&["delete", "pod", "pair", "watched", "--wait=false"]);

    // Deleted: the agent stops and removes everything of it.
    let id = cs["containerID"].as_str().expect("id").trim_start_matches("strata://").to_string();
    assert!(c.driver_containers().contains(&id));
    c.server.ok(&["delete", "pod", "web", "--wait=false"]);
    assert!(eventually(Duration::from_secs(60), || c.driver_containers().is_empty()), "containers left: {}", c.driver_containers());
    assert!(eventually(Duration::from_secs(10), || !c.server.root().join("agent/pods").join(p["metadata"]["uid"].as_str().expect("uid")).exists()));
}

#[test]
fn init_containers_volumes_env_and_the_downward_api() {
    let c = cluster(&[]);
    c.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  greeting: hello\n  file.txt: from-configmap\n  data-1: value-1\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: sec\nstringData:\n  password: s3cret\n",
    );
    let script = "cat /work/log > /work/main-saw; env > /work/env; cat /proc/$$$$/environ > /work/environ; cat /etc/cfg/file.txt > /work/cfg-copy; cat /etc/sec/password > /work/sec-copy; \
                  cat /etc/podinfo/labels > /work/labels-copy; cat /etc/podinfo/name > /work/name-copy; stat -c %a /etc/cfg/..data/greeting > /work/cfg-mode; sleep 3600";
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: full
  labels: {{tier: test}}
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: init1
    image: {img}
    command: [sh, -c, "echo init1 >> /work/log"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  - name: init2
    image: {img}
    command: [sh, -c, "echo init2 >> /work/log"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: main
    image: {img}
    command: [sh, -c, "{script}"]
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: cfg, key: greeting}}}}}}
    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: sec, key: password}}}}}}
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: MEM, valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}}}
    - {{name: EXPANDED, value: "$(GREETING)-x"}}
    envFrom:
    - {{prefix: CFG_, configMapRef: {{name: cfg}}}}
    resources: {{limits: {{memory: 64Mi}}}}
    volumeMounts:
    - {{name: work, mountPath: /work}}
    - {{name: cfg, mountPath: /etc/cfg}}
    - {{name: sec, mountPath: /etc/sec, readOnly: true}}
    - {{name: podinfo, mountPath: /etc/podinfo}}
  - name: side
    image: {img}
    command: [sh, -c, "while [ ! -s /work/env ]; do sleep 0.2; done; cat /work/log > /work/side-saw; sleep 3600"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  volumes:
  - {{name: work, emptyDir: {{}}}}
  - {{name: cfg, configMap: {{name: cfg, defaultMode: 0600}}}}
  - {{name: sec, secret: {{secretName: sec}}}}
  - name: podinfo
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
"#,
        img = c.image
    ));
    let p = c.wait_pod("full", "Running with both containers ready", Duration::from_secs(120), |p| phase(p) == "Running" && condition(p, "Ready") == "True");
    assert_eq!(p["status"]["qosClass"], "Burstable");
    assert_eq!(condition(&p, "Initialized"), "True");
    for (i, name) in ["init1", "init2"].iter().enumerate() {
        let s = &p["status"]["initContainerStatuses"][i];
        assert_eq!(s["name"], *name);
        assert_eq!(s["state"]["terminated"]["exitCode"], 0, "{s}");
        assert_eq!(s["state"]["terminated"]["reason"], "Completed", "{s}");
    }
    let work = c.volume_dir(&p, "work");
    let read = |f: &str| -> String {
        let path = work.join(f);
        assert!(eventually(Duration::from_secs(30), || path.exists()), "{} never written", path.display());
        std::thread::sleep(Duration::from_millis(300));
        std::fs::read_to_string(&path).unwrap_or_default()
    };
    assert_eq!(read("main-saw"), "init1\ninit2\n", "init containers ran once each, in order");
    assert_eq!(read("side-saw"), "init1\ninit2\n", "the second container sees the same emptyDir");
    let env = read("env");
    let ip = p["status"]["podIP"].as_str().expect("ip");
    for want in ["GREETING=hello", "PASSWORD=s3cret", "POD_NAME=full", &format!("POD_IP={ip}"), "NODE=node-a", "MEM=64", "EXPANDED=hello-x", "CFG_greeting=hello"] {
        assert!(env.lines().any(|l| l == want), "{want} missing from env:\n{env}");
    }
    // Keys that are not shell identifiers (upstream's ConfigMap/Secret "consumable via the
    // environment" specs use data-1) reach the container's environment as they are: read from
    // what the shell was started with, since busybox ash drops such names before its children.
    let environ = read("environ");
    assert!(environ.split('\0').any(|l| l == "CFG_data-1=value-1"), "CFG_data-1 missing from the container's environment: {environ:?}");
    assert_eq!(read("cfg-copy"), "from-configmap");
    assert_eq!(read("sec-copy"), "s3cret");
    assert_eq!(read("labels-copy"), "tier=\"test\"\n");
    assert_eq!(read("name-copy"), "full");
    assert_eq!(read("cfg-mode").trim(), "600", "defaultMode");

    // A ConfigMap change reaches the mounted files (through an atomic ..data swap).
    c.server.ok(&["patch", "configmap", "cfg", "-p", r#"{"data":{"file.txt":"changed"}}"#]);
    let cfg = c.volume_dir(&p, "cfg");
    assert!(
        eventually(Duration::from_secs(60), || std::fs::read_to_string(cfg.join("file.txt")).is_ok_and(|s| s == "changed")),
        "configmap update not projected"
    );
    c.server.ok(&["delete", "pod", "full", "--wait=false"]);
    assert!(eventually(Duration::from_secs(60), || c.driver_containers().is_empty()), "containers left: {}", c.driver_containers());
    let dir = c.server.root().join("agent/pods").join(p["metadata"]["uid"].as_str().expect("uid"));
    assert!(eventually(Duration::from_secs(20), || !dir.exists()), "volumes left: {}", dir.display());
}

/// A setuid-root program of the image runs as root for a non-root user unless the container
/// sets `allowPrivilegeEscalation: false`: kubelet sets no_new_privs only then (its
/// `AddNoNewPrivileges`), as upstream's sig-node Security Context specs check with the
/// nonewprivs image (the unset case failed: strata set no_new_privs for every pod container).
#[test]
fn setuid_programs_escalate_unless_allow_privilege_escalation_is_false() {
    let c = cluster(&[]);
    let work = tempfile::tempdir().expect("tmp");
    let euid = common::compile_c(work.path(), "euid", common::EUID_C);
    let extra = tar_gz(|b| add_file(b, "euid", 0o4755, &euid));
    c._registry.push(&image_from_layers(vec![busybox_layer_tar_gz(), extra], &["/euid"]), "setuid", "latest");
    let image = c.image.replace("busybox:latest", "setuid:latest");
    let cases = [("unset", "", "euid=0"), ("allowed", "allowPrivilegeEscalation: true, ", "euid=0"), ("denied", "allowPrivilegeEscalation: false, ", "euid=1000")];
    for (name, ape, _) in cases {
        c.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: node-a\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {image}\n    securityContext: {{{ape}runAsUser: 1000}}\n"
        ));
    }
    for (name, _, want) in cases {
        c.wait_pod(name, "Succeeded", Duration::from_secs(120), |p| phase(p) == "Succeeded");
        assert_eq!(c.server.ok(&["logs", name]).trim(), want, "pod {name}");
    }
}

/// A Job past its activeDeadlineSeconds gets FailureTarget at once but Failed only once its pods
/// have terminated (upstream's Job controller since 1.31; sig-apps' "should fail when exceeds
/// active deadline" reads active, ready and terminating 0 with Failed): here the pods ignore
/// SIGTERM and take their 4 s grace period to go.
#[test]
fn a_job_past_its_deadline_is_failed_only_once_its_pods_have_terminated() {
    let c = cluster_opts(&[], true);
    c.apply(&format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: deadline
spec:
  activeDeadlineSeconds: 5
  parallelism: 2
  completions: 4
  template:
    spec:
      nodeName: node-a
      restartPolicy: Never
      terminationGracePeriodSeconds: 4
      containers:
      - name: c
        image: {img}
        command: [sh, -c, 'trap "" TERM; while true; do sleep 1; done']
"#,
        img = c.image
    ));
    let out = c.server.ok(&["wait", "--for=condition=failed", "job/deadline", "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");
    let pods: Value = serde_json::from_str(&c.server.ok(&["get", "pods", "-l", "job-name=deadline", "-o", "json"])).expect("pods json");
    let running: Vec<String> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed"))
        .map(|p| format!("{} {}", p["metadata"]["name"], phase(p)))
        .collect();
    assert!(running.is_empty(), "Failed while pods still run: {running:?}");
    let job: Value = serde_json::from_str(&c.server.ok(&["get", "job", "deadline", "-o", "json"])).expect("job json");
    let st = &job["status"];
    assert_eq!((st["active"].clone(), st["ready"].clone(), st["terminating"].clone()), (0.into(), 0.into(), 0.into()), "{st}");
    let conds = st["conditions"].as_array().cloned().unwrap_or_default();
    for t in ["FailureTarget", "Failed"] {
        assert!(conds.iter().any(|c| c["type"] == t && c["status"] == "True" && c["reason"] == "DeadlineExceeded"), "{t} DeadlineExceeded missing: {st}");
    }
}

/// A Job whose pods restart in place (restartPolicy OnFailure) fails once their restarts reach
/// backoffLimit (upstream's pastBackoffLimitOnFailure), instead of crash-looping forever
/// (sig-apps' CronJob "should delete failed finished jobs with limit of one job" waits for it).
#[test]
fn a_job_restarting_on_failure_fails_at_its_backoff_limit() {
    let c = cluster_opts(&[], true);
    c.apply(&format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: crashing\nspec:\n  backoffLimit: 1\n  template:\n    spec:\n      nodeName: node-a\n      restartPolicy: OnFailure\n      terminationGracePeriodSeconds: 1\n      containers:\n      - {{name: c, image: {img}, command: [sh, -c, 'exit 1']}}\n",
        img = c.image
    ));
    let out = c.server.ok(&["wait", "--for=condition=failed", "job/crashing", "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");
    let job: Value = serde_json::from_str(&c.server.ok(&["get", "job", "crashing", "-o", "json"])).expect("job json");
    let conds = job["status"]["conditions"].as_array().cloned().unwrap_or_default();
    assert!(conds.iter().any(|c| c["type"] == "Failed" && c["reason"] == "BackoffLimitExceeded"), "{}", job["status"]);
}

/// A Job whose `spec.managedBy` names another controller is left to it (upstream's JobManagedBy,
/// on by default in 1.32): no pods and no status from the built-in controller (sig-apps' "Job
/// should allow to delegate reconciliation to external controller").
#[test]
fn a_job_managed_by_another_controller_is_left_alone() {
    let c = cluster_opts(&[], true);
    let job = |name: &str, managed: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  {managed}completions: 1\n  template:\n    spec:\n      nodeName: node-a\n      restartPolicy: Never\n      containers:\n      - {{name: c, image: {img}, command: [sh, -c, 'echo done']}}\n",
            img = c.image
        )
    };
    c.apply(&job("elsewhere", "managedBy: example.com/custom-job-controller\n  "));
    // A Job of the built-in controller, created after, completes: the other was seen and skipped.
    c.apply(&job("here", ""));
    let out = c.server.ok(&["wait", "--for=condition=complete", "job/here", "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");
    let other: Value = serde_json::from_str(&c.server.ok(&["get", "job", "elsewhere", "-o", "json"])).expect("job json");
    assert!(other["status"].as_object().is_none_or(|s| s.is_empty()), "status written by the built-in controller: {}", other["status"]);
    let pods = c.server.ok(&["get", "pods", "-l", "job-name=elsewhere", "-o", "name"]);
    assert!(pods.trim().is_empty(), "pods made for a Job another controller manages: {pods}");
}

/// A hostPath volume without a type whose directory does not exist gets it created (as the CRI
/// runtimes under kubelet do: containerd and CRI-O make a missing bind source a directory); the
/// pod runs instead of failing CreateContainerError (sig-apps' StatefulSet specs mount
/// /tmp/home this way).
#[test]
fn a_host_path_volume_without_a_type_creates_its_missing_directory() {
    let c = cluster(&[]);
    let host = tempfile::tempdir().expect("tmp");
    let dir = host.path().join("made/by/the/node");
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hp\nspec:\n  nodeName: node-a\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {img}\n    command: [sh, -c, 'echo hi > /home/x']\n    volumeMounts: [{{name: home, mountPath: /home}}]\n  volumes:\n  - {{name: home, hostPath: {{path: {dir}}}}}\n",
        img = c.image,
        dir = dir.display()
    ));
    c.wait_pod("hp", "Succeeded", Duration::from_secs(120), |p| phase(p) == "Succeeded");
    assert_eq!(std::fs::read_to_string(dir.join("x")).unwrap_or_default(), "hi\n", "the container wrote into the created directory");
}

#[test]
fn exits_restart_with_back_off_and_bad_input_becomes_status() {
    let c = cluster(&["--max-pods", "4"]);
    let pod = |name: &str, image: &str, extra: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: {image}\n{extra}")
    };
    // Exits with 3 each time: restarted, restartCount grows, last state keeps the code and the
    // termination message, and the waits grow (CrashLoopBackOff).
    c.apply(&pod("crash", &c.image, "    command: [sh, -c, 'echo bye > /dev/termination-log; exit 3']\n"));
    // A missing ConfigMap: CreateContainerConfigError.
    c.apply(&pod("nocfg", &c.image, "    command: [sleep, '3600']\n    env: [{name: X, valueFrom: {configMapKeyRef: {name: missing, key: k}}}]\n"));
    // An image the registry does not have: ErrImagePull, then ImagePullBackOff.
    let missing = c.image.replace("busybox:latest", "nothere:v1");
    c.apply(&pod("noimage", &missing, "    command: [sleep, '3600']\n"));
    // Over its memory limit: OOM-killed (137), and lastState says OOMKilled.
    let hog = "    command: [sh, -c, 'x=$(head -c 100000000 /dev/zero | tr \"\\\\0\" a); echo ${#x}']\n    resources: {limits: {memory: 16Mi}}\n";
    c.apply(&pod("hog", &c.image, hog));

    let p = c.wait_pod("crash", "a restart with the exit code in lastState", Duration::from_secs(90), |p| {
        p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1 && p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 3
    });
    let last = &p["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["reason"], "Error", "{last}");
    assert_eq!(last["message"], "bye\n", "termination message: {last}");
    let p = c.wait_pod("hog", "an OOM kill in lastState", Duration::from_secs(90), |p| !p["status"]["containerStatuses"][0]["lastState"]["terminated"].is_null());
    let last = &p["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!((last["reason"].as_str(), last["exitCode"].as_i64()), (Some("OOMKilled"), Some(137)), "{last}");
    let p = c.wait_pod("crash", "CrashLoopBackOff", Duration::from_secs(90), |p| waiting_reason(p, 0) == "CrashLoopBackOff");
    assert_eq!(phase(&p), "Running");
    let backing_off = p["status"]["containerStatuses"][0].clone();
    let p = c.wait_pod("nocfg", "CreateContainerConfigError", Duration::from_secs(60), |p| waiting_reason(p, 0) == "CreateContainerConfigError");
    assert_eq!(p["status"]["containerStatuses"][0]["state"]["waiting"]["message"], "configmap \"missing\" not found");
    assert_eq!(phase(&p), "Pending");
    c.wait_pod("noimage", "ErrImagePull", Duration::from_secs(60), |p| matches!(waiting_reason(p, 0).as_str(), "ErrImagePull" | "ImagePullBackOff"));
    c.wait_pod("noimage", "ImagePullBackOff", Duration::from_secs(60), |p| waiting_reason(p, 0) == "ImagePullBackOff");
    let reasons: Vec<String> = c.events_for("noimage").into_iter().map(|(r, _)| r).collect();
    assert!(reasons.iter().any(|r| r == "Failed") && reasons.iter().any(|r| r == "Pulling"), "{reasons:?}");
    assert!(c.events_for("crash").iter().any(|(r, _)| r == "BackOff"));

    // A fifth pod on a node for four: rejected as OutOfpods, for good.
    c.apply(&pod("toomany", &c.image, "    command: [sleep, '3600']\n"));
    let p = c.wait_pod("toomany", "OutOfpods", Duration::from_secs(60), |p| phase(p) == "Failed");
    assert_eq!(p["status"]["reason"], "OutOfpods");
    assert_eq!(p["status"]["message"], "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 4, capacity: 4", "{p}");

    // The next attempt waits out the back-off (at least 10 s after the last one ended).
    let rc = backing_off["restartCount"].as_i64().expect("restartCount");
    let p = c.wait_pod("crash", "the next restart", Duration::from_secs(120), |p| p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) > rc);
    let cs = &p["status"]["containerStatuses"][0];
    let t = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("no time in {cs}"))).expect("rfc3339");
    let started = if cs["state"]["running"].is_object() {
        t(&cs["state"]["running"]["startedAt"])
    } else if cs["state"]["terminated"].is_object() {
        t(&cs["state"]["terminated"]["startedAt"])
    } else {
        t(&cs["lastState"]["terminated"]["startedAt"])
    };
    let gap = started - t(&backing_off["lastState"]["terminated"]["finishedAt"]);
    assert!(gap.num_seconds() >= 9, "restart after {gap} (back-off 10 s): {backing_off} then {cs}");

    // `kubectl get pods` prints each pod's most telling reason in STATUS, as upstream's printer
    // does, and RESTARTS with the time since the last one.
    let printed = |name: &str| -> (String, String) {
        let out = c.server.ok(&["get", "pod", name, "--no-headers"]);
        let cells: Vec<&str> = out.split_whitespace().collect();
        assert!(cells.len() >= 5 && cells[0] == name, "kubectl get pod {name}: {out}");
        (cells[2].to_string(), cells[3..cells.len() - 1].join(" "))
    };
    assert_eq!(printed("nocfg").0, "CreateContainerConfigError");
    assert_eq!(printed("toomany"), ("OutOfpods".to_string(), "0".to_string()));
    let mut seen = Vec::new();
    let shown = eventually(Duration::from_secs(60), || {
        let (status, restarts) = printed("noimage");
        seen.push(status.clone());
        let (crash, crash_restarts) = printed("crash");
        seen.push(format!("{crash} {crash_restarts}"));
        let ago = crash_restarts.split_once(' ').map(|(n, ago)| n.parse::<u32>().is_ok_and(|n| n >= 1) && ago.starts_with('(') && ago.ends_with(" ago)"));
        status == "ImagePullBackOff" && restarts == "0" && crash == "CrashLoopBackOff" && ago == Some(true)
    });
    assert!(shown, "STATUS/RESTARTS printed: {seen:?}");

    // The agent survived all of it: the node is Ready and a good pod still runs... once a slot is free.
    c.server.ok(&["delete", "pod", "nocfg", "noimage", "toomany", "hog", "--wait=false"]);
    c.apply(&pod("fine", &c.image, "    command: [sleep, '3600']\n"));
    c.wait_pod("fine", "Running", Duration::from_secs(90), |p| phase(p) == "Running");
}

fn container_id(p: &Value, i: usize) -> String {
    p["status"]["containerStatuses"][i]["containerID"].as_str().unwrap_or("").trim_start_matches("strata://").to_string()
}

#[test]
fn kill_9_of_the_server_leaves_pods_running_and_a_new_one_adopts_them() {
    let mut c = cluster(&[]);
    let pod = |name: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: {}\n    command: [sleep, '3600']\n", c.image)
    };
    for name in ["kept", "doomed", "exiter"] {
        c.apply(&pod(name));
    }
    let mut before = std::collections::HashMap::new();
    for name in ["kept", "doomed", "exiter"] {
        let p = c.wait_pod(name, "Running", Duration::from_secs(90), |p| phase(p) == "Running" && !container_id(p, 0).is_empty());
        before.insert(name, p);
    }
    let kept_id = container_id(&before["kept"], 0);
    let doomed_id = container_id(&before["doomed"], 0);
    let exiter_id = container_id(&before["exiter"], 0);

    // kill -9 of the server and its agent: the containers keep running.
    c.server.stop(true);
    let root = c.server.root();
    let strata = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(&root).args(args).output().expect("strata");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let running = strata(&["ps", "--no-trunc"]);
    for id in [&kept_id, &doomed_id, &exiter_id] {
        assert!(running.contains(id.as_str()), "{id} stopped with the server: {running}");
    }
    // Meanwhile: one container dies, one pod is deleted (through a server without an agent).
    let pid = serde_json::from_str::<Value>(&strata(&["inspect", &exiter_id])).expect("inspect")[0]["pid"].as_i64().expect("pid");
    assert!(std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill").success());
    c.server.opts.agent = false;
    c.server.restart(false);
    c.server.ok(&["delete", "pod", "doomed", "--wait=false"]);
    c.server.stop(true);
    c.server.opts.agent = true;
    c.server.restart(false);

    // The new agent adopts what runs: same container, same restart count, no second copy.
    let exited = c.wait_pod("exiter", "the exit reported and the container restarted", Duration::from_secs(90), |p| {
        p["status"]["containerStatuses"][0]["restartCount"] == 1 && p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 137 && phase(p) == "Running"
    });
    assert_ne!(container_id(&exited, 0), exiter_id);
    assert!(eventually(Duration::from_secs(60), || !strata(&["ps", "-a", "--no-trunc"]).contains(&doomed_id)), "the deleted pod's container is still there");
    std::thread::sleep(Duration::from_secs(3));
    let kept = c.pod("kept");
    assert_eq!(container_id(&kept, 0), kept_id, "{kept}");
    assert_eq!(kept["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(phase(&kept), "Running");
    let all = strata(&["ps", "-a", "--no-trunc"]);
    let kept_rows = all.lines().filter(|l| l.contains("kept")).count();
    assert_eq!(kept_rows, 1, "one container for the kept pod: {all}");
}

#[test]
fn probes_decide_readiness_and_restart_unhealthy_containers() {
    let c = cluster(&[]);
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: probed
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {img}
    command: [sh, -c, "(sleep 12; echo ok > /var/www/ready.html) & exec httpd -f -p 8080 -h /var/www"]
    ports: [{{name: http, containerPort: 8080}}]
    startupProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1, failureThreshold: 30}}
    readinessProbe: {{httpGet: {{path: /ready.html, port: http}}, periodSeconds: 1, failureThreshold: 1}}
  - name: live
    image: {img}
    command: [sh, -c, "touch /tmp/healthy; sleep 4; rm /tmp/healthy; sleep 3600"]
    livenessProbe: {{exec: {{command: [cat, /tmp/healthy]}}, initialDelaySeconds: 1, periodSeconds: 1, failureThreshold: 2}}
"#,
        img = c.image
    ));
    // Started (startup probe passed) but not ready: the page the readiness probe asks for is
    // not there yet.
    let p = c.wait_pod("probed", "running, web started but unready", Duration::from_secs(90), |p| {
        let web = &p["status"]["containerStatuses"][0];
        phase(p) == "Running" && web["state"]["running"].is_object() && web["started"] == true && web["ready"] == false
    });
    assert_eq!(condition(&p, "Ready"), "False", "{p}");
    assert_eq!(condition(&p, "ContainersReady"), "False");
    let ready = p["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned()).expect("Ready");
    assert!(ready["message"].as_str().is_some_and(|m| m.contains("web")), "{ready}");
    // Once the page exists the pod becomes Ready.
    c.wait_pod("probed", "web ready", Duration::from_secs(60), |p| p["status"]["containerStatuses"][0]["ready"] == true && condition(p, "Ready") == "True");
    // The liveness probe fails once /tmp/healthy is gone: the container is killed and restarted.
    let p = c.wait_pod("probed", "live restarted", Duration::from_secs(90), |p| p["status"]["containerStatuses"][1]["restartCount"].as_i64().unwrap_or(0) >= 1);
    assert!(p["status"]["containerStatuses"][1]["lastState"]["terminated"].is_object(), "{p}");
    let events = c.events_for("probed");
    assert!(events.iter().any(|(r, m)| r == "Unhealthy" && m.starts_with("Liveness probe failed")), "{events:?}");
    assert!(events.iter().any(|(r, m)| r == "Unhealthy" && m.starts_with("Readiness probe failed: HTTP probe failed with statuscode: 404")), "{events:?}");
    assert!(events.iter().any(|(r, m)| r == "Killing" && m.contains("failed liveness probe")), "{events:?}");
}

/// Readiness gates (upstream's e2e "should support pod readiness gates"): the pod is Ready only
/// once every gate's condition, written by someone else through `pods/status`, is True; the
/// agent keeps those conditions and recomputes Ready when they change.
#[test]
fn readiness_gates_hold_ready_until_their_conditions_are_true() {
    let c = cluster(&[]);
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: gated
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 1
  readinessGates: [{{conditionType: example.com/lb}}, {{conditionType: example.com/dns}}]
  containers:
  - name: a
    image: {img}
    command: [sleep, "3600"]
"#,
        img = c.image
    ));
    let ready_of = |p: &Value| p["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned()).unwrap_or(Value::Null);
    let p = c.wait_pod("gated", "running with its containers ready", Duration::from_secs(90), |p| condition(p, "ContainersReady") == "True");
    let ready = ready_of(&p);
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("ReadinessGatesNotReady")), "{p}");
    assert_eq!(
        ready["message"].as_str(),
        Some("corresponding condition of pod readiness gate \"example.com/lb\" does not exist., corresponding condition of pod readiness gate \"example.com/dns\" does not exist."),
        "{ready}"
    );
    let wide = c.server.ok(&["get", "pod", "gated", "-o", "wide"]);
    assert!(wide.lines().nth(1).is_some_and(|l| l.trim_end().ends_with("0/2")), "READINESS GATES 0/2:\n{wide}");
    let set = |t: &str, status: &str| {
        let patch = format!(r#"{{"status":{{"conditions":[{{"type":"{t}","status":"{status}"}}]}}}}"#);
        c.server.ok(&["patch", "pod", "gated", "--subresource=status", "--type=strategic", "-p", &patch]);
    };
    set("example.com/lb", "True");
    let p = c.wait_pod("gated", "one gate left", Duration::from_secs(30), |p| ready_of(p)["message"].as_str().is_some_and(|m| !m.contains("example.com/lb")));
    assert_eq!(ready_of(&p)["status"], "False", "{p}");
    set("example.com/dns", "True");
    c.wait_pod("gated", "Ready once both gates are True", Duration::from_secs(30), |p| condition(p, "Ready") == "True");
    let wide = c.server.ok(&["get", "pod", "gated", "-o", "wide"]);
    assert!(wide.lines().nth(1).is_some_and(|l| l.trim_end().ends_with("2/2")), "READINESS GATES 2/2:\n{wide}");
    set("example.com/lb", "False");
    let p = c.wait_pod("gated", "unready again", Duration::from_secs(30), |p| condition(p, "Ready") == "False");
    assert_eq!(ready_of(&p)["message"], "the status of pod readiness gate \"example.com/lb\" is not \"True\", but False", "{p}");
    assert_eq!(condition(&p, "example.com/dns"), "True", "the other gate's condition is kept");
}

#[test]
fn deletion_runs_pre_stop_then_sigterm_then_sigkill_after_the_grace_period() {
    let c = cluster(&[]);
    let host = tempfile::Builder::new().prefix("strata-prestop-").tempdir_in("/var/tmp").expect("host dir");
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: graceful
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 6
  containers:
  - name: polite
    image: {img}
    command: [sh, -c, "trap 'echo term >> /host/log; exit 0' TERM; echo started >> /host/log; while true; do sleep 0.2; done"]
    lifecycle: {{preStop: {{exec: {{command: [sh, -c, "echo prestop >> /host/log"]}}}}}}
    volumeMounts: [{{name: host, mountPath: /host}}]
  - name: stubborn
    image: {img}
    command: [sleep, '3600']
  volumes:
  - {{name: host, hostPath: {{path: {dir}, type: Directory}}}}
"#,
        img = c.image,
        dir = host.path().display()
    ));
    c.wait_pod("graceful", "Running", Duration::from_secs(90), |p| phase(p) == "Running" && condition(p, "Ready") == "True");
    let log = host.path().join("log");
    assert!(eventually(Duration::from_secs(20), || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("started"))));
    let t0 = std::time::Instant::now();
    c.server.ok(&["delete", "pod", "graceful", "--wait=false"]);
    assert!(eventually(Duration::from_secs(60), || c.driver_containers().is_empty()), "containers left: {}", c.driver_containers());
    let took = t0.elapsed();
    // The hook ran before the signal; the container that ignores SIGTERM (sleep as pid 1) was
    // killed once the grace period ran out, not before.
    assert_eq!(std::fs::read_to_string(&log).expect("log"), "started\nprestop\nterm\n");
    assert!(took >= Duration::from_secs(5), "stopped after {took:?}, before the 6 s grace period");
    assert!(took < Duration::from_secs(40), "stopping took {took:?}");
    let events = c.events_for("graceful");
    assert!(events.iter().any(|(r, m)| r == "Killing" && m == "Stopping container stubborn"), "{events:?}");
}

/// The pod's terminated state of container `i`: (exitCode, reason).
fn terminated_state(p: &Value, i: usize) -> (i64, String) {
    let t = &p["status"]["containerStatuses"][i]["state"]["terminated"];
    (t["exitCode"].as_i64().unwrap_or(-1), t["reason"].as_str().unwrap_or("").to_string())
}

fn condition_reason(p: &Value, t: &str) -> String {
    p["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == t)).and_then(|c| c["reason"].as_str()).unwrap_or("").to_string()
}

/// Evict `name` through the `pods/eviction` subresource (as `kubectl drain` does).
fn evict(c: &Cluster, ns: &str, name: &str) {
    let body = format!(r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{name}","namespace":"{ns}"}}}}"#);
    c.server.ok_stdin(&["create", "--raw", &format!("/api/v1/namespaces/{ns}/pods/{name}/eviction"), "-f", "-"], Some(&body));
}

/// A pod deleted with a grace period reports its terminal phase and its containers' exits before
/// its object goes (kubelet v1.27+): Succeeded when every container exited 0 (whatever the restart
/// policy), Failed when one had to be killed; an evicted pod keeps the `DisruptionTarget`
/// condition the eviction added. A finalizer holds each object after the node's final delete, so
/// the test reads the last status the node wrote.
#[test]
fn a_deleted_pod_reports_its_terminal_phase_before_it_goes() {
    let c = cluster(&[]);
    let pods = [
        ("term-ok", "trap 'exit 0' TERM; while true; do sleep 0.2; done"),
        ("term-killed", "exec sleep 3600"),
        ("evicted", "exec sleep 3600"),
    ];
    for (name, cmd) in pods {
        c.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  finalizers: [strata.test/hold]\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: {}\n    command: [sh, -c, \"{cmd}\"]\n",
            c.image
        ));
    }
    for (name, _) in pods {
        c.wait_pod(name, "Running and Ready", Duration::from_secs(90), |p| phase(p) == "Running" && condition(p, "Ready") == "True");
    }
    c.server.ok(&["delete", "pod", "term-ok", "term-killed", "--wait=false"]);
    evict(&c, "default", "evicted");
    let ok = c.wait_pod("term-ok", "a terminal phase", Duration::from_secs(60), |p| matches!(phase(p), "Succeeded" | "Failed"));
    assert_eq!(phase(&ok), "Succeeded", "every container exited 0: {:#}", ok["status"]);
    assert_eq!(terminated_state(&ok, 0), (0, "Completed".to_string()));
    assert_eq!((condition(&ok, "Ready"), condition_reason(&ok, "Ready")), ("False".to_string(), "PodCompleted".to_string()));
    let killed = c.wait_pod("term-killed", "a terminal phase", Duration::from_secs(60), |p| matches!(phase(p), "Succeeded" | "Failed"));
    assert_eq!(phase(&killed), "Failed", "{:#}", killed["status"]);
    assert_eq!(terminated_state(&killed, 0), (137, "Error".to_string()), "sleep as pid 1 ignores SIGTERM and is killed after the grace period");
    assert_eq!(condition(&killed, "ContainersReady"), "False");
    let evicted = c.wait_pod("evicted", "a terminal phase", Duration::from_secs(60), |p| matches!(phase(p), "Succeeded" | "Failed"));
    assert_eq!(phase(&evicted), "Failed", "{:#}", evicted["status"]);
    assert_eq!((condition(&evicted, "DisruptionTarget"), condition_reason(&evicted, "DisruptionTarget")), ("True".to_string(), "EvictionByEvictionAPI".to_string()));
    assert!(evicted["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"].is_string(), "{:#}", evicted["status"]);
    // Only the finalizer holds the objects.
    for (name, _) in pods {
        let p = c.pod(name);
        assert!(p["metadata"]["deletionTimestamp"].is_string(), "{name}: {:#}", p["metadata"]);
        c.server.ok(&["patch", "pod", name, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    }
    assert!(eventually(Duration::from_secs(30), || c.server.ok(&["get", "pods", "-o", "name"]).trim().is_empty()), "pods left: {}", c.server.ok(&["get", "pods"]));
}

/// The Job conformance spec's case ("pod failure policy to ignore failure matching on
/// DisruptionTarget"): an evicted pod of a Job whose policy ignores DisruptionTarget ends Failed
/// with that condition, is not counted against `backoffLimit: 0`, loses its tracking finalizer
/// and goes, and a replacement runs.
#[test]
fn an_evicted_job_pod_is_ignored_by_the_pod_failure_policy_and_replaced() {
    let c = cluster_opts(&[], true);
    assert!(eventually(Duration::from_secs(60), || c.server.kubectl(&["get", "serviceaccount", "default"]).status.success()), "no default ServiceAccount");
    c.apply(&format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: disrupted
spec:
  backoffLimit: 0
  completions: 1
  parallelism: 1
  podFailurePolicy:
    rules:
    - action: Ignore
      onPodConditions: [{{type: DisruptionTarget}}]
  template:
    spec:
      restartPolicy: Never
      nodeName: node-a
      terminationGracePeriodSeconds: 2
      containers:
      - name: c
        image: {}
        command: [sleep, '3600']
"#,
        c.image
    ));
    let job_pods = || -> Vec<Value> {
        let out = c.server.kubectl(&["get", "pods", "-l", "job-name=disrupted", "-o", "json"]);
        serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v["items"].as_array().cloned()).unwrap_or_default()
    };
    let mut first = Value::Null;
    assert!(
        eventually(Duration::from_secs(90), || {
            first = job_pods().into_iter().find(|p| phase(p) == "Running").unwrap_or(Value::Null);
            !first.is_null()
        }),
        "no running pod of the Job: {:#?}",
        job_pods()
    );
    let (name, uid) = (first["metadata"]["name"].as_str().unwrap_or("").to_string(), first["metadata"]["uid"].clone());
    evict(&c, "default", &name);
    let gone = eventually(Duration::from_secs(90), || !job_pods().iter().any(|p| p["metadata"]["uid"] == uid));
    assert!(gone, "the evicted pod is still there: {:#}\nlog: {}", c.pod(&name), c.server.log());
    let replaced = eventually(Duration::from_secs(90), || job_pods().iter().any(|p| p["metadata"]["uid"] != uid && phase(p) == "Running"));
    assert!(replaced, "no replacement: {:#?}", job_pods());
    let job: Value = serde_json::from_str(&c.server.ok(&["get", "job", "disrupted", "-o", "json"])).expect("job json");
    assert!(job["status"]["failed"].as_i64().unwrap_or(0) == 0, "the ignored failure was counted: {:#}", job["status"]);
    let failed = job["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Failed" && c["status"] == "True");
    assert!(!failed, "the Job failed: {:#}", job["status"]);
    c.server.ok(&["delete", "job", "disrupted", "--cascade=foreground", "--wait=false"]);
}

#[test]
fn image_pull_secrets_authenticate_and_a_wrong_one_is_err_image_pull() {
    let c = cluster(&[]);
    let private = Registry::start_with_htpasswd("puller", "pull-pass");
    private.push(&busybox_image(), "private/busybox", "v1");
    let image = format!("{}/private/busybox:v1", private.addr);
    let server = format!("--docker-server={}", private.addr);
    c.server.ok(&["create", "secret", "docker-registry", "regcred", &server, "--docker-username=puller", "--docker-password=pull-pass"]);
    c.server.ok(&["create", "secret", "docker-registry", "badcred", &server, "--docker-username=puller", "--docker-password=wrong"]);
    let pod = |name: &str, secret: Option<&str>| {
        let secrets = secret.map(|s| format!("  imagePullSecrets: [{{name: {s}}}]\n")).unwrap_or_default();
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 2\n{secrets}  containers:\n  - name: c\n    image: {image}\n    command: [sleep, '3600']\n")
    };
    c.apply(&pod("nocred", None));
    c.apply(&pod("badcred", Some("badcred")));
    let p = c.wait_pod("nocred", "ErrImagePull", Duration::from_secs(60), |p| matches!(waiting_reason(p, 0).as_str(), "ErrImagePull" | "ImagePullBackOff"));
    assert_eq!(phase(&p), "Pending");
    c.wait_pod("badcred", "ErrImagePull", Duration::from_secs(60), |p| matches!(waiting_reason(p, 0).as_str(), "ErrImagePull" | "ImagePullBackOff"));
    assert!(c.events_for("badcred").iter().any(|(r, m)| r == "Failed" && m.contains("denied")), "{:?}", c.events_for("badcred"));
    c.apply(&pod("withcred", Some("regcred")));
    c.wait_pod("withcred", "Running", Duration::from_secs(90), |p| phase(p) == "Running");
}

/// The claims of a JWT (its middle part), unverified.
fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).expect("base64")).expect("claims")
}

/// A TokenRequest for `default/default` with `body`, as a node: (HTTP code, body).
fn token_request_as(s: &ApiServer, creds: &(PathBuf, PathBuf), body: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(s.data_dir().join("pki/ca.crt"))
        .arg("--cert")
        .arg(&creds.1)
        .arg("--key")
        .arg(&creds.0)
        .args(["-X", "POST", "-H", "Content-Type: application/json", "--data", body, &format!("{}/api/v1/namespaces/default/serviceaccounts/default/token", s.url())])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), format!("{body}{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn service_account_token_volumes_reach_the_api_server_and_die_with_their_pod() {
    // Tokens may live 20 s here (to see one replaced); the admission plugin asks for 3607 s.
    let c = cluster_opts(&["--test-only-service-account-min-token-seconds", "20"], true);
    let s = &c.server;
    let ca = std::fs::read_to_string(s.data_dir().join("pki/ca.crt")).expect("ca.crt");

    // The root-CA publisher: kube-root-ca.crt in every namespace, made again when deleted and
    // put back when changed.
    let last = std::cell::RefCell::new(String::new());
    let root_ca = || {
        let out = s.kubectl(&["get", "configmap", "kube-root-ca.crt", "-o", "jsonpath={.data.ca\\.crt}"]);
        *last.borrow_mut() = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        out
    };
    assert!(eventually(Duration::from_secs(60), || String::from_utf8_lossy(&root_ca().stdout) == ca), "no kube-root-ca.crt (kubectl said {:?}): {}", last.borrow(), s.log());
    let published = s.get_json("/api/v1/namespaces/default/configmaps/kube-root-ca.crt");
    assert!(published["metadata"]["annotations"]["kubernetes.io/description"].as_str().is_some_and(|d| d.starts_with("Contains a CA bundle")), "{published}");
    s.ok(&["create", "namespace", "sa-fresh"]);
    assert!(eventually(Duration::from_secs(60), || s.kubectl(&["get", "configmap", "kube-root-ca.crt", "-n", "sa-fresh"]).status.success()), "none in a new namespace");
    s.ok(&["delete", "configmap", "kube-root-ca.crt"]);
    assert!(eventually(Duration::from_secs(60), || String::from_utf8_lossy(&root_ca().stdout) == ca), "not made again after a delete (kubectl said {:?})", last.borrow());
    s.ok(&["patch", "configmap", "kube-root-ca.crt", "--type=merge", "-p", r#"{"data":{"ca.crt":"forged"}}"#]);
    assert!(eventually(Duration::from_secs(60), || String::from_utf8_lossy(&root_ca().stdout) == ca), "not put back after a change (kubectl said {:?})", last.borrow());

    // Admission: `default`, and the projected volume mounted read-only in every container.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 2
  initContainers:
  - {{name: init, image: {img}, command: [sh, -c, "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace"]}}
  containers:
  - name: main
    image: {img}
    command: [sleep, "3600"]
    volumeMounts: [{{name: short, mountPath: /short, readOnly: true}}]
  volumes:
  - name: short
    projected:
      sources:
      - serviceAccountToken: {{path: tok, audience: test-aud, expirationSeconds: 20}}
"#,
        img = c.image
    ));
    let p = c.pod("reader");
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    let vols = p["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    let api_vol = vols.iter().find(|v| v["name"].as_str().is_some_and(|n| n.starts_with("kube-api-access-"))).expect("a kube-api-access volume").clone();
    let vname = api_vol["name"].as_str().unwrap_or("").to_string();
    assert_eq!(vname.len(), "kube-api-access-".len() + 5, "{vname}");
    let expected = serde_json::json!({ "defaultMode": 420, "sources": [
        { "serviceAccountToken": { "path": "token", "expirationSeconds": 3607 } },
        { "configMap": { "name": "kube-root-ca.crt", "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
        { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } },
    ]});
    assert_eq!(api_vol["projected"], expected);
    let mount = serde_json::json!({ "name": vname, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount" });
    assert!(p["spec"]["initContainers"][0]["volumeMounts"].as_array().is_some_and(|m| m.contains(&mount)), "{p:#}");
    assert!(p["spec"]["containers"][0]["volumeMounts"].as_array().is_some_and(|m| m.contains(&mount)), "{p:#}");

    // The agent writes token, ca.crt and namespace; the pod reads them.
    let p = c.wait_pod("reader", "Running", Duration::from_secs(120), |p| phase(p) == "Running");
    let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();
    let cat = |path: &str| s.ok(&["exec", "reader", "-c", "main", "--", "cat", path]);
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let token = cat(&format!("{dir}/token")).trim().to_string();
    assert_eq!(cat(&format!("{dir}/ca.crt")), ca);
    assert_eq!(cat(&format!("{dir}/namespace")), "default");
    let write = s.kubectl(&["exec", "reader", "-c", "main", "--", "sh", "-c", &format!("echo x > {dir}/token")]);
    assert!(!write.status.success(), "the token volume is read-only");
    let claims = jwt_claims(&token);
    assert_eq!(claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0), 3607, "{claims}");
    assert_eq!(claims["kubernetes.io"]["pod"]["uid"], uid.as_str(), "{claims}");

    // TokenReview: the pod's ServiceAccount, bound to the pod.
    let review = |t: &str| {
        let body = format!(r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{t}"}}}}"#);
        let (code, out) = s.curl("POST", "/apis/authentication.k8s.io/v1/tokenreviews", Auth::Admin, Some("application/json"), Some(body.as_bytes()));
        assert_eq!(code, 201, "{out}");
        serde_json::from_str::<Value>(&out).expect("json")
    };
    let r = review(&token);
    assert_eq!(r["status"]["authenticated"], true, "{r}");
    assert_eq!(r["status"]["user"]["username"], "system:serviceaccount:default:default", "{r}");
    assert_eq!(r["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"], serde_json::json!(["reader"]), "{r}");
    assert_eq!(r["status"]["user"]["extra"]["authentication.kubernetes.io/pod-uid"], serde_json::json!([uid]), "{r}");
    // The token and the pod's ca.crt reach the API server as the pod would.
    let tmp = tempfile::tempdir().expect("tmp");
    let pod_ca = tmp.path().join("ca.crt");
    std::fs::write(&pod_ca, cat(&format!("{dir}/ca.crt"))).expect("ca");
    let who = std::process::Command::new("kubectl")
        .args(["--server", &s.url(), "--token", &token, "--certificate-authority", pod_ca.to_str().expect("path"), "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
        .env("KUBECONFIG", tmp.path().join("none"))
        .output()
        .expect("kubectl");
    assert_eq!(String::from_utf8_lossy(&who.stdout), "system:serviceaccount:default:default", "{}", String::from_utf8_lossy(&who.stderr));

    // A short-lived token of another audience is replaced before it expires.
    let short = cat("/short/tok").trim().to_string();
    assert_eq!(jwt_claims(&short)["aud"], serde_json::json!(["test-aud"]));
    let mut newer = String::new();
    assert!(
        eventually(Duration::from_secs(60), || {
            newer = cat("/short/tok").trim().to_string();
            newer != short
        }),
        "the 20 s token was not replaced"
    );
    assert!(jwt_claims(&newer)["exp"].as_i64() > jwt_claims(&short)["exp"].as_i64());

    // Node credentials: only the pod's own node gets tokens, and only bound to its pods.
    let node_a = s.node_cert(tmp.path(), "node-a");
    let node_b = s.node_cert(tmp.path(), "node-b");
    let bound = |name: &str, uid: &str| format!(r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{{"boundObjectRef":{{"apiVersion":"v1","kind":"Pod","name":"{name}","uid":"{uid}"}}}}}}"#);
    let (code, out) = token_request_as(s, &node_a, &bound("reader", &uid));
    assert_eq!(code, 201, "{out}");
    let (code, out) = token_request_as(s, &node_b, &bound("reader", &uid));
    assert_eq!(code, 403, "another node's credentials: {out}");
    // node-b gets a pod of the same ServiceAccount: the authorizer lets it ask, admission still
    // refuses tokens for node-a's pod and unbound ones.
    c.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: on-b\nspec:\n  nodeName: node-b\n  containers: [{name: c, image: none}]\n");
    let (code, out) = token_request_as(s, &node_b, &bound("reader", &uid));
    assert!(code == 403 && out.contains("node requested token bound to a pod scheduled on a different node"), "{code} {out}");
    let (code, out) = token_request_as(s, &node_b, r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}"#);
    assert!(code == 403 && out.contains("node requested token not bound to a pod"), "{code} {out}");

    // automountServiceAccountToken: false on the pod or on its ServiceAccount: no volume; an
    // unknown ServiceAccount: refused.
    let dry = |yaml: &str| -> Value { serde_json::from_str(&s.ok_stdin(&["create", "--dry-run=server", "-o", "json", "-f", "-"], Some(yaml))).expect("json") };
    let no_auto = dry("apiVersion: v1\nkind: Pod\nmetadata:\n  name: quiet\nspec:\n  automountServiceAccountToken: false\n  containers: [{name: c, image: x}]\n");
    assert!(no_auto["spec"]["volumes"].is_null() && no_auto["spec"]["containers"][0]["volumeMounts"].is_null(), "{no_auto:#}");
    s.ok_stdin(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: quiet\nautomountServiceAccountToken: false\n"));
    let by_sa = dry("apiVersion: v1\nkind: Pod\nmetadata:\n  name: quiet\nspec:\n  serviceAccountName: quiet\n  containers: [{name: c, image: x}]\n");
    assert!(by_sa["spec"]["volumes"].is_null(), "{by_sa:#}");
    let overridden = dry("apiVersion: v1\nkind: Pod\nmetadata:\n  name: loud\nspec:\n  serviceAccountName: quiet\n  automountServiceAccountToken: true\n  containers: [{name: c, image: x}]\n");
    assert!(overridden["spec"]["volumes"][0]["name"].as_str().is_some_and(|n| n.starts_with("kube-api-access-")), "{overridden:#}");
    let err = s.fails(&["create", "-f", "-"], Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: ghostly\nspec:\n  serviceAccountName: ghost\n  containers: [{name: c, image: x}]\n"));
    assert!(err.contains(r#"pods "ghostly" is forbidden: error looking up service account default/ghost: serviceaccount "ghost" not found"#), "{err}");

    // Deleting the pod invalidates its bound tokens.
    s.ok(&["delete", "pod", "reader", "--wait=true", "--timeout=120s"]);
    assert_eq!(review(&token)["status"]["authenticated"], false);
    assert_eq!(review(&newer)["status"]["authenticated"], false);
}

/// The network namespace of the pod with `uid` (its sandbox's, found by the uid label in the
/// sandbox records under the server's strata root).
fn pod_netns(c: &Cluster, uid: &str) -> PathBuf {
    let dir = c.server.root().join("sandboxes");
    for e in std::fs::read_dir(&dir).expect("sandboxes").flatten() {
        let record = std::fs::read_to_string(e.path().join("record.json")).unwrap_or_default();
        if record.contains(uid) {
            return PathBuf::from("/run/strata/netns").join(e.file_name());
        }
    }
    panic!("no sandbox of pod {uid} under {}", dir.display())
}

/// Serve `port` inside the network namespace at `netns` (a thread of the test joins it; the
/// socket stays there), each connection handed to `serve` on that thread's runtime. Returns once
/// the port is bound.
fn serve_in_pod<F, Fut>(netns: &std::path::Path, port: u16, serve: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let ns = std::fs::File::open(netns).expect("the pod's netns");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let listener = std::net::TcpListener::bind(("0.0.0.0", port)).expect("bind in the pod");
        listener.set_nonblocking(true).expect("nonblocking");
        let _ = tx.send(());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn));
            }
        });
    });
    rx.recv().expect("the server in the pod started");
}

/// A gRPC health server as grpc-go serves one (`grpc.health.v1.Health/Check` over HTTP/2,
/// length-prefixed protobuf, `grpc-status` trailers) on `port` inside a pod's network
/// namespace: it answers `status` (1 SERVING, 2 NOT_SERVING) and records the services asked.
struct HealthServer {
    status: std::sync::Arc<std::sync::atomic::AtomicU8>,
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn health_server(netns: &std::path::Path, port: u16) -> HealthServer {
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::{Arc, Mutex};
    let status = Arc::new(AtomicU8::new(1));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let (st, ak) = (status.clone(), asked.clone());
    serve_in_pod(netns, port, move |conn| {
                let (st, ak) = (st.clone(), ak.clone());
                async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (st, ak) = (st.clone(), ak.clone());
                        async move {
                            use http_body_util::BodyExt;
                            use hyper::body::{Bytes, Frame};
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            // HealthCheckRequest after the 5-byte frame header: field 1, a string.
                            let msg = body.get(5..).unwrap_or_default();
                            let service = match msg {
                                [0x0a, len, rest @ ..] => String::from_utf8_lossy(rest.get(..*len as usize).unwrap_or_default()).into_owned(),
                                _ => String::new(),
                            };
                            let mut trailers = hyper::HeaderMap::new();
                            let mut frames = Vec::new();
                            if path == "/grpc.health.v1.Health/Check" {
                                ak.lock().expect("asked").push(service);
                                // HealthCheckResponse: field 1, the status enum.
                                let s = st.load(Ordering::SeqCst);
                                frames.push(Frame::data(Bytes::from(vec![0u8, 0, 0, 0, 2, 0x08, s])));
                                trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                            } else {
                                trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("12"));
                            }
                            frames.push(Frame::trailers(trailers));
                            let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames.into_iter().map(Ok::<_, std::convert::Infallible>)));
                            hyper::Response::builder().header("content-type", "application/grpc").body(body)
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new()).serve_connection(hyper_util::rt::TokioIo::new(conn), svc).await;
                }
    });
    HealthServer { status, asked }
}

#[test]
fn grpc_probes_call_the_health_service_in_the_pod() {
    let c = cluster(&[]);
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: grpc-ready
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: {img}
    command: [sleep, "3600"]
    readinessProbe:
      grpc: {{port: 9555, service: strata.test}}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: grpc-dead
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: {img}
    command: [sleep, "3600"]
    livenessProbe:
      grpc: {{port: 9556}}
      periodSeconds: 1
      failureThreshold: 1
"#,
        img = c.image
    ));
    // Nobody serves yet: running, not ready.
    let p = c.wait_pod("grpc-ready", "Running", Duration::from_secs(120), |p| phase(p) == "Running");
    let ip = p["status"]["podIP"].as_str().expect("podIP").to_string();
    let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();
    c.wait_pod("grpc-ready", "unready without a server", Duration::from_secs(30), |p| condition(p, "Ready") == "False");
    assert!(
        eventually(Duration::from_secs(30), || c.events_for("grpc-ready").iter().any(|(r, m)| r == "Unhealthy"
            && m == &format!("Readiness probe failed: timeout: failed to connect service \"{ip}:9555\" within 1s: context deadline exceeded"))),
        "{:?}",
        c.events_for("grpc-ready")
    );
    // A health server in the pod: SERVING makes it ready, NOT_SERVING unready again.
    let server = health_server(&pod_netns(&c, &uid), 9555);
    c.wait_pod("grpc-ready", "Ready once SERVING", Duration::from_secs(60), |p| condition(p, "Ready") == "True");
    assert!(server.asked.lock().expect("asked").iter().any(|s| s == "strata.test"), "the probe names its service");
    server.status.store(2, std::sync::atomic::Ordering::SeqCst);
    c.wait_pod("grpc-ready", "unready on NOT_SERVING", Duration::from_secs(60), |p| condition(p, "Ready") == "False");
    assert!(
        eventually(Duration::from_secs(30), || c
            .events_for("grpc-ready")
            .iter()
            .any(|(r, m)| r == "Unhealthy" && m == "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")")),
        "{:?}",
        c.events_for("grpc-ready")
    );
    // A liveness probe nobody answers restarts the container.
    c.wait_pod("grpc-dead", "restarted by its liveness probe", Duration::from_secs(120), |p| p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1);
    let events = c.events_for("grpc-dead");
    assert!(events.iter().any(|(r, m)| r == "Unhealthy" && m.starts_with("Liveness probe failed: timeout: failed to connect service")), "{events:?}");
    assert!(events.iter().any(|(r, m)| r == "Killing" && m.contains("failed liveness probe")), "{events:?}");
}

/// An HTTPS server as a pod's own would be (a self-signed certificate, HTTP/1.1) on `port`
/// inside a pod's network namespace. `/healthz` answers 200 while `ready`, else 500;
/// `/redirect` sends to `/healthz` on the same host; `/away` sends to another host while `alive`,
/// else answers 503. Each request's path and headers are recorded.
struct TlsServer {
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    alive: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, hyper::HeaderMap)>>>,
}

fn tls_server(netns: &std::path::Path, port: u16) -> TlsServer {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let ready = Arc::new(AtomicBool::new(true));
    let alive = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (acceptor, _) = common::tls::self_signed_acceptor(vec!["web.strata.test".to_string()]);
    let (r, a, s) = (ready.clone(), alive.clone(), seen.clone());
    serve_in_pod(netns, port, move |conn| {
                let (r, a, s, acceptor) = (r.clone(), a.clone(), s.clone(), acceptor.clone());
                async move {
                    let Ok(tls) = acceptor.accept(conn).await else { return };
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (r, a, s) = (r.clone(), a.clone(), s.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            s.lock().expect("seen").push((path.clone(), req.headers().clone()));
                            let b = hyper::Response::builder();
                            let resp = match path.as_str() {
                                "/healthz" if r.load(Ordering::SeqCst) => b.status(200).body("ok".to_string()),
                                "/healthz" => b.status(500).body("not ready".to_string()),
                                "/redirect" => b.status(302).header("location", "/healthz").body(String::new()),
                                "/away" if a.load(Ordering::SeqCst) => b.status(302).header("location", "http://127.0.0.2:9/elsewhere").body("gone elsewhere".to_string()),
                                "/away" => b.status(503).body("dying".to_string()),
                                _ => b.status(404).body(String::new()),
                            };
                            resp.map(|r| r.map(|b| http_body_util::Full::new(hyper::body::Bytes::from(b))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), svc).await;
                }
    });
    TlsServer { ready, alive, seen }
}

#[test]
fn https_probes_skip_verification_send_headers_and_follow_local_redirects() {
    let c = cluster(&[]);
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: https-probed
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {img}
    command: [sleep, "3600"]
    readinessProbe:
      httpGet:
        scheme: HTTPS
        port: 8443
        path: /redirect
        httpHeaders: [{{name: Host, value: web.strata.test}}, {{name: X-Probe, value: strata}}]
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      httpGet: {{scheme: HTTPS, port: 8443, path: /away}}
      initialDelaySeconds: 15
      periodSeconds: 1
      failureThreshold: 2
"#,
        img = c.image
    ));
    let p = c.wait_pod("https-probed", "Running", Duration::from_secs(120), |p| phase(p) == "Running" && p["status"]["podIP"].is_string());
    let ip = p["status"]["podIP"].as_str().expect("podIP").to_string();
    let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();
    let server = tls_server(&pod_netns(&c, &uid), 8443);
    // Ready through TLS (a self-signed certificate for another name) and a redirect on the same
    // host, with the probe's headers.
    c.wait_pod("https-probed", "Ready over HTTPS", Duration::from_secs(60), |p| condition(p, "Ready") == "True");
    {
        let seen = server.seen.lock().expect("seen");
        let healthz = seen.iter().find(|(path, _)| path == "/healthz").expect("the redirect to /healthz was followed");
        let h = &healthz.1;
        assert_eq!(h.get("host").and_then(|v| v.to_str().ok()), Some("web.strata.test"), "{h:?}");
        assert_eq!(h.get("x-probe").and_then(|v| v.to_str().ok()), Some("strata"), "{h:?}");
        assert!(h.get("user-agent").and_then(|v| v.to_str().ok()).is_some_and(|u| u.starts_with("kube-probe/")), "{h:?}");
        assert_eq!(h.get("accept").and_then(|v| v.to_str().ok()), Some("*/*"), "{h:?}");
        let away = seen.iter().find(|(path, _)| path == "/away");
        assert!(away.is_none_or(|(_, h)| h.get("host").and_then(|v| v.to_str().ok()) == Some(&format!("{ip}:8443"))), "{away:?}");
    }
    // pods/proxy with the https scheme reaches the same TLS server (any certificate, as
    // upstream's proxy transport).
    let proxied = c.server.ok(&["get", "--raw", "/api/v1/namespaces/default/pods/https:https-probed:8443/proxy/healthz"]);
    assert_eq!(proxied.trim(), "ok");
    // Unready when the server says so, ready again after.
    server.ready.store(false, std::sync::atomic::Ordering::SeqCst);
    c.wait_pod("https-probed", "unready on 500", Duration::from_secs(60), |p| condition(p, "Ready") == "False");
    server.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    c.wait_pod("https-probed", "ready again", Duration::from_secs(60), |p| condition(p, "Ready") == "True");
    // A redirect to another host is not followed: a warning, and the container lives on.
    assert!(
        eventually(Duration::from_secs(60), || c.events_for("https-probed").iter().any(|(r, m)| r == "ProbeWarning"
            && m == "Liveness probe warning: Probe terminated redirects, Response body: gone elsewhere")),
        "{:?}",
        c.events_for("https-probed")
    );
    assert_eq!(c.pod("https-probed")["status"]["containerStatuses"][0]["restartCount"], 0);
    // A failing HTTPS liveness probe restarts the container.
    server.alive.store(false, std::sync::atomic::Ordering::SeqCst);
    c.wait_pod("https-probed", "restarted by its liveness probe", Duration::from_secs(90), |p| p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1);
    let events = c.events_for("https-probed");
    assert!(events.iter().any(|(r, m)| r == "Unhealthy" && m == "Liveness probe failed: HTTP probe failed with statuscode: 503"), "{events:?}");
    assert!(events.iter().any(|(r, m)| r == "Unhealthy" && m == "Readiness probe failed: HTTP probe failed with statuscode: 500"), "{events:?}");
    assert!(events.iter().any(|(r, m)| r == "Killing" && m.contains("failed liveness probe")), "{events:?}");
}

/// The record of the pod's sandbox that is not stopped (its supervisor's pid and start time
/// among it), from the sandbox records under the server's strata root.
fn live_sandbox_record(c: &Cluster, uid: &str) -> Value {
    let dir = c.server.root().join("sandboxes");
    for e in std::fs::read_dir(&dir).expect("sandboxes").flatten() {
        let record: Value = serde_json::from_str(&std::fs::read_to_string(e.path().join("record.json")).unwrap_or_default()).unwrap_or(Value::Null);
        if record.to_string().contains(uid) && record["stopped"] == false {
            return record;
        }
    }
    panic!("no live sandbox of pod {uid} under {}", dir.display())
}

#[test]
fn a_dead_sandbox_is_replaced_and_its_containers_follow_the_restart_policy() {
    let c = cluster(&[]);
    let (port_a, port_b) = (common::free_port(), common::free_port());
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: phoenix
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {img}
    command: [httpd, -f, -p, "8080", -h, /var/www]
    ports: [{{containerPort: 8080, hostPort: {port_a}}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: mortal
spec:
  nodeName: node-a
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {img}
    command: [sleep, "3600"]
    ports: [{{containerPort: 8080, hostPort: {port_b}}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: pinless
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {img}
    command: [sleep, "3600"]
"#,
        img = c.image
    ));
    let get = |port: u16| {
        let out = std::process::Command::new("curl").args(["-sS", "--max-time", "3", &format!("http://127.0.0.1:{port}/index.html")]).output().expect("curl");
        String::from_utf8_lossy(&out.stdout).contains("hello from strata")
    };
    let phoenix = c.wait_pod("phoenix", "Running", Duration::from_secs(120), |p| phase(p) == "Running" && !container_id(p, 0).is_empty());
    let mortal = c.wait_pod("mortal", "Running", Duration::from_secs(120), |p| phase(p) == "Running" && !container_id(p, 0).is_empty());
    assert!(eventually(Duration::from_secs(30), || get(port_a)), "the host port of phoenix does not answer");
    let pinless = c.wait_pod("pinless", "Running", Duration::from_secs(120), |p| phase(p) == "Running" && !container_id(p, 0).is_empty());
    let first_id = container_id(&phoenix, 0);
    // The pin of one pod's network namespace goes (as `ip netns delete` would do).
    let record = live_sandbox_record(&c, pinless["metadata"]["uid"].as_str().expect("uid"));
    let pin = PathBuf::from(record["netns"].as_str().expect("the sandbox's netns"));
    assert!(std::process::Command::new("umount").arg(&pin).status().expect("umount").success());
    std::fs::remove_file(&pin).expect("removing the netns pin");
    // The pod supervisors (`strata __pod`, the host ports' owner) die.
    for p in [&phoenix, &mortal] {
        let record = live_sandbox_record(&c, p["metadata"]["uid"].as_str().expect("uid"));
        let pid = record["supervisor"][0].as_i64().expect("the sandbox has a supervisor");
        assert!(std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill").success());
    }
    // restartPolicy Always: a new sandbox, the container restarted in it, the port served again.
    let p = c.wait_pod("phoenix", "restarted in a new sandbox", Duration::from_secs(120), |p| {
        let cs = &p["status"]["containerStatuses"][0];
        phase(p) == "Running" && cs["restartCount"] == 1 && cs["state"]["running"].is_object() && condition(p, "Ready") == "True"
    });
    assert_ne!(container_id(&p, 0), first_id);
    assert_eq!(p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 137, "{p}");
    assert!(eventually(Duration::from_secs(30), || get(port_a)), "the host port of phoenix does not answer after the new sandbox");
    assert!(c.events_for("phoenix").iter().any(|(r, m)| r == "SandboxChanged" && m == "Pod sandbox changed, it will be killed and re-created."), "{:?}", c.events_for("phoenix"));
    // The first attempt was killed with its sandbox: nothing of it runs.
    let root = c.server.root();
    let running = std::process::Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(&root).args(["ps", "--no-trunc"]).output().expect("strata ps");
    assert!(!String::from_utf8_lossy(&running.stdout).contains(&first_id), "{}", String::from_utf8_lossy(&running.stdout));
    // Without its network namespace the pod gets a new sandbox too.
    let p = c.wait_pod("pinless", "restarted in a new sandbox", Duration::from_secs(120), |p| {
        let cs = &p["status"]["containerStatuses"][0];
        phase(p) == "Running" && cs["restartCount"] == 1 && cs["state"]["running"].is_object() && p["status"]["podIP"].is_string()
    });
    assert_ne!(container_id(&p, 0), container_id(&pinless, 0));
    let record = live_sandbox_record(&c, pinless["metadata"]["uid"].as_str().expect("uid"));
    assert!(PathBuf::from(record["netns"].as_str().expect("netns")).exists(), "{record}");
    // restartPolicy Never: no new sandbox, the pod Failed.
    let p = c.wait_pod("mortal", "Failed", Duration::from_secs(120), |p| phase(p) == "Failed");
    let cs = &p["status"]["containerStatuses"][0];
    assert_eq!(cs["state"]["terminated"]["exitCode"], 137, "{p}");
    assert_eq!(cs["restartCount"], 0, "{p}");
    assert_eq!(container_id(&p, 0), container_id(&mortal, 0));
}

/// What is left on the host of these sandboxes and containers (records, netns and namespace
/// pins, pod cgroups, mounts, processes).
fn pod_traces(root: &std::path::Path, sandboxes: &[String], containers: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for id in sandboxes {
        let pins = [root.join("sandboxes").join(id), PathBuf::from("/run/strata/netns").join(id), PathBuf::from("/run/strata/ns").join(format!("{id}.ipc")), PathBuf::from("/run/strata/ns").join(format!("{id}.uts"))];
        found.extend(pins.iter().filter(|p| p.exists()).map(|p| p.display().to_string()));
        for qos in ["guaranteed", "burstable", "besteffort"] {
            let p = PathBuf::from("/sys/fs/cgroup/strata-pods").join(qos).join(format!("pod{id}"));
            if p.exists() {
                found.push(p.display().to_string());
            }
        }
    }
    found.extend(containers.iter().filter(|id| root.join("containers").join(id).exists()).map(|id| format!("containers/{id}")));
    let ids = || sandboxes.iter().chain(containers);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    found.extend(mounts.lines().filter(|l| ids().any(|id| l.contains(id.as_str()))).map(|l| format!("mount: {l}")));
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read_to_string(e.path().join("cmdline")) {
            if ids().any(|id| cmd.contains(id.as_str())) {
                found.push(format!("process {}: {}", e.file_name().to_string_lossy(), cmd.replace('\0', " ")));
            }
        }
    }
    found
}

/// Issue 9's create/delete loop at test scale: many pods (with the service-account token and
/// `kube-root-ca.crt` volume every pod gets) run on the node, one deletecollection takes them
/// all, and within a bound every pod is gone from the API server and nothing of theirs is left
/// on the node. The audit log shows how the node got there: none of its requests refused (the
/// node authorizer must not answer from a stale view), and one final delete per pod, answered
/// 200 (a watch that shows a deleted pod a little longer must not start its cleanup again).
#[test]
fn a_deletecollection_of_many_pods_leaves_nothing_behind() {
    const PODS: usize = 80;
    let audit = tempfile::Builder::new().prefix("strata-mass-audit-").tempdir_in("/var/tmp").expect("tempdir");
    let (policy, audit_log) = (audit.path().join("policy.yaml"), audit.path().join("audit.log"));
    std::fs::write(&policy, "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n  users: ['system:node:node-a']\n- level: None\n").expect("policy");
    let c = cluster_opts(&["--audit-policy-file", policy.to_str().expect("utf-8"), "--audit-log-path", audit_log.to_str().expect("utf-8")], true);
    let ns = "mass";
    c.server.ok(&["create", "namespace", ns]);
    assert!(eventually(Duration::from_secs(60), || c.server.kubectl(&["get", "serviceaccount", "default", "-n", ns]).status.success()), "no default ServiceAccount in {ns}");
    let docs: Vec<String> = (0..PODS)
        .map(|i| format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: m{i}\n  namespace: {ns}\n  labels: {{loop: mass}}\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [sleep, '36000']\n", c.image))
        .collect();
    c.apply(&docs.join("---\n"));
    let running = || -> (usize, Vec<Value>) {
        let out = c.server.kubectl(&["get", "pods", "-n", ns, "-o", "json"]);
        let items = serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v["items"].as_array().cloned()).unwrap_or_default();
        (items.iter().filter(|p| phase(p) == "Running").count(), items)
    };
    let mut last = (0, Vec::new());
    let all_up = eventually(Duration::from_secs(400), || {
        last = running();
        last.0 == PODS
    });
    assert!(all_up, "{} of {PODS} pods Running; not running: {:#?}", last.0, last.1.iter().filter(|p| phase(p) != "Running").map(|p| (&p["metadata"]["name"], &p["status"])).collect::<Vec<_>>());
    let root = c.server.root();
    let ids = |dir: &str| -> Vec<String> { std::fs::read_dir(root.join(dir)).into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect() };
    let (sandboxes, containers) = (ids("sandboxes"), ids("containers"));
    assert!(sandboxes.len() >= PODS && containers.len() >= PODS, "{} sandboxes, {} containers", sandboxes.len(), containers.len());
    let log_before = c.server.log().len();

    // One deletecollection, as the bench's loop (kubectl delete --all deletes one by one).
    c.server.ok(&["delete", "--raw", &format!("/api/v1/namespaces/{ns}/pods")]);
    let t0 = std::time::Instant::now();
    let gone = eventually(Duration::from_secs(240), || {
        let out = c.server.kubectl(&["get", "pods", "-n", ns, "-o", "name"]);
        out.status.success() && out.stdout.is_empty()
    });
    assert!(gone, "pods left after 240 s: {}", c.server.ok(&["get", "pods", "-n", ns]));
    let deleted_in = t0.elapsed();
    let mut left = pod_traces(&root, &sandboxes, &containers);
    let clean = eventually(Duration::from_secs(60), || {
        left = pod_traces(&root, &sandboxes, &containers);
        left.is_empty()
    });
    let log = c.server.log();
    let after = log.get(log_before..).unwrap_or_default();
    assert!(clean, "60 s after every pod was deleted (in {deleted_in:?}), {} traces left: {:#?}\nlog since the delete: {after}", left.len(), left.iter().take(20).collect::<Vec<_>>());
    // Nothing the node asked for on the way (final deletes, status writes, reads of the pods'
    // ConfigMaps and tokens) was refused, and each pod's object was deleted once by the node.
    let events: Vec<Value> = std::fs::read_to_string(&audit_log).expect("audit log").lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(events.iter().any(|e| e["verb"] == "get" && e["objectRef"]["resource"] == "configmaps"), "the audit log has none of the node's reads");
    let refused: Vec<&Value> = events.iter().filter(|e| e["responseStatus"]["code"] == 403).collect();
    assert!(refused.is_empty(), "{} of the node's requests were refused, e.g. {:#?}", refused.len(), refused.iter().take(5).collect::<Vec<_>>());
    let mut deletes: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for e in events.iter().filter(|e| e["verb"] == "delete" && e["objectRef"]["resource"] == "pods" && e["objectRef"]["namespace"] == ns) {
        deletes.entry(e["objectRef"]["name"].as_str().unwrap_or("").to_string()).or_default().push(e["responseStatus"]["code"].as_i64().unwrap_or(0));
    }
    let odd: Vec<(&String, &Vec<i64>)> = deletes.iter().filter(|(_, codes)| codes.as_slice() != [200]).collect();
    assert!(deletes.len() == PODS && odd.is_empty(), "the node's final deletes of {} pods: not one 200 each for {}, e.g. {:?}", deletes.len(), odd.len(), odd.iter().take(10).collect::<Vec<_>>());
}

/// A pod on node-a named `name` whose one container `c` of `image` sleeps; `spec` (lines indented
/// by two spaces) goes into its spec.
fn sleeper(name: &str, image: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 1\n{spec}  containers:\n  - name: c\n    image: {image}\n    command: [sleep, '3600']\n")
}

/// What `sh -c cmd` prints in container `ctr` of pod `pod`.
fn exec_in(c: &Cluster, pod: &str, ctr: &str, cmd: &str) -> String {
    c.server.ok(&["exec", pod, "-c", ctr, "--", "sh", "-c", cmd])
}

/// The namespace of kind `kind` (`net`, `pid`, ...) this test process is in (the node's).
fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}")).expect("ns link").to_string_lossy().into_owned()
}

/// The (nameservers, searches) of the node's `/etc/resolv.conf`, as kubelet reads them.
fn node_resolv_conf() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (mut servers, mut searches) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.first() {
            Some(&"nameserver") if f.len() > 1 => servers.push(f[1].to_string()),
            Some(&"search") => searches = f[1..].iter().filter(|s| **s != ".").map(|s| s.trim_end_matches('.').to_string()).collect(),
            _ => {}
        }
    }
    (servers, searches)
}

/// The values of the lines of a resolv.conf that start with `key` (`nameserver`: one per line;
/// `search`, `options`: the words of the line).
fn resolv_values(resolv: &str, key: &str) -> Vec<String> {
    resolv.lines().filter_map(|l| l.strip_prefix(key).filter(|r| r.starts_with([' ', '\t']))).flat_map(|r| r.split_whitespace().map(str::to_string)).collect()
}

fn event_message(c: &Cluster, pod: &str, reason: &str) -> Option<String> {
    c.events_for(pod).into_iter().find(|(r, _)| r == reason).map(|(_, m)| m)
}

#[test]
fn host_namespaces_and_a_shared_process_namespace() {
    let c = cluster(&[]);
    c.apply(&[
        sleeper("hostnet", &c.image, "  hostNetwork: true\n  dnsPolicy: ClusterFirstWithHostNet\n  hostAliases: [{ip: 192.0.2.10, hostnames: [alias-one, alias-two]}]\n"),
        sleeper("hostpid", &c.image, "  hostPID: true\n  hostIPC: true\n"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: shared\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 1\n  shareProcessNamespace: true\n  containers:\n  - name: a\n    image: {img}\n    command: [sleep, '3600']\n  - name: b\n    image: {img}\n    command: [sleep, '3601']\n",
            img = c.image
        ),
    ]
    .join("---\n"));
    let running = |p: &Value| phase(p) == "Running" && condition(p, "Ready") == "True";
    let p = c.wait_pod("hostnet", "Running", Duration::from_secs(120), running);
    // On the node's network: the pod's IP is the node's, its namespaces and hostname the node's.
    let node: Value = serde_json::from_str(&c.server.ok(&["get", "node", "node-a", "-o", "json"])).expect("node json");
    let internal = node["status"]["addresses"].as_array().and_then(|a| a.iter().find(|a| a["type"] == "InternalIP")).and_then(|a| a["address"].as_str()).expect("InternalIP").to_string();
    assert_eq!(p["status"]["hostIP"], internal.as_str(), "{p}");
    assert_eq!(p["status"]["podIP"], internal.as_str(), "{p}");
    assert_eq!(p["status"]["podIPs"], serde_json::json!([{"ip": internal}]), "{p}");
    assert_eq!(exec_in(&c, "hostnet", "c", "readlink /proc/self/ns/net").trim(), host_ns("net"));
    assert_eq!(exec_in(&c, "hostnet", "c", "readlink /proc/self/ns/uts").trim(), host_ns("uts"));
    let node_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_string();
    assert_eq!(exec_in(&c, "hostnet", "c", "hostname").trim(), node_hostname);
    // Its /etc/hosts is the node's with the aliases (kubelet's host-network hosts file).
    let hosts = exec_in(&c, "hostnet", "c", "cat /etc/hosts");
    let node_hosts = std::fs::read_to_string("/etc/hosts").expect("/etc/hosts");
    assert_eq!(hosts, format!("# Kubernetes-managed hosts file (host network).\n{node_hosts}\n# Entries added by HostAliases.\n192.0.2.10\talias-one\talias-two\n"));
    // ClusterFirstWithHostNet without a cluster DNS address: the node's resolv.conf, and kubelet's event.
    let resolv = exec_in(&c, "hostnet", "c", "cat /etc/resolv.conf");
    let (servers, searches) = node_resolv_conf();
    assert_eq!(resolv_values(&resolv, "nameserver"), servers, "{resolv}");
    assert_eq!(resolv_values(&resolv, "search"), searches, "{resolv}");
    let uid = p["metadata"]["uid"].as_str().expect("uid");
    assert_eq!(
        event_message(&c, "hostnet", "MissingClusterDNS").as_deref(),
        Some(format!("pod: \"hostnet_default({uid})\". kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.").as_str()),
        "{:?}",
        c.events_for("hostnet")
    );
    // ... and about the node, as kubelet's.
    let node_events = c.events_for("node-a");
    let msg = "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.";
    assert!(node_events.iter().any(|(r, m)| r == "MissingClusterDNS" && m == msg), "{node_events:?}");

    // hostPID and hostIPC: the node's PID and IPC namespaces, its own network.
    let p = c.wait_pod("hostpid", "Running", Duration::from_secs(120), running);
    assert_ne!(p["status"]["podIP"], internal.as_str(), "{p}");
    assert_eq!(exec_in(&c, "hostpid", "c", "readlink /proc/self/ns/pid").trim(), host_ns("pid"));
    assert_eq!(exec_in(&c, "hostpid", "c", "readlink /proc/self/ns/ipc").trim(), host_ns("ipc"));
    assert_ne!(exec_in(&c, "hostpid", "c", "readlink /proc/self/ns/net").trim(), host_ns("net"));
    // This test's own process is visible from the pod.
    let me = std::process::id();
    assert_eq!(exec_in(&c, "hostpid", "c", &format!("test -d /proc/{me} && echo seen || echo unseen")).trim(), "seen", "pid {me} from a hostPID pod");

    // shareProcessNamespace: each container sees the other's processes; not the node's.
    c.wait_pod("shared", "Running", Duration::from_secs(120), running);
    let ps = exec_in(&c, "shared", "a", "ps -o args");
    assert!(ps.contains("sleep 3601") && ps.contains("sleep 3600"), "container a's ps: {ps}");
    let ps = exec_in(&c, "shared", "b", "ps -o args");
    assert!(ps.contains("sleep 3600"), "container b's ps: {ps}");
    assert_ne!(exec_in(&c, "shared", "a", "readlink /proc/self/ns/pid").trim(), host_ns("pid"));
    assert_ne!(exec_in(&c, "shared", "a", "readlink /proc/self/ns/ipc").trim(), host_ns("ipc"));
    assert_eq!(exec_in(&c, "shared", "a", &format!("test -d /proc/{me} && echo seen || echo unseen")).trim(), "unseen", "pid {me} from a pod's own PID namespace");

    c.server.ok(&["delete", "pod", "hostnet", "hostpid", "shared", "--wait=false"]);
    assert!(eventually(Duration::from_secs(60), || c.driver_containers().is_empty()), "containers left: {}", c.driver_containers());
}

#[test]
fn dns_policies_dns_config_host_aliases_and_fqdn_hostnames() {
    let c = cluster(&["--cluster-dns", "10.96.0.10"]);
    let searches30: Vec<String> = (1..=30).map(|i| format!("s{i}.example")).collect();
    let cf = "  dnsConfig:\n    nameservers: [192.0.2.53]\n    searches: [my.search.example]\n    options: [{name: ndots, value: '2'}, {name: edns0}]\n";
    c.apply(&[
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n".to_string(),
        sleeper("cf", &c.image, cf).replacen("  name: cf\n", "  name: cf\n  namespace: team-a\n", 1),
        sleeper("dflt", &c.image, "  dnsPolicy: Default\n"),
        sleeper("none", &c.image, "  dnsPolicy: None\n  dnsConfig:\n    nameservers: [192.0.2.1]\n    searches: [a.example]\n    options: [{name: ndots, value: '1'}]\n"),
        sleeper("over", &c.image, &format!("  dnsConfig:\n    nameservers: [192.0.2.1, 192.0.2.2, 192.0.2.3]\n    searches: [{}]\n", searches30.join(", "))),
        sleeper("hn-cf", &c.image, "  hostNetwork: true\n"),
        sleeper("hn-cfwhn", &c.image, "  hostNetwork: true\n  dnsPolicy: ClusterFirstWithHostNet\n"),
        sleeper(
            "fqdn",
            &c.image,
            "  hostname: web-0\n  subdomain: sub\n  setHostnameAsFQDN: true\n  hostAliases:\n  - {ip: 192.0.2.10, hostnames: [alias-one, alias-two]}\n  - {ip: 192.0.2.11, hostnames: [alias-three]}\n",
        ),
        sleeper("short", &c.image, "  hostname: web-1\n  subdomain: sub\n"),
        sleeper("toolong", &c.image, &format!("  hostname: {}\n  subdomain: sub\n  setHostnameAsFQDN: true\n", "h".repeat(40))),
    ]
    .join("---\n"));
    let running = |p: &Value| phase(p) == "Running" && condition(p, "Ready") == "True";
    let (node_servers, node_searches) = node_resolv_conf();

    // ClusterFirst with a cluster DNS address: it, the cluster searches (then the node's), ndots:5
    // replaced by the pod's options, the pod's dnsConfig appended.
    let p = c.wait_pod_in("team-a", "cf", "Running", Duration::from_secs(120), running);
    let resolv = c.server.ok(&["exec", "-n", "team-a", "cf", "--", "cat", "/etc/resolv.conf"]);
    assert_eq!(resolv_values(&resolv, "nameserver"), ["10.96.0.10", "192.0.2.53"], "{resolv}");
    let mut want: Vec<String> = ["team-a.svc.cluster.local", "svc.cluster.local", "cluster.local"].iter().map(|s| s.to_string()).collect();
    want.extend(node_searches.iter().filter(|s| !want.contains(s)).cloned().collect::<Vec<_>>());
    want.push("my.search.example".into());
    assert_eq!(resolv_values(&resolv, "search"), want, "{resolv}");
    let mut options = resolv_values(&resolv, "options");
    options.sort();
    assert_eq!(options, ["edns0", "ndots:2"], "{resolv}");
    assert!(p["status"]["podIP"].is_string());

    // Default: the node's resolv.conf.
    c.wait_pod("dflt", "Running", Duration::from_secs(120), running);
    let resolv = exec_in(&c, "dflt", "c", "cat /etc/resolv.conf");
    assert_eq!(resolv_values(&resolv, "nameserver"), node_servers, "{resolv}");
    assert_eq!(resolv_values(&resolv, "search"), node_searches, "{resolv}");

    // On the node's network ClusterFirst is Default; ClusterFirstWithHostNet the cluster's.
    c.wait_pod("hn-cf", "Running", Duration::from_secs(120), running);
    let resolv = exec_in(&c, "hn-cf", "c", "cat /etc/resolv.conf");
    assert_eq!(resolv_values(&resolv, "nameserver"), node_servers, "{resolv}");
    c.wait_pod("hn-cfwhn", "Running", Duration::from_secs(120), running);
    let resolv = exec_in(&c, "hn-cfwhn", "c", "cat /etc/resolv.conf");
    assert_eq!(resolv_values(&resolv, "nameserver"), ["10.96.0.10"], "{resolv}");
    assert_eq!(resolv_values(&resolv, "search")[..3], ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"], "{resolv}");

    // None: only the pod's dnsConfig.
    c.wait_pod("none", "Running", Duration::from_secs(120), running);
    assert_eq!(exec_in(&c, "none", "c", "cat /etc/resolv.conf"), "search a.example\nnameserver 192.0.2.1\noptions ndots:1\n");

    // Over kubelet's limits: 3 nameservers, 32 searches, and an event for each cut.
    c.wait_pod("over", "Running", Duration::from_secs(120), running);
    let resolv = exec_in(&c, "over", "c", "cat /etc/resolv.conf");
    assert_eq!(resolv_values(&resolv, "nameserver"), ["10.96.0.10", "192.0.2.1", "192.0.2.2"], "{resolv}");
    let search = resolv_values(&resolv, "search");
    assert_eq!(search.len(), 32, "{resolv}");
    assert_eq!(resolv_values(&resolv, "options"), ["ndots:5"], "{resolv}");
    let forming: Vec<String> = c.events_for("over").into_iter().filter(|(r, _)| r == "DNSConfigForming").map(|(_, m)| m).collect();
    assert!(
        forming.iter().any(|m| m == "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: 10.96.0.10 192.0.2.1 192.0.2.2"),
        "{forming:?}"
    );
    let line = format!("Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}", search.join(" "));
    assert!(forming.contains(&line), "{forming:?}");

    // hostname + subdomain: the FQDN first on the pod's line of /etc/hosts; setHostnameAsFQDN
    // makes it the kernel's hostname; hostAliases after.
    let p = c.wait_pod("fqdn", "Running", Duration::from_secs(120), running);
    let ip = p["status"]["podIP"].as_str().expect("podIP").to_string();
    assert_eq!(exec_in(&c, "fqdn", "c", "hostname").trim(), "web-0.sub.default.svc.cluster.local");
    let hosts = exec_in(&c, "fqdn", "c", "cat /etc/hosts");
    assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(hosts.contains(&format!("\n{ip}\tweb-0.sub.default.svc.cluster.local\tweb-0\n")), "{hosts}");
    assert!(hosts.ends_with("\n# Entries added by HostAliases.\n192.0.2.10\talias-one\talias-two\n192.0.2.11\talias-three\n"), "{hosts}");
    let p = c.wait_pod("short", "Running", Duration::from_secs(120), running);
    let ip = p["status"]["podIP"].as_str().expect("podIP").to_string();
    assert_eq!(exec_in(&c, "short", "c", "hostname").trim(), "web-1");
    let hosts = exec_in(&c, "short", "c", "cat /etc/hosts");
    assert!(hosts.contains(&format!("\n{ip}\tweb-1.sub.default.svc.cluster.local\tweb-1\n")), "{hosts}");

    // A FQDN longer than the kernel's 64 characters: no sandbox, kubelet's message.
    let fqdn = format!("{}.sub.default.svc.cluster.local", "h".repeat(40));
    let want = format!("Failed to create pod sandbox: failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long (64 characters is the max, 70 characters requested)");
    assert!(eventually(Duration::from_secs(60), || event_message(&c, "toolong", "FailedCreatePodSandBox").as_deref() == Some(want.as_str())), "{:?}", c.events_for("toolong"));
    assert_eq!(phase(&c.pod("toolong")), "Pending");

    c.server.ok(&["delete", "pod", "dflt", "none", "over", "hn-cf", "hn-cfwhn", "fqdn", "short", "toolong", "--wait=false"]);
    c.server.ok(&["delete", "pod", "-n", "team-a", "cf", "--wait=false"]);
    assert!(eventually(Duration::from_secs(60), || c.driver_containers().is_empty()), "containers left: {}", c.driver_containers());
}

#[test]
fn sysctls_fs_group_and_run_as_non_root() {
    let c = cluster(&["--allowed-unsafe-sysctls", "net.core.somaxconn,kernel.sem*"]);
    let host_port_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").expect("sysctl");
    let host_rmid = std::fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").expect("sysctl");
    let fsgroup = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: fsgroup\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 1\n  securityContext: {{runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000}}\n  volumes:\n  - {{name: data, emptyDir: {{}}}}\n  - {{name: cfg, configMap: {{name: cfg, defaultMode: 0600}}}}\n  containers:\n  - name: c\n    image: {}\n    command: [sleep, '3600']\n    volumeMounts: [{{name: data, mountPath: /data}}, {{name: cfg, mountPath: /cfg}}]\n",
        c.image
    );
    c.apply(&[
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  key: value\n".to_string(),
        sleeper(
            "sysctl-ok",
            &c.image,
            "  securityContext:\n    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: '1000'}, {name: kernel.shm_rmid_forced, value: '1'}, {name: net/core/somaxconn, value: '1000'}]\n",
        ),
        sleeper("sysctl-unsafe", &c.image, "  securityContext:\n    sysctls: [{name: kernel.msgmax, value: '65536'}]\n"),
        sleeper("sysctl-hostnet", &c.image, "  hostNetwork: true\n  securityContext:\n    sysctls: [{name: net.ipv4.tcp_syncookies, value: '1'}]\n"),
        fsgroup,
        sleeper("nonroot", &c.image, "  securityContext: {runAsNonRoot: true}\n"),
        sleeper("nonroot-zero", &c.image, "  securityContext: {runAsNonRoot: true}\n").replace("    command: [sleep, '3600']\n", "    command: [sleep, '3600']\n    securityContext: {runAsUser: 0}\n"),
        sleeper("nonroot-ok", &c.image, "  securityContext: {runAsNonRoot: true, runAsUser: 1000}\n"),
    ]
    .join("---\n"));
    let running = |p: &Value| phase(p) == "Running" && condition(p, "Ready") == "True";

    // Safe sysctls are set in the pod's namespaces, not the node's.
    c.wait_pod("sysctl-ok", "Running", Duration::from_secs(120), running);
    // (net.core.somaxconn is one the node allows beyond the safe ones, written with slashes.)
    assert_eq!(exec_in(&c, "sysctl-ok", "c", "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shm_rmid_forced /proc/sys/net/core/somaxconn"), "1000\n1\n1000\n");
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").expect("sysctl"), host_port_start);
    assert_eq!(std::fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").expect("sysctl"), host_rmid);
    // Others are refused at admission, as kubelet's: Failed, SysctlForbidden, for good.
    for (name, why) in [
        ("sysctl-unsafe", "forbidden sysctl: \"kernel.msgmax\" not allowlisted"),
        ("sysctl-hostnet", "forbidden sysctl: \"net.ipv4.tcp_syncookies\" not allowed with host Net enabled"),
    ] {
        let p = c.wait_pod(name, "Failed", Duration::from_secs(60), |p| phase(p) == "Failed");
        assert_eq!(p["status"]["reason"], "SysctlForbidden", "{p}");
        assert_eq!(p["status"]["message"], format!("Pod was rejected: {why}"), "{p}");
        assert_eq!(event_message(&c, name, "SysctlForbidden").as_deref(), Some(why), "{:?}", c.events_for(name));
    }

    // fsGroup: volumes owned by the group (setgid directories, group-readable files), and the
    // group among the process's.
    c.wait_pod("fsgroup", "Running", Duration::from_secs(120), running);
    assert_eq!(exec_in(&c, "fsgroup", "c", "id -u; id -g; id -G | tr ' ' '\\n' | grep -x 2000").split_whitespace().collect::<Vec<_>>(), ["1000", "3000", "2000"]);
    assert_eq!(exec_in(&c, "fsgroup", "c", "stat -c '%g %a' /data").trim(), "2000 2777");
    assert_eq!(exec_in(&c, "fsgroup", "c", "touch /data/f && stat -c %g /data/f").trim(), "2000");
    assert_eq!(exec_in(&c, "fsgroup", "c", "stat -L -c '%g %a' /cfg/key && cat /cfg/key").split_whitespace().collect::<Vec<_>>(), ["2000", "640", "value"]);

    // runAsNonRoot: an image that runs as root, or runAsUser 0, is a CreateContainerConfigError
    // with kubelet's message; a non-root user runs.
    for (name, msg) in [
        ("nonroot", "container has runAsNonRoot and image will run as root (pod: \"nonroot_default({uid})\", container: c)"),
        ("nonroot-zero", "container's runAsUser breaks non-root policy (pod: \"nonroot-zero_default({uid})\", container: c)"),
    ] {
        let p = c.wait_pod(name, "CreateContainerConfigError", Duration::from_secs(60), |p| waiting_reason(p, 0) == "CreateContainerConfigError");
        let want = msg.replace("{uid}", p["metadata"]["uid"].as_str().expect("uid"));
        assert_eq!(p["status"]["containerStatuses"][0]["state"]["waiting"]["message"], want.as_str(), "{p}");
        assert_eq!(phase(&p), "Pending");
    }
    c.wait_pod("nonroot-ok", "Running", Duration::from_secs(120), running);
    assert_eq!(exec_in(&c, "nonroot-ok", "c", "id -u").trim(), "1000");

    c.server.ok(&["delete", "pod", "--all", "--wait=false"]);
    assert!(eventually(Duration::from_secs(60), || c.driver_containers().is_empty()), "containers left: {}", c.driver_containers());
}

#[test]
fn a_vm_isolated_pod_on_host_namespaces_gets_a_failed_sandbox_event() {
    // The node serves VM-isolated pods; none of these gets as far as booting a VM.
    let (kernel, agent) = common::vm_guest();
    let env = vec![("STRATA_VM_KERNEL".to_string(), kernel.display().to_string()), ("STRATA_GUEST_AGENT".to_string(), agent.display().to_string())];
    let c = cluster_env(&[], false, env);
    let pod = |name: &str, field: &str| sleeper(name, &c.image, &format!("  runtimeClassName: strata-vm\n  {field}: true\n"));
    c.apply(&[pod("vm-hostnet", "hostNetwork"), pod("vm-hostpid", "hostPID"), pod("vm-hostipc", "hostIPC")].join("---\n"));
    for (name, why) in [
        ("vm-hostnet", "a VM-isolated pod cannot use the node's network"),
        ("vm-hostpid", "a VM-isolated pod cannot share the node's IPC or PID namespace"),
        ("vm-hostipc", "a VM-isolated pod cannot share the node's IPC or PID namespace"),
    ] {
        let mut got = Vec::new();
        let ok = eventually(Duration::from_secs(60), || {
            got = c.events_for(name);
            got.iter().any(|(r, _)| r == "FailedCreatePodSandBox")
        });
        assert!(ok, "{name}: no FailedCreatePodSandBox event: {got:?}");
        let msg = got.iter().find(|(r, _)| r == "FailedCreatePodSandBox").map(|(_, m)| m.clone()).unwrap_or_default();
        assert_eq!(msg, format!("Failed to create pod sandbox: {why}"), "{name}");
        let p = c.pod(name);
        assert_eq!(phase(&p), "Pending", "{p}");
    }
    // Nothing was made for them.
    let sandboxes: Vec<_> = std::fs::read_dir(c.server.root().join("microvm/sandboxes")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(sandboxes.is_empty(), "{sandboxes:?}");
    c.server.ok(&["delete", "pod", "--all", "--wait=false"]);
}

/// The services' environment variables (kubelet's: every service of the pod's namespace with a
/// cluster IP, unless `enableServiceLinks: false`, and always the API server's
/// `default/kubernetes`), and `subPathExpr` mounts expanded from the container's environment
/// (an absolute or `..` result a CreateContainerConfigError, until the pod changes so that it is
/// not). Upstream's conformance specs "Pods should contain environment variables for services"
/// and the "Variable Expansion ... volume subpath" ones.
#[test]
fn service_links_and_sub_path_expressions() {
    let c = cluster(&[]);
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: foo-service\nspec:\n  clusterIP: 10.96.7.7\n  selector: {app: none}\n  ports:\n  - {name: http, port: 8765, targetPort: 8080}\n  - {name: dns, port: 53, protocol: UDP}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: headless\nspec:\n  clusterIP: None\n  selector: {app: none}\n  ports: [{port: 80}]\n\
         ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: bar\nspec:\n  selector: {app: none}\n  ports: [{port: 80}]\n",
    );
    // A Service without a cluster IP gets a free one of the service range (10.96.0.0/12); a
    // requested one must be free.
    let bar_ip = c.server.ok(&["get", "svc", "bar", "-o", "jsonpath={.spec.clusterIP} {.spec.clusterIPs[0]}"]);
    let (ip, ips) = bar_ip.split_once(' ').expect("two fields");
    let octets: Vec<u8> = ip.split('.').filter_map(|o| o.parse().ok()).collect();
    assert!(octets.len() == 4 && octets[0] == 10 && (96..112).contains(&octets[1]) && ip != "10.96.0.1" && ip != "10.96.7.7" && ips == ip, "{bar_ip}");
    let taken = c.server.fails(&["create", "service", "clusterip", "again", "--clusterip", "10.96.7.7", "--tcp", "80"], None);
    assert!(taken.contains("failed to allocate IP 10.96.7.7: provided IP is already allocated"), "{taken}");
    let outside = c.server.fails(&["create", "service", "clusterip", "outside", "--clusterip", "192.168.1.1", "--tcp", "80"], None);
    assert!(outside.contains("is not in the valid range. The range of valid IPs is 10.96.0.0/12"), "{outside}");
    // An update keeps it.
    c.server.ok(&["label", "svc", "bar", "x=y"]);
    assert_eq!(c.server.ok(&["get", "svc", "bar", "-o", "jsonpath={.spec.clusterIP}"]), ip);
    let env_pod = |name: &str, links: bool, sub_expr: &str, annotations: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 1\n  enableServiceLinks: {links}\n  containers:\n  - name: c\n    image: {img}\n    command: [sh, -c, 'env > /sub/env; sleep 3600']\n    env:\n    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}\n    - {{name: DIR, valueFrom: {{fieldRef: {{fieldPath: \"metadata.annotations['dir']\"}}}}}}\n    - {{name: LINK, value: '$(FOO_SERVICE_SERVICE_HOST):$(FOO_SERVICE_SERVICE_PORT_HTTP)'}}\n    volumeMounts: [{{name: work, mountPath: /sub, subPathExpr: '{sub_expr}'}}]\n  volumes: [{{name: work, emptyDir: {{}}}}]\n",
            img = c.image
        )
    };
    c.apply(&[
        env_pod("links", true, "logs/$(POD_NAME)", ""),
        env_pod("nolinks", false, "$(POD_NAME)", ""),
        env_pod("escape", true, "$(DIR)", "dir: '..'"),
        env_pod("later", true, "$(DIR)/$(POD_NAME)", ""),
    ]
    .join("---\n"));
    let running = |p: &Value| phase(p) == "Running" && condition(p, "Ready") == "True";
    let env_of = |name: &str, sub: &str| -> Vec<String> {
        let p = c.wait_pod(name, "Running", Duration::from_secs(120), running);
        let path = c.volume_dir(&p, "work").join(sub).join("env");
        assert!(eventually(Duration::from_secs(30), || std::fs::metadata(&path).is_ok_and(|m| m.len() > 0)), "{} never written", path.display());
        std::thread::sleep(Duration::from_millis(300));
        std::fs::read_to_string(&path).unwrap_or_default().lines().map(str::to_string).collect()
    };
    let env = env_of("links", "logs/links");
    for want in [
        "FOO_SERVICE_SERVICE_HOST=10.96.7.7",
        "FOO_SERVICE_SERVICE_PORT=8765",
        "FOO_SERVICE_SERVICE_PORT_HTTP=8765",
        "FOO_SERVICE_SERVICE_PORT_DNS=53",
        "FOO_SERVICE_PORT=tcp://10.96.7.7:8765",
        "FOO_SERVICE_PORT_8765_TCP=tcp://10.96.7.7:8765",
        "FOO_SERVICE_PORT_8765_TCP_PROTO=tcp",
        "FOO_SERVICE_PORT_8765_TCP_PORT=8765",
        "FOO_SERVICE_PORT_8765_TCP_ADDR=10.96.7.7",
        "FOO_SERVICE_PORT_53_UDP=udp://10.96.7.7:53",
        "KUBERNETES_SERVICE_HOST=10.96.0.1",
        "KUBERNETES_SERVICE_PORT=443",
        "KUBERNETES_PORT=tcp://10.96.0.1:443",
        "LINK=10.96.7.7:8765",
        format!("BAR_SERVICE_HOST={ip}").as_str(),
        format!("BAR_PORT_80_TCP=tcp://{ip}:80").as_str(),
    ] {
        assert!(env.iter().any(|l| l == want), "{want} missing from env:\n{}", env.join("\n"));
    }
    assert!(!env.iter().any(|l| l.starts_with("HEADLESS_")), "a headless service has no variables:\n{}", env.join("\n"));
    // Without service links: only the API server's service (and $(VAR) of a missing one stays).
    let env = env_of("nolinks", "nolinks");
    assert!(env.iter().any(|l| l == "KUBERNETES_SERVICE_HOST=10.96.0.1"), "{}", env.join("\n"));
    assert!(!env.iter().any(|l| l.starts_with("FOO_SERVICE_")), "{}", env.join("\n"));
    assert!(env.iter().any(|l| l == "LINK=$(FOO_SERVICE_SERVICE_HOST):$(FOO_SERVICE_SERVICE_PORT_HTTP)"), "{}", env.join("\n"));

    // A subPathExpr that steps out of its volume, or is absolute (the annotation not there
    // yet), is kubelet's CreateContainerConfigError; setting the annotation lets "later" start.
    for (name, msg) in [("escape", "unable to provision SubPath `..`: must not contain '..'"), ("later", "error SubPath `/later` must not be an absolute path")] {
        let p = c.wait_pod(name, "CreateContainerConfigError", Duration::from_secs(60), |p| waiting_reason(p, 0) == "CreateContainerConfigError");
        assert_eq!(p["status"]["containerStatuses"][0]["state"]["waiting"]["message"], msg, "{p}");
        assert_eq!(phase(&p), "Pending");
    }
    c.server.ok(&["annotate", "pod", "later", "dir=mine"]);
    let env = env_of("later", "mine/later");
    assert!(env.iter().any(|l| l == "DIR=mine"), "{}", env.join("\n"));

    c.server.ok(&["delete", "pod", "--all", "--wait=false"]);
    assert!(eventually(Duration::from_secs(60), || c.driver_containers().is_empty()), "containers left: {}", c.driver_containers());
}

/// Ephemeral containers through `pods/ephemeralcontainers` (what `kubectl debug` writes): run
/// once in the pod's sandbox, reported in ephemeralContainerStatuses, reachable by exec and
/// logs (over WebSocket too, as upstream's e2e reads logs); never set on create, never changed
/// or removed. Upstream's conformance specs "Ephemeral Containers ..." and "Pods should support
/// retrieving logs from the container over websockets".
#[test]
fn ephemeral_containers_and_logs_over_websocket() {
    let c = cluster(&[]);
    c.apply(&sleeper("target", &c.image, ""));
    let running = |p: &Value| phase(p) == "Running" && condition(p, "Ready") == "True";
    c.wait_pod("target", "Running", Duration::from_secs(120), running);
    // A pod cannot bring its own.
    let refused = c.server.fails(
        &["apply", "-f", "-"],
        Some(&sleeper("own", &c.image, &format!("  ephemeralContainers:\n  - {{name: d, image: {}}}\n", c.image))),
    );
    assert!(refused.contains("spec.ephemeralContainers: Forbidden: cannot be set on create"), "{refused}");

    c.server.ok(&["debug", "target", "--image", &c.image, "--container", "debugger", "--", "sh", "-c", "while true; do echo polo; sleep 1; done"]);
    let p = c.wait_pod("target", "the ephemeral container running", Duration::from_secs(120), |p| {
        p["status"]["ephemeralContainerStatuses"][0]["state"]["running"].is_object()
    });
    let s = &p["status"]["ephemeralContainerStatuses"][0];
    assert_eq!((s["name"].as_str(), s["ready"].as_bool()), (Some("debugger"), Some(false)), "{s}");
    assert_eq!(p["spec"]["ephemeralContainers"][0]["terminationMessagePolicy"], "File", "defaulted: {p}");
    assert!(running(&p), "the pod stays ready: {p}");
    assert_eq!(exec_in(&c, "target", "debugger", "echo marco").trim(), "marco");
    assert!(eventually(Duration::from_secs(30), || c.server.ok(&["logs", "target", "-c", "debugger"]).contains("polo")), "no log");
    // The subresource reads as the pod; its writes change nothing but ephemeral containers and
    // never an existing one.
    let sub = c.server.get_json("/api/v1/namespaces/default/pods/target/ephemeralcontainers");
    assert_eq!(sub["spec"]["ephemeralContainers"].as_array().map(Vec::len), Some(1), "{sub}");
    let mut changed = sub.clone();
    changed["spec"]["ephemeralContainers"][0]["image"] = Value::from("other:1");
    let body = serde_json::to_vec(&changed).expect("json");
    let (code, out) = c.server.curl("PUT", "/api/v1/namespaces/default/pods/target/ephemeralcontainers", Auth::Admin, Some("application/json"), Some(&body));
    assert_eq!(code, 422, "{out}");
    assert!(out.contains("existing ephemeral containers \\\"debugger\\\" may not be changed"), "{out}");
    let mut added = sub.clone();
    added["metadata"]["labels"] = serde_json::json!({"ignored": "yes"});
    added["spec"]["ephemeralContainers"].as_array_mut().expect("list").push(serde_json::json!({"name": "debugger2", "image": c.image, "command": ["sh", "-c", "echo second"]}));
    let body = serde_json::to_vec(&added).expect("json");
    let (code, out) = c.server.curl("PUT", "/api/v1/namespaces/default/pods/target/ephemeralcontainers", Auth::Admin, Some("application/json"), Some(&body));
    assert_eq!(code, 200, "{out}");
    let p = c.wait_pod("target", "the second one exited", Duration::from_secs(120), |p| {
        p["status"]["ephemeralContainerStatuses"].as_array().and_then(|l| l.iter().find(|s| s["name"] == "debugger2")).is_some_and(|s| s["state"]["terminated"]["exitCode"] == 0)
    });
    assert!(p["metadata"]["labels"]["ignored"].is_null(), "only ephemeral containers change: {p}");
    // An update of the pod itself keeps them.
    c.server.ok(&["label", "pod", "target", "x=y"]);
    assert_eq!(c.pod("target")["spec"]["ephemeralContainers"].as_array().map(Vec::len), Some(2));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.pod("target")["status"]["ephemeralContainerStatuses"].as_array().and_then(|l| l.iter().find(|s| s["name"] == "debugger2")).map(|s| s["restartCount"].clone()), Some(Value::from(0)), "never restarted");

    // pods/log over WebSocket: binary messages (binary.k8s.io) or base64 text ones.
    for protocol in ["binary.k8s.io", "base64.binary.k8s.io"] {
        let out = c.server.python("log_websocket.py", &["default", "target", "debugger2", protocol]);
        assert_eq!(out, format!("protocol={protocol}\nsecond\n"), "{protocol}");
    }

    c.server.ok(&["delete", "pod", "--all", "--wait=false"]);
    assert!(eventually(Duration::from_secs(60), || c.driver_containers().is_empty()), "containers left: {}", c.driver_containers());
}

/// postStart hooks (upstream's "Container Lifecycle Hook ... poststart exec/http hook" specs): an
/// exec hook runs in the container right after it starts; an httpGet one calls its host (here
/// another pod); one that fails is a FailedPostStartHook event and kills the container, which
/// then follows its restart policy.
#[test]
fn post_start_hooks_run_once_started_and_a_failed_one_kills_the_container() {
    let c = cluster(&[]);
    c.apply(&[
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: server\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {img}\n    command: [sh, -c, 'while true; do rm -f /tmp/f; mkfifo /tmp/f; cat /tmp/f | nc -l -p 8080 | {{ read l; echo \"$l\"; printf \"HTTP/1.0 200 OK\\\\r\\\\nContent-Length: 2\\\\r\\\\n\\\\r\\\\nok\" > /tmp/f; }}; done']\n",
            img = c.image
        ),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hooked\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {img}\n    command: [sh, -c, 'sleep 3600']\n    lifecycle:\n      postStart:\n        exec: {{command: [sh, -c, 'echo hooked-$HOSTNAME > /work/post']}}\n    volumeMounts: [{{name: work, mountPath: /work}}]\n  volumes: [{{name: work, emptyDir: {{}}}}]\n",
            img = c.image
        ),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: badhook\nspec:\n  nodeName: node-a\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {img}\n    command: [sh, -c, 'sleep 3600']\n    lifecycle:\n      postStart:\n        exec: {{command: [sh, -c, 'echo no way >&2; exit 3']}}\n",
            img = c.image
        ),
    ]
    .join("---\n"));
    let running = |p: &Value| phase(p) == "Running" && condition(p, "Ready") == "True";
    let p = c.wait_pod("hooked", "Running", Duration::from_secs(120), running);
    let post = c.volume_dir(&p, "work").join("post");
    assert!(eventually(Duration::from_secs(30), || std::fs::read_to_string(&post).is_ok_and(|s| s == "hooked-hooked\n")), "{} not written", post.display());

    // An httpGet hook reaches its host: the server pod logs the request.
    let server = c.wait_pod("server", "Running", Duration::from_secs(120), running);
    let ip = server["status"]["podIP"].as_str().expect("ip").to_string();
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: http-hooked\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {img}\n    command: [sleep, '3600']\n    lifecycle:\n      postStart:\n        httpGet: {{host: '{ip}', port: 8080, path: '/echo?msg=poststart'}}\n",
        img = c.image
    ));
    c.wait_pod("http-hooked", "Running", Duration::from_secs(120), running);
    assert!(eventually(Duration::from_secs(30), || c.server.ok(&["logs", "server"]).contains("/echo?msg=poststart")), "{}", c.server.ok(&["logs", "server"]));

    // A failing hook: the event, and the container killed (restartPolicy Never: the pod fails).
    let p = c.wait_pod("badhook", "Failed", Duration::from_secs(120), |p| phase(p) == "Failed");
    assert!(p["status"]["containerStatuses"][0]["state"]["terminated"].is_object(), "{p}");
    let events = c.events_for("badhook");
    assert!(events.iter().any(|(r, m)| r == "FailedPostStartHook" && m.contains("PostStartHook failed") && m.contains("no way")), "{events:?}");

    c.server.ok(&["delete", "pod", "--all", "--wait=false"]);
    assert!(eventually(Duration::from_secs(60), || c.driver_containers().is_empty()), "containers left: {}", c.driver_containers());
}

/// A pod's `activeDeadlineSeconds` (set or shortened while it runs) ends it: its containers
/// stopped, Failed with kubelet's DeadlineExceeded; termination messages as kubelet takes them:
/// a file any container user may write (a non-root one at a non-default path), and the end of
/// the log for a failed container with FallbackToLogsOnError (not for one that succeeded).
/// Upstream's "Pods should allow activeDeadlineSeconds to be updated" and "Container Runtime
/// blackbox test on terminated container ..." specs.
#[test]
fn active_deadlines_and_termination_messages() {
    let c = cluster(&[]);
    let once = |name: &str, extra: &str, script: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: node-a\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {img}\n    command: [sh, -c, '{script}']\n{extra}",
            img = c.image
        )
    };
    c.apply(&[
        sleeper("deadline", &c.image, ""),
        once("fallback", "    terminationMessagePolicy: FallbackToLogsOnError\n", "echo first; echo DONE; exit 1"),
        once("fallback-ok", "    terminationMessagePolicy: FallbackToLogsOnError\n", "echo DONE; exit 0"),
        once("nonroot-msg", "    terminationMessagePath: /tmp/dev/termination-log\n    securityContext: {runAsUser: 1000}\n", "echo -n DONE > /tmp/dev/termination-log"),
    ]
    .join("---\n"));
    let terminated = |name: &str| -> Value {
        let p = c.wait_pod(name, "terminated", Duration::from_secs(120), |p| matches!(phase(p), "Succeeded" | "Failed"));
        p["status"]["containerStatuses"][0]["state"]["terminated"].clone()
    };
    let t = terminated("fallback");
    assert_eq!((t["exitCode"].as_i64(), t["message"].as_str()), (Some(1), Some("first\nDONE\n")), "{t}");
    let t = terminated("fallback-ok");
    assert_eq!((t["exitCode"].as_i64(), t["message"].as_str()), (Some(0), None), "{t}");
    let t = terminated("nonroot-msg");
    assert_eq!((t["exitCode"].as_i64(), t["message"].as_str()), (Some(0), Some("DONE")), "{t}");

    c.wait_pod("deadline", "Running", Duration::from_secs(120), |p| phase(p) == "Running" && condition(p, "Ready") == "True");
    c.server.ok(&["patch", "pod", "deadline", "-p", r#"{"spec":{"activeDeadlineSeconds":5}}"#]);
    let p = c.wait_pod("deadline", "Failed with DeadlineExceeded", Duration::from_secs(90), |p| phase(p) == "Failed");
    assert_eq!(p["status"]["reason"], "DeadlineExceeded", "{p}");
    assert_eq!(p["status"]["message"], "Pod was active on the node longer than the specified deadline", "{p}");
    assert!(p["status"]["containerStatuses"][0]["state"]["terminated"].is_object(), "{p}");
    assert!(eventually(Duration::from_secs(30), || !c.driver_containers().contains("Up")), "{}", c.driver_containers());

    c.server.ok(&["delete", "pod", "--all", "--wait=false"]);
    assert!(eventually(Duration::from_secs(60), || c.driver_containers().is_empty()), "containers left: {}", c.driver_containers());
}
