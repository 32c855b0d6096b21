"""The daemons' event loop: uvloop (libuv's loop, its transports and TLS in C) when installed,
asyncio's own otherwise.

Both daemons spend most of an RPC in the loop's transport and TLS layers and in HTTP/2; uvloop
cuts the server's CPU per agent sync by about a fifth (benchmarks/README.md, issue #23). Nothing
in spire_py depends on which loop runs it: peer credentials, TLS peer certificates, signal
handlers and accepted sockets are read through the loop's public API, and the test suite runs
the daemons on whichever loop this module picks.

``SPIRE_PY_EVENT_LOOP`` chooses explicitly: ``asyncio`` forces asyncio's loop (for debugging,
or to compare), ``uvloop`` requires uvloop and refuses to start without it, unset or ``auto``
takes uvloop when it can be imported.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Coroutine, Optional, TypeVar

from .errors import SpireError

ENV = "SPIRE_PY_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


class EventLoopError(SpireError):
    """The event loop named in SPIRE_PY_EVENT_LOOP cannot be had."""


def loop_factory(choice: Optional[str] = None) -> tuple[str, Optional[Callable[[], asyncio.AbstractEventLoop]]]:
    """(name, factory) of the loop to run on; a factory of None means asyncio's default loop."""
    choice = (os.environ.get(ENV, "") if choice is None else choice).strip().lower() or "auto"
    if choice not in CHOICES:
        raise EventLoopError(f"{ENV}={choice!r}: must be one of {', '.join(CHOICES)}")
    if choice == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise EventLoopError(f"{ENV}=uvloop, but uvloop cannot be imported: {exc}") from None
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the loop loop_factory() picks."""
    try:
        _, factory = loop_factory()
    except EventLoopError:
        main.close()  # never awaited: no "coroutine was never awaited" warning on the way out
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def current_name() -> str:
    """'uvloop' or 'asyncio': the loop running the caller."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
