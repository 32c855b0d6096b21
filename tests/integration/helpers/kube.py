"""Loopback stand-ins for a Kubernetes cluster: the API server and a kubelet, over real TLS.

:class:`KubeAPIServer` serves what spire_py's Kubernetes plugins call, as the API server answers
it: ``POST /apis/authentication.k8s.io/v1/tokenreviews`` verifies real RS256 projected service
account tokens (:class:`TokenIssuer` signs them; signature, ``exp``/``nbf`` and audiences are
checked, the pod the token is bound to must still exist with its UID), ``GET`` pods and nodes, and
ConfigMap get/create/update (``resourceVersion`` conflicts answer 409)/merge-patch. Every request
must carry the bearer token of the kubeconfig :meth:`KubeAPIServer.write_kubeconfig` writes.

:class:`Kubelet` serves ``GET /pods`` over TLS to callers with its bearer token (or plain HTTP on
a read-only port).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import secrets
import ssl
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.integration.helpers.pki import X509Identity, key_pem, make_ca, pem

API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"


def serving_cert(ca: X509Identity, cn: str = "127.0.0.1", ips: tuple[str, ...] = ("127.0.0.1",),
                 dns: tuple[str, ...] = ("localhost",)) -> X509Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    sans += [x509.DNSName(d) for d in dns]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=6))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return X509Identity(cert, key)


def tls_context(d: Path, identity: X509Identity, name: str) -> ssl.SSLContext:
    cert_path, key_path = identity.write(d, name)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx


# --- projected service account tokens ---------------------------------------------------------

class TokenIssuer:
    """The cluster's service account signing key: RS256 tokens in the projected (bound) shape."""

    def __init__(self, issuer: str = "https://kubernetes.default.svc.cluster.local") -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.issuer = issuer
        self.kid = secrets.token_hex(8)

    def token(self, namespace: str, service_account: str, pod_name: str, pod_uid: str, *,
              audiences: tuple[str, ...] = ("spire-server",), ttl: float = 3600, issued: Optional[float] = None,
              key: Any = None) -> str:
        now = int(issued if issued is not None else time.time())
        claims = {
            "aud": list(audiences), "exp": int(now + ttl), "iat": now, "nbf": now, "iss": self.issuer,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "kubernetes.io": {
                "namespace": namespace,
                "pod": {"name": pod_name, "uid": pod_uid},
                "serviceaccount": {"name": service_account, "uid": str(uuid.uuid4())},
            },
        }
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})

    def review(self, token: str, audiences: list[str]) -> tuple[Optional[dict[str, Any]], str]:
        """(claims, "") when the token verifies for one of ``audiences``, else (None, why)."""
        wanted = audiences or [API_AUDIENCE]
        try:
            claims = jwt.decode(token, self.key.public_key(), algorithms=["RS256"], issuer=self.issuer,
                                options={"verify_aud": False, "require": ["exp", "iat", "sub"]})
        except jwt.PyJWTError as exc:
            return None, f"[invalid bearer token, {exc}]"
        aud = claims.get("aud") or []
        aud = [aud] if isinstance(aud, str) else aud
        if not set(aud) & set(wanted):
            return None, (f"[invalid bearer token, token audiences {json.dumps(aud)} is invalid for the target "
                          f"audiences {json.dumps(wanted)}]")
        return claims, ""


# --- objects ---------------------------------------------------------------------------------

