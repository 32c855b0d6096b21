"""Workload API latency: FetchX509SVID and FetchJWTSVID from py-spiffe on the agent's socket.

A real spire-agent (unix workload attestor) serves a registered entry for this
process's uid, among 1,000 other workloads' entries on the same node; py-spiffe's WorkloadApiClient, unmodified, calls it with 1 and 50
concurrent clients (threads, one client and channel each). Baseline: a unary
gRPC echo of the same payload size over a Unix socket, grpclib server in its own
process (benchmarks/echo.py), grpcio client, same thread layout.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional

import grpc
from google.protobuf import wrappers_pb2

from spire_py.proto.workload import workload_pb2

from .echo import METHOD
from .harness import (sampling, ROOT, AgentProcess, attestors, Row, ServerProcess, bundle_roots, create_entries, entry_pb, join_token,
                      percentile, short_dir, wait_for)

# p99 against the echo's, by clients: py-spiffe's calls and the raw stream, the agent's share (issue #23).
TARGETS = {"py-spiffe": {1: 2.0, 50: 2.0}, "raw": {1: 1.5, 50: 2.0}}
ROUNDS = 5
AUDIENCE = "bench"
HEADER = (("workload.spiffe.io", "true"),)


def measure(make: Callable[[], Any], call: Callable[[Any], Any], close: Callable[[Any], None],
            clients: int, per_client: int) -> list[float]:
    """Latencies (ms) of ``per_client`` calls by each of ``clients`` threads started together."""
    barrier = threading.Barrier(clients)
    out: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        c = make()
        try:
            for _ in range(3):  # warm-up: connect, first attestation
                call(c)
            barrier.wait()
            local = []
            for _ in range(per_client):
                t = time.perf_counter()
                call(c)
                local.append((time.perf_counter() - t) * 1000.0)
            with lock:
                out.extend(local)
        except BaseException as exc:  # surfaced below
            barrier.abort()
            errors.append(exc)
        finally:
            close(c)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}")
    return out


def _payload_sizes(sock: str) -> tuple[int, int]:
    """Serialized sizes of the agent's X509SVIDResponse and JWTSVIDResponse for this caller."""
    with grpc.insecure_channel(f"unix://{sock}") as ch:
        x509_call = ch.unary_stream("/SpiffeWorkloadAPI/FetchX509SVID",
                                    request_serializer=workload_pb2.X509SVIDRequest.SerializeToString,
                                    response_deserializer=workload_pb2.X509SVIDResponse.FromString)
        stream = x509_call(workload_pb2.X509SVIDRequest(), metadata=HEADER, timeout=20)
        x509_size = next(stream).ByteSize()
        stream.cancel()
        jwt_call = ch.unary_unary("/SpiffeWorkloadAPI/FetchJWTSVID",
                                  request_serializer=workload_pb2.JWTSVIDRequest.SerializeToString,
                                  response_deserializer=workload_pb2.JWTSVIDResponse.FromString)
        jwt_size = jwt_call(workload_pb2.JWTSVIDRequest(audience=[AUDIENCE]), metadata=HEADER, timeout=20).ByteSize()
    return x509_size, jwt_size


def _raw_x509_client(sock: str) -> Any:
    """FetchX509SVID without py-spiffe: first message of the stream, then cancel (as py-spiffe
    does), no certificate parsing - the agent's share of the latency."""
    ch = grpc.insecure_channel(f"unix://{sock}")
    call = ch.unary_stream("/SpiffeWorkloadAPI/FetchX509SVID",
                           request_serializer=workload_pb2.X509SVIDRequest.SerializeToString,
                           response_deserializer=workload_pb2.X509SVIDResponse.FromString)
    return ch, call


def _raw_x509_call(c: Any) -> Any:
    stream = c[1](workload_pb2.X509SVIDRequest(), metadata=HEADER, timeout=30)
    try:
        return next(stream)
    finally:
        stream.cancel()


def _spiffe_client(sock: str) -> Any:
    from spiffe import WorkloadApiClient

    return WorkloadApiClient(f"unix://{sock}", default_timeout=30)


def _echo_client(sock: str, size: int) -> tuple[Any, Callable[[Any], Any]]:
    payload = wrappers_pb2.BytesValue(value=os.urandom(size))

    def make() -> Any:
        ch = grpc.insecure_channel(f"unix://{sock}")
        return ch, ch.unary_unary(METHOD, request_serializer=wrappers_pb2.BytesValue.SerializeToString,
                                  response_deserializer=wrappers_pb2.BytesValue.FromString)

    def call(c: Any) -> Any:
        return c[1](payload, metadata=HEADER, timeout=30)

    return make, call


