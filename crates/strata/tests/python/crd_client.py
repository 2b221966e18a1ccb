"""Drive a custom resource with the official Python client (PyPI `kubernetes`):
CustomObjectsApi create, get, merge patch, list, delete, then a watch from the list's
resourceVersion that must replay ADDED, MODIFIED and DELETED for the object; with a fifth
argument, also create the object from that JSON and print the API's answer.
Usage: crd_client.py GROUP VERSION PLURAL NAMESPACE NAME [BAD_OBJECT_JSON]; prints one JSON line."""
import json
import sys

from kubernetes import client, config, watch

group, version, plural, ns, name = sys.argv[1:6]
config.load_kube_config()
api = client.CustomObjectsApi()
out = {}
rv = api.list_namespaced_custom_object(group, version, ns, plural)["metadata"]["resourceVersion"]
body = {"apiVersion": f"{group}/{version}", "kind": sys.argv[7] if len(sys.argv) > 7 else "RedisCluster",
        "metadata": {"name": name}, "spec": {"replicas": 2, "image": "redis:7"}}
created = api.create_namespaced_custom_object(group, version, ns, plural, body)
out["created_api_version"] = created["apiVersion"]
patched = api.patch_namespaced_custom_object(group, version, ns, plural, name, {"spec": {"replicas": 4}})
out["patched_replicas"] = patched["spec"]["replicas"]
got = api.get_namespaced_custom_object(group, version, ns, plural, name)
out["got_replicas"] = got["spec"]["replicas"]
out["listed"] = [o["metadata"]["name"] for o in api.list_namespaced_custom_object(group, version, ns, plural)["items"]]
api.delete_namespaced_custom_object(group, version, ns, plural, name)
events = []
w = watch.Watch()
for ev in w.stream(api.list_namespaced_custom_object, group, version, ns, plural, resource_version=rv, timeout_seconds=20):
    if ev["object"]["metadata"]["name"] != name:
        continue
    events.append(ev["type"])
    if ev["type"] == "DELETED":
        w.stop()
out["events"] = events
if len(sys.argv) > 6 and sys.argv[6]:
    try:
        api.create_namespaced_custom_object(group, version, ns, plural, json.loads(sys.argv[6]))
        out["bad"] = "accepted"
    except client.exceptions.ApiException as e:
        out["bad_status"] = e.status
        out["bad"] = json.loads(e.body)
print(json.dumps(out))
