"""WorkloadAttestor "unix": the selectors SPIRE's plugin produces, from /proc."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import subprocess
import sys

import pytest

from spire_py.agent.plugins.workloadattestor.base import WorkloadAttestationError
from spire_py.agent.plugins.workloadattestor.unix import UnixWorkloadAttestor
from spire_py.common.plugin import PluginConfigError, PluginContext, lookup

CTX = PluginContext(trust_domain="example.org", side="agent")


def values(selectors):
    assert all(s.type == "unix" for s in selectors)
    return [s.value for s in selectors]


def test_unix_is_registered_as_agent_workload_attestor():
    assert lookup("agent", "WorkloadAttestor", "unix") is UnixWorkloadAttestor


async def test_selectors_for_the_current_process_name_uid_gid_user_and_group():
    plugin = UnixWorkloadAttestor.configure({}, CTX)
    got = values(await plugin.attest(os.getpid(), os.getuid(), os.getgid()))
    assert got[0] == f"uid:{os.geteuid()}"
    assert f"gid:{os.getegid()}" in got
    assert f"user:{pwd.getpwuid(os.geteuid()).pw_name}" in got
    assert f"group:{grp.getgrgid(os.getegid()).gr_name}" in got
    for g in os.getgroups():
        assert f"supplementary_gid:{g}" in got
    assert not any(v.startswith(("path:", "sha256:")) for v in got)


async def test_discover_workload_path_adds_path_and_sha256_of_the_binary():
    plugin = UnixWorkloadAttestor.configure({"discover_workload_path": True}, CTX)
    got = values(await plugin.attest(os.getpid(), os.getuid(), os.getgid()))
    exe = os.path.realpath(sys.executable)
    with open(exe, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert f"path:{exe}" in got
    assert f"sha256:{digest}" in got


async def test_negative_size_limit_never_hashes():
    plugin = UnixWorkloadAttestor.configure({"discover_workload_path": True, "workload_size_limit": -1}, CTX)
    got = values(await plugin.attest(os.getpid(), os.getuid(), os.getgid()))
    assert any(v.startswith("path:") for v in got)
    assert not any(v.startswith("sha256:") for v in got)


async def test_binary_over_the_size_limit_fails_attestation():
    plugin = UnixWorkloadAttestor.configure({"discover_workload_path": True, "workload_size_limit": 10}, CTX)
    with pytest.raises(WorkloadAttestationError, match="exceeds size limit"):
        await plugin.attest(os.getpid(), os.getuid(), os.getgid())


async def test_vanished_process_is_a_clear_error():
    p = subprocess.Popen(["true"])
    p.wait()
    plugin = UnixWorkloadAttestor.configure({}, CTX)
    with pytest.raises(WorkloadAttestationError, match=f"process {p.pid} does not exist"):
        await plugin.attest(p.pid, 0, 0)


async def test_supplementary_groups_come_from_the_status_groups_line(tmp_path, monkeypatch):
    pid_dir = tmp_path / "4242"
    pid_dir.mkdir()
    (pid_dir / "status").write_text(
        "Name:\tworker\nUid:\t1001\t1002\t1002\t1002\nGid:\t2001\t2002\t2002\t2002\nGroups:\t3001 3002 \n"
    )
    monkeypatch.setenv("HOST_PROC", str(tmp_path))
    got = values(await UnixWorkloadAttestor().attest(4242, 0, 0))
    # The effective ids (second column) are used, as SPIRE's plugin does.
    assert "uid:1002" in got and "uid:1001" not in got
    assert "gid:2002" in got
    assert [v for v in got if v.startswith("supplementary_gid:")] == ["supplementary_gid:3001", "supplementary_gid:3002"]


@pytest.mark.parametrize(
    "data,key",
    [
        ({"discover_workload_paths": True}, "discover_workload_paths"),
        ({"discover_workload_path": "yes"}, "discover_workload_path"),
        ({"workload_size_limit": "1k"}, "workload_size_limit"),
        ({"workload_size_limit": True}, "workload_size_limit"),
    ],
)
def test_bad_plugin_data_names_the_key(data, key):
    with pytest.raises(PluginConfigError) as err:
        UnixWorkloadAttestor.configure(data, CTX)
    assert err.value.key == key


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another uid")
async def test_child_running_as_another_uid_gets_that_uid():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to 65534 and wait to be examined
        try:
            os.close(r)
            os.setgroups([65533])
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, b"x")
            import time

            time.sleep(10)
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"x"
        got = values(await UnixWorkloadAttestor().attest(pid, 65534, 65534))
        assert got[0] == "uid:65534"
        assert "gid:65534" in got
        assert "supplementary_gid:65533" in got
        assert f"uid:{os.getuid()}" not in got
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(r)


async def test_names_are_remembered_briefly_then_looked_up_again(tmp_path, monkeypatch):
    """Known names let attestation skip the thread hop; a renamed user shows after NAME_TTL."""
    import asyncio

    from spire_py.agent.plugins.workloadattestor import unix

    pid_dir = tmp_path / "4242"
    pid_dir.mkdir()
    (pid_dir / "status").write_text("Name:\tw\nUid:\t1\t7001\t7001\t7001\nGid:\t1\t7002\t7002\t7002\nGroups:\t\n")
    monkeypatch.setenv("HOST_PROC", str(tmp_path))
    names = {"7001": "alice"}
    monkeypatch.setattr(unix, "_user_name", lambda uid: names.get(uid))
    monkeypatch.setattr(unix, "_group_name", lambda gid: "staff" if gid == "7002" else None)
    hops = []
    real_to_thread = asyncio.to_thread

    async def counting_to_thread(fn, *a, **kw):
        hops.append(fn)
        return await real_to_thread(fn, *a, **kw)

    monkeypatch.setattr(unix.asyncio, "to_thread", counting_to_thread)
    clock = [1000.0]
    monkeypatch.setattr(unix.time, "monotonic", lambda: clock[0])

    a = UnixWorkloadAttestor()
    assert values(await a.attest(4242, 0, 0)) == ["uid:7001", "user:alice", "gid:7002", "group:staff"]
    assert len(hops) == 1  # first time: NSS lookups in a thread
    names["7001"] = "bob"
    assert "user:alice" in values(await a.attest(4242, 0, 0))
    assert len(hops) == 1  # remembered: no thread
    clock[0] += unix.NAME_TTL + 0.1
    assert "user:bob" in values(await a.attest(4242, 0, 0))  # stale: looked up again
    assert len(hops) == 2
    # The uid itself always comes fresh from /proc, never from the name cache.
    (pid_dir / "status").write_text("Name:\tw\nUid:\t1\t7003\t7003\t7003\nGid:\t1\t7002\t7002\t7002\nGroups:\t\n")
    got = values(await a.attest(4242, 0, 0))
    assert got[0] == "uid:7003" and not any(v.startswith("user:") for v in got)
    # With discover_workload_path every call hashes in a thread.
    hops.clear()
    b = UnixWorkloadAttestor(discover_workload_path=True, workload_size_limit=-1)
    os.symlink(sys.executable, pid_dir / "exe")
    await b.attest(4242, 0, 0)
    await b.attest(4242, 0, 0)
    assert len(hops) == 2
