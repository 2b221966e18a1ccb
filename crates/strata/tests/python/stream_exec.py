"""Exec through the Python client's stream API (WebSocket, v5/v4 channels): the output, and the
exit code from the error channel's Status. Usage: stream_exec.py NAMESPACE POD CONTAINER"""
import sys

from kubernetes import client, config
from kubernetes.stream import stream

ns, pod, container = sys.argv[1:4]
config.load_kube_config()
api = client.CoreV1Api()
resp = stream(api.connect_get_namespaced_pod_exec, pod, ns, container=container,
              command=["sh", "-c", "echo hi from python; exit 7"],
              stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
resp.run_forever(timeout=60)
out = resp.read_stdout()
print("stdout=" + out.strip())
print("returncode=%s" % resp.returncode)