def _rows(method: str, clients: int, got: list[float], base: list[float], size: int,
          targets: Optional[dict[int, float]]) -> list[Row]:
    rows = []
    # Attestors beyond unix (--attestors) are named in the case, so both runs can sit side by side.
    with_attestors = "" if attestors() == ["unix"] else f" [{'+'.join(attestors())}]"
    for p in (50, 99):
        value, baseline = percentile(got, p), percentile(base, p)
        target = targets.get(clients) if targets is not None and p == 99 else None
        rows.append(Row("Workload API", f"{method} p{p}, {clients} client{'s' if clients > 1 else ''}{with_attestors}",
                        value, "ms",
                        baseline, f"grpc unary echo {size} B over UDS", False,
                        f"<= {target}x" if target else "", (value / baseline <= target) if target else None,
                        {"calls": len(got), "payload_bytes": size}))
    return rows


async def run(sizes: dict[str, int], profile: Any = None) -> list[Row]:
    rows: list[Row] = []
    with ServerProcess("workload") as server:
        admin = server.admin()
        try:
            roots = await bundle_roots(admin)
            token = await join_token(admin)
            agent_id = f"spiffe://example.org/spire/agent/join_token/{token}"
            # Ours, and other workloads' on the same node: the agent must find ours among them.
            others = [entry_pb(f"spiffe://example.org/bench/other/{i}", agent_id, [("unix", f"uid:{100000 + i}")])
                      for i in range(sizes["workload_other_entries"])]
            await create_entries(admin, [entry_pb("spiffe://example.org/bench/workload", agent_id,
                                                  [("unix", f"uid:{os.getuid()}")]), *others], 500)
        finally:
            admin.close()
        agent = AgentProcess(server, token, roots).start()
        echo_dir = short_dir("echo")
        echo_sock = str(echo_dir / "echo.sock")
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        echo = subprocess.Popen([sys.executable, "-m", "benchmarks.echo", echo_sock], cwd=str(ROOT), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            assert echo.stdout is not None
            if echo.stdout.readline().strip() != b"ready":
                raise RuntimeError("echo server did not start")

            def svid_ready() -> bool:
                try:
                    c = _spiffe_client(agent.sock)
                    try:
                        c.fetch_x509_svid()
                        return True
                    finally:
                        c.close()
                except Exception:
                    return False

            await asyncio.to_thread(wait_for, svid_ready, 60, "the workload's X.509-SVID")
            x509_size, jwt_size = await asyncio.to_thread(_payload_sizes, agent.sock)
            spiffe = (lambda: _spiffe_client(agent.sock), lambda c: c.close())
            raw = (lambda: _raw_x509_client(agent.sock), lambda c: c[0].close())
            # (name, (make, close), call, payload size, p99 targets by clients)
            cases: list[tuple[str, Any, Callable[[Any], Any], int, Optional[dict[int, float]]]] = [
                ("FetchX509SVID", spiffe, lambda c: c.fetch_x509_svid(), x509_size, TARGETS["py-spiffe"]),
                ("FetchJWTSVID", spiffe, lambda c: c.fetch_jwt_svid({AUDIENCE}), jwt_size, TARGETS["py-spiffe"]),
                ("FetchX509SVID without py-spiffe parsing", raw, _raw_x509_call, x509_size, TARGETS["raw"]),
            ]
            for clients, per_client in ((1, sizes["workload_calls"]),
                                        (50, max(2, sizes["workload_calls"] // 25))):
                rounds = max(1, min(ROUNDS, per_client // 10))
                for method, (make, close), call, size, targets in cases:
                    make_echo, call_echo = _echo_client(echo_sock, size)
                    slug = "-".join(method.split()[:2])
                    base: list[float] = []
                    got: list[float] = []
                    # Baseline and figure in alternating rounds: drifts in the machine's load
                    # (other processes) fall on both alike.
                    for n in range(rounds):
                        base += await asyncio.to_thread(measure, make_echo, call_echo, lambda c: c[0].close(),
                                                        clients, per_client // rounds)
                        with sampling(profile if n == 0 else None, f"workload-{slug}-{clients}", agent.pid):
                            got += await asyncio.to_thread(measure, make, call, close, clients, per_client // rounds)
                    rows.extend(_rows(method, clients, got, base, size, targets))
        finally:
            echo.terminate()
            try:
                echo.wait(10)
            except subprocess.TimeoutExpired:
                echo.kill()
                echo.wait()
            agent.stop()
            import shutil

            shutil.rmtree(echo_dir, ignore_errors=True)
    return rows

