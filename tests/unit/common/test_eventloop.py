"""The daemons' event loop choice (common/eventloop.py)."""

from __future__ import annotations

import asyncio
import sys
import warnings

import pytest

from spire_py.common import eventloop


def test_auto_takes_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv(eventloop.ENV, raising=False)
    name, factory = eventloop.loop_factory()
    assert name == "uvloop" and factory is not None
    assert eventloop.run(_name()) == "uvloop"


def test_asyncio_forces_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    assert eventloop.loop_factory() == ("asyncio", None)
    assert eventloop.run(_name()) == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert eventloop.loop_factory("auto") == ("asyncio", None)
    assert eventloop.loop_factory("") == ("asyncio", None)
    with pytest.raises(eventloop.EventLoopError, match="SPIRE_PY_EVENT_LOOP=uvloop, but uvloop cannot be imported"):
        eventloop.loop_factory("uvloop")


def test_an_unknown_choice_is_refused_and_the_coroutine_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "trio")
    coro = _name()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a never-awaited coroutine would warn
        with pytest.raises(eventloop.EventLoopError, match="SPIRE_PY_EVENT_LOOP='trio': must be one of auto, uvloop, asyncio"):
            eventloop.run(coro)
    assert coro.cr_frame is None  # closed


async def _name() -> str:
    await asyncio.sleep(0)
    return eventloop.current_name()
