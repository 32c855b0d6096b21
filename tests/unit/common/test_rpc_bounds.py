"""common.rpc: what every listener of both daemons refuses or bounds, whatever the service."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from typing import Any, Callable

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError

from spire_py.common import h2writes, rpc
from spire_py.proto.grpc.health.v1 import health_grpc, health_pb2

CHECK = "/grpc.health.v1.Health/Check"
HUGE = "k" * 600_000


class RawCodec(ProtoCodec):
    """Sends bytes as they are: what an attacker's client puts on the wire."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        return message if isinstance(message, bytes) else super().encode(message, message_type)


class Probe(health_grpc.HealthBase):
    """Check answers per the service name it is asked for."""

    def __init__(self) -> None:
        self.calls = 0

    async def Check(self, stream: Any) -> None:
        req = await stream.recv_message()
        self.calls += 1
        if req.service == "long-error":
            raise GRPCError(Status.INVALID_ARGUMENT, f'unknown attestor type "{HUGE}"')
        if req.service == "bug":
            raise KeyError(HUGE)
        await stream.send_message(health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING))

    async def Watch(self, stream: Any) -> None:
        await stream.recv_message()


async def _serve(tmp_path: Any, **kw: Any) -> tuple[rpc.GuardedServer, Probe, str]:
    probe = Probe()
    path = str(tmp_path / "api.sock")
    server = rpc.GuardedServer([probe], **kw)
    await server.start(path=path)
    return server, probe, path


async def _check(path: str, request: Any, codec: Any = None) -> Any:
    channel = Channel(path=path, codec=codec) if codec else Channel(path=path)
    try:
        method = channel.request(CHECK, Cardinality.UNARY_UNARY, health_pb2.HealthCheckRequest,
                                 health_pb2.HealthCheckResponse)
        async with method as stream:
            await stream.send_message(request, end=True)
            return await stream.recv_message()
    finally:
        channel.close()


async def _stop(server: rpc.GuardedServer) -> None:
    server.close()
    await server.wait_closed()


async def test_caller_chosen_string_in_a_status_is_cut_to_one_kib(tmp_path: Any) -> None:
    server, _, path = await _serve(tmp_path)
    try:
        with pytest.raises(GRPCError) as err:
            await _check(path, health_pb2.HealthCheckRequest(service="long-error"))
        assert err.value.status == Status.INVALID_ARGUMENT
        assert len(err.value.message) <= rpc.MAX_STATUS_MESSAGE
        assert err.value.message.startswith('unknown attestor type "kkk') and err.value.message.endswith("(truncated)")
    finally:
        await _stop(server)


async def test_request_over_four_mib_is_refused_from_its_prefix(tmp_path: Any) -> None:
    server, probe, path = await _serve(tmp_path)
    try:
        body = health_pb2.HealthCheckRequest(service="x" * (rpc.MAX_MESSAGE_BYTES + 1)).SerializeToString()
        with pytest.raises(GRPCError) as err:
            await _check(path, body, RawCodec())
        assert err.value.status == Status.RESOURCE_EXHAUSTED
        assert err.value.message == f"grpc: received message larger than max ({len(body)} vs. {rpc.MAX_MESSAGE_BYTES})"
        assert probe.calls == 0
        # The same connection-less client is served normally afterwards.
        ok = await _check(path, health_pb2.HealthCheckRequest())
        assert ok.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await _stop(server)


async def test_request_of_exactly_four_mib_is_served(tmp_path: Any) -> None:
    server, probe, path = await _serve(tmp_path)
    try:
        # field 1 tag (1 byte) + varint length (4 bytes) + payload = the limit exactly
        req = health_pb2.HealthCheckRequest(service="y" * (rpc.MAX_MESSAGE_BYTES - 5))
        assert req.ByteSize() == rpc.MAX_MESSAGE_BYTES
        ok = await _check(path, req)
        assert ok.status == health_pb2.HealthCheckResponse.SERVING and probe.calls == 1
    finally:
        await _stop(server)


async def test_malformed_protobuf_answers_internal_with_one_log_line(tmp_path: Any, caplog: Any) -> None:
    server, probe, path = await _serve(tmp_path)
    caplog.set_level(logging.WARNING)
    try:
        for _ in range(5):
            with pytest.raises(GRPCError) as err:
                await _check(path, b"\x0a\xff\xff\xff\xff\x0f", RawCodec())
            assert err.value.status == Status.INTERNAL
            assert err.value.message.startswith("grpc: failed to unmarshal the received message")
        assert probe.calls == 0
        lines = [r for r in caplog.records if r.getMessage() == "Malformed request"]
        assert len(lines) == 1, "one line per interval, not one per request"
        assert not any(r.exc_info for r in caplog.records)
    finally:
        await _stop(server)


