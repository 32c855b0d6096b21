"""spire-server logger against a real server: SPIRE's output, the level acting on what the
server logs, SPIRE's errors. (The agent's logger is in test_agent_admin.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.helpers.harness import SERVER, ServerHandle, run, server_factory

PRETTY = "Logger Level : {}\nLaunch Level : {}\n\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    with server_factory(tmp_path_factory.mktemp("logger")) as make_server:
        yield make_server()


def test_server_logger_get_set_reset(server: ServerHandle) -> None:
    s = server
    assert s.cli("logger", "get").stdout == PRETTY.format("debug", "debug")
    assert json.loads(s.cli("logger", "get", "-output", "json").stdout) == {
        "current_level": "DEBUG", "launch_level": "DEBUG"}
    before = s.proc.logs().count("GetLogger Called")
    assert before >= 2

    assert s.cli("logger", "set", "-level", "ERROR").stdout == PRETTY.format("error", "debug")
    s.cli("logger", "get")
    assert s.proc.logs().count("GetLogger Called") == before  # an info line, below the new level

    assert s.cli("logger", "reset").stdout == PRETTY.format("debug", "debug")
    s.cli("logger", "get")
    assert s.proc.logs().count("GetLogger Called") == before + 1


def test_server_logger_set_errors_are_spires(server: ServerHandle) -> None:
    missing = server.cli("logger", "set", check=False)
    assert (missing.returncode, missing.stderr) == (1, "Error: a value (-level) must be set\n")
    bad = server.cli("logger", "set", "-level", "loud", check=False)
    assert (bad.returncode, bad.stderr) == (1, 'Error: the value "loud" is not a valid setting\n')


def test_server_logger_on_a_dead_socket(tmp_path: Path) -> None:
    gone = str(tmp_path / "nothing.sock")
    r = run([SERVER, "logger", "get", "-socketPath", gone], check=False)
    assert r.returncode == 1
    assert r.stderr == ("Error: error fetching logger: rpc error: code = Unavailable desc = connection error: "
                        f'desc = "transport: Error while dialing: dial unix {gone}: connect: no such file or directory"\n')
