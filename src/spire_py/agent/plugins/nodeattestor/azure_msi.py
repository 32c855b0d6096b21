"""NodeAttestor "azure_msi" (agent): a managed-identity access token from Azure's IMDS.

As SPIRE's agent plugin: ``GET /metadata/identity/oauth2/token?api-version=2018-02-01&
resource=<resource_id>`` with ``Metadata: true`` (``common/plugins/azure_msi.py``), sent
as ``{"token": ...}``. ``resource_id`` defaults to ``https://management.azure.com/``; a
custom one (an app registered in the tenant) must be the tenant's ``resource_id`` on the
server, which refuses tokens for any other audience.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass

from ....common.plugin import STR, Field, PluginConfigError, PluginContext, Schema, register
from ....common.plugins import azure_msi as msi
from .base import AgentAttestationError, AgentNodeAttestor


@dataclass
class AzureMSIAgentConfig:
    resource_id: str


@register("agent")
class AzureMSIAttestor(AgentNodeAttestor):
    NAME = msi.PLUGIN_NAME
    CONFIG = Schema([Field("resource_id", STR, default="")])
    CONFIG_TYPE = AzureMSIAgentConfig

    def __init__(self, resource_id: str, client: msi.IMDSClient) -> None:
        self.resource_id = resource_id
        self.client = client

    @classmethod
    def validate(cls, config: AzureMSIAgentConfig, ctx: PluginContext) -> None:
        rid = config.resource_id
        if rid and (rid != rid.strip() or not (urllib.parse.urlsplit(rid).scheme or rid.count("-") == 4)):
            raise PluginConfigError(f'resource_id "{rid}" must be a URI or an application ID', "resource_id")

    @classmethod
    def from_config(cls, config: AzureMSIAgentConfig, ctx: PluginContext) -> "AzureMSIAttestor":
        return cls(config.resource_id or msi.DEFAULT_RESOURCE_ID, msi.IMDSClient())

    def _token(self) -> str:
        try:
            token, _ = self.client.token(self.resource_id)
        except msi.AzureMSIError as exc:
            raise AgentAttestationError(f"unable to fetch token: {exc}") from None
        return token

    async def payload(self) -> bytes:
        return msi.marshal_attestation_data(await asyncio.to_thread(self._token))
