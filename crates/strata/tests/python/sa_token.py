"""List a namespace's ConfigMaps with the official Python client (PyPI `kubernetes`),
authenticated by a bearer token only (a ServiceAccount token from TokenRequest).
Usage: sa_token.py SERVER_URL CA_FILE TOKEN NAMESPACE; prints the names."""
import sys

from kubernetes import client

url, ca, token, ns = sys.argv[1:5]
cfg = client.Configuration()
cfg.host = url
cfg.ssl_ca_cert = ca
cfg.api_key = {"authorization": token}
cfg.api_key_prefix = {"authorization": "Bearer"}
api = client.CoreV1Api(client.ApiClient(cfg))
for cm in api.list_namespaced_config_map(ns).items:
    print(cm.metadata.name)