async def test_unexpected_exception_is_internal_and_bounded(tmp_path: Any, caplog: Any) -> None:
    server, _, path = await _serve(tmp_path)
    caplog.set_level(logging.WARNING)
    try:
        for _ in range(3):
            with pytest.raises(GRPCError) as err:
                await _check(path, health_pb2.HealthCheckRequest(service="bug"))
            assert err.value.status == Status.INTERNAL and err.value.message == "internal error"
        logged = [r for r in caplog.records if r.getMessage() == "Request failed with an internal error"]
        assert len(logged) == 1
        assert len(logged[0].fields["error"]) <= rpc.MAX_STATUS_MESSAGE
    finally:
        await _stop(server)


async def test_guard_refuses_before_the_handler_and_observer_sees_every_call(tmp_path: Any) -> None:
    seen: list[tuple[str, Status, str]] = []

    async def guard(call: rpc.Call) -> None:
        if call.method != CHECK:
            raise AssertionError(call.method)
        call.caller = "tester"
        raise GRPCError(Status.PERMISSION_DENIED, "authorization denied")

    def observer(call: rpc.Call, status: Status, message: str) -> None:
        seen.append((call.caller, status, message))

    server, probe, path = await _serve(tmp_path, guard=guard, observer=observer)
    try:
        with pytest.raises(GRPCError) as err:
            await _check(path, health_pb2.HealthCheckRequest())
        assert err.value.status == Status.PERMISSION_DENIED
        assert probe.calls == 0
        assert seen == [("tester", Status.PERMISSION_DENIED, "authorization denied")]
    finally:
        await _stop(server)


async def test_a_method_without_policy_stops_the_server_from_being_built() -> None:
    with pytest.raises(RuntimeError, match="no authorization policy for: /grpc.health.v1.Health/Watch"):
        rpc.GuardedServer([Probe()], known_methods={CHECK})
    rpc.GuardedServer([Probe()], known_methods={CHECK, "/grpc.health.v1.Health/Watch"})


async def test_unix_listener_queues_hundreds_of_pending_connections(tmp_path: Any) -> None:
    """asyncio's default backlog of 100 refused reconnect storms; connect 300 before the loop accepts any."""
    server, _, path = await _serve(tmp_path)
    socks = []
    try:
        refused = 0
        for _ in range(300):  # no await in this loop: nothing is accepted meanwhile
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            socks.append(s)
            try:
                s.connect(path)
            except (BlockingIOError, ConnectionRefusedError):
                refused += 1
        assert refused == 0
        assert rpc.listen_backlog() >= 300
    finally:
        for s in socks:
            s.close()
        await _stop(server)


def test_bounded_and_quote() -> None:
    assert rpc.bounded("abc") == "abc"
    cut = rpc.bounded("z" * 5000)
    assert len(cut) == rpc.MAX_STATUS_MESSAGE and cut.endswith("... (truncated)")
    assert len(rpc.quote("q" * 5000)) == rpc.MAX_QUOTED


def test_rate_limited_log_bounds_its_keys() -> None:
    records: list[str] = []

    class Sink:
        def warning(self, message: str, **_: Any) -> None:
            records.append(message)

    limited = rpc.RateLimitedLog(Sink(), interval=3600, max_keys=10)
    for i in range(100):
        limited.warning(f"k{i}", "m")
        limited.warning(f"k{i}", "m")
    assert len(records) == 100  # one per key, the repeat dropped
    assert len(limited._seen) <= 10


async def test_concurrent_callers_are_served_while_one_sends_a_huge_error_trigger(tmp_path: Any) -> None:
    server, _, path = await _serve(tmp_path)
    try:
        async def bad() -> None:
            with pytest.raises(GRPCError):
                await _check(path, health_pb2.HealthCheckRequest(service="long-error"))

        async def good() -> Any:
            return await _check(path, health_pb2.HealthCheckRequest())

        results = await asyncio.wait_for(asyncio.gather(*[bad() for _ in range(20)], good()), 60)
        assert results[-1].status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await _stop(server)


