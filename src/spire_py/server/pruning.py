"""Periodic pruning of expired attested nodes, as SPIRE's node manager (pkg/server/node),
and of expired registration entries, as its registration manager (pkg/server/registration).

With ``prune_attested_nodes_expired_for`` set, every that-long the server deletes
the nodes whose SVID expired more than that long ago: never banned nodes (the
ban must outlive the SVID), and nodes that cannot re-attest (TOFU, e.g. join
token) only with ``prune_tofu_nodes``. A pruned agent is unknown to the server:
its next call is refused and it must attest again.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from grpclib.const import Status

from ..common import log, telemetry
from ..common.telemetry.names import ENTRY_MANAGER_PRUNE, NODE_MANAGER_PRUNE

_log = log.get("node_manager")


class NodePruner:
    def __init__(self, core: Any, expired_for: float, include_tofu: bool = False, batch_size: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.core = core
        self.expired_for = expired_for
        self.include_tofu = include_tofu
        self.batch_size = batch_size
        self.clock = clock
        # SPIRE's ticker has the same period and fires first one period after start.
        self.next_run = clock() + expired_for

    @classmethod
    def from_config(cls, core: Any, config: Any) -> Optional["NodePruner"]:
        """A pruner when the config enables pruning, else None."""
        expired_for = getattr(config, "prune_attested_nodes_expired_for", None) or 0
        if expired_for <= 0:
            return None
        return cls(core, float(expired_for), bool(getattr(config, "prune_tofu_nodes", False)),
                   int(getattr(config, "prune_attested_nodes_batch_size", 0) or 0))

    async def tick(self) -> int:
        """Prune when due (called on every maintenance tick); how many nodes went."""
        if self.clock() < self.next_run:
            return 0
        self.next_run = self.clock() + self.expired_for
        return await self.prune()

    async def prune(self) -> int:
        """One pass: batches of at most batch_size nodes (each its own transaction)
        until none is left, so a large backlog never holds one long write lock."""
        expired_before = int(time.time() - self.expired_for)
        ds = self.core.datastore
        total = 0
        started, status = time.monotonic(), Status.OK
        try:
            while True:
                n = await self.core.db(ds.prune_attested_expired_nodes, expired_before, self.include_tofu,
                                       self.batch_size)
                total += n
                if self.batch_size <= 0 or n < self.batch_size:
                    break
        except Exception as exc:  # the next period retries; maintenance goes on
            status = getattr(exc, "status", None) or Status.UNKNOWN
            _log.error("Failed during periodic pruning of expired nodes", extra=log.fields(error=str(exc)))
        telemetry.current().call_counter(NODE_MANAGER_PRUNE).done(started, status)
        if total:
            _log.info("Pruned expired attested nodes", extra=log.fields(
                count=total, expired_before=expired_before, include_non_reattestable=self.include_tofu))
            # Join-token agents' alias entries went with them: the entry cache must drop them now.
            await self.core.refresh_cache()
        return total


ENTRY_PRUNE_INTERVAL = 5 * 60.0  # SPIRE's registration manager cadence


class EntryPruner:
    """Every five minutes, delete registration entries whose ``expires_at`` has passed (SPIRE's
    registration manager; its first pass is one period after start)."""

    def __init__(self, core: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.core = core
        self.clock = clock
        self.next_run = clock() + ENTRY_PRUNE_INTERVAL

    async def tick(self) -> int:
        if self.clock() < self.next_run:
            return 0
        self.next_run = self.clock() + ENTRY_PRUNE_INTERVAL
        return await self.prune()

    async def prune(self) -> int:
        started, status, pruned = time.monotonic(), Status.OK, 0
        try:
            pruned = await self.core.db(self.core.datastore.prune_entries, int(time.time()))
        except Exception as exc:  # the next period retries
            status = getattr(exc, "status", None) or Status.UNKNOWN
            _log.error("Failed pruning registration entries", extra=log.fields(error=str(exc)))
        telemetry.current().call_counter(ENTRY_MANAGER_PRUNE).done(started, status)
        if pruned:
            _log.info("Pruned expired registration entries", extra=log.fields(count=pruned))
            await self.core.refresh_cache()
        return pruned
