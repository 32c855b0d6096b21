"""spire-server healthcheck when the server cannot be asked: SPIRE's fixed error line, the
cause on stderr only with -verbose (cmd/spire-server/cli/healthcheck)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spire_py.server.cli.main import app


def test_an_unreachable_server_is_unhealthy_in_spire_s_words(tmp_path: Path, capsys: Any) -> None:
    sock = str(tmp_path / "nothing.sock")
    assert app.main(["healthcheck", "-socketPath", sock]) == 1
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", "Error: server is unhealthy: unable to determine health\n")


def test_verbose_names_the_cause_before_the_error_line(tmp_path: Path, capsys: Any) -> None:
    sock = str(tmp_path / "nothing.sock")
    assert app.main(["healthcheck", "-socketPath", sock, "-verbose"]) == 1
    out = capsys.readouterr()
    assert out.out == "Checking server health...\n"
    first, second = out.err.splitlines()
    assert first.startswith("Failed to check health: ") and len(first) > len("Failed to check health: ")
    assert second == "Error: server is unhealthy: unable to determine health"
