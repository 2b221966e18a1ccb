"""Fetch strata's OpenAPI v2 document as JSON with the official Python client (PyPI
`kubernetes`) and check what clients rely on: definitions named as upstream with their
group-version-kind, PATCH operations that declare fieldValidation, references that resolve."""
import json

from kubernetes import client, config

config.load_kube_config()
api = client.ApiClient()
method, url, headers, body, _ = api.param_serialize("GET", "/openapi/v2", header_params={"Accept": "application/json"},
                                                    auth_settings=["BearerToken"])
resp = api.call_api(method, url, header_params=headers)
assert resp.status == 200, resp.status
assert resp.headers.get("Content-Type") == "application/json", resp.headers
doc = json.loads(resp.read())
assert doc["swagger"] == "2.0", doc.get("swagger")
defs = doc["definitions"]

deploy = defs["io.k8s.api.apps.v1.Deployment"]
assert deploy["x-kubernetes-group-version-kind"] == [{"group": "apps", "kind": "Deployment", "version": "v1"}], deploy
# As upstream v1.32.0's swagger.json: the reference with the field's description next to it.
assert deploy["properties"]["spec"] == {"$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec", "description": "Specification of the desired behavior of the Deployment."}, deploy["properties"]["spec"]
assert deploy["description"] == "Deployment enables declarative updates for Pods and ReplicaSets.", deploy["description"]
meta = defs["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]
assert meta["labels"]["additionalProperties"] == {"type": "string"}, meta["labels"]
container = defs["io.k8s.api.core.v1.Container"]["properties"]
assert container["image"]["type"] == "string" and container["ports"]["type"] == "array", container["ports"]
assert defs["io.k8s.api.core.v1.ConfigMapList"]["properties"]["items"]["items"] == {"$ref": "#/definitions/io.k8s.api.core.v1.ConfigMap"}

patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
assert patch["x-kubernetes-group-version-kind"] == {"group": "apps", "kind": "Deployment", "version": "v1"}, patch
assert any(p["name"] == "fieldValidation" and p["in"] == "query" for p in patch["parameters"]), patch["parameters"]
scale = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["get"]
assert scale["x-kubernetes-group-version-kind"]["kind"] == "Scale", scale

# Every reference resolves. (A "$ref" whose value is not a string is a property of that name, as
# JSONSchemaProps has in apiextensions.k8s.io, not a reference.)
def refs(v):
    if isinstance(v, dict):
        if isinstance(v.get("$ref"), str):
            yield v["$ref"]
        for x in v.values():
            yield from refs(x)
    elif isinstance(v, list):
        for x in v:
            yield from refs(x)

dangling = sorted({r for r in refs(doc) if r.removeprefix("#/definitions/") not in defs})
assert not dangling, dangling
print("ok")
