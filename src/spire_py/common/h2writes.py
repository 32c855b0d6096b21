"""One write per turn of the event loop for grpclib's HTTP/2 connections, both directions.

grpclib hands each HTTP/2 step to the transport on its own: a unary answer is a HEADERS, a
DATA and a trailing HEADERS frame, a request a HEADERS and a DATA frame. Over TLS each write is
a record and a send, and on the other side a wake-up, a decryption and a pass through h2. Here
what one connection writes in one turn of the loop leaves as one write at the next turn, ahead
of any wait for I/O. Order is kept, ``close`` sends what is pending first, ``abort`` drops it.

Both daemons' gRPC listeners (``common.rpc.GuardedServer``) and their mTLS clients
(``common.tls.SpiffeChannel``) use it.

The same protocol bounds what h2 remembers of a connection's closed streams. h2 keeps how each
closed stream ended (so that a frame arriving late on it gets a stream error, not a connection
error) for up to 65,536 streams a connection, about 130 bytes each: an agent syncing every 5 s
on one connection for two days, or a client opening empty streams in a loop, costs its server
8 MB. A peer has at most 100 streams open at once (h2's MAX_CONCURRENT_STREAMS), so a late frame
comes on one of the last few closed: :data:`CLOSED_STREAMS_KEPT` are remembered.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpclib.protocol import H2Protocol
from h2.utilities import SizeLimitDict

# Closed streams h2 remembers per connection (h2's own bound: 65,536); above the 100 a peer may
# have open at once.
CLOSED_STREAMS_KEPT = 128


class CoalescingTransport:
    """A transport's stand-in that joins the writes of one turn of the event loop."""

    __slots__ = ("transport", "_loop", "_pending", "__weakref__")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self.transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return bool(self.transport.is_closing())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class CoalescingH2Protocol(H2Protocol):
    """grpclib's H2Protocol over a :class:`CoalescingTransport`, remembering the last
    :data:`CLOSED_STREAMS_KEPT` closed streams."""

    def connection_made(self, transport: Any) -> None:
        wrapped: Any = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(wrapped)
        h2_connection = self.connection._connection
        assert not h2_connection._closed_streams  # nothing has closed yet: only its bound changes
        h2_connection._closed_streams = SizeLimitDict(size_limit=CLOSED_STREAMS_KEPT)


def coalescing(protocol: H2Protocol, cls: type[CoalescingH2Protocol] = CoalescingH2Protocol) -> H2Protocol:
    """``protocol`` (a plain H2Protocol, as grpclib's factories build) writing through a
    :class:`CoalescingTransport`: only the transport it hands on differs (``cls``: a subclass
    that adds to what happens when the connection is made)."""
    assert type(protocol) is H2Protocol, type(protocol)
    assert issubclass(cls, CoalescingH2Protocol), cls
    protocol.__class__ = cls
    return protocol
