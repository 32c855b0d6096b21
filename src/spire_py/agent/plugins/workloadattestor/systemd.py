"""WorkloadAttestor "systemd": the caller's unit, asked of systemd over D-Bus, as SPIRE's.

``org.freedesktop.systemd1.Manager.GetUnitByPID`` on the system bus gives the unit's object
path; its ``org.freedesktop.systemd1.Unit`` properties ``Id`` and ``FragmentPath`` give the
selectors (type "systemd"): ``id:<unit>`` and ``fragment_path:<path>`` (empty for a transient
unit). The plugin takes no configuration. One bus connection is kept and reopened when it
breaks; jeepney's blocking calls run in a thread. ``DBUS_SYSTEM_BUS_ADDRESS`` selects another bus.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Optional

from jeepney import DBusAddress, DBusErrorResponse, Properties, new_method_call
from jeepney.io.blocking import DBusConnection, open_dbus_connection

from ....common.plugin import register
from ....common.registration import Selector
from .base import WorkloadAttestationError, WorkloadAttestor

SYSTEMD = "org.freedesktop.systemd1"
MANAGER = DBusAddress("/org/freedesktop/systemd1", bus_name=SYSTEMD, interface=f"{SYSTEMD}.Manager")
UNIT_INTERFACE = f"{SYSTEMD}.Unit"
CALL_TIMEOUT = 5.0


class SystemdBus:
    """The system bus connection, shared by the attestations (one call at a time on it)."""

    def __init__(self, connect: Callable[[], DBusConnection] = lambda: open_dbus_connection(bus="SYSTEM")) -> None:
        self._connect = connect
        self._conn: Optional[DBusConnection] = None
        self._lock = threading.Lock()

    def _call(self, msg: Any) -> tuple[Any, ...]:
        if self._conn is None:
            try:
                self._conn = self._connect()
            except (OSError, ValueError, KeyError) as exc:
                # KeyError/ValueError: jeepney found no usable bus address.
                raise WorkloadAttestationError(f"failed to open dbus connection: {exc}") from None
        try:
            reply = self._conn.send_and_get_reply(msg, timeout=CALL_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            self._drop()
            raise WorkloadAttestationError(f"dbus call failed: {exc or type(exc).__name__}") from None
        if reply.header.message_type.name == "error":
            raise DBusErrorResponse(reply)
        return tuple(reply.body)

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def unit_of(self, pid: int) -> tuple[str, str]:
        """(Id, FragmentPath) of the unit ``pid`` belongs to."""
        with self._lock:
            try:
                (path,) = self._call(new_method_call(MANAGER, "GetUnitByPID", "u", (pid,)))
            except DBusErrorResponse as exc:
                raise WorkloadAttestationError(f"failed to get unit by pid {pid}: {exc.name}: {_text(exc)}") from None
            unit = Properties(DBusAddress(path, bus_name=SYSTEMD, interface=UNIT_INTERFACE))
            return self._string(unit, "Id"), self._string(unit, "FragmentPath")

    def _string(self, unit: Properties, prop: str) -> str:
        try:
            ((signature, value),) = self._call(unit.get(prop))
        except DBusErrorResponse as exc:
            raise WorkloadAttestationError(f"failed to get unit property {prop}: {exc.name}: {_text(exc)}") from None
        if signature != "s" or not isinstance(value, str):
            raise WorkloadAttestationError(f"returned value for {prop} was not a string: {signature} {value!r}")
        return value

    def close(self) -> None:
        with self._lock:
            self._drop()


def _text(exc: DBusErrorResponse) -> str:
    return str(exc.data[0]) if exc.data else ""


@register("agent")
class SystemdWorkloadAttestor(WorkloadAttestor):
    NAME = "systemd"

    def __init__(self, bus: Optional[SystemdBus] = None) -> None:
        self.bus = bus or SystemdBus()

    async def attest(self, pid: int, uid: int, gid: int) -> list[Selector]:
        if not 0 < pid < 2**32:
            raise WorkloadAttestationError(f"invalid value for PID: {pid}")
        unit_id, fragment_path = await asyncio.to_thread(self.bus.unit_of, pid)
        return [Selector("systemd", f"id:{unit_id}"), Selector("systemd", f"fragment_path:{fragment_path}")]

    async def close(self) -> None:
        await asyncio.to_thread(self.bus.close)
