"""Create ConfigMaps from several threads as fast as possible, printing each name only after
the server acknowledged it (201). Runs until killed."""
import sys
import threading

from kubernetes import client, config

config.load_kube_config()
v1 = client.CoreV1Api()
lock = threading.Lock()


def run(t):
    i = 0
    while True:
        name = f"burst-{t}-{i}"
        try:
            v1.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name)))
        except Exception:
            return
        with lock:
            print(name, flush=True)
        i += 1


threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(int(sys.argv[1]) if len(sys.argv) > 1 else 8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
