"""Every gRPC listener of both daemons goes through here: one place that bounds what a caller can make us do.

- Requests over ``MAX_MESSAGE_BYTES`` (4 MiB, gRPC's and so SPIRE's default) are refused with
  RESOURCE_EXHAUSTED from their 5-byte prefix, before the body is buffered.
- Status messages are cut to ``MAX_STATUS_MESSAGE`` characters: they travel in an HTTP/2 trailer
  that hpack Huffman-encodes in pure Python on the loop thread, and they often quote caller input
  (300 KB of it froze the server for 13 s before this cap).
- A request that does not decode is answered as grpc-go answers it (INTERNAL, "failed to
  unmarshal"), with one rate-limited log line instead of a traceback per request.
- An unexpected exception becomes INTERNAL with a rate-limited log line (traceback included once).
- Unix listeners get the system's maximum listen backlog, not asyncio's 100.
- What a connection writes in one turn of the event loop leaves as one write (one TLS record,
  one send; ``common/h2writes.py``): grpclib writes each HTTP/2 frame of an answer on its own.
- A finished request is let go at once (:class:`PromptHandler`): grpclib's per-connection
  handler keeps every finished request's task, stream, queue and events until the connection's
  tenth next request, which for an agent syncing every 5 s is most of a minute. With thousands
  of agents connected that was tens of thousands of dead requests, carried into the collector's
  older generations, where each young collection walked them again (pauses of hundreds of ms).
- A connection counts among the server's (what ``close`` cancels, what grpclib scans every
  tenth new connection) only once it is made (:class:`ServedProtocol`): grpclib counts it when
  the socket is accepted and lets it go when it is lost, and one whose TLS handshake fails is
  neither made nor lost, so every failed handshake, a stranger's garbage included, stayed
  counted for the life of the server.
- A side-specific ``guard`` (authorization, rate limits) runs before every handler and an
  ``observer`` (audit log) after it; the handler finds the call in :func:`current_call`.
- With telemetry on, every call counts in SPIRE's ``rpc.<service>.<method>`` call counter
  (``status`` and ``method`` labels); the counter is found when the method is wrapped. The
  agent's APIs also count SPIRE's per-service ``connection``/``connections`` (one per RPC).
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Optional

from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.protocol import H2Protocol
from grpclib.server import Handler as ConnectionHandler
from grpclib.server import Server

from . import h2writes, log
from . import telemetry
from .telemetry.names import CONNECTIONS, rpc_names

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_STATUS_MESSAGE = 1024
# How much of a caller-chosen string an error message quotes.
MAX_QUOTED = 128
_TRUNCATED = "... (truncated)"

_log = log.get("rpc")


def bounded(text: str, limit: int = MAX_STATUS_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, saying so."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(_TRUNCATED))] + _TRUNCATED


def quote(value: Any, limit: int = MAX_QUOTED) -> str:
    """A caller-chosen value as an error message may quote it: a bounded prefix."""
    return bounded(str(value), limit)


def listen_backlog() -> int:
    """The kernel's maximum (SPIRE asks for 4096); a burst of reconnecting clients must not be refused."""
    try:
        with open("/proc/sys/net/core/somaxconn", encoding="ascii") as f:
            return max(int(f.read().strip()), socket.SOMAXCONN)
    except (OSError, ValueError):
        return max(socket.SOMAXCONN, 4096)


class RateLimitedLog:
    """At most one line per key per ``interval``; the next line says how many were dropped."""

    def __init__(self, logger: Any, interval: float = 10.0, max_keys: int = 1024) -> None:
        self._log = logger
        self._interval = interval
        self._max_keys = max_keys
        self._seen: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, message: str, exc_info: Any = None, **fields: Any) -> None:
        now = time.monotonic()
        last, dropped = self._seen.get(key, (0.0, 0))
        if last and now - last < self._interval:
            self._seen[key] = (last, dropped + 1)
            return
        if len(self._seen) >= self._max_keys:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if dropped:
            fields["suppressed"] = dropped
        self._log.warning(message, exc_info=exc_info, extra=log.fields(**fields))


_problems = RateLimitedLog(_log)


@dataclass
class Call:
    """One RPC as the guard, the handler and the observer see it."""

    method: str
    stream: Any
    started: float = field(default_factory=time.monotonic)
    request: Any = None  # the first message received
    caller: Any = None  # set by the guard (server: auth.Caller)
    extra: dict[str, Any] = field(default_factory=dict)  # what a handler adds to the audit line


_current: contextvars.ContextVar[Optional[Call]] = contextvars.ContextVar("spire_py_rpc_call", default=None)


