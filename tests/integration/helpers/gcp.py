"""Google Cloud on loopback: a signer standing in for Google's token-signing keys (RSA-2048,
self-signed certificates served as Google serves ``oauth2/v1/certs``), instance identity
tokens in the metadata server's ``format=full`` shape, the metadata server's identity
endpoint, an OAuth token endpoint for a service account file, and the Compute API's
``instances.get``. ``gcp_env`` points the server at it (no test-only code path)."""

from __future__ import annotations

import datetime
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.integration.helpers.cloud_http import Loopback, Request, Response

PROJECT = "big-kahuna-123456"
ZONE = "us-west1-b"
SA_EMAIL = "123456789-compute@developer.gserviceaccount.com"
AUDIENCE = "spire-gcp-node-attestor"


class GoogleSigner:
    """One token-signing key with its certificate, under a key ID."""

    def __init__(self, kid: Optional[str] = None) -> None:
        self.kid = kid or secrets.token_hex(20)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.system.gserviceaccount.com")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .sign(self.key, hashes.SHA256()))

    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def sign(self, claims: dict[str, Any], alg: str = "RS256") -> str:
        return jwt.encode(claims, self.key, algorithm=alg, headers={"kid": self.kid})


def identity_claims(instance_id: str = "5555555555555555555", instance_name: str = "blog-server",
                    project: str = PROJECT, zone: str = ZONE, audience: str = AUDIENCE, email: str = SA_EMAIL,
                    expires_in: int = 3600) -> dict[str, Any]:
    now = int(time.time())
    return {
        "aud": audience, "azp": "1122334455667788", "email": email, "email_verified": True,
        "exp": now + expires_in, "iat": now - 10 if expires_in > 0 else now + expires_in - 3600,
        "iss": "https://accounts.google.com", "sub": "1122334455667788",
        "google": {"compute_engine": {
            "instance_creation_timestamp": now - 86400, "instance_id": instance_id, "instance_name": instance_name,
            "project_id": project, "project_number": 123456789012, "zone": zone}},
    }


def instance_resource(instance_id: str = "5555555555555555555", name: str = "blog-server",
                      tags: tuple[str, ...] = ("blog-server", "http"), labels: Optional[dict[str, str]] = None,
                      metadata: Optional[dict[str, Optional[str]]] = None) -> dict[str, Any]:
    """A compute#instance as instances.get returns it (the fields attestation reads, and some others)."""
    items = [{"key": k, **({} if v is None else {"value": v})} for k, v in (metadata or {}).items()]
    return {
        "kind": "compute#instance", "id": instance_id, "name": name, "status": "RUNNING",
        "zone": f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/{ZONE}",
        "tags": {"items": list(tags), "fingerprint": "42WmSpB8rSM="},
        "labels": labels if labels is not None else {"env": "prod", "team": "blog"},
        "metadata": {"kind": "compute#metadata", "fingerprint": "x", "items": items},
        "serviceAccounts": [{"email": SA_EMAIL, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}],
    }


@dataclass
class GoogleCloud:
    """What the loopback Google serves; tests swap ``token`` and ``instances``."""

    signers: list[GoogleSigner] = field(default_factory=lambda: [GoogleSigner()])
    token: str = ""
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    access_tokens: set[str] = field(default_factory=set)
    identity_queries: list[dict[str, str]] = field(default_factory=list)

    def route(self, req: Request) -> Optional[Response]:
        if req.path == "/oauth2/v1/certs":
            expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=5)
            return Response(200, {s.kid: s.cert_pem() for s in self.signers},
                            {"Expires": expires.strftime("%a, %d %b %Y %H:%M:%S GMT")})
        m = re.fullmatch(r"/computeMetadata/v1/instance/service-accounts/([^/]+)/identity", req.path)
        if m:
            if req.headers.get("Metadata-Flavor") != "Google":
                return Response(403, "Missing Metadata-Flavor:Google header.")
            self.identity_queries.append({"account": m.group(1), **req.query})
            if req.query.get("audience") != AUDIENCE or req.query.get("format") != "full" or not self.token:
                return Response(400, "bad request")
            return Response(200, self.token, {"Content-Type": "text/html"})
        if req.path == "/token" and req.method == "POST":
            access = secrets.token_urlsafe(24)
            self.access_tokens.add(access)
            return Response(200, {"access_token": access, "expires_in": 3600, "token_type": "Bearer"})
        m = re.fullmatch(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)", req.path)
        if m:
            auth = req.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.access_tokens:
                return Response(401, {"error": {"code": 401, "message": "Request had invalid authentication "
                                                                          "credentials."}})
            inst = self.instances.get(m.group(3))
            if inst is None or m.group(1) != PROJECT or m.group(2) != ZONE:
                return Response(404, {"error": {"code": 404, "message": f"The resource 'projects/{m.group(1)}/zones/"
                                                                          f"{m.group(2)}/instances/{m.group(3)}' was "
                                                                          "not found"}})
            return Response(200, inst)
        return None


def service_account_file(path: Path, token_uri: str) -> Path:
    """A service account key file whose token_uri is the loopback token endpoint."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": secrets.token_hex(20),
        "private_key": pem, "client_email": f"spire-server@{PROJECT}.iam.gserviceaccount.com",
        "client_id": "1234567890", "token_uri": token_uri,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
    }))
    return path


def gcp_env(google: Loopback) -> dict[str, str]:
    return {"SPIRE_PY_GCP_IIT_CERTS_URL": f"{google.url}/oauth2/v1/certs",
            "SPIRE_PY_GCP_COMPUTE_ENDPOINT": google.url}
