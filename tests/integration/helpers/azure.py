"""Azure on loopback: per-tenant signing keys served through the tenant's OpenID
configuration and JWKS, managed-identity access tokens in IMDS's shape (v1 tokens:
``iss`` = ``https://sts.windows.net/<tid>/``, ``aud`` = the requested resource), the IMDS
token and instance endpoints, the client-credentials token endpoint and the three
Resource Manager reads. ``azure_env`` points both daemons at it through
``AZURE_POD_IDENTITY_AUTHORITY_HOST``/``AZURE_AUTHORITY_HOST`` (the identity SDKs'
variables) and ``SPIRE_PY_AZURE_RESOURCE_MANAGER_URL``."""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.helpers.cloud_http import Loopback, Request, Response

TENANT = "9e85e111-1103-48fc-a933-9533fe47de05"
CUSTOM_TENANT = "dd14e835-679a-4703-b4de-8f00a20c732e"
SUBSCRIPTION = "d5b40d61-272e-48da-beb9-05f295c42bd6"
ARM_RESOURCE = "https://management.azure.com/"


class TenantSigner:
    def __init__(self) -> None:
        self.kid = secrets.token_urlsafe(20)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "x5t": self.kid}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid, "x5t": self.kid})


def msi_claims(tenant: str, principal: str, resource: str = ARM_RESOURCE, expires_in: int = 3600,
               issuer: Optional[str] = None) -> dict[str, Any]:
    now = int(time.time())
    return {"aud": resource, "iss": issuer or f"https://sts.windows.net/{tenant}/", "iat": now - 60,
            "nbf": now - 60 if expires_in > 0 else now - 7200, "exp": now + expires_in,
            "aio": "E2ZgYJg", "appid": str(uuid.uuid4()), "appidacr": "2",
            "idp": f"https://sts.windows.net/{tenant}/", "oid": principal, "sub": principal, "tid": tenant,
            "uti": secrets.token_urlsafe(16), "ver": "1.0", "xms_mirid": "/subscriptions/..."}


@dataclass
class VM:
    principal: str
    group: str = "frontend"
    name: str = "blog"
    subscription: str = SUBSCRIPTION
    nsg: str = "webservers"
    vnet: str = "vnet"
    subnet: str = "default"

    def resource_id(self) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.group}/providers/" \
               f"Microsoft.Compute/virtualMachines/{self.name}"

    def nic_id(self) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.group}/providers/" \
               f"Microsoft.Network/networkInterfaces/{self.name}-nic"


@dataclass
class Azure:
    """What the loopback Azure serves. ``vm`` is the VM whose IMDS answers (its tenant
    ``vm_tenant`` signs its tokens); ``vms`` is what Resource Manager knows."""

    signers: dict[str, TenantSigner] = field(default_factory=lambda: {TENANT: TenantSigner(),
                                                                         CUSTOM_TENANT: TenantSigner()})
    vm: Optional[VM] = None
    vm_tenant: str = TENANT
    token_override: str = ""
    vms: dict[str, VM] = field(default_factory=dict)
    apps: dict[str, str] = field(default_factory=dict)  # app id -> secret
    access_tokens: set[str] = field(default_factory=set)
    url: str = ""

    def imds_token(self, resource: str) -> str:
        assert self.vm is not None
        return self.token_override or self.signers[self.vm_tenant].sign(
            msi_claims(self.vm_tenant, self.vm.principal, resource))

    def _arm_token(self) -> str:
        token = secrets.token_urlsafe(24)
        self.access_tokens.add(token)
        return token

    def route(self, req: Request) -> Optional[Response]:
        if req.path.startswith("/metadata/"):
            if req.headers.get("Metadata") != "true":
                return Response(400, {"error": "invalid_request", "error_description": "Required metadata header "
                                                                                        "not specified"})
            if req.path == "/metadata/identity/oauth2/token" and self.vm is not None:
                if req.query.get("api-version") != "2018-02-01" or not req.query.get("resource"):
                    return Response(400, {"error": "invalid_request"})
                resource = req.query["resource"]
                token = self.imds_token(resource)
                self.access_tokens.add(token)  # the VM's identity may also call Resource Manager
                return Response(200, {"access_token": token, "expires_in": "3599", "resource": resource,
                                      "token_type": "Bearer"})
            if req.path == "/metadata/instance":
                return Response(200, {"compute": {"name": "spire-server", "subscriptionId": SUBSCRIPTION,
                                                  "resourceGroupName": "infra", "vmScaleSetName": ""}})
            return Response(404, {"error": "not found"})
        m = re.fullmatch(r"/([^/]+)/\.well-known/openid-configuration", req.path)
        if m and m.group(1) in self.signers:
            return Response(200, {"issuer": f"https://sts.windows.net/{m.group(1)}/",
                                  "jwks_uri": f"{self.url}/{m.group(1)}/discovery/keys",
                                  "token_endpoint": f"{self.url}/{m.group(1)}/oauth2/token"})
        m = re.fullmatch(r"/([^/]+)/discovery/keys", req.path)
        if m and m.group(1) in self.signers:
            return Response(200, {"keys": [self.signers[m.group(1)].jwk()]})
        m = re.fullmatch(r"/([^/]+)/oauth2/v2\.0/token", req.path)
        if m and req.method == "POST":
            from urllib.parse import parse_qsl

            form = dict(parse_qsl(req.body.decode()))
            if self.apps.get(form.get("client_id", "")) != form.get("client_secret") or \
                    form.get("grant_type") != "client_credentials":
                return Response(401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client "
                                                                                      "secret provided."})
            return Response(200, {"access_token": self._arm_token(), "expires_in": 3599, "token_type": "Bearer"})
        if req.path.startswith("/subscriptions/"):
            return self._arm(req)
        return None

    def _arm(self, req: Request) -> Response:
        auth = req.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.access_tokens:
            return Response(401, {"error": {"code": "InvalidAuthenticationToken",
                                            "message": "The access token is invalid."}})
        m = re.fullmatch(r"/subscriptions/([^/]+)/resources", req.path)
        if m:
            pm = re.search(r"identity/principalId eq '([^']*)'", req.query.get("$filter", ""))
            vms = [v for v in self.vms.values() if pm and v.principal == pm.group(1) and v.subscription == m.group(1)]
            return Response(200, {"value": [{"id": v.resource_id(), "name": v.name,
                                             "type": "Microsoft.Compute/virtualMachines"} for v in vms]})
        for vm in self.vms.values():
            if req.path == vm.resource_id():
                return Response(200, {"id": vm.resource_id(), "name": vm.name, "properties": {
                    "networkProfile": {"networkInterfaces": [{"id": vm.nic_id()}]}}})
            if req.path == vm.nic_id():
                base = f"/subscriptions/{vm.subscription}/resourceGroups/{vm.group}/providers/Microsoft.Network"
                return Response(200, {"id": vm.nic_id(), "properties": {
                    "networkSecurityGroup": {"id": f"{base}/networkSecurityGroups/{vm.nsg}"},
                    "ipConfigurations": [{"name": "ipconfig1", "properties": {
                        "subnet": {"id": f"{base}/virtualNetworks/{vm.vnet}/subnets/{vm.subnet}"}}}]}})
        return Response(404, {"error": {"code": "ResourceNotFound", "message": f"{req.path} was not found."}})


def azure_env(cloud: Loopback) -> dict[str, str]:
    return {"AZURE_POD_IDENTITY_AUTHORITY_HOST": cloud.url, "AZURE_AUTHORITY_HOST": cloud.url,
            "SPIRE_PY_AZURE_RESOURCE_MANAGER_URL": cloud.url}