def current_call() -> Call:
    call = _current.get()
    if call is None:
        raise RuntimeError("not inside an RPC served by spire_py.common.rpc")
    return call


Guard = Callable[[Call], Awaitable[None]]
RequestHook = Callable[[Call, Any], Awaitable[None]]
Observer = Callable[[Call, Status, str], None]


def _bound_receive(stream: Any, call: Call, limit: int, on_request: Optional[RequestHook]) -> None:
    """Replace ``stream.recv_message`` with one that checks the length prefix before reading the body.

    grpclib reads the whole body (acknowledging HTTP/2 flow control as it goes) before it could
    check anything, so the check has to sit where the 5-byte prefix is read.
    """
    h2_stream, codec, recv_type, dispatch = stream._stream, stream._codec, stream._recv_type, stream._dispatch

    async def recv_message() -> Any:
        meta = await h2_stream.recv_data(5)
        if not meta:
            return None
        if len(meta) != 5:
            raise GRPCError(Status.INTERNAL, "grpc: truncated message prefix")
        compressed, length = struct.unpack(">?I", meta)
        if compressed:
            raise GRPCError(Status.UNIMPLEMENTED, "grpc: compressed messages are not supported")
        if length > limit:
            raise GRPCError(Status.RESOURCE_EXHAUSTED,
                            f"grpc: received message larger than max ({length} vs. {limit})")
        body = await h2_stream.recv_data(length)
        if len(body) != length:
            raise GRPCError(Status.INTERNAL, "grpc: truncated message")
        try:
            message = codec.decode(body, recv_type)
        except Exception as exc:  # protobuf's DecodeError, or anything a broken body makes it raise
            _problems.warning(f"decode:{call.method}", "Malformed request", method=call.method,
                              error=quote(exc))
            raise GRPCError(Status.INTERNAL,
                            f"grpc: failed to unmarshal the received message: {quote(exc)}") from None
        message, = await dispatch.recv_message(message)
        stream._messages_received += 1
        h2_stream.connection.messages_received += 1
        if call.request is None:
            call.request = message
            if on_request is not None:
                await on_request(call, message)
        return message

    stream.recv_message = recv_message


def _forget_stored_error(stream: Any) -> None:
    """Once the request's task is done, drop the error grpclib stored to cancel it.

    A peer's reset (py-spiffe ends every fetch that way) or a deadline makes grpclib keep the
    error in the stream's ``Wrapper`` and raise it from the wrapper's own ``__exit__``: the
    error's traceback holds that frame, the frame holds the wrapper, the wrapper the error.
    That cycle keeps the whole request (frames, the cancelled error, the stream, its headers)
    alive until a full collection, and those collections, walking thousands of such requests,
    stalled the Workload API for tens of milliseconds. Dropped here, it is all freed at once.
    """
    task = asyncio.current_task()
    wrapper = getattr(getattr(stream, "_stream", None), "wrapper", None)
    if task is None or wrapper is None or not hasattr(wrapper, "_error"):
        return

    def forget(_: Any) -> None:
        wrapper._error = None

    task.add_done_callback(forget)


