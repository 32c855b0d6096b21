"""Expired attested nodes are pruned on a schedule, as SPIRE's node manager: every
prune_attested_nodes_expired_for, the nodes whose SVID expired longer ago than that;
banned nodes never, TOFU (non-reattestable) nodes only with prune_tofu_nodes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest
from cryptography import x509
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from sqlalchemy import text

from spire_py.agent.attestor import make_csr
from spire_py.common.registration import Entry, Selector
from spire_py.common.spiffeid import TrustDomain
from spire_py.proto.spire.api.server.agent.v1 import agent_pb2
from spire_py.server import server as server_module
from spire_py.server.cache import EntryCache
from spire_py.server.core import ServerCore
from spire_py.server.datastore import AttestedNode, JoinToken, SQLDataStore
from spire_py.server.pruning import NodePruner
from tests.unit.helpers.inprocess_server import TD, running_server

HOUR = 3600


@pytest.fixture
def core(tmp_path: Path) -> Iterator[ServerCore]:
    ds = SQLDataStore("sqlite3", str(tmp_path / "data" / "datastore.sqlite3"))
    c = ServerCore(config=None, trust_domain=TrustDomain(TD), datastore=ds, ca=None,
                   cache=EntryCache(ds, TrustDomain(TD)))
    yield c
    c.executor.shutdown()
    ds.close()


def node(ds: SQLDataStore, name: str, expires_in: int, *, reattestable: bool = True, banned: bool = False,
         renewed_expires_in: int = 0) -> str:
    sid = f"spiffe://{TD}/spire/agent/test/{name}"
    now = int(time.time())
    ds.create_attested_node(AttestedNode(
        spiffe_id=sid, attestation_type="test", cert_serial_number="" if banned else "1",
        cert_not_after=now + expires_in, can_reattest=reattestable,
        new_cert_serial_number="2" if renewed_expires_in else "",
        new_cert_not_after=now + renewed_expires_in if renewed_expires_in else 0))
    ds.set_node_selectors(sid, [Selector("test", name)])
    return sid


def present(ds: SQLDataStore, *sids: str) -> list[bool]:
    return [ds.fetch_attested_node(s) is not None for s in sids]


class Clock:
    """Monotonic time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- what is pruned ------------------------------------------------------------------------

async def test_a_node_expired_longer_than_the_setting_is_pruned_a_recent_or_fresh_one_kept(core: ServerCore) -> None:
    ds = core.datastore
    old = node(ds, "old", -2 * HOUR)
    recent = node(ds, "recent", -10 * 60)
    fresh = node(ds, "fresh", HOUR)
    assert await NodePruner(core, HOUR).prune() == 1
    assert present(ds, old, recent, fresh) == [False, True, True]
    assert ds.get_node_selectors(old) == []
    assert ds.get_node_selectors(recent) == [Selector("test", "recent")]


async def test_a_tofu_node_is_kept_unless_prune_tofu_nodes(core: ServerCore) -> None:
    ds = core.datastore
    tofu = node(ds, "tofu", -2 * HOUR, reattestable=False)
    assert await NodePruner(core, HOUR, include_tofu=False).prune() == 0
    assert present(ds, tofu) == [True]
    assert await NodePruner(core, HOUR, include_tofu=True).prune() == 1
    assert present(ds, tofu) == [False]


async def test_a_banned_node_is_never_pruned(core: ServerCore) -> None:
    ds = core.datastore
    banned = node(ds, "banned", -2 * HOUR, banned=True)
    banned_tofu = node(ds, "banned-tofu", -2 * HOUR, banned=True, reattestable=False)
    assert await NodePruner(core, HOUR, include_tofu=True).prune() == 0
    assert present(ds, banned, banned_tofu) == [True, True]


async def test_a_node_whose_renewed_svid_is_still_recent_is_kept(core: ServerCore) -> None:
    ds = core.datastore
    renewed = node(ds, "renewed", -2 * HOUR, reattestable=False, renewed_expires_in=HOUR)
    assert await NodePruner(core, HOUR, include_tofu=True).prune() == 0
    assert present(ds, renewed) == [True]


def test_batch_size_caps_one_datastore_call(core: ServerCore) -> None:
    ds = core.datastore
    sids = [node(ds, f"n{i}", -2 * HOUR) for i in range(5)]
    assert ds.prune_attested_expired_nodes(int(time.time()) - HOUR, False, 2) == 2
    assert present(ds, *sids).count(True) == 3


async def test_one_pass_prunes_every_expired_node_in_batches(core: ServerCore) -> None:
    ds = core.datastore
    sids = [node(ds, f"n{i}", -2 * HOUR) for i in range(5)]
    keep = node(ds, "fresh", HOUR)
    assert await NodePruner(core, HOUR, batch_size=2).prune() == 5
    assert present(ds, *sids) == [False] * 5
    assert present(ds, keep) == [True]


