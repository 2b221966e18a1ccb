"""Drive strata's API server with the official Python client (PyPI `kubernetes`):
pagination over 2000 ConfigMaps, optimistic concurrency (409), label selectors, watch."""
import concurrent.futures
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config()
v1 = client.CoreV1Api()
NS = "pages"
N = 2000

v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))


def make(i):
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=f"cm-{i:04d}", labels={"parity": "even" if i % 2 == 0 else "odd"}),
        data={"i": str(i)},
    )
    v1.create_namespaced_config_map(NS, body)


with concurrent.futures.ThreadPoolExecutor(16) as pool:
    list(pool.map(make, range(N)))

# Pages of 300 with continue tokens: every object exactly once, in name order.
names, token, pages = [], None, 0
while True:
    page = v1.list_namespaced_config_map(NS, limit=300, _continue=token)
    pages += 1
    assert len(page.items) <= 300, len(page.items)
    names += [cm.metadata.name for cm in page.items]
    token = page.metadata._continue
    if not token:
        break
assert len(names) == N, len(names)
assert len(set(names)) == N, "duplicates across pages"
assert names == sorted(names), "pages are in key order"
assert pages == 7, pages

odd = v1.list_namespaced_config_map(NS, label_selector="parity=odd")
assert len(odd.items) == N // 2, len(odd.items)
one = v1.list_namespaced_config_map(NS, field_selector="metadata.name=cm-0042")
assert [c.metadata.name for c in one.items] == ["cm-0042"]

# Optimistic concurrency: two writers start from the same resourceVersion; the second loses.
a = v1.read_namespaced_config_map("cm-0001", NS)
b = v1.read_namespaced_config_map("cm-0001", NS)
a.data["i"] = "first"
v1.replace_namespaced_config_map("cm-0001", NS, a)
b.data["i"] = "second"
try:
    v1.replace_namespaced_config_map("cm-0001", NS, b)
    sys.exit("stale update was accepted")
except ApiException as e:
    assert e.status == 409, e.status
    assert "the object has been modified" in e.body, e.body
assert v1.read_namespaced_config_map("cm-0001", NS).data["i"] == "first"

# Watch: ADDED, MODIFIED, DELETED for one object, from the list's resourceVersion.
rv = v1.list_namespaced_config_map(NS, limit=1).metadata.resource_version
seen = []


def watcher():
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_config_map, NS, resource_version=rv, field_selector="metadata.name=watched", timeout_seconds=20):
        seen.append(ev["type"])
        if ev["type"] == "DELETED":
            w.stop()


t = threading.Thread(target=watcher)
t.start()
import time
time.sleep(0.5)
v1.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="watched"), data={"v": "1"}))
v1.patch_namespaced_config_map("watched", NS, {"data": {"v": "2"}})
v1.delete_namespaced_config_map("watched", NS)
t.join(25)
assert seen == ["ADDED", "MODIFIED", "DELETED"], seen

# Deleting the namespace deletes what is in it.
v1.delete_namespace(NS)
# (generous: the suite runs many servers at once on two loaded cores)
for _ in range(600):
    try:
        v1.read_namespace(NS)
        time.sleep(0.1)
    except ApiException as e:
        assert e.status == 404
        break
else:
    sys.exit("namespace was not deleted")
print("ok")