def wrap_handler(
    method: str,
    func: Callable[[Any], Awaitable[None]],
    *,
    guard: Optional[Guard] = None,
    on_request: Optional[RequestHook] = None,
    observer: Optional[Observer] = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> Callable[[Any], Awaitable[None]]:
    metrics = telemetry.current()
    calls = None
    active = None
    if metrics.enabled:
        short, key = rpc_names(method)
        calls = metrics.call_counter(key, (("method", short),))
        keys = CONNECTIONS.get(method.lstrip("/").partition("/")[0])
        if keys is not None:
            active = metrics.active_calls(*keys)

    async def handle(stream: Any) -> None:
        call = Call(method=method, stream=stream)
        _bound_receive(stream, call, max_message_bytes, on_request)
        token = _current.set(call)
        status, message = Status.OK, ""
        if active is not None:
            active.opened()
        try:
            if guard is not None:
                await guard(call)
            await func(stream)
        except GRPCError as exc:
            status, message = exc.status, bounded(str(exc.message or ""))
            raise GRPCError(status, message or None, exc.details) from None
        except (asyncio.CancelledError, asyncio.TimeoutError, StreamTerminatedError):
            status, message = Status.CANCELLED, "request cancelled"
            _forget_stored_error(stream)
            raise  # grpclib turns these into DEADLINE_EXCEEDED / a reset stream itself
        except Exception as exc:
            status, message = Status.INTERNAL, "internal error"
            _problems.warning(f"internal:{method}:{type(exc).__name__}", "Request failed with an internal error",
                              exc_info=exc, method=method, error=quote(exc, MAX_STATUS_MESSAGE))
            raise GRPCError(Status.INTERNAL, message) from None
        finally:
            # The bounded reader closes over the stream it is set on: a cycle that would keep
            # every finished request (stream, headers, deadline) for the full collection.
            stream.__dict__.pop("recv_message", None)
            _current.reset(token)
            if active is not None:
                active.closed()
            if calls is not None:
                calls.done(call.started, status)
            if observer is not None:
                try:
                    observer(call, status, message)
                except Exception as exc:  # the audit line must never change the answer
                    _problems.warning("observer", "Unable to emit the call log", error=quote(exc))

    return handle


class _Methods(dict[str, Handler]):
    """The method table. grpclib answers a path it lacks without a content-type, which grpclib
    clients then report as UNKNOWN; such a path gets grpc-go's (and so SPIRE's) UNIMPLEMENTED."""

    def get(self, key: str, default: Any = None) -> Any:
        found = super().get(key)
        if found is not None:
            return found
        service, _, method = key.lstrip("/").partition("/")
        if any(name.lstrip("/").partition("/")[0] == service for name in self):
            message = f"unknown method {quote(method)} for service {quote(service)}"
        else:
            message = f"unknown service {quote(service)}"

        async def unimplemented(stream: Any) -> None:
            raise GRPCError(Status.UNIMPLEMENTED, message)

        return Handler(unimplemented, Cardinality.UNARY_UNARY, None, None)


class PromptHandler(ConnectionHandler):
    """grpclib's per-connection handler, dropping a request's task as soon as it is done instead
    of at the connection's next tenth request (grpclib's ``__gc_interval__``)."""

    def accept(self, stream: Any, headers: Any, release_stream: Callable[[], Any]) -> None:
        super().accept(stream, headers, release_stream)
        task = self._tasks[stream]
        task.add_done_callback(lambda t: self._forget(stream, t))

    def _forget(self, stream: Any, task: "asyncio.Task[None]") -> None:
        if self._tasks.get(stream) is task:
            del self._tasks[stream]
        self._cancelled.discard(task)

    def cancel(self, stream: Any) -> None:
        # A reset that arrives after the request finished finds nothing left to cancel.
        if stream in self._tasks:
            super().cancel(stream)


class ServedProtocol(h2writes.CoalescingH2Protocol):
    """A listener's connection, added to its server's connections when it is made, not when
    its socket is accepted: a TLS handshake that fails reaches neither ``connection_made`` nor
    ``connection_lost``, so grpclib, which adds it at accept and drops it once lost, kept each
    one (handler, protocol, h2 state) for good."""

    server: "GuardedServer"

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        handler = self.handler
        assert isinstance(handler, ConnectionHandler)
        self.server._handlers.add(handler)


def prompt(protocol: H2Protocol) -> H2Protocol:
    """``protocol`` (as grpclib's Server builds it) with its handler as a :class:`PromptHandler`."""
    assert type(protocol.handler) is ConnectionHandler, type(protocol.handler)
    protocol.handler.__class__ = PromptHandler
    return protocol


class GuardedServer(Server):
    """A grpclib Server whose every method goes through :func:`wrap_handler`.

    ``policy_for`` (when given) must know every served method: a method added to a
    service without a policy entry makes the server refuse to start.
    """

    def __init__(
        self,
        handlers: Iterable[Any],
        *,
        guard: Optional[Guard] = None,
        on_request: Optional[RequestHook] = None,
        observer: Optional[Observer] = None,
        known_methods: Optional[Iterable[str]] = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(list(handlers))
        if known_methods is not None:
            missing = sorted(set(self._mapping) - set(known_methods))
            if missing:
                raise RuntimeError(f"no authorization policy for: {', '.join(missing)}")
        self._mapping = _Methods({
            name: Handler(wrap_handler(name, h.func, guard=guard, on_request=on_request, observer=observer,
                                       max_message_bytes=max_message_bytes),
                          h.cardinality, h.request_type, h.reply_type)
            for name, h in self._mapping.items()
        })

    @property
    def methods(self) -> list[str]:
        return sorted(self._mapping)

    def _protocol_factory(self) -> H2Protocol:
        protocol = prompt(super()._protocol_factory())
        self._handlers.discard(protocol.handler)  # counted once its connection is made
        served = h2writes.coalescing(protocol, ServedProtocol)
        assert isinstance(served, ServedProtocol)
        served.server = self
        return served

    async def start(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("backlog", listen_backlog())
        await super().start(*args, **kwargs)