async def test_a_pruned_join_token_agent_takes_its_alias_out_of_the_entry_cache(core: ServerCore) -> None:
    ds = core.datastore
    agent = f"spiffe://{TD}/spire/agent/join_token/tok"
    ds.create_attested_node(AttestedNode(spiffe_id=agent, attestation_type="join_token", cert_serial_number="1",
                                         cert_not_after=int(time.time()) - 2 * HOUR))
    ds.create_entry(Entry(id="", spiffe_id=f"spiffe://{TD}/host", parent_id=agent,
                          selectors=[Selector("spiffe_id", agent)]))
    await core.refresh_cache()
    assert [e.spiffe_id for e in core.cache.authorized_entries(agent, [])] == [f"spiffe://{TD}/host"]
    assert await NodePruner(core, HOUR, include_tofu=True).prune() == 1
    assert core.cache.authorized_entries(agent, []) == []
    assert ds.list_entries()[0] == []


# --- when -----------------------------------------------------------------------------

def test_pruning_is_off_unless_expired_for_is_set() -> None:
    cfg = SimpleNamespace(prune_attested_nodes_expired_for=None, prune_tofu_nodes=True,
                          prune_attested_nodes_batch_size=10)
    assert NodePruner.from_config(None, cfg) is None
    cfg.prune_attested_nodes_expired_for = 0
    assert NodePruner.from_config(None, cfg) is None
    cfg.prune_attested_nodes_expired_for = 720 * HOUR
    p = NodePruner.from_config(None, cfg)
    assert p is not None and (p.expired_for, p.include_tofu, p.batch_size) == (720 * HOUR, True, 10)


async def test_a_pass_runs_once_every_expired_for_the_first_one_period_after_start(core: ServerCore) -> None:
    ds = core.datastore
    clock = Clock()
    pruner = NodePruner(core, HOUR, clock=clock)
    first = node(ds, "first", -2 * HOUR)
    clock.now += HOUR - 1
    assert await pruner.tick() == 0 and present(ds, first) == [True]
    clock.now += 1
    assert await pruner.tick() == 1 and present(ds, first) == [False]
    second = node(ds, "second", -2 * HOUR)
    clock.now += HOUR - 1
    assert await pruner.tick() == 0 and present(ds, second) == [True]
    clock.now += 1
    assert await pruner.tick() == 1 and present(ds, second) == [False]


def rename_table(ds: SQLDataStore, old: str, new: str) -> None:
    with ds.engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))


async def test_a_failed_pass_is_logged_and_retried_next_period(core: ServerCore, caplog: pytest.LogCaptureFixture) -> None:
    ds = core.datastore
    clock = Clock()
    pruner = NodePruner(core, HOUR, clock=clock)
    sid = node(ds, "n", -2 * HOUR)
    rename_table(ds, "attested_node_entries", "nodes_away")  # the pass's query now fails
    clock.now += HOUR
    assert await pruner.tick() == 0
    assert "Failed during periodic pruning of expired nodes" in caplog.text
    rename_table(ds, "nodes_away", "attested_node_entries")
    assert await pruner.tick() == 0, "not before the next period"
    clock.now += HOUR
    assert await pruner.tick() == 1 and present(ds, sid) == [False]


# --- in the running server ----------------------------------------------------------------

async def wait_until(predicate, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_the_server_maintenance_prunes_an_expired_agent_which_is_then_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Maintenance ticks every 50 ms instead of 5 s; pruning every second.
    monkeypatch.setattr(server_module, "TICK", 0.05)
    monkeypatch.setattr(server_module, "MIN_TICK", 0.05)
    async with running_server(tmp_path, 'prune_attested_nodes_expired_for = "1s"\n'
                                        '    prune_tofu_nodes = true') as srv:
        ds = srv.datastore
        ds.create_join_token(JoinToken("prune-me", int(time.time()) + 600))
        resp, key = await srv.attest_join_token(b"prune-me")
        chain = [x509.load_der_x509_certificate(c) for c in resp.result.svid.cert_chain]
        sid = f"spiffe://{TD}/spire/agent/join_token/prune-me"
        fresh = node(ds, "fresh", HOUR)

        renew = agent_pb2.RenewAgentRequest(params=agent_pb2.AgentX509SVIDParams(csr=make_csr(key)))
        await srv.tcp(chain, key).RenewAgent(renew)  # known to the server while its record is current

        n = ds.fetch_attested_node(sid)
        n.cert_not_after, n.new_cert_not_after = int(time.time()) - HOUR, 0
        n.new_cert_serial_number = ""
        ds.update_attested_node(n, {"cert_not_after", "new_cert_not_after", "new_cert_serial_number"})

        async def pruned() -> bool:
            return ds.fetch_attested_node(sid) is None
        await wait_until(pruned, "the maintenance loop to prune the expired agent")
        assert present(ds, fresh) == [True]
        with pytest.raises(GRPCError) as exc:
            await srv.tcp(chain, key).RenewAgent(renew)
        assert exc.value.status == Status.PERMISSION_DENIED
