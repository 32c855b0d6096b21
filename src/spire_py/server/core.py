"""What every server API handler shares: config, datastore, CA, entry cache, attestors."""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar, cast

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ..common import log
from ..common.spiffeid import TrustDomain
from .api.status import datastore_error_status
from .ca.ca import ServerCA
from .ca.errors import CARequestError
from .ca.signing_pool import SigningPool
from .cache import EntryCache
from .config import ServerConfig
from .datastore import errors as ds_errors
from .datastore.api import DataStore
from .datastore import cached as cached_store
from .datastore.cached import CachedDataStore
from .plugins.nodeattestor.base import NodeAttestor

T = TypeVar("T")
_log = log.get("server")


@dataclass
class ServerCore:
    config: ServerConfig
    trust_domain: TrustDomain
    datastore: DataStore
    ca: ServerCA
    cache: EntryCache
    node_attestors: dict[str, NodeAttestor] = field(default_factory=dict)
    admin_ids: set[str] = field(default_factory=set)
    agent_ttl: Optional[float] = None
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=8, thread_name_prefix="spire-db"))
    # Set when bundle or entries change, so agents' streams and caches can react.
    bundle_changed: asyncio.Event = field(default_factory=asyncio.Event)
    # The datastore as the APIs see it: agents' nodes and the bundle served from memory.
    cached: CachedDataStore = field(init=False)
    # Worker processes for large BatchNewX509SVID batches (started on first use).
    signing_pool: Optional[SigningPool] = field(default_factory=SigningPool)

    def __post_init__(self) -> None:
        if isinstance(self.datastore, CachedDataStore):
            self.cached = self.datastore
        else:
            self.cached = CachedDataStore(self.datastore)
            self.datastore = cast(DataStore, self.cached)
        self._refresh_lock = asyncio.Lock()
        self._refreshes_started = 0
        self._refreshed_upto = 0
        self._refreshed_writes = -1
        self._refreshed_at = float("-inf")

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking datastore (or signing) call off the event loop, mapping its errors."""
        if getattr(fn, "__self__", None) is self.cached:  # answered from memory: no thread hop
            hit, value = self.cached.from_memory(getattr(fn, "__name__", ""), args, kwargs)
            if hit:
                return cast(T, value)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))
        except ds_errors.DataStoreError as exc:
            code, message = datastore_error_status(exc)
            if code == Status.INTERNAL:
                _log.error("datastore error", extra=log.fields(error=str(exc)))
            raise GRPCError(code, message) from None

    async def sign(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))
        except CARequestError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None

    async def refresh_cache(self) -> None:
        """Apply the entry events written so far: at once after a write through this server's
        datastore (a writer sees its own write), else when the last read is older than
        ``ENTRY_EVENTS_POLL`` (other servers' writes; SPIRE's cache_reload_interval is 5 s).
        Callers arriving together share one read: each waits for a refresh that started after
        it was called, and one refresh started after several callers serves them all."""
        writes = self.cached.writes
        if writes == self._refreshed_writes and time.monotonic() - self._refreshed_at < cached_store.ENTRY_EVENTS_POLL:
            return
        wanted = self._refreshes_started + 1
        async with self._refresh_lock:
            if self._refreshed_upto >= wanted:
                return
            self._refreshes_started += 1
            started = self._refreshes_started
            writes, at = self.cached.writes, time.monotonic()
            await self.db(self.cache.refresh)
            self._refreshed_upto = started
            self._refreshed_writes, self._refreshed_at = writes, at
