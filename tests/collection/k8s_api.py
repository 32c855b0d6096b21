"""A loopback Kubernetes API server for the kinds of deploy/kubernetes, enough for kubernetes.core.

It serves what the official client's dynamic discovery reads (``/version``, ``/api``, ``/apis``
and each group version's resource list) and, for those resources, get, list, create (409 when
it exists), replace and patch (merge and strategic merge applied as a JSON merge patch, which
is what they are for the fields these objects use) with 404/409 answers as ``Status`` objects.
Workload controllers report every StatefulSet, DaemonSet and Deployment ready at once, so that
waits for readiness end. Every request must carry the kubeconfig's bearer token.
"""

from __future__ import annotations

import contextlib
import copy
import json
import secrets
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

# (group, version) -> [(plural, kind, namespaced)]
RESOURCES: dict[tuple[str, str], list[tuple[str, str, bool]]] = {
    ("", "v1"): [("namespaces", "Namespace", False), ("serviceaccounts", "ServiceAccount", True),
                 ("configmaps", "ConfigMap", True), ("services", "Service", True),
                 ("pods", "Pod", True), ("nodes", "Node", False)],
    ("apps", "v1"): [("statefulsets", "StatefulSet", True), ("daemonsets", "DaemonSet", True),
                     ("deployments", "Deployment", True)],
    ("rbac.authorization.k8s.io", "v1"): [("clusterroles", "ClusterRole", False),
                                          ("clusterrolebindings", "ClusterRoleBinding", False),
                                          ("roles", "Role", True), ("rolebindings", "RoleBinding", True)],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class KubeAPI:
    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(16)
        # (group, plural, namespace, name) -> object
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.port = 0

    # -- what tests read and set
    def get(self, kind: str, name: str, namespace: str = "") -> Optional[dict[str, Any]]:
        with self.lock:
            for (group, plural, ns, n), obj in self.objects.items():
                if obj["kind"] == kind and n == name and ns == namespace:
                    return copy.deepcopy(obj)
        return None

    def set_configmap_data(self, namespace: str, name: str, data: dict[str, str]) -> None:
        with self.lock:
            obj = self.objects[("", "configmaps", namespace, name)]
            obj["data"] = dict(data)
            self._bump(obj)

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "loopback",
            "clusters": [{"name": "loopback", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "tester", "user": {"token": self.token}}],
            "contexts": [{"name": "loopback", "context": {"cluster": "loopback", "user": "tester"}}],
        }))
        return path

    # -- the API
    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        self.requests.append((method, path))
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, _status(401, "Unauthorized", "Unauthorized")
        path = path.split("?", 1)[0].rstrip("/")
        if path == "/version":
            return 200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if path == "/apis":
            groups = [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                       "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}}
                      for (g, v) in RESOURCES if g]
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            group, version, rest = "", parts[1] if len(parts) > 1 else "", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        if (group, version) not in RESOURCES:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        resources = {r[0]: r for r in RESOURCES[(group, version)]}
        if not rest:
            gv = f"{group}/{version}" if group else version
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
                {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind, "verbs": VERBS}
                for plural, kind, namespaced in resources.values()]}
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name = rest[0], (rest[1] if len(rest) > 1 else "")
        if plural not in resources or len(rest) > 2:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        _, kind, namespaced = resources[plural]
        if namespaced != bool(namespace) and not (method == "GET" and not name):
            return 404, _status(404, "NotFound", f"{plural} must be addressed {'in' if namespaced else 'outside'} a namespace")
        payload = json.loads(body) if body else None
        with self.lock:
            return self._crud(method, group, version, plural, kind, namespace, name, payload,
                              headers.get("content-type", ""))

    def _crud(self, method: str, group: str, version: str, plural: str, kind: str, namespace: str, name: str,
              payload: Any, content_type: str) -> tuple[int, Any]:
        key = (group, plural, namespace, name)
        gv = f"{group}/{version}" if group else version
        if method == "GET" and not name:
            items = [copy.deepcopy(o) for (g, p, ns, _), o in sorted(self.objects.items())
                     if g == group and p == plural and (not namespace or ns == namespace)]
            return 200, {"kind": f"{kind}List", "apiVersion": gv, "metadata": {"resourceVersion": "1"}, "items": items}
        if method == "GET":
            if key not in self.objects:
                return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
            return 200, copy.deepcopy(self.objects[key])
        if method == "POST":
            if not isinstance(payload, dict) or payload.get("kind") != kind:
                return 400, _status(400, "BadRequest", f"the body is not a {kind}")
            name = payload.get("metadata", {}).get("name", "")
            key = (group, plural, namespace, name)
            if key in self.objects:
                return 409, _status(409, "AlreadyExists", f'{plural} "{name}" already exists')
            if namespace and ("", "namespaces", "", namespace) not in self.objects:
                return 404, _status(404, "NotFound", f'namespaces "{namespace}" not found')
            obj = copy.deepcopy(payload)
            meta = obj.setdefault("metadata", {})
            meta.update(uid=str(uuid.uuid4()), creationTimestamp="2026-01-01T00:00:00Z", generation=1)
            if namespace:
                meta["namespace"] = namespace
            self._bump(obj)
            self._controllers(obj)
            self.objects[key] = obj
            return 201, copy.deepcopy(obj)
        if method in ("PUT", "PATCH"):
            if key not in self.objects:
                return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
            if method == "PATCH" and "json-patch" in content_type:
                return 415, _status(415, "UnsupportedMediaType", "json-patch is not served here")
            old = self.objects[key]
            new = merge_patch(old, payload) if method == "PATCH" else copy.deepcopy(payload)
            for field in ("uid", "creationTimestamp", "resourceVersion", "generation", "namespace"):
                if field in old["metadata"]:
                    new["metadata"][field] = old["metadata"][field]
            if new != old:
                if new.get("spec") != old.get("spec"):
                    new["metadata"]["generation"] = old["metadata"]["generation"] + 1
                self._bump(new)
                self._controllers(new)
                self.objects[key] = new
            return 200, copy.deepcopy(self.objects[key])
        return 405, _status(405, "MethodNotAllowed", f"{method} is not served here")

    def _bump(self, obj: dict[str, Any]) -> None:
        self._rv = getattr(self, "_rv", 0) + 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    @staticmethod
    def _controllers(obj: dict[str, Any]) -> None:
        # Workloads become ready at once: the tests check the playbook, not a scheduler.
        gen = obj["metadata"]["generation"]
        spec = obj.get("spec") or {}
        if obj["kind"] == "StatefulSet":
            spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
            n = spec.get("replicas", 1)
            obj["status"] = {"observedGeneration": gen, "replicas": n, "readyReplicas": n, "updatedReplicas": n,
                             "currentReplicas": n, "availableReplicas": n,
                             "currentRevision": "spire-server-1", "updateRevision": "spire-server-1"}
        elif obj["kind"] == "DaemonSet":
            spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
            obj["status"] = {"observedGeneration": gen, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                             "numberReady": 1, "updatedNumberScheduled": 1, "numberAvailable": 1,
                             "numberMisscheduled": 0}
        elif obj["kind"] == "Deployment":
            n = spec.get("replicas", 1)
            obj["status"] = {"observedGeneration": gen, "replicas": n, "readyReplicas": n, "updatedReplicas": n,
                             "availableReplicas": n, "conditions": [
                                 {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                                 {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}


@contextlib.contextmanager
def kube_api() -> Iterator[KubeAPI]:
    api = KubeAPI()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _do(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length > 4 * 1024 * 1024:
                self.send_error(413)
                return
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            code, obj = api.handle(self.command, self.path, headers, body)
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _do

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    api.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
