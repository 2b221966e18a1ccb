"""The ReplicaSet scale conformance spec's writes with the official Python client: PUTs of
/scale without a resourceVersion (unconditional, as the spec clears it) while another writer
keeps changing the ReplicaSet's status (as its controller does). Every PUT must succeed: a
write without a precondition is retried by the server, never a 409. Prints "ok" or what failed."""
import sys
import threading
import time

from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config()
apps = client.AppsV1Api()
NS = sys.argv[1]
NAME = "scaled"
PUTS = 60

rs = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "metadata": {"name": NAME},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": NAME}},
        "template": {"metadata": {"labels": {"app": NAME}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    },
}
apps.create_namespaced_replica_set(NS, rs)

stop = threading.Event()
status_writes = [0]


def churn():
    n = 0
    while not stop.is_set():
        n += 1
        try:
            apps.patch_namespaced_replica_set_status(NAME, NS, {"status": {"replicas": n % 7, "fullyLabeledReplicas": n % 7}})
            status_writes[0] += 1
        except ApiException as e:
            print(f"status write: {e.status} {e.reason}", file=sys.stderr)


threads = [threading.Thread(target=churn) for _ in range(3)]
for t in threads:
    t.start()
failures = []
try:
    for i in range(PUTS):
        scale = apps.read_namespaced_replica_set_scale(NAME, NS)
        scale.metadata.resource_version = None
        scale.spec.replicas = 2 + i % 3
        try:
            got = apps.replace_namespaced_replica_set_scale(NAME, NS, scale)
            if got.spec.replicas != scale.spec.replicas:
                failures.append(f"PUT {i}: answered replicas {got.spec.replicas}, wanted {scale.spec.replicas}")
        except ApiException as e:
            failures.append(f"PUT {i}: {e.status} {e.reason}: {e.body}")
finally:
    stop.set()
    for t in threads:
        t.join()

if status_writes[0] < PUTS:
    failures.append(f"only {status_writes[0]} status writes raced with {PUTS} PUTs")
print("ok" if not failures else f"{len(failures)} of {PUTS} failed (with {status_writes[0]} status writes):\n" + "\n".join(failures[:10]))
