"""NodeAttestor "aws_iid" (agent): the EC2 instance identity document and its signatures.

As SPIRE's agent plugin: from the instance metadata service (IMDSv2: a session token
from ``PUT /latest/api/token``, then ``GET /latest/dynamic/instance-identity/...``) it
reads the document, its RSA-1024 signature and its RSA-2048 PKCS#7 signature, and sends
them as one JSON payload (``common/plugins/aws_iid.py``). The metadata host is
``ec2_metadata_endpoint``, else ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (as the AWS SDKs),
else ``http://169.254.169.254``. A metadata service without the token API (404/405 on
the PUT) is read IMDSv1-style, as the AWS SDKs fall back.
"""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Optional

from ....common.plugin import STR, Field, PluginConfigError, PluginContext, Schema, register
from ....common.plugins import aws_iid as iid
from .base import AgentAttestationError, AgentNodeAttestor

DEFAULT_ENDPOINT = "http://169.254.169.254"
ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
TOKEN_TTL_SECONDS = "21600"
TIMEOUT = 10.0
MAX_RESPONSE = 64 * 1024
_PATHS = {
    "document": "/latest/dynamic/instance-identity/document",
    "signature": "/latest/dynamic/instance-identity/signature",
    "rsa2048": "/latest/dynamic/instance-identity/rsa2048",
}


def check_endpoint(endpoint: str) -> Optional[str]:
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f'ec2_metadata_endpoint "{endpoint}" must be an http:// or https:// URL'
    return None


class MetadataClient:
    """The few IMDS calls attestation needs, with bounded responses and timeouts."""

    def __init__(self, endpoint: str, timeout: float = TIMEOUT) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, headers: dict[str, str]) -> str:
        req = urllib.request.Request(self.endpoint + path, method=method, headers=headers)
        # The metadata service is link-local: never go through an HTTP proxy to reach it.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=self.timeout) as resp:
            body: bytes = resp.read(MAX_RESPONSE + 1)
        if len(body) > MAX_RESPONSE:
            raise AgentAttestationError(f"instance metadata {path}: response larger than {MAX_RESPONSE} bytes")
        return body.decode("utf-8")

    def token(self) -> Optional[str]:
        try:
            return self._call("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": TOKEN_TTL_SECONDS})
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 405):
                return None
            raise

    def attestation_data(self) -> iid.AttestationData:
        try:
            token = self.token()
            headers = {"X-aws-ec2-metadata-token": token} if token else {}
            values = {key: self._call("GET", path, headers) for key, path in _PATHS.items()}
        except urllib.error.HTTPError as exc:
            raise AgentAttestationError(
                f"unable to fetch instance identity from {self.endpoint}: {exc.url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AgentAttestationError(f"unable to fetch instance identity from {self.endpoint}: {reason}") from None
        return iid.AttestationData(values["document"], values["signature"], values["rsa2048"])


@dataclass
class AWSIIDAgentConfig:
    ec2_metadata_endpoint: str


@register("agent")
class AWSIIDAttestor(AgentNodeAttestor):
    NAME = iid.PLUGIN_NAME
    CONFIG = Schema([Field("ec2_metadata_endpoint", STR, default="")])
    CONFIG_TYPE = AWSIIDAgentConfig

    def __init__(self, endpoint: str) -> None:
        self.client = MetadataClient(endpoint)

    @classmethod
    def validate(cls, config: AWSIIDAgentConfig, ctx: PluginContext) -> None:
        if config.ec2_metadata_endpoint:
            problem = check_endpoint(config.ec2_metadata_endpoint)
            if problem:
                raise PluginConfigError(problem, "ec2_metadata_endpoint")

    @classmethod
    def from_config(cls, config: AWSIIDAgentConfig, ctx: PluginContext) -> "AWSIIDAttestor":
        return cls(config.ec2_metadata_endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT)

    async def payload(self) -> bytes:
        data = await asyncio.to_thread(self.client.attestation_data)
        return iid.marshal_attestation_data(data)
