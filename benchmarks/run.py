"""Run the benchmarks, print the table, write benchmarks/results.json.

    python -m benchmarks.run                 # full sizes (make bench)
    python -m benchmarks.run --quick         # small sizes, for the test suite's smoke
    python -m benchmarks.run --only sync,svid --profile /tmp/prof
    python -m benchmarks.run --only restart  # server restart on 1,000,000 entries

Every figure is printed with a raw baseline measured in the same run and their
ratio. ``--profile DIR`` samples the server (or agent) with py-spy during each
timed phase and prints where the time went.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from . import entry_create, entry_sync, fleet_scale, restart, svid_issuance, workload_api
from .harness import ROOT, Profiler, Row, machine, top_frames

FULL = {
    "issuance_svids": 3000,
    "workload_calls": 1000,
    "workload_other_entries": 1000,
    "sync_entries": 100_000,
    "sync_authorized": 20_000,
    "sync_agents": 10_000,
    "sync_repeats": 11,
    "create_entries": 20_000,
    # Agents per step (the ramp stops early once p99 passes 5 s), the agents' sync interval
    # (spire-agent's default), measured rounds per step and probe processes.
    "fleet_ramp": [100, 250, 500, 1000, 1500, 2000, 3000, 5000],
    "fleet_interval_ms": 5000,
    "fleet_rounds": 3,
    "fleet_workers": 2,
    # With SPIRE_PY_TEST_POSTGRES: the same with two servers (HA) on that scratch database.
    "fleet_ha_ramp": [1000, 1500, 2000, 3000, 5000, 10000],
    # A server restarting on a datastore filled with this many entries (bulk SQL), and agents' worth of parents.
    "restart_entries": 1_000_000,
    "restart_agents": 10_000,
}
QUICK = {
    "issuance_svids": 100,
    "workload_calls": 50,
    "workload_other_entries": 20,
    "sync_entries": 2_000,
    "sync_authorized": 600,
    "sync_agents": 200,
    "sync_repeats": 3,
    "create_entries": 1_000,
    "fleet_ramp": [5],
    "fleet_interval_ms": 1000,
    "fleet_rounds": 1,
    "fleet_workers": 1,
    "restart_entries": 2_000,
    "restart_agents": 50,
}
BENCHMARKS: dict[str, Callable[..., Any]] = {
    "svid": svid_issuance.run,
    "workload": workload_api.run,
    "sync": entry_sync.run,
    "create": entry_create.run,
    "fleet": fleet_scale.run,
    "restart": restart.run,
}
DEFAULT_OUT = ROOT / "benchmarks" / "results.json"


def _fmt(v: Optional[float]) -> str:
    if v is None or v != v:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(rows: list[Row]) -> str:
    head = ("Benchmark", "Case", "Figure", "Baseline", "Ratio", "Target", "Met")
    lines = [head]
    for r in rows:
        ratio = r.ratio
        lines.append((
            r.benchmark, r.case, f"{_fmt(r.value)} {r.unit}",
            f"{_fmt(r.baseline)} {r.unit}" if r.baseline is not None else "-",
            f"{ratio:.2f}x" if ratio is not None else "-",
            r.target or "-", "-" if r.met is None else ("yes" if r.met else "NO"),
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    baselines = sorted({(r.benchmark, r.baseline_what) for r in rows if r.baseline_what})
    out.append("")
    out.append("Baselines (measured in this run): " + "; ".join(f"{b}: {w}" for b, w in baselines))
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", default=os.environ.get("SPIRE_PY_BENCH_QUICK") == "1",
                    help="small sizes (also SPIRE_PY_BENCH_QUICK=1)")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="where to write the JSON results")
    ap.add_argument("--profile", metavar="DIR", default="", help="sample server/agent with py-spy into DIR")
    ap.add_argument("--src", metavar="DIR", default="",
                    help="run spire-server/spire-agent from another checkout's src/ (before/after comparisons)")
    ap.add_argument("--telemetry", choices=("none", "prometheus"), default="none",
                    help="run the daemons with a Prometheus telemetry sink (the cost of metrics)")
    ap.add_argument("--attestors", default="unix",
                    help="the agent's workload attestors, e.g. unix,docker,systemd (Workload API cost of each)")
    ap.add_argument("--fleet-ramp", default=None, metavar="N,N,...",
                    help="agent counts of the fleet benchmark's ramp for one server (default: the full ramp)")
    ap.add_argument("--fleet-ha-ramp", default=None, metavar="N,N,...",
                    help="the same for two servers on PostgreSQL (empty: skip them)")
    args = ap.parse_args(argv)
    unknown_attestors = set(args.attestors.split(",")) - {"unix", "docker", "systemd"}
    if unknown_attestors or "unix" not in args.attestors.split(","):
        print("--attestors: a comma-separated list of unix (required), docker, systemd", file=sys.stderr)
        return 2
    os.environ["SPIRE_PY_BENCH_ATTESTORS"] = args.attestors
    if args.telemetry != "none":
        os.environ["SPIRE_PY_BENCH_TELEMETRY"] = args.telemetry
    if args.src:
        # A checkout's root or its src/: without spire_py there, the daemons would silently run
        # the installed code and the "before" would be the "after".
        src = Path(args.src).resolve()
        if not (src / "spire_py").is_dir() and (src / "src" / "spire_py").is_dir():
            src = src / "src"
        if not (src / "spire_py").is_dir():
            print(f"--src {args.src}: no spire_py package there (give a checkout or its src/)", file=sys.stderr)
            return 2
        os.environ["SPIRE_PY_BENCH_SRC"] = str(src)

    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("fleet_ramp", "fleet_ha_ramp"):
        given = getattr(args, key)
        if given is not None:
            try:
                sizes[key] = [int(n) for n in given.split(",") if n.strip()]
            except ValueError:
                print(f"--{key.replace('_', '-')}: a comma-separated list of agent counts, not {given!r}", file=sys.stderr)
                return 2
    profile = Profiler(Path(args.profile)) if args.profile else None
    desc = machine()
    load_start = os.getloadavg()[0]
    print(f"== spire_py benchmarks ({'quick' if args.quick else 'full'}) on {desc['cores']} x {desc['cpu']}, "
          f"{desc['memory_gb']} GB, Python {desc['python']}, load average {load_start:.1f}", flush=True)
    started = time.monotonic()
    rows: list[Row] = []
    timings: dict[str, float] = {}
    failed: dict[str, str] = {}
    for name in names:
        t0 = time.monotonic()
        print(f"-- {name} ...", flush=True)
        try:
            got = asyncio.run(BENCHMARKS[name](sizes, profile))
        except Exception as exc:  # report the others anyway; exit non-zero at the end
            traceback.print_exc()
            failed[name] = f"{type(exc).__name__}: {exc}"
            got = []
        timings[name] = round(time.monotonic() - t0, 1)
        for r in got:
            ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
            print(f"   {r.case}: {_fmt(r.value)} {r.unit} (baseline {_fmt(r.baseline)}, {ratio})", flush=True)
        rows.extend(got)
    wall = time.monotonic() - started
    print()
    print(table(rows))
    print(f"\nwall time {wall:.0f} s ({', '.join(f'{k} {v:g} s' for k, v in timings.items())}); "
          f"load average now {os.getloadavg()[0]:.1f}")
    if profile is not None:
        for path in profile.files:
            ours, leaves = top_frames(path, 15)
            print(f"\n-- profile {path.stem}: share of the samples where the process held the GIL")
            print("   spire_py functions, inclusive:")
            for fn, pct in ours:
                print(f"   {pct:5.1f}%  {fn}")
            print("   any function, self:")
            for fn, pct in leaves:
                print(f"   {pct:5.1f}%  {fn}")
    result = {
        "machine": {**desc, "load_average": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}},
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "daemons_from": os.environ.get("SPIRE_PY_BENCH_SRC") or str(ROOT / "src"),
        "sizes": sizes,
        "wall_seconds": round(wall, 1),
        "benchmark_seconds": timings,
        "failed": failed,
        "results": [r.as_dict() for r in rows],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults written to {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
