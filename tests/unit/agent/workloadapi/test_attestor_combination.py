"""Several workload attestors on one caller: selectors combine, a slow or failing one is bounded."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time

import pytest
from spiffe import WorkloadApiClient

from spire_py.agent.plugins.workloadattestor.base import WorkloadAttestationError, WorkloadAttestor
from spire_py.agent.plugins.workloadattestor.unix import UnixWorkloadAttestor
from spire_py.common.registration import Selector

from tests.unit.helpers.workload_world import WORKLOAD_ID, uid_selector

COMBINED_ID = "spiffe://example.org/combined"


class Fixed(WorkloadAttestor):
    NAME = "fixed"

    def __init__(self, *selectors: Selector) -> None:
        self.selectors = list(selectors)

    async def attest(self, pid: int, uid: int, gid: int) -> list[Selector]:
        return self.selectors


class Slow(WorkloadAttestor):
    NAME = "slow"

    async def attest(self, pid: int, uid: int, gid: int) -> list[Selector]:
        await asyncio.sleep(60)
        return [Selector("slow", "never")]


class Failing(WorkloadAttestor):
    NAME = "failing"

    async def attest(self, pid: int, uid: int, gid: int) -> list[Selector]:
        raise WorkloadAttestationError("engine unreachable")


def fetch_ids(w) -> list[str]:
    with WorkloadApiClient(f"unix://{w.socket_path}", default_timeout=10) as client:
        return sorted(str(s.spiffe_id) for s in client.fetch_x509_svids())


# The agent keeps its own process's calls out of the log: a logged caller is another process.
CLIENT = """
import sys
from spiffe import WorkloadApiClient
with WorkloadApiClient("unix://" + sys.argv[1], default_timeout=10) as c:
    print(" ".join(sorted(str(s.spiffe_id) for s in c.fetch_x509_svids())))
"""


def fetch_ids_from_another_process(w) -> tuple[int, list[str]]:
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, w.socket_path], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return proc.pid, out.split()


def collect_failures(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "Failed to collect all selectors"]


async def test_selectors_of_every_attestor_combine(world):
    docker = Selector("docker", "label:app:web")
    unit = Selector("systemd", "id:web.service")
    world.service.attestors = [UnixWorkloadAttestor(), Fixed(docker), Fixed(unit)]
    world.add_entry(COMBINED_ID, [uid_selector(), docker, unit])
    world.add_entry(WORKLOAD_ID, [uid_selector(), Selector("docker", "label:app:db")])  # one selector short
    assert await asyncio.to_thread(fetch_ids, world) == [COMBINED_ID]


@pytest.mark.parametrize("bad", [Slow, Failing], ids=["slow", "failing"])
async def test_a_slow_or_failing_attestor_leaves_the_others_and_is_logged_once(world, caplog, bad):
    caplog.set_level(logging.INFO, logger="spire_py")
    world.service.attestor_timeout = 0.5
    world.service.attestors = [UnixWorkloadAttestor(), bad()]
    world.add_entry(WORKLOAD_ID, [uid_selector()])
    started = time.monotonic()
    pid, ids = await asyncio.to_thread(fetch_ids_from_another_process, world)
    assert ids == [WORKLOAD_ID]
    assert time.monotonic() - started < 10
    failures = collect_failures(caplog)
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    fields = failures[0].fields
    assert fields["pid"] == pid
    want = "timed out after 0.5s" if bad is Slow else "engine unreachable"
    assert f'workload attestor "{bad.NAME}" failed: {want}' in fields["error"]


async def test_an_entry_needing_the_missing_attestors_selectors_is_not_issued(world):
    world.service.attestor_timeout = 0.5
    world.service.attestors = [UnixWorkloadAttestor(), Slow()]
    world.add_entry(COMBINED_ID, [uid_selector(), Selector("slow", "never")])
    with pytest.raises(Exception, match="no identity issued|PermissionDenied|PERMISSION_DENIED"):
        await asyncio.to_thread(fetch_ids, world)
