"""spire-server logger and spire-agent logger against real processes: SPIRE's output, and the
level acting on what the daemon logs."""

from __future__ import annotations

import json
from typing import Callable

from tests.integration.helpers.harness import AgentHandle, ServerHandle

PRETTY = "Logger Level : {}\nLaunch Level : {}\n\n"


def _count(handle: ServerHandle | AgentHandle, text: str) -> int:
    return handle.proc.logs().count(text)


def test_server_logger_get_set_reset(spire_server: ServerHandle) -> None:
    s = spire_server
    assert s.cli("logger", "get").stdout == PRETTY.format("debug", "debug")
    assert json.loads(s.cli("logger", "get", "-output", "json").stdout) == {
        "current_level": "DEBUG", "launch_level": "DEBUG"}
    before = _count(s, "GetLogger Called")
    assert before >= 2

    assert s.cli("logger", "set", "-level", "ERROR").stdout == PRETTY.format("error", "debug")
    s.cli("logger", "get")
    assert _count(s, "GetLogger Called") == before  # an info line, below the new level

    assert s.cli("logger", "reset").stdout == PRETTY.format("debug", "debug")
    s.cli("logger", "get")
    assert _count(s, "GetLogger Called") == before + 1


def test_server_logger_set_errors_are_spires(spire_server: ServerHandle) -> None:
    s = spire_server
    missing = s.cli("logger", "set", check=False)
    assert (missing.returncode, missing.stderr) == (1, "Error: a value (-level) must be set\n")
    bad = s.cli("logger", "set", "-level", "loud", check=False)
    assert (bad.returncode, bad.stderr) == (1, 'Error: the value "loud" is not a valid setting\n')


def test_server_logger_on_a_dead_socket(spire_server: ServerHandle) -> None:
    from tests.integration.helpers.harness import SERVER, run

    gone = str(spire_server.dir / "nothing.sock")
    r = run([SERVER, "logger", "get", "-socketPath", gone], check=False)
    assert r.returncode == 1
    assert r.stderr == ("Error: error fetching logger: rpc error: code = Unavailable desc = connection error: "
                        f'desc = "transport: Error while dialing: dial unix {gone}: connect: no such file or directory"\n')