async def test_finished_requests_leave_no_reference_cycles(tmp_path: Any) -> None:
    """Every request, answered or failed, is freed when it ends rather than left in a cycle
    for the collector (counted with the collector off): the bounded reader set on the stream
    must not keep it alive."""
    from grpclib.server import Stream as ServerStream

    from tests.unit.helpers.collector import collector_off

    server, probe, path = await _serve(tmp_path)
    try:
        with collector_off(ServerStream) as alive:
            for service in ("", "long-error", "") * 5:
                try:
                    await _check(path, health_pb2.HealthCheckRequest(service=service))
                except GRPCError:
                    pass
            await asyncio.sleep(0.05)
            left = alive()
    finally:
        await _stop(server)
    assert probe.calls == 15
    assert left == 0, f"{left} of 15 finished requests are kept alive by reference cycles"


async def test_a_connection_lets_each_finished_request_go_at_once(tmp_path: Any) -> None:
    """An agent keeps one connection and syncs on it for days: each request it finished is
    freed right away, not kept (task, stream, queue, events) until the connection's tenth next
    request as grpclib's own handler does; a reset for a finished request finds nothing."""
    from grpclib.protocol import Stream as ConnectionStream  # what the handler keeps per request

    from tests.unit.helpers.collector import collector_off

    server, probe, path = await _serve(tmp_path)
    channel = Channel(path=path)
    try:
        stub = health_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest())  # the connection is made
        (handler,) = [h for h in server._handlers if not h.closing]
        assert isinstance(handler, rpc.PromptHandler)
        with collector_off(ConnectionStream) as streams:
            for _ in range(7):
                await stub.Check(health_pb2.HealthCheckRequest())
            await asyncio.sleep(0.05)
            alive = streams()
        assert handler._tasks == {}
        assert alive == 0, f"{alive} finished requests are still held by the connection"
        handler.cancel(object())  # a reset that arrives after its request finished
    finally:
        channel.close()
        await _stop(server)
    assert probe.calls == 8


async def test_failed_tls_handshakes_leave_nothing_behind() -> None:
    """A stranger sending garbage to a TLS listener: grpclib counted each accepted socket among
    the server's connections and, the handshake failing, never let it go (a handler and its
    protocol kept for good per attempt, all scanned every tenth new connection). Only a
    connection that is made counts, and it still does."""
    from grpclib.protocol import H2Protocol

    from spire_py.common import tls
    from tests.unit.helpers.federation import make_ca, make_web_cert

    ca = make_ca()
    leaf = make_web_cert(ca)
    server = rpc.GuardedServer([Probe()])
    await server.start("127.0.0.1", 0, ssl=tls.server_context([leaf.cert], leaf.key, []))
    port = server._server.sockets[0].getsockname()[1]
    try:
        gc.collect()
        before = sum(1 for o in gc.get_objects() if isinstance(o, H2Protocol))
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\n\r\n" * 20)
            await reader.read()  # the server closes on the failed handshake
            writer.close()
        await asyncio.sleep(0.05)
        gc.collect()  # the failed TLS transports are freed by the collector, not by reference counts
        assert server._handlers == set()
        assert sum(1 for o in gc.get_objects() if isinstance(o, H2Protocol)) == before
        channel = tls.SpiffeChannel("127.0.0.1", port, ssl_context=tls.client_context([ca.cert]),
                                    expected=None)  # type: ignore[arg-type]
        try:
            await health_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert len([h for h in server._handlers if not h.closing]) == 1
        finally:
            channel.close()
    finally:
        await _stop(server)


def _frames(data: bytes) -> list[tuple[str, int, set[str]]]:
    """(type, stream, flags) of each HTTP/2 frame in one write."""
    from hyperframe.frame import Frame

    out, view = [], memoryview(data)
    while view:
        frame, length = Frame.parse_frame_header(view[:9])
        out.append((type(frame).__name__, frame.stream_id, set(frame.flags)))
        view = view[9 + length:]
    return out


def _record_writes(monkeypatch: pytest.MonkeyPatch, mine: Callable[[Any], bool]) -> list[bytes]:
    """What each socket transport that ``mine`` picks hands to its socket, one item per write."""
    from asyncio import selector_events

    writes: list[bytes] = []
    real = selector_events._SelectorSocketTransport.write

    def recording(transport: Any, data: Any) -> None:
        if mine(transport):
            writes.append(bytes(data))
        real(transport, data)

    monkeypatch.setattr(selector_events._SelectorSocketTransport, "write", recording)
    return writes