def pod(namespace: str, name: str, *, uid: str = "", node_name: str = "node-1", host_ip: str = "10.0.0.1",
        service_account: str = "default", labels: Optional[dict[str, str]] = None,
        containers: Optional[list[dict[str, str]]] = None, init_containers: Optional[list[dict[str, str]]] = None,
        owners: Optional[list[dict[str, str]]] = None) -> dict[str, Any]:
    """A v1 Pod; ``containers`` are status entries ``{name, image, imageID, containerID}``."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4()),
                     "labels": labels or {}, "ownerReferences": [
                         {"apiVersion": "apps/v1", "kind": o["kind"], "name": o["name"], "uid": o["uid"]}
                         for o in owners or []]},
        "spec": {"nodeName": node_name, "serviceAccountName": service_account,
                 "containers": [{"name": c["name"], "image": c["image"]} for c in containers or []]},
        "status": {"phase": "Running", "hostIP": host_ip,
                   "containerStatuses": [dict(c) for c in containers or []],
                   "initContainerStatuses": [dict(c) for c in init_containers or []]},
    }


def node(name: str, *, uid: str = "", labels: Optional[dict[str, str]] = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": uid or str(uuid.uuid4()), "labels": labels or {}}}


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


# --- the servers ----------------------------------------------------------------------------------

Handler = Callable[[str, str, dict[str, str], bytes], tuple[int, Any]]


@contextlib.contextmanager
def _serve(handle: Handler, ctx: Optional[ssl.SSLContext]) -> Iterator[int]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _do(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                code, out = handle(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            except Exception as exc:  # a fixture bug shows as a 500 with its text
                code, out = 500, _status(500, "InternalError", f"fixture: {exc!r}")
            raw = out if isinstance(out, bytes) else json.dumps(out).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _do

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    server.daemon_threads = True
    if ctx is not None:
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="kube-fixture", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class KubeAPIServer:
    """State of the fixture API server; the tests add pods and nodes, read ConfigMaps."""

    directory: Path
    issuer: TokenIssuer = field(default_factory=TokenIssuer)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    configmaps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    ca: X509Identity = field(default_factory=lambda: make_ca("Test Kubernetes CA"))
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # False: review tokens as an API server that does not check the bound pod still exists.
    check_bound_pod: bool = True
    # False: answer as an audience-unaware authenticator (no status.audiences).
    audience_aware: bool = True
    # Answer this many ConfigMap updates with 409 Conflict first (another writer got there).
    conflicts: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def add_pod(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.pods[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return obj

    def add_node(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.nodes[obj["metadata"]["name"]] = obj
        return obj

    def configmap_data(self, namespace: str, name: str) -> Optional[dict[str, str]]:
        with self.lock:
            cm = self.configmaps.get((namespace, name))
            return dict(cm.get("data") or {}) if cm else None

    def write_kubeconfig(self, path: Path, token: str = "") -> Path:
        ca_path = path.parent / "kube-ca.pem"
        ca_path.write_bytes(pem(self.ca.cert))
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url, "certificate-authority": str(ca_path)}}],
            "users": [{"name": "spire", "user": {"token": token or self.admin_token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "spire"}}],
        }
        path.write_text(json.dumps(doc))
        return path

    # --- the API ---
    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        path = urllib.parse.urlsplit(raw_path).path
        with self.lock:
            self.requests.append(f"{method} {path}")
        if headers.get("authorization") != f"Bearer {self.admin_token}":
            return 401, _status(401, "Unauthorized", "Unauthorized")
        parts = [p for p in path.split("/") if p]
        if method == "POST" and path == "/apis/authentication.k8s.io/v1/tokenreviews":
            return self._token_review(json.loads(body or b"{}"))
        if parts[:2] == ["api", "v1"] and len(parts) == 4 and parts[2] == "nodes" and method == "GET":
            with self.lock:
                n = self.nodes.get(parts[3])
            return (200, n) if n else (404, _status(404, "NotFound", f'nodes "{parts[3]}" not found'))
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 5:
            ns, kind, name = parts[3], parts[4], parts[5] if len(parts) > 5 else ""
            if kind == "pods" and method == "GET" and name:
                with self.lock:
                    p = self.pods.get((ns, name))
                return (200, p) if p else (404, _status(404, "NotFound", f'pods "{name}" not found'))
            if kind == "configmaps":
                return self._configmap(method, ns, name, json.loads(body) if body else None)
        return 404, _status(404, "NotFound", "the server could not find the requested resource")

    def _token_review(self, review: dict[str, Any]) -> tuple[int, Any]:
        spec = review.get("spec") or {}
        audiences = list(spec.get("audiences") or [])
        with self.lock:
            self.reviews.append(spec)
        claims, why = self.issuer.review(spec.get("token", ""), audiences)
        status: dict[str, Any] = {"authenticated": False, "user": {}, "error": why}
        if claims is not None:
            k8s = claims.get("kubernetes.io") or {}
            bound = k8s.get("pod") or {}
            with self.lock:
                current = self.pods.get((k8s.get("namespace", ""), bound.get("name", "")))
            if self.check_bound_pod and (current is None or current["metadata"]["uid"] != bound.get("uid")):
                # As the API server: a token bound to a pod that is gone is no longer valid.
                status["error"] = "[invalid bearer token, pod not found or its UID differs]"
            else:
                aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
                status = {
                    "authenticated": True,
                    "audiences": [a for a in (audiences or [API_AUDIENCE]) if a in aud] if self.audience_aware else [],
                    "user": {
                        "username": claims["sub"],
                        "uid": k8s["serviceaccount"]["uid"],
                        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{k8s['namespace']}",
                                   "system:authenticated"],
                        "extra": {"authentication.kubernetes.io/pod-name": [bound["name"]],
                                  "authentication.kubernetes.io/pod-uid": [bound["uid"]]},
                    },
                }
        return 201, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {},
                     "spec": spec, "status": status}

    def _configmap(self, method: str, ns: str, name: str, body: Optional[dict[str, Any]]) -> tuple[int, Any]:
        with self.lock:
            current = self.configmaps.get((ns, name))
            if method == "GET":
                if not name:
                    return 200, {"kind": "ConfigMapList", "items": list(self.configmaps.values())}
                return (200, current) if current else (404, _status(404, "NotFound",
                                                                    f'configmaps "{name}" not found'))
            if method == "POST" and body is not None:
                name = body["metadata"]["name"]
                if (ns, name) in self.configmaps:
                    return 409, _status(409, "AlreadyExists", f'configmaps "{name}" already exists')
                obj = {**body, "metadata": {**body["metadata"], "namespace": ns, "resourceVersion": "1",
                                            "uid": str(uuid.uuid4())}}
                self.configmaps[(ns, name)] = obj
                return 201, obj
            if current is None:
                return 404, _status(404, "NotFound", f'configmaps "{name}" not found')
            version = int(current["metadata"]["resourceVersion"])
            if method == "PUT" and body is not None:
                sent = (body.get("metadata") or {}).get("resourceVersion")
                if self.conflicts > 0:
                    self.conflicts -= 1
                    current["metadata"]["resourceVersion"] = str(version + 1)  # the other writer's update
                    return 409, _status(409, "Conflict", f'Operation cannot be fulfilled on configmaps "{name}": '
                                                         "the object has been modified")
                if sent and sent != str(version):
                    return 409, _status(409, "Conflict", f'Operation cannot be fulfilled on configmaps "{name}": '
                                                         "the object has been modified")
                obj = {**body, "metadata": {**current["metadata"], **body["metadata"],
                                            "resourceVersion": str(version + 1)}}
            elif method == "PATCH" and body is not None:
                obj = {**current, "data": {**(current.get("data") or {}), **(body.get("data") or {})},
                       "metadata": {**current["metadata"], "resourceVersion": str(version + 1)}}
            else:
                return 405, _status(405, "MethodNotAllowed", method)
            self.configmaps[(ns, name)] = obj
            return 200, obj


@contextlib.contextmanager
def kube_api_server(directory: Path) -> Iterator[KubeAPIServer]:
    state = KubeAPIServer(directory)
    ctx = tls_context(directory, serving_cert(state.ca), "kube-apiserver")
    with _serve(state.handle, ctx) as port:
        state.port = port
        yield state


@dataclass
class Kubelet:
    """A kubelet's ``/pods``; ``token`` is what the agent must present (secure port)."""

    directory: Path
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    ca: X509Identity = field(default_factory=lambda: make_ca("Test Kubelet CA"))
    pods: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    secure: bool = True
    requests: list[str] = field(default_factory=list)
    # Answer this many /pods requests with an empty list first (a pod not yet listed).
    hide_for: int = 0

    def write_ca(self) -> Path:
        path = self.directory / "kubelet-ca.pem"
        path.write_bytes(pem(self.ca.cert))
        return path

    def write_token(self, token: str = "") -> Path:
        path = self.directory / "kubelet-token"
        path.write_text(token or self.token)
        return path

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        self.requests.append(f"{method} {raw_path}")
        if self.secure and headers.get("authorization") != f"Bearer {self.token}":
            return 401, b"Unauthorized"
        if method != "GET" or urllib.parse.urlsplit(raw_path).path != "/pods":
            return 404, b"404 page not found"
        if self.hide_for > 0:
            self.hide_for -= 1
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}
        return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": list(self.pods)}


@contextlib.contextmanager
def kubelet(directory: Path, secure: bool = True) -> Iterator[Kubelet]:
    state = Kubelet(directory, secure=secure)
    ctx = tls_context(directory, serving_cert(state.ca, cn="node-1"), "kubelet") if secure else None
    with _serve(state.handle, ctx) as port:
        state.port = port
        yield state


__all__ = ["API_AUDIENCE", "KubeAPIServer", "Kubelet", "TokenIssuer", "key_pem", "kube_api_server", "kubelet",
           "node", "pod", "serving_cert"]
