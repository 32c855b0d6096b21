"""What every benchmark needs: real server/agent processes, an admin client on the
server's socket, an attested agent identity, timing statistics and the machine's description.

The server and agent run as real ``spire-server run`` / ``spire-agent run``
processes (as in tests/integration), so figures include gRPC, TLS and the
datastore exactly as deployed; the benchmark process is the client.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel

from spire_py.agent.attestor import attest
from spire_py.agent.client import ServerClient
from spire_py.agent.plugins.nodeattestor.join_token import JoinTokenAttestor
from spire_py.common import eventloop
from spire_py.common.keys import generate_key
from spire_py.common.spiffeid import TrustDomain
from spire_py.common.tls import spiffe_id_of
from spire_py.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from spire_py.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from spire_py.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from spire_py.proto.spire.api.types import entry_pb2 as types_entry_pb2
from spire_py.proto.spire.api.types import selector_pb2, spiffeid_pb2

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
TD = "example.org"
TRUST_DOMAIN = TrustDomain(TD)


def daemon(side: str) -> list[str]:
    """The command that starts ``spire-server`` / ``spire-agent``. With SPIRE_PY_BENCH_SRC set to
    another checkout's ``src`` (``run.py --src``), the processes run that code instead, so a
    before/after comparison uses the same benchmark client."""
    src = os.environ.get("SPIRE_PY_BENCH_SRC")
    if not src:
        return [str(BIN / f"spire-{side}")]
    code = (f"import sys; sys.path.insert(0, {src!r}); "
            f"from spire_py.{side}.cli.main import main; sys.exit(main())")
    return [sys.executable, "-c", code]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def short_dir(name: str) -> Path:
    """Unix socket paths are limited to ~107 bytes: work under /tmp."""
    d = Path(tempfile.mkdtemp(prefix=f"spire-bench-{name}-", dir="/tmp"))
    d.chmod(0o755)
    return d


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


# --- statistics -----------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def best_rate(count: int, run: Callable[[], float], repeats: int) -> float:
    """Highest count/seconds over ``repeats`` runs of ``run`` (which returns elapsed seconds)."""
    return max(count / run() for _ in range(repeats))


# --- processes ------------------------------------------------------------------------
@dataclass
class Proc:
    args: list[str]
    log_path: Path
    env: Optional[dict[str, str]] = None
    popen: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> "Proc":
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=self.env)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()


def _ok(args: list[str]) -> bool:
    return subprocess.run(args, capture_output=True, timeout=30).returncode == 0


SERVER_CONF = """
server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{sock}"
    trust_domain = "{td}"
    data_dir = "{dir}/data"
    log_level = "{log_level}"
    default_x509_svid_ttl = "1h"
    # The figures are the server's cost per SVID; SPIRE's per-IP signing limit (500/s, on by
    # default) would measure the limit instead, every client here being 127.0.0.1.
    ratelimit {{
        signing = false
        attestation = {attestation_limit}
    }}
}}
plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "{db_type}"
            connection_string = "{db_conn}"
        }}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
}}
{telemetry}"""

# `python -m benchmarks.run --telemetry prometheus`: both daemons serve /metrics on a free port,
# so the cost of metrics shows against the same run's figures without them.
TELEMETRY_ENV = "SPIRE_PY_BENCH_TELEMETRY"


def telemetry_block() -> str:
    if os.environ.get(TELEMETRY_ENV) != "prometheus":
        return ""
    return f'telemetry {{\n    Prometheus {{\n        host = "127.0.0.1"\n        port = {free_port()}\n    }}\n}}\n'


class ServerProcess:
    """``spire-server run`` on a free loopback port; sqlite3 in its own directory unless a
    database is given as (database_type, connection_string)."""

    def __init__(self, name: str = "server", database: Optional[tuple[str, str]] = None,
                 log_level: str = "INFO", attestation_limit: bool = True) -> None:
        self.dir = short_dir(name)
        self.sock = str(self.dir / "api.sock")
        self.port = free_port()
        db_type, db_conn = database or ("sqlite3", f"{self.dir}/data/datastore.sqlite3")
        conf = self.dir / "server.conf"
        conf.write_text(SERVER_CONF.format(port=self.port, sock=self.sock, td=TD, dir=self.dir,
                                           log_level=log_level, db_type=db_type, telemetry=telemetry_block(),
                                           attestation_limit=str(attestation_limit).lower(),
                                           db_conn=db_conn.replace("\\", "\\\\").replace('"', '\\"')))
        self.proc = Proc([*daemon("server"), "run", "-config", str(conf)], self.dir / "server.log")

    def start(self) -> "ServerProcess":
        self.proc.start()
        try:
            wait_for(lambda: not self.proc.alive() or _ok(
                [str(BIN / "spire-server"), "healthcheck", "-socketPath", self.sock]), 90, "spire-server health")
        except RuntimeError:
            self.stop()
            raise RuntimeError("spire-server did not become healthy:\n" + self.proc.tail())
        if not self.proc.alive():
            raise RuntimeError("spire-server exited:\n" + self.proc.tail())
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def admin(self) -> Channel:
        """A channel on the admin socket: callers there are local administrators."""
        return Channel(path=self.sock)

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


AGENT_CONF = """
agent {{
    data_dir = "{dir}/data"
    log_level = "{log_level}"
    server_address = "127.0.0.1"
    server_port = "{port}"
    socket_path = "{sock}"
    trust_bundle_path = "{bundle}"
    trust_domain = "{td}"
    experimental {{
        sync_interval = "1s"
    }}
}}
plugins {{
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
{more_attestors}}}
{telemetry}"""


# `python -m benchmarks.run --attestors unix,docker,systemd`: the agent runs those workload
# attestors together (as SPIRE does, concurrently); docker talks to $DOCKER_HOST when set.
def attestors() -> list[str]:
    return [a for a in os.environ.get("SPIRE_PY_BENCH_ATTESTORS", "unix").split(",") if a]


def more_attestors_block() -> str:
    blocks = []
    for name in attestors():
        if name == "unix":
            continue
        data = ""
        if name == "docker" and os.environ.get("DOCKER_HOST"):
            data = f'docker_socket_path = "{os.environ["DOCKER_HOST"]}"'
        blocks.append(f'    WorkloadAttestor "{name}" {{\n        plugin_data {{ {data} }}\n    }}\n')
    return "".join(blocks)


class AgentProcess:
    """``spire-agent run`` attested to ``server`` with a fresh join token."""

    def __init__(self, server: ServerProcess, token: str, roots: list[x509.Certificate],
                 log_level: str = "INFO") -> None:
        self.dir = short_dir("agent")
        self.sock = str(self.dir / "public" / "api.sock")
        bundle = self.dir / "bundle.pem"
        bundle.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in roots))
        conf = self.dir / "agent.conf"
        conf.write_text(AGENT_CONF.format(dir=self.dir, port=server.port, sock=self.sock, bundle=bundle, td=TD,
                                          log_level=log_level, telemetry=telemetry_block(),
                                          more_attestors=more_attestors_block()))
        self.proc = Proc([*daemon("agent"), "run", "-config", str(conf), "-joinToken", token],
                         self.dir / "agent.log")

    def start(self) -> "AgentProcess":
        self.proc.start()
        try:
            wait_for(lambda: not self.proc.alive() or _ok(
                [str(BIN / "spire-agent"), "healthcheck", "-socketPath", self.sock]), 90, "spire-agent health")
        except RuntimeError:
            self.stop()
            raise RuntimeError("spire-agent did not become healthy:\n" + self.proc.tail())
        if not self.proc.alive():
            raise RuntimeError("spire-agent exited:\n" + self.proc.tail())
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- admin calls ----------------------------------------------------------------------------
def spiffe_id_pb(sid: str) -> spiffeid_pb2.SPIFFEID:
    rest = sid[len("spiffe://"):]
    td, _, path = rest.partition("/")
    return spiffeid_pb2.SPIFFEID(trust_domain=td, path="/" + path if path else "")


def entry_pb(spiffe_id: str, parent_id: str, selectors: Iterable[tuple[str, str]],
             **kw: Any) -> types_entry_pb2.Entry:
    return types_entry_pb2.Entry(
        spiffe_id=spiffe_id_pb(spiffe_id), parent_id=spiffe_id_pb(parent_id),
        selectors=[selector_pb2.Selector(type=t, value=v) for t, v in selectors], **kw)


async def join_token(admin: Channel) -> str:
    resp = await agent_grpc.AgentStub(admin).CreateJoinToken(agent_pb2.CreateJoinTokenRequest(ttl=3600))
    return str(resp.value)


async def bundle_roots(admin: Channel) -> list[x509.Certificate]:
    b = await bundle_grpc.BundleStub(admin).GetBundle(bundle_pb2.GetBundleRequest())
    return [x509.load_der_x509_certificate(a.asn1) for a in b.x509_authorities]


async def create_entries(admin: Channel, entries: Sequence[types_entry_pb2.Entry], batch: int) -> list[str]:
    """BatchCreateEntry in batches of ``batch``; returns the new entry ids (raises on any failure)."""
    stub = entry_grpc.EntryStub(admin)
    ids: list[str] = []
    mask = types_entry_pb2.EntryMask()  # only the id comes back
    for i in range(0, len(entries), batch):
        resp = await stub.BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(
            entries=list(entries[i:i + batch]), output_mask=mask), timeout=600)
        for r in resp.results:
            if r.status.code != 0:
                raise RuntimeError(f"BatchCreateEntry failed: {r.status.code} {r.status.message}")
            ids.append(r.entry.id)
    return ids


@dataclass
class AttestedAgent:
    """An agent identity held by the benchmark process: its mTLS client to the server."""

    agent_id: str
    client: ServerClient
    chain: list[x509.Certificate] = field(default_factory=list)

    def close(self) -> None:
        self.client.close()


async def attest_agent(server: ServerProcess, admin: Channel) -> AttestedAgent:
    """Attest a join-token agent programmatically, as spire-agent does at start-up."""
    roots = await bundle_roots(admin)
    token = await join_token(admin)
    key = generate_key("ec-p256")
    boot = ServerClient("127.0.0.1", server.port, TRUST_DOMAIN, roots)
    try:
        chain, _ = await attest(boot, JoinTokenAttestor(token), key, TRUST_DOMAIN)
    finally:
        boot.close()
    client = ServerClient("127.0.0.1", server.port, TRUST_DOMAIN, roots, chain, key)
    return AttestedAgent(str(spiffe_id_of(chain[0])), client, chain)


# --- machine -------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "-"
    except (OSError, subprocess.SubprocessError):
        return "-"


def machine() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _mem_total_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {d: _version(d) for d in ("cryptography", "grpclib", "grpcio", "protobuf", "SQLAlchemy", "spiffe",
                                              "uvloop")},
        "event_loop": eventloop.loop_factory()[0],
        "commit": _git_commit(),
    }


def run_async(coro: Any) -> Any:
    """The benchmark's own clients run on the daemons' event loop (SPIRE_PY_EVENT_LOOP, common/eventloop.py)."""
    return eventloop.run(coro)


# --- results ---------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the table: a figure, its raw baseline from the same run, and the ratio."""

    benchmark: str
    case: str
    value: float
    unit: str
    baseline: Optional[float] = None
    baseline_what: str = ""
    higher_is_better: bool = True
    target: str = ""
    met: Optional[bool] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> Optional[float]:
        if not self.baseline or self.value != self.value:
            return None
        return self.value / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark, "case": self.case, "value": self.value, "unit": self.unit,
            "baseline": self.baseline, "baseline_what": self.baseline_what,
            "ratio": self.ratio, "higher_is_better": self.higher_is_better,
            "target": self.target, "met": self.met, **({"extra": self.extra} if self.extra else {}),
        }


