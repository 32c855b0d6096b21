"""UpstreamAuthority "spire" streams its SVID and follows the upstream's taints: a rotated
X509-SVID on the Workload API stream is used by the next call at once (no wait for half its
life), a broken stream is opened again, and an authority the upstream taints is reported."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import pytest
from grpclib.server import Server

from spire_py.common.x509util import authority_id
from spire_py.proto.workload import workload_pb2
from spire_py.server.plugins.upstreamauthority.disk import UpstreamAuthorityError
from spire_py.server.plugins.upstreamauthority.spire import SpireUpstreamAuthority
from tests.unit.helpers.inprocess_server import TD, Handle, running_server
from tests.unit.server.plugins.upstreamauthority.test_spire_upstream import (
    FakeWorkloadAPI, _ca_csr, _root_bundle, _serve_svid)


class StreamingWorkloadAPI(FakeWorkloadAPI):
    """Sends the current X509-SVID, then each one pushed with ``push`` on the open stream."""

    def __init__(self) -> None:
        super().__init__()
        self.streams: list[asyncio.Queue[Optional[workload_pb2.X509SVID]]] = []
        self.opened = 0
        self.jwt_streams: list[asyncio.Queue[dict[str, bytes]]] = []

    async def FetchX509SVID(self, stream: Any) -> None:
        await stream.recv_message()
        self.opened += 1
        q: asyncio.Queue[Optional[workload_pb2.X509SVID]] = asyncio.Queue()
        self.streams.append(q)
        if self.svid is not None:
            await stream.send_message(workload_pb2.X509SVIDResponse(svids=[self.svid]))
        while True:
            svid = await q.get()
            if svid is None:
                return  # the agent ends the stream (it restarted)
            await stream.send_message(workload_pb2.X509SVIDResponse(svids=[svid]))

    async def FetchJWTBundles(self, stream: Any) -> None:
        await stream.recv_message()
        q: asyncio.Queue[dict[str, bytes]] = asyncio.Queue()
        self.jwt_streams.append(q)
        await stream.send_message(workload_pb2.JWTBundlesResponse(bundles={TD: b'{"keys":[]}'}))
        while True:
            await stream.send_message(workload_pb2.JWTBundlesResponse(bundles=await q.get()))

    def push_jwt_bundle(self, jwks: bytes) -> None:
        for q in self.jwt_streams:
            q.put_nowait({TD: jwks})

    def push(self, end: bool = False) -> None:
        for q in self.streams:
            q.put_nowait(None if end else self.svid)
        if end:
            self.streams.clear()


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[tuple[Handle, StreamingWorkloadAPI, str]]:
    wl = StreamingWorkloadAPI()
    d = tempfile.mkdtemp(prefix="spire-ua-", dir="/tmp")
    sock = f"{d}/agent.sock"
    server = Server([wl])
    await server.start(path=sock)
    try:
        async with running_server(tmp_path) as h:
            yield h, wl, sock
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(d, ignore_errors=True)


async def _until(cond: Any, what: str) -> None:
    for _ in range(200):
        if cond():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_rotated_svid_is_used_by_the_next_call_without_waiting_half_its_life(upstream: Any) -> None:
    h, wl, sock = upstream
    await _serve_svid(h, wl, "/nested")
    plugin = SpireUpstreamAuthority(TD, "127.0.0.1", h.port, sock, backoff_initial=0.05)
    try:
        await asyncio.to_thread(plugin.mint_x509_ca, _ca_csr()[1], TD, 600)
        assert plugin.svid_updates() == 1
        # The agent rotates our SVID to one of an identity that is not a downstream entry: the
        # next call presents it (and is refused), long before the first SVID's half-life.
        await _serve_svid(h, wl, "/not-downstream", downstream=False)
        wl.push()
        await _until(lambda: plugin.svid_updates() == 2, "the rotated SVID")
        with pytest.raises(UpstreamAuthorityError, match="code = PERMISSION_DENIED"):
            await asyncio.to_thread(plugin.mint_x509_ca, _ca_csr()[1], TD, 600)
        # Back to a downstream identity, this time after the stream broke and was opened again.
        await _serve_svid(h, wl, "/nested-2")
        wl.push(end=True)
        await _until(lambda: wl.opened == 2 and plugin.svid_updates() == 3, "the stream to be opened again")
        chain, _ = await asyncio.to_thread(plugin.mint_x509_ca, _ca_csr()[1], TD, 600)
        assert chain
    finally:
        await plugin.close()


async def test_authorities_tainted_upstream_are_reported(upstream: Any) -> None:
    h, wl, sock = upstream
    await _serve_svid(h, wl, "/nested")
    plugin = SpireUpstreamAuthority(TD, "127.0.0.1", h.port, sock, poll_interval=0.1, backoff_initial=0.05)
    try:
        plugin.start_polling()
        await _until(lambda: plugin.upstream_taints() is not None, "the first poll")
        root = (await _root_bundle(h))[0]
        first = plugin.upstream_taints()
        assert first is not None and authority_id(root) in first.x509 and not first.tainted_x509
        kid = next(iter(first.jwt))
        await asyncio.to_thread(h.datastore.taint_x509_ca, f"spiffe://{TD}", authority_id(root))
        await asyncio.to_thread(h.datastore.taint_jwt_key, f"spiffe://{TD}", kid)

        def tainted() -> bool:
            t = plugin.upstream_taints()
            return t is not None and t.tainted_x509 == {authority_id(root)} and t.tainted_jwt == {kid}
        await _until(tainted, "the upstream's taints")
    finally:
        await plugin.close()


async def test_a_new_jwt_bundle_on_the_workload_api_polls_the_upstream_bundle_at_once(upstream: Any) -> None:
    h, wl, sock = upstream
    await _serve_svid(h, wl, "/nested")
    plugin = SpireUpstreamAuthority(TD, "127.0.0.1", h.port, sock, poll_interval=600, backoff_initial=0.05)
    try:
        plugin.start_polling()
        await _until(lambda: plugin.upstream_taints() is not None and wl.jwt_streams, "the first poll")
        first = plugin.upstream_taints()
        assert first is not None
        kid = next(iter(first.jwt))
        await asyncio.to_thread(h.datastore.taint_jwt_key, f"spiffe://{TD}", kid)
        # The next scheduled poll is 10 minutes away: the agent's new JWT bundle triggers one now.
        wl.push_jwt_bundle(b'{"keys":[{"kid":"x"}]}')
        await _until(lambda: kid in (plugin.upstream_taints() or first).tainted_jwt, "a poll on the JWT bundle change")
    finally:
        await plugin.close()
