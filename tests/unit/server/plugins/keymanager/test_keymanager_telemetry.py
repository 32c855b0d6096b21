"""The server's KeyManager calls count under SPIRE's ``server_key_manager.<op>`` keys (GetKey as
get_public_key, GetKeys as get_public_keys), with the status of the call; the node manager's
prune pass counts as ``node.manager.prune``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spire_py.common.telemetry import metrics
from spire_py.server.plugins.keymanager.base import KeyManager
from spire_py.server.plugins.keymanager.memory import KeyManagerError, MemoryKeyManager
from spire_py.server.plugins.keymanager.telemetry import instrument
from spire_py.server.pruning import NodePruner
from tests.unit.server.test_node_pruning import HOUR, core, node  # noqa: F401  (core is a fixture)


@pytest.fixture
def recorded() -> Iterator[metrics.Metrics]:
    m = metrics.Metrics("spire_server")
    metrics.set_current(m)
    yield m
    metrics.set_current(metrics.NULL)


def got(m: metrics.Metrics) -> dict[str, float]:
    return {".".join(s.name) + "".join(f"|{k}={v}" for k, v in s.labels): (s.count if s.kind == metrics.SAMPLE else s.value)
            for s in m.series()}


def test_key_manager_calls_are_counted_with_their_status(recorded) -> None:
    km = instrument(MemoryKeyManager())
    assert isinstance(km, KeyManager)
    km.generate_key("x509-CA-A", "ec-p256")
    with pytest.raises(KeyManagerError):
        km.generate_key("", "ec-p256")
    assert km.get_key("x509-CA-A") is not None
    assert km.get_public_key("x509-CA-A") is not None
    assert [k.key_id for k in km.list_keys()] == ["x509-CA-A"]
    assert km.NAME == "memory"  # uncounted attributes pass through
    g = got(recorded)
    assert g["spire_server.server_key_manager.generate_key|status=OK"] == 1
    assert g["spire_server.server_key_manager.generate_key|status=Unknown"] == 1
    assert g["spire_server.server_key_manager.get_public_key|status=OK"] == 2
    assert g["spire_server.server_key_manager.get_public_keys|status=OK"] == 1
    assert g["spire_server.server_key_manager.generate_key.elapsed_time|status=OK"] == 1


def test_telemetry_off_counts_nothing() -> None:
    km = instrument(MemoryKeyManager())
    km.generate_key("k", "ec-p256")
    assert metrics.current() is metrics.NULL and km.get_key("k") is not None


async def test_a_prune_pass_is_counted(recorded, core) -> None:  # noqa: F811
    node(core.datastore, "old", -2 * HOUR)
    assert await NodePruner(core, HOUR).prune() == 1
    assert await NodePruner(core, HOUR).prune() == 0
    assert got(recorded)["spire_server.node.manager.prune|status=OK"] == 2
