"""grpclib service base for Envoy's ``envoy.service.secret.v3.SecretDiscoveryService``.

The messages come from the published Envoy API package (xds-protos); it ships grpcio stubs
only, so the grpclib mapping is written here, with the method paths Envoy calls.
"""

from __future__ import annotations

import abc
from typing import Any, Dict

import grpclib.client
import grpclib.const
from envoy.service.discovery.v3 import discovery_pb2

SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"


class SecretDiscoveryServiceBase(abc.ABC):
    @abc.abstractmethod
    async def DeltaSecrets(self, stream: Any) -> None: ...

    @abc.abstractmethod
    async def StreamSecrets(self, stream: Any) -> None: ...

    @abc.abstractmethod
    async def FetchSecrets(self, stream: Any) -> None: ...

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        stream, unary = grpclib.const.Cardinality.STREAM_STREAM, grpclib.const.Cardinality.UNARY_UNARY
        return {
            f"/{SERVICE}/DeltaSecrets": grpclib.const.Handler(
                self.DeltaSecrets, stream, discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse),
            f"/{SERVICE}/StreamSecrets": grpclib.const.Handler(
                self.StreamSecrets, stream, discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse),
            f"/{SERVICE}/FetchSecrets": grpclib.const.Handler(
                self.FetchSecrets, unary, discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse),
        }


class SecretDiscoveryServiceStub:
    """A grpclib client (tests, and anything that wants to act like Envoy)."""

    def __init__(self, channel: Any) -> None:
        self.StreamSecrets = grpclib.client.StreamStreamMethod(
            channel, f"/{SERVICE}/StreamSecrets", discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse)
        self.DeltaSecrets = grpclib.client.StreamStreamMethod(
            channel, f"/{SERVICE}/DeltaSecrets", discovery_pb2.DeltaDiscoveryRequest,
            discovery_pb2.DeltaDiscoveryResponse)
        self.FetchSecrets = grpclib.client.UnaryUnaryMethod(
            channel, f"/{SERVICE}/FetchSecrets", discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse)
