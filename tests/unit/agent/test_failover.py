"""The agent's FailoverChannel: which server address a new connection tries first."""

from __future__ import annotations

from typing import Any

import pytest

from spire_py.agent import client as client_mod
from spire_py.agent.client import FailoverChannel
from spire_py.common import tls

ADDRS = [("127.0.0.2", 8081), ("127.0.0.3", 8081), ("127.0.0.4", 8081)]


@pytest.fixture
def dialled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every address a connection attempt went to; addresses in ``down`` refuse."""
    tried: list[tuple[str, int]] = []

    async def fake_connect(self: Any) -> Any:
        tried.append((self._host, self._port))
        if (self._host, self._port) in getattr(self, "down", ()):
            raise ConnectionRefusedError("refused")
        return object()

    monkeypatch.setattr(tls.SpiffeChannel, "_create_connection", fake_connect)
    monkeypatch.setattr(client_mod.random, "randrange", lambda n: 0)
    return tried


def channel() -> FailoverChannel:
    ch = FailoverChannel([(h, p) for h, p in ADDRS], ssl_context=tls.client_context([], insecure=True),
                         expected=None)
    return ch


async def test_reconnect_prefers_the_address_that_worked(dialled):
    ch = channel()
    await ch._create_connection()
    ch._current = ADDRS[1]
    await ch._create_connection()
    assert dialled == [ADDRS[0], ADDRS[1]] and ch.connected_to == ADDRS[1]


async def test_abandoned_server_is_tried_last(dialled):
    ch = channel()
    ch._current = ADDRS[1]
    assert ch.abandon() == ADDRS[1]
    await ch._create_connection()
    assert dialled == [ADDRS[2]] and ch.connected_to == ADDRS[2]
    # Only once: after that, the address that works is kept.
    await ch._create_connection()
    assert dialled == [ADDRS[2], ADDRS[2]]


async def test_abandoned_server_is_still_tried_when_the_others_refuse(dialled):
    ch = channel()
    ch.down = {ADDRS[0], ADDRS[2]}  # type: ignore[attr-defined]
    ch._current = ADDRS[1]
    ch.abandon()
    await ch._create_connection()
    assert dialled == [ADDRS[2], ADDRS[0], ADDRS[1]] and ch.connected_to == ADDRS[1]
