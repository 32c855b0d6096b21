"""A Workload API client: what `spire-agent api` and trust_bundle_spiffe_workload_api dial with.

Every call carries the ``workload.spiffe.io: true`` header the server side demands.
"""

from __future__ import annotations

from typing import Any, Optional

from grpclib.client import Channel

from ...common.errors import SpireError
from ...proto.workload import workload_grpc

HEADER = {"workload.spiffe.io": "true"}


class StreamEndedError(SpireError):
    """A server stream closed before its first message; worded as grpc-go's status error."""

    def __init__(self) -> None:
        super().__init__("rpc error: code = Unavailable desc = stream ended without a response")


class WorkloadClient:
    """A Channel on the agent's public socket and the Workload API stub; closes on exit."""

    def __init__(self, socket_path: str, timeout: Optional[float] = None) -> None:
        self.socket_path = socket_path
        self.timeout = timeout or None
        self.channel: Optional[Channel] = None

    async def __aenter__(self) -> "WorkloadClient":
        self.channel = Channel(path=self.socket_path)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.channel is not None:
            self.channel.close()

    @property
    def stub(self) -> workload_grpc.SpiffeWorkloadAPIStub:
        assert self.channel is not None
        return workload_grpc.SpiffeWorkloadAPIStub(self.channel)

    async def first(self, method: Any, request: Any) -> Any:
        """Open a server stream, return its first message and cancel the rest."""
        async with method.open(timeout=self.timeout, metadata=HEADER) as stream:
            await stream.send_message(request, end=True)
            msg = await stream.recv_message()
            if msg is None:
                await stream.recv_trailing_metadata()
                raise StreamEndedError()
            await stream.cancel()
            return msg

    async def unary(self, method: Any, request: Any) -> Any:
        return await method(request, timeout=self.timeout, metadata=HEADER)
