"""WorkloadAttestor "systemd" over a real D-Bus daemon, with a stand-in for systemd's manager.

A private ``dbus-daemon`` is the "system bus" (``DBUS_SYSTEM_BUS_ADDRESS``); a thread owns
``org.freedesktop.systemd1`` and answers GetUnitByPID and the Unit properties as systemd does.
Real systemd answers in the Molecule fleet (molecule/default/tests/test_systemd_workload.py).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading

import pytest
from jeepney import HeaderFields, MessageType, new_error, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

from spire_py.agent.plugins.workloadattestor.base import WorkloadAttestationError
from spire_py.agent.plugins.workloadattestor.systemd import SystemdBus, SystemdWorkloadAttestor
from spire_py.common.plugin import PluginConfigError, PluginContext
from spire_py.common.registration import Selector

CTX = PluginContext("example.org", side="agent")
UNITS = {
    4242: ("/org/freedesktop/systemd1/unit/web_2eservice", "web.service", "/etc/systemd/system/web.service"),
    4343: ("/org/freedesktop/systemd1/unit/run_2du1_2eservice", "run-u1.service", ""),  # transient
}
pytestmark = pytest.mark.skipif(shutil.which("dbus-daemon") is None, reason="dbus-daemon is not installed")


class FakeSystemd:
    def __init__(self) -> None:
        self.conn = open_dbus_connection(bus="SYSTEM")
        self.conn.send_and_get_reply(message_bus.RequestName("org.freedesktop.systemd1"), timeout=5)
        self.calls: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        paths = {path: (unit_id, fragment) for path, unit_id, fragment in UNITS.values()}
        while True:
            try:
                msg = self.conn.receive()
            except (OSError, ValueError):
                return
            if msg.header.message_type != MessageType.method_call:
                continue
            member = msg.header.fields.get(HeaderFields.member)
            self.calls.append(member)
            if member == "GetUnitByPID":
                (pid,) = msg.body
                if pid in UNITS:
                    reply = new_method_return(msg, "o", (UNITS[pid][0],))
                else:
                    reply = new_error(msg, "org.freedesktop.systemd1.NoUnitForPID", "s",
                                      (f"PID {pid} does not belong to any loaded unit.",))
            elif member == "Get":
                iface, prop = msg.body
                path = msg.header.fields.get(HeaderFields.path)
                unit_id, fragment = paths[path]
                value = {"Id": ("s", unit_id), "FragmentPath": ("s", fragment), "NRestarts": ("u", 0)}[prop]
                reply = new_method_return(msg, "v", (value,))
            else:
                reply = new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (member or "",))
            self.conn.send(reply)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def system_bus(monkeypatch):
    d = tempfile.mkdtemp(prefix="dbus-", dir="/tmp")
    address = f"unix:path={d}/bus"
    daemon = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address={address}",
                               "--print-address=1"], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None and daemon.stdout.readline().startswith("unix:")
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        fake = FakeSystemd()
        yield fake
        fake.close()
    finally:
        daemon.terminate()
        daemon.wait(10)
        shutil.rmtree(d, ignore_errors=True)


def test_takes_no_configuration():
    SystemdWorkloadAttestor.check_config({}, CTX)
    with pytest.raises(PluginConfigError, match="unknown configuration key"):
        SystemdWorkloadAttestor.check_config({"bus": "session"}, CTX)


async def test_unit_id_and_fragment_path_of_the_callers_unit(system_bus):
    plugin = SystemdWorkloadAttestor.configure({}, CTX)
    try:
        assert await plugin.attest(4242, 0, 0) == [
            Selector("systemd", "id:web.service"),
            Selector("systemd", "fragment_path:/etc/systemd/system/web.service"),
        ]
        # A transient unit has no fragment: the selector is there, empty, as SPIRE's.
        assert await plugin.attest(4343, 0, 0) == [Selector("systemd", "id:run-u1.service"),
                                                   Selector("systemd", "fragment_path:")]
        assert plugin.bus._conn is not None  # one connection, kept for the next caller
    finally:
        await plugin.close()
    assert plugin.bus._conn is None
    assert system_bus.calls == ["GetUnitByPID", "Get", "Get"] * 2


async def test_a_pid_in_no_unit_is_an_error(system_bus):
    plugin = SystemdWorkloadAttestor.configure({}, CTX)
    try:
        with pytest.raises(WorkloadAttestationError, match="failed to get unit by pid 77.*NoUnitForPID"):
            await plugin.attest(77, 0, 0)
        # The connection survives an error answer.
        assert Selector("systemd", "id:web.service") in await plugin.attest(4242, 0, 0)
    finally:
        await plugin.close()


async def test_no_bus_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/none")
    plugin = SystemdWorkloadAttestor(SystemdBus())
    with pytest.raises(WorkloadAttestationError, match="failed to open dbus connection"):
        await plugin.attest(4242, 0, 0)


async def test_invalid_pid_is_refused_before_asking():
    with pytest.raises(WorkloadAttestationError, match="invalid value for PID"):
        await SystemdWorkloadAttestor(SystemdBus(lambda: pytest.fail("no connection expected"))).attest(0, 0, 0)


def test_is_registered():
    from spire_py.common.plugin import lookup

    assert lookup("agent", "WorkloadAttestor", "systemd") is SystemdWorkloadAttestor
