"""``log_selectors``: "No identity issued" names the caller's selectors under the listed prefixes
only, as SPIRE's Workload API handler does (selector values may be sensitive)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

from spire_py.agent.plugins.workloadattestor.base import WorkloadAttestor
from spire_py.agent.plugins.workloadattestor.unix import UnixWorkloadAttestor
from spire_py.agent.workloadapi.handler import loggable_selectors
from spire_py.common.registration import Selector

from tests.unit.helpers.workload_world import uid_selector

K8S = [Selector("k8s", "ns:default"), Selector("k8s", "sa:web"), Selector("k8s", "pod-uid:1234"),
       Selector("unix", "user:alice"), Selector("unix", "uid:1000"), Selector("k8sx", "ns:other")]


def test_a_prefix_matches_the_rendered_selector_whole_or_up_to_a_colon():
    assert loggable_selectors(K8S, ["k8s:ns", "k8s:sa", "unix:user"]) == "k8s:ns:default,k8s:sa:web,unix:user:alice"
    assert loggable_selectors(K8S, ["k8s"]) == "k8s:ns:default,k8s:pod-uid:1234,k8s:sa:web"  # not k8sx
    assert loggable_selectors(K8S, ["unix:uid:1000"]) == "unix:uid:1000"
    assert loggable_selectors(K8S, ["k8s:n"]) == ""  # a prefix ends at a ':'
    assert loggable_selectors(K8S, []) == ""


class Labels(WorkloadAttestor):
    NAME = "docker"

    async def attest(self, pid: int, uid: int, gid: int) -> list[Selector]:
        return [Selector("docker", "label:team:payments"), Selector("docker", "env:DB_PASSWORD=hunter2")]


# The agent keeps its own process's calls out of the log: a logged caller is another process.
CLIENT = """
import sys
from spiffe import WorkloadApiClient
with WorkloadApiClient("unix://" + sys.argv[1], default_timeout=10) as c:
    try:
        c.fetch_x509_svids()
    except Exception as exc:
        print(type(exc).__name__)
"""


def fetch_from_another_process(socket_path: str) -> None:
    subprocess.run([sys.executable, "-c", CLIENT, socket_path], check=True, capture_output=True, timeout=60)


async def no_identity_fields(world, caplog, prefixes):
    caplog.set_level(logging.INFO, logger="spire_py")
    world.service.attestors = [UnixWorkloadAttestor(), Labels()]
    world.service.log_selectors = tuple(prefixes)
    world.add_entry(selectors=[uid_selector(65534)])  # matches nobody here
    await asyncio.to_thread(fetch_from_another_process, world.socket_path)
    records = [r for r in caplog.records if r.getMessage() == "No identity issued"]
    assert len(records) == 1 and records[0].levelno == logging.ERROR
    return records[0].fields


async def test_no_identity_issued_logs_the_selectors_under_the_listed_prefixes(world, caplog):
    fields = await no_identity_fields(world, caplog, ["docker:label", str(uid_selector())])
    assert fields["registered"] is False
    assert fields["selectors"] == f"docker:label:team:payments,{uid_selector()}"
    assert "hunter2" not in str(fields)


async def test_without_log_selectors_no_selector_is_logged(world, caplog):
    fields = await no_identity_fields(world, caplog, [])
    assert "selectors" not in fields
