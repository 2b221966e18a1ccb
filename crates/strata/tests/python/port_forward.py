"""Port-forward through the Python client's portforward() (WebSocket, v4 channels: data and
error channel per port): one HTTP request to PORT in the pod, prints the response body.
Usage: port_forward.py NAMESPACE POD PORT"""
import sys

from kubernetes import client, config
from kubernetes.stream import portforward

ns, pod, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
config.load_kube_config()
api = client.CoreV1Api()
pf = portforward(api.connect_get_namespaced_pod_portforward, pod, ns, ports=str(port))
sock = pf.socket(port)
sock.setblocking(True)
sock.settimeout(60)
sock.sendall(b"GET /py HTTP/1.0\r\n\r\n")
data = b""
while True:
    chunk = sock.recv(4096)
    if not chunk:
        break
    data += chunk
sock.close()
print(data.decode().split("\r\n\r\n", 1)[1])
err = pf.error(port)
if err:
    print("error: " + err)
