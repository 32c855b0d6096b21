"""The agent's connection to the server: mTLS with its SVID, the server known by SPIFFE ID.

Several servers (HA, one database): like SPIRE's agent, which dials
``dns:///<server_address>:<server_port>`` and spreads over every address the
name resolves to, ``server_address`` may be a DNS name with several A/AAAA
records. spire_py also takes a comma-separated list (``"s1.example,
s2.example:8082"``; an entry without a port uses ``server_port``). Each new
connection resolves the names again (getaddrinfo), starts from the address that
last worked (at first, a random one, which spreads agents over the servers as
SPIRE's round robin does) and tries every address in turn until one completes
TCP, TLS and the SPIFFE ID check. A request that fails because its server went
away fails once; the agent's next sync reconnects to the next address. A server
that stops answering without closing the connection (hung, stopped) is
abandoned when a request to it times out, and the next sync starts from the
next address.
"""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from grpclib.protocol import H2Protocol

from ..common import log, tls
from ..common.spiffeid import SpiffeId, TrustDomain, server_id
from ..proto.spire.api.server.agent.v1 import agent_grpc
from ..proto.spire.api.server.bundle.v1 import bundle_grpc
from ..proto.spire.api.server.entry.v1 import entry_grpc
from ..proto.spire.api.server.svid.v1 import svid_grpc

RPC_TIMEOUT = 30.0
# One address's TCP + TLS handshake; past it the next address is tried.
CONNECT_TIMEOUT = 10.0

_log = log.get("agent")

Target = tuple[str, int]


def server_targets(address: str, port: int) -> list[Target]:
    """(host, port) pairs from server_address: one name, or a comma-separated list."""
    targets: list[Target] = []
    for part in (p.strip() for p in address.split(",")):
        if not part:
            continue
        host, p = part, port
        if part.startswith("["):  # [v6]:port or [v6]
            host, _, rest = part[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                p = int(rest[1:])
        elif part.count(":") == 1:  # host:port (a bare IPv6 address has several colons)
            h, _, ps = part.partition(":")
            if ps.isdigit():
                host, p = h, int(ps)
        targets.append((host, p))
    if not targets:
        raise ValueError(f'server_address "{address}" names no server')
    return targets


async def resolve(targets: list[Target]) -> list[Target]:
    """Every address of every target, in resolver order, without repeats."""
    loop = asyncio.get_running_loop()
    out: list[Target] = []
    last_error: Optional[OSError] = None
    for host, port in targets:
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            last_error = exc
            _log.warning("Unable to resolve server address", extra=log.fields(address=host, error=str(exc)))
            continue
        for _family, _type, _proto, _name, sockaddr in infos:
            addr = (str(sockaddr[0]), int(sockaddr[1]))
            if addr not in out:
                out.append(addr)
    if not out:
        raise last_error or OSError(f"no address for {targets}")
    return out


class FailoverChannel(tls.SpiffeChannel):
    """A SpiffeChannel that connects to the first of the server's addresses that works."""

    def __init__(self, targets: list[Target], **kwargs: Any) -> None:
        super().__init__(targets[0][0], targets[0][1], **kwargs)
        self._targets = targets
        self._current: Optional[Target] = None
        self._avoid: Optional[Target] = None

    def abandon(self) -> Optional[Target]:
        """Drop the connection to a server that stopped answering; the next call starts after it.

        A server that hangs (stopped, overloaded, a half-open TCP connection) does not close the
        connection, so without this every later request would wait on it again.
        """
        gone = self._current
        self._avoid = gone
        self.close()
        return gone

    @property
    def connected_to(self) -> Optional[Target]:
        return self._current

    async def _create_connection(self) -> H2Protocol:
        addresses = await resolve(self._targets)
        avoid, self._avoid = self._avoid, None
        if avoid in addresses:  # abandoned: the next address first, that one last
            start = (addresses.index(avoid) + 1) % len(addresses)
        elif self._current in addresses:
            start = addresses.index(self._current)
        else:
            start = random.randrange(len(addresses))
        last_error: BaseException = OSError("no server address")
        for i in range(len(addresses)):
            host, port = addresses[(start + i) % len(addresses)]
            self._host, self._port = host, port
            try:
                protocol = await asyncio.wait_for(super()._create_connection(), CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as exc:  # refused, unreachable, TLS, wrong SPIFFE ID
                last_error = exc
                _log.warning("Unable to connect to server; trying the next address",
                             extra=log.fields(address=f"{host}:{port}", error=f"{type(exc).__name__}: {exc}"))
                continue
            if self._current not in (None, (host, port)):
                _log.info("Connected to another server", extra=log.fields(address=f"{host}:{port}"))
            else:
                _log.debug("Connected to server", extra=log.fields(address=f"{host}:{port}"))
            self._current = (host, port)
            return protocol
        raise last_error


class ServerClient:
    """Stubs over one channel; rebuilt whenever the agent SVID or the bundle changes."""

    # The address that last worked, per server_address, so a rebuilt client starts there.
    _last_good: dict[str, Target] = {}

    def __init__(
        self,
        address: str,
        port: int,
        trust_domain: TrustDomain,
        roots: list[x509.Certificate],
        svid: Optional[list[x509.Certificate]] = None,
        key: Optional[PrivateKeyTypes] = None,
        insecure: bool = False,
    ) -> None:
        expected: SpiffeId = server_id(trust_domain)
        ctx = tls.client_context(roots, svid, key, insecure=insecure)
        self._key = f"{address}|{port}"
        self.channel = FailoverChannel(server_targets(address, port), ssl_context=ctx, expected=expected)
        self.channel._current = self._last_good.get(self._key)
        self.agent = agent_grpc.AgentStub(self.channel)
        self.entry = entry_grpc.EntryStub(self.channel)
        self.bundle = bundle_grpc.BundleStub(self.channel)
        self.svid = svid_grpc.SVIDStub(self.channel)

    def close(self) -> None:
        if self.channel.connected_to is not None:
            self._last_good[self._key] = self.channel.connected_to
        self.channel.close()

    def __enter__(self) -> "ServerClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