# --- profiling ---------------------------------------------------------------------------------
class Profiler:
    """``profile(name, pid)``: py-spy samples a process (the server or agent) while the block
    runs and writes collapsed stacks to ``<outdir>/<name>.txt``, summarised by ``top``."""

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        outdir.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []

    def __call__(self, name: str, pid: int) -> "_Sampling":
        return _Sampling(self, name, pid)


class _Sampling:
    def __init__(self, owner: Profiler, name: str, pid: int) -> None:
        self.owner, self.name, self.pid = owner, name, pid
        self.path = owner.outdir / f"{name}.txt"
        self.popen: Optional[subprocess.Popen[bytes]] = None

    def __enter__(self) -> None:
        spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
        if spy is None:
            print("   (py-spy not installed: pip install '.[bench]')", file=sys.stderr)
            return
        self.popen = subprocess.Popen([spy, "record", "--pid", str(self.pid), "--format", "raw", "--rate", "250",
                                       "--gil", "--output", str(self.path)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # let it attach

    def __exit__(self, *exc: Any) -> None:
        if self.popen is None:
            return
        self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        if self.path.exists() and self.path not in self.owner.files:
            self.owner.files.append(self.path)


def _frame_name(frame: str) -> tuple[str, str]:
    """("function (file.py)", full path) of one py-spy frame "function (path/file.py:line)"."""
    fn, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    return f"{fn} ({path.rsplit('/', 1)[-1]})", path


def top_frames(path: Path, n: int = 15) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """From py-spy's collapsed stacks: (our functions by inclusive share of samples, any
    function by self share). Our functions are those under src/spire_py."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        samples += c
        frames = [f for f in stack.split(";") if " (" in f]
        seen = set()
        for frame in frames:
            name, where = _frame_name(frame)
            ours = where.startswith("spire_py/") or ("/spire_py/" in where and "/site-packages/" not in where)
            if ours and name not in seen:
                seen.add(name)
                inclusive[name] = inclusive.get(name, 0) + c
        if frames:
            leaf = _frame_name(frames[-1])[0]
            own[leaf] = own.get(leaf, 0) + c
    if not samples:
        return [], []

    def ranked(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / samples) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:n]]

    return ranked(inclusive), ranked(own)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """``cpu_seconds`` of a process and of its live children (the server's signing workers)."""
    total = cpu_seconds(pid)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[1]) == pid:  # its parent
            total += (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    return total


class _NoProfile:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def sampling(profile: Optional[Profiler], name: str, pid: int) -> Any:
    """``with sampling(profile, "phase", pid):`` profiles the block when profiling is on."""
    return profile(name, pid) if profile is not None else _NoProfile()
