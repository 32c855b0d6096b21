"""X.509-SVIDs parsed, verified and signed in worker processes, so issuance is not held to one core.

``cryptography`` holds the GIL while it parses and verifies a CSR and signs a leaf, so one
server process tops out at one core however many threads sign. Large BatchNewX509SVID
batches go to a pool of worker processes instead, split across them.

The CA's private key reaches a worker only through the pool's pipe when the worker starts
(PKCS#8 DER, as an initializer argument: never on disk, a command line or an environment).
Workers are spawned, not forked (the server holds threads and an event loop). The pool
belongs to one signing CA: when the manager's active X.509 CA changes (rotation, a prepared
CA activated, a taint), the next batch replaces the pool, so a worker never signs with a CA
the server itself would not; batches already in flight finish with the CA they were handed,
as in-process signing would. A CA key that cannot be exported (a KeyManager that holds it
elsewhere) keeps signing in-process, as does any batch when the pool fails.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ...common import log
from ...common.spiffeid import SpiffeId
from ...common.x509util import create_x509_svid
from .errors import CARequestError

_log = log.get("ca")

# Below this many CSRs a batch is signed in-process: the round trip to a worker costs more.
MIN_POOLED_BATCH = 8


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# Worker processes: one per core this process may use, at most 4; with one core there is
# nothing to gain and the pool is not used.
WORKERS = min(4, _cores())

# (code, message, chain DER, expires_at): code 0 is success, else a gRPC status code (3: InvalidArgument).
Signed = tuple[int, str, list[bytes], int]
# (CSR DER, SPIFFE ID, TTL in seconds, DNS names)
Item = tuple[bytes, str, float, list[str]]

INVALID_ARGUMENT = 3

# --- in a worker (and in-process, the same code) ---------------------------------------------
_worker: dict[str, Any] = {}


def _init_worker(key_der: bytes, issuer_der: bytes, chain_der: list[bytes]) -> None:
    _worker["key"] = serialization.load_der_private_key(key_der, password=None)
    _worker["issuer"] = x509.load_der_x509_certificate(issuer_der)
    _worker["chain"] = list(chain_der)


def sign_items(items: Sequence[Item], now: float, key: Any, issuer: x509.Certificate,
               chain_der: list[bytes]) -> list[Signed]:
    """Each CSR parsed, its signature checked, and a leaf signed; every item its own outcome
    (messages as the SVID API gives them)."""
    from .ca import _check_public_key

    out: list[Signed] = []
    for csr_der, sid, ttl, dns in items:
        try:
            csr = x509.load_der_x509_csr(csr_der)
        except ValueError as exc:
            out.append((INVALID_ARGUMENT, f"malformed CSR: {exc}", [], 0))
            continue
        if not csr.is_signature_valid:
            out.append((INVALID_ARGUMENT, "malformed CSR: invalid signature", [], 0))
            continue
        try:
            leaf = create_x509_svid(_check_public_key(csr.public_key()), SpiffeId.parse(sid), issuer=issuer,
                                    signer=key, ttl=ttl, now=now, dns_names=dns)
        except CARequestError as exc:
            out.append((INVALID_ARGUMENT, f"failed to sign X509-SVID: {exc}", [], 0))
            continue
        out.append((0, "", [leaf.public_bytes(serialization.Encoding.DER)] + chain_der,
                    int(leaf.not_valid_after_utc.timestamp())))
    return out


def _sign_in_worker(items: list[Item], now: float) -> list[Signed]:
    return sign_items(items, now, _worker["key"], _worker["issuer"], _worker["chain"])


# --- in the server -------------------------------------------------------------------------------
class SigningPool:
    def __init__(self, workers: Optional[int] = None) -> None:
        self.workers = WORKERS if workers is None else workers
        self._lock = threading.Lock()
        self._pool: Optional[ProcessPoolExecutor] = None
        self._ca: Optional[bytes] = None  # the DER of the CA the pool signs with
        self._in_process: set[bytes] = set()  # CAs whose key cannot be exported, or whose pool broke

    def _pool_for(self, key: Any, issuer: x509.Certificate, chain: Sequence[x509.Certificate]) -> Optional[ProcessPoolExecutor]:
        ca = issuer.public_bytes(serialization.Encoding.DER)
        with self._lock:
            if self._pool is not None and self._ca == ca:
                return self._pool
            if ca in self._in_process:
                return None
            try:
                key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
            except Exception:  # held by its KeyManager: this CA signs in-process
                self._in_process.add(ca)
                return None
            old, self._pool, self._ca = self._pool, None, None
            if old is not None:
                old.shutdown(wait=False)  # its batches in flight finish with their CA
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                initargs=(key_der, ca, [c.public_bytes(serialization.Encoding.DER) for c in chain]))
            self._ca = ca
            return self._pool

    async def sign(self, key: Any, issuer: x509.Certificate, chain: Sequence[x509.Certificate],
                   items: list[Item], now: float) -> Optional[list[Signed]]:
        """The batch signed across the workers, or None when it should be signed in-process."""
        if len(items) < MIN_POOLED_BATCH or self.workers < 2:
            return None
        try:
            pool = self._pool_for(key, issuer, chain)
        except Exception as exc:  # no processes or semaphores here (a sandbox): sign in-process
            _log.warning("Unable to start signing workers; signing in-process", extra=log.fields(error=str(exc)))
            with self._lock:
                self._in_process.add(issuer.public_bytes(serialization.Encoding.DER))
            return None
        if pool is None:
            return None
        loop = asyncio.get_running_loop()
        parts = min(self.workers, len(items) // (MIN_POOLED_BATCH // 2) or 1)
        size = -(-len(items) // parts)
        try:
            chunks = await asyncio.gather(*(loop.run_in_executor(pool, _sign_in_worker, items[i:i + size], now)
                                            for i in range(0, len(items), size)))
        except Exception as exc:  # a broken pool (a worker killed): this CA signs in-process from now on
            _log.warning("Signing workers failed; signing in-process", extra=log.fields(error=str(exc)))
            with self._lock:
                self._in_process.add(issuer.public_bytes(serialization.Encoding.DER))
            self.close()
            return None
        return [s for chunk in chunks for s in chunk]

    def close(self) -> None:
        with self._lock:
            old, self._pool, self._ca = self._pool, None, None
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)
