"""NodeAttestor "gcp_iit" (agent): the Compute Engine instance identity token.

As SPIRE's agent plugin: ``GET http://<identity_token_host>/computeMetadata/v1/instance/
service-accounts/<service_account>/identity?audience=spire-gcp-node-attestor&format=full``
with ``Metadata-Flavor: Google``; the token is the payload, as the metadata server served
it. ``identity_token_host`` defaults to ``metadata.google.internal`` (a ``host:port`` is
accepted, as Go's URL host), ``service_account`` to ``default``.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from ....common.plugin import STR, Field, PluginConfigError, PluginContext, Schema, register
from ....common.plugins import gcp_iit as iit
from .base import AgentAttestationError, AgentNodeAttestor

DEFAULT_HOST = "metadata.google.internal"
DEFAULT_SERVICE_ACCOUNT = "default"
TIMEOUT = 10.0


def identity_token_url(host: str, service_account: str) -> str:
    query = urllib.parse.urlencode({"audience": iit.AUDIENCE, "format": "full"})
    path = iit.IDENTITY_PATH.format(urllib.parse.quote(service_account, safe="@"))
    return f"http://{host}{path}?{query}"


def fetch_identity_token(url: str, timeout: float = TIMEOUT) -> bytes:
    req = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
    # The metadata server is link-local: never go through an HTTP proxy to reach it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            body: bytes = resp.read(iit.MAX_TOKEN_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise AgentAttestationError(f"unable to retrieve valid identity token: unexpected status code: {exc.code}") \
            from None
    except (urllib.error.URLError, OSError) as exc:
        raise AgentAttestationError(f"unable to retrieve valid identity token: {getattr(exc, 'reason', exc)}") \
            from None
    if len(body) > iit.MAX_TOKEN_BYTES:
        raise AgentAttestationError(f"unable to retrieve valid identity token: larger than {iit.MAX_TOKEN_BYTES} bytes")
    return body.strip()


@dataclass
class GCPIITAgentConfig:
    identity_token_host: str
    service_account: str


@register("agent")
class GCPIITAttestor(AgentNodeAttestor):
    NAME = iit.PLUGIN_NAME
    CONFIG = Schema([
        Field("identity_token_host", STR, default=""),
        Field("service_account", STR, default=""),
    ])
    CONFIG_TYPE = GCPIITAgentConfig

    def __init__(self, url: str) -> None:
        self.url = url

    @classmethod
    def validate(cls, config: GCPIITAgentConfig, ctx: PluginContext) -> None:
        host = config.identity_token_host
        if host and urllib.parse.urlsplit(f"http://{host}").netloc != host:
            raise PluginConfigError(f'identity_token_host "{host}" must be a host or host:port', "identity_token_host")
        if "/" in config.service_account:
            raise PluginConfigError(f'service_account "{config.service_account}" must not contain "/"',
                                    "service_account")

    @classmethod
    def from_config(cls, config: GCPIITAgentConfig, ctx: PluginContext) -> "GCPIITAttestor":
        return cls(identity_token_url(config.identity_token_host or DEFAULT_HOST,
                                      config.service_account or DEFAULT_SERVICE_ACCOUNT))

    async def payload(self) -> bytes:
        return await asyncio.to_thread(fetch_identity_token, self.url)
