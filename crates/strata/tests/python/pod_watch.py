"""A pod through the Python client: create it, watch its phase change until it ends, read its
log. Usage: pod_watch.py NAMESPACE POD NODE IMAGE. Prints the phases seen (in order, repeats
dropped) and the log."""
import sys

from kubernetes import client, config, watch

ns, name, node, image = sys.argv[1:5]
config.load_kube_config()
api = client.CoreV1Api()
pod = client.V1Pod(
    metadata=client.V1ObjectMeta(name=name),
    spec=client.V1PodSpec(
        node_name=node,
        restart_policy="Never",
        containers=[client.V1Container(name="c", image=image, command=["sh", "-c", "echo from-python-pod; sleep 2"])],
    ),
)
created = api.create_namespaced_pod(ns, pod)
phases = [created.status.phase or "Pending"]
w = watch.Watch()
for ev in w.stream(api.list_namespaced_pod, ns, field_selector="metadata.name=" + name,
                   resource_version=created.metadata.resource_version, timeout_seconds=120):
    phase = ev["object"].status.phase
    if phase and phase != phases[-1]:
        phases.append(phase)
    if phase in ("Succeeded", "Failed"):
        w.stop()
print("phases=" + ",".join(phases))
print("log=" + api.read_namespaced_pod_log(name, ns, container="c").strip())