def _writes_with_data(writes: list[bytes]) -> list[list[tuple[str, int, set[str]]]]:
    """The frames of each write that carries a DATA frame (a request's or an answer's)."""
    return [f for w in writes for f in [_frames(w)] if any(t == "DataFrame" for t, _, _ in f)]


async def test_an_answer_leaves_in_one_write(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """HEADERS, DATA and the trailing HEADERS of a unary answer reach the socket in one write
    (grpclib writes each on its own: three TLS records and sends on a TCP listener)."""
    writes = _record_writes(monkeypatch, lambda t: t.get_extra_info("sockname") == path)  # the server's side
    server, probe, path = await _serve(tmp_path)
    try:
        reply = await _check(path, health_pb2.HealthCheckRequest())
    finally:
        await _stop(server)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert _writes_with_data(writes) == [[("HeadersFrame", 1, {"END_HEADERS"}), ("DataFrame", 1, set()),
                                          ("HeadersFrame", 1, {"END_HEADERS", "END_STREAM"})]], \
        [_frames(w) for w in writes]


class _Transport:
    def __init__(self) -> None:
        self.log: list[Any] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.log.append(data)

    def close(self) -> None:
        self.log.append("close")
        self.closing = True

    def abort(self) -> None:
        self.log.append("abort")
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": "peer"}.get(name, default)


async def test_coalesced_writes_keep_order_flush_on_close_and_drop_on_abort() -> None:
    raw = _Transport()
    t = h2writes.CoalescingTransport(raw, asyncio.get_running_loop())
    t.write(b"a")
    t.write(b"")
    t.write(b"bc")
    assert raw.log == []  # not before the loop's next turn
    await asyncio.sleep(0)
    assert raw.log == [b"abc"]
    t.write(b"d")
    t.close()  # what is pending goes out first
    assert raw.log == [b"abc", b"d", "close"]
    t.write(b"late")
    await asyncio.sleep(0)
    assert raw.log == [b"abc", b"d", "close"]  # nothing written to a closing transport
    assert t.get_extra_info("peername") == "peer" and t.is_closing()

    raw2 = _Transport()
    t2 = h2writes.CoalescingTransport(raw2, asyncio.get_running_loop())
    t2.write(b"x")
    t2.abort()
    await asyncio.sleep(0)
    assert raw2.log == ["abort"]


async def test_a_spiffe_channel_request_leaves_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemons' mTLS client (tls.SpiffeChannel) joins a request's HEADERS and DATA too
    (plain TCP here: the joining is below TLS)."""
    from spire_py.common import tls

    server = rpc.GuardedServer([Probe()])
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]
    writes = _record_writes(monkeypatch, lambda t: t.get_extra_info("peername")[1] == port)  # the client's side
    channel = tls.SpiffeChannel("127.0.0.1", port, ssl_context=None, expected=None)  # type: ignore[arg-type]
    try:
        reply = await health_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="x"))
    finally:
        channel.close()
        await _stop(server)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert _writes_with_data(writes) == [[("HeadersFrame", 1, {"END_HEADERS"}), ("DataFrame", 1, {"END_STREAM"})]], \
        [_frames(w) for w in writes]


async def test_a_long_lived_connection_remembers_few_closed_streams() -> None:
    """h2 keeps how each closed stream ended for up to 65,536 streams a connection (~130 bytes
    each): an agent syncing for days on one connection cost its server and itself 8 MB. Both
    ends keep the last CLOSED_STREAMS_KEPT, more than a peer may have open at once."""
    from spire_py.common import tls

    server = rpc.GuardedServer([Probe()])
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]
    channel = tls.SpiffeChannel("127.0.0.1", port, ssl_context=None, expected=None)  # type: ignore[arg-type]
    try:
        stub = health_grpc.HealthStub(channel)
        for _ in range(h2writes.CLOSED_STREAMS_KEPT + 100):
            await stub.Check(health_pb2.HealthCheckRequest())
        (served,) = [o for o in gc.get_objects() if isinstance(o, rpc.ServedProtocol) and o.server is server]
        ends = {"server": served, "client": channel._protocol}
        kept = {side: len(p.connection._connection._closed_streams) for side, p in ends.items()}
        assert kept == {"server": h2writes.CLOSED_STREAMS_KEPT, "client": h2writes.CLOSED_STREAMS_KEPT}
        reply = await stub.Check(health_pb2.HealthCheckRequest())  # the connection carries on
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()
        await _stop(server)
