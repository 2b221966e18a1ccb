"""A container's log read over WebSocket, as upstream's e2e "retrieving logs from the container
over websockets" does: GET pods/POD/log with Upgrade: websocket and one subprotocol; prints the
subprotocol the server chose and, decoded, what its messages carried until it closed.
Usage: log_websocket.py NAMESPACE POD CONTAINER SUBPROTOCOL"""
import base64
import ssl
import sys

import websocket
from kubernetes import client, config

ns, pod, container, protocol = sys.argv[1:5]
config.load_kube_config()
cfg = client.Configuration.get_default_copy()
url = cfg.host.replace("https://", "wss://") + f"/api/v1/namespaces/{ns}/pods/{pod}/log?container={container}"
sslopt = {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": cfg.ssl_ca_cert, "certfile": cfg.cert_file, "keyfile": cfg.key_file}
header = []
if cfg.api_key.get("authorization"):
    header.append("Authorization: " + cfg.api_key["authorization"])
ws = websocket.create_connection(url, sslopt=sslopt, header=header, subprotocols=[protocol], timeout=60)
chosen = ws.getsubprotocol()
data = b""
while True:
    opcode, payload = ws.recv_data(control_frame=False)
    if opcode == websocket.ABNF.OPCODE_CLOSE:
        break
    if opcode == websocket.ABNF.OPCODE_TEXT:
        data += base64.b64decode(payload)
    else:
        data += payload
ws.close()
print("protocol=" + str(chosen))
sys.stdout.write(data.decode())
