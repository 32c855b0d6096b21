"""`make bench` still works: every benchmark runs at small sizes and produces numbers.

Not a timed test: the figures themselves are not checked against the targets (that is
what `make bench` and benchmarks/results.json are for), only that each benchmark ran,
measured its raw baseline in the same run and wrote a ratio.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_benchmarks_run_at_small_sizes_and_report_ratios(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    env = dict(os.environ, SPIRE_PY_BENCH_QUICK="1", PYTHONPATH=str(ROOT))
    env.pop("SPIRE_PY_TEST_POSTGRES", None)  # the smoke stays on sqlite3
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "quick" and result["failed"] == {}
    assert result["machine"]["cores"] and result["machine"]["cpu"]
    rows = result["results"]
    assert {r["benchmark"] for r in rows} == {"X.509-SVID issuance", "Workload API", "Entry sync", "Entry creation",
        "Fleet scale", "Server restart"}
    for r in rows:
        # (the largest N with p99 < 1 s is 0 when no step made it: a figure, not a test failure)
        assert math.isfinite(r["value"]) and (r["value"] > 0 or r["case"].startswith("largest N")), r
        if r["baseline"] is not None:
            assert r["baseline"] > 0 and r["ratio"] == pytest.approx(r["value"] / r["baseline"]), r
    cases = {r["case"] for r in rows}
    assert any("batch=1" in c for c in cases) and any("batch=50" in c for c in cases)
    assert any("FetchX509SVID p99, 50 clients" in c for c in cases)
    assert any("FetchJWTSVID p99, 1 client" in c for c in cases)
    assert any(c.startswith("full sync") for c in cases) and any(c.startswith("no-change sync") for c in cases)
    assert any(c.startswith("server RSS") for c in cases)
    assert any("(sqlite3)" in c for c in cases)
    # Fleet scale at N=5, one sync round: every agent attested and synced in the window.
    fleet = {r["case"]: r for r in rows if r["benchmark"] == "Fleet scale"}
    synced = fleet["N=5: syncs/s achieved (baseline: expected)"]
    assert synced["extra"]["attested"] == 5 and synced["extra"]["syncs"] >= 1 and synced["extra"]["errors"] == 0
    assert any(c.startswith("largest N with p99 < 1 s") for c in fleet)
    assert any(c.startswith("attestation, 5 agents") for c in fleet)
    # Server restart on a bulk-filled datastore: the cache loaded every entry it was given.
    restart = {r["case"]: r for r in rows if r["benchmark"] == "Server restart"}
    load = restart["entry cache load, 2,000 entries (sqlite3)"]
    assert load["extra"]["entries"] == 2000 and load["extra"]["peak_rss_mb"] > 0
    assert any(c.startswith("start to ready") for c in restart) and any(c.startswith("server RSS") for c in restart)
    # The table is printed with a ratio column.
    assert "Ratio" in proc.stdout and "Baselines (measured in this run)" in proc.stdout
