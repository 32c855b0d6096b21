"""entry show -federatesWith honours -matchFederatesWithOn (the API used to drop the match mode and
always match exactly, so the CLI's default, superset, found nothing for a multi-domain entry)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.helpers.harness import TD, ServerHandle


def _ids(server: ServerHandle, *args: str) -> set[str]:
    out = json.loads(server.cli("entry", "show", "-output", "json", *args).stdout)
    return {e["spiffe_id"]["path"] for e in out.get("entries", [])}


def test_federates_with_filter_honours_the_match_mode(spire_server: ServerHandle, tmp_path: Path) -> None:
    pem = tmp_path / "other.pem"
    pem.write_text(spire_server.cli("bundle", "show").stdout)
    for td in ("a.test", "b.test"):
        spire_server.cli("bundle", "set", "-id", f"spiffe://{td}", "-path", str(pem))
    for path, feds in (("/only-a", ["a.test"]), ("/a-and-b", ["a.test", "b.test"]), ("/none", [])):
        args = ["entry", "create", "-parentID", f"spiffe://{TD}/node", "-spiffeID", f"spiffe://{TD}{path}",
                "-selector", "unix:uid:1"]
        for td in feds:
            args += ["-federatesWith", f"spiffe://{td}"]
        spire_server.cli(*args)

    a = ("-federatesWith", "spiffe://a.test")
    assert _ids(spire_server, *a) == {"/only-a", "/a-and-b"}  # default: superset
    assert _ids(spire_server, *a, "-matchFederatesWithOn", "exact") == {"/only-a"}
    assert _ids(spire_server, *a, "-matchFederatesWithOn", "any") == {"/only-a", "/a-and-b"}
    both = (*a, "-federatesWith", "spiffe://b.test")
    assert _ids(spire_server, *both, "-matchFederatesWithOn", "exact") == {"/a-and-b"}
    assert _ids(spire_server, *both, "-matchFederatesWithOn", "subset") == {"/only-a", "/a-and-b"}
    assert _ids(spire_server, *both, "-matchFederatesWithOn", "superset") == {"/a-and-b"}


def test_a_malformed_federates_with_filter_is_invalid_argument(spire_server: ServerHandle) -> None:
    proc = spire_server.cli("entry", "show", "-federatesWith", "spiffe://Bad Domain", check=False)
    assert proc.returncode == 1
    assert "InvalidArgument" in proc.stderr and "malformed federates with filter" in proc.stderr
