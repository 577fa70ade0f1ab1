"""An in-process cache for hot paths: ``RefreshingCache`` (stale-while-revalidate, single
flight). Used by ``/assign`` for experiment configs and by API-key authentication."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

from abstats.logging import get_logger

V = TypeVar("V")
_log = get_logger(__name__)


class RefreshingCache(Generic[V]):
    """Values by key for a hot path (per process), loaded by a blocking ``load(key)``.

    - Fresh for ``ttl`` seconds: served from memory.
    - Then, up to ``max_stale`` seconds old: still served, while *one* background reload runs.
      Without this, every request arriving while an expired entry reloads would start its own
      reload, and that burst of database round trips and ORM work (in threads that share the
      GIL with the event loop) showed as a 100 ms p99 on ``/assign`` every ``ttl`` seconds.
    - Missing, invalidated, or older than ``max_stale``: callers wait for one shared load (single
      flight); a load that fails fails every waiter and caches nothing.
    - ``invalidate`` also voids loads already in flight, so a reload that read the database just
      before a weight change cannot store the old value after it.

    - ``keep(value)`` False: the value is answered but not stored (e.g. "no such API key": an
      attacker's random tokens must not fill the memory).

    ``get`` runs on the event loop; ``invalidate`` may be called from any thread. Keys appear in
    logs: never use a secret as a key (hash it first).
    """

    def __init__(
        self,
        load: Callable[[str], V],
        *,
        ttl: float,
        max_stale: float,
        keep: Callable[[V], bool] | None = None,
        max_entries: int = 10_000,
    ) -> None:
        self._load = load
        self._keep = keep
        self._max_entries = max_entries
        self.ttl = ttl
        self.max_stale = max_stale
        self._entries: dict[str, tuple[float, V]] = {}
        self._generation = 0
        self._inflight: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[V]]] = {}
        self._lock = threading.Lock()

    def peek(self, key: str) -> V | None:
        """The fresh value, or None."""
        hit = self._entries.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        return None

    def invalidate(self, key: str | None = None) -> None:
        with self._lock:
            self._generation += 1
            if key is None:
                self._entries.clear()
            else:
                self._entries.pop(key, None)

    async def get(self, key: str) -> V:
        hit = self._entries.get(key)
        if hit is not None:
            age = time.monotonic() - hit[0]
            if age < self.ttl:
                return hit[1]
            if age < self.max_stale:
                self._start_load(key)  # at most one in flight; its result is for later requests
                return hit[1]
        return await asyncio.shield(self._start_load(key))

    def _start_load(self, key: str) -> asyncio.Future[V]:
        loop = asyncio.get_running_loop()
        running = self._inflight.get(key)
        if running is not None and running[0] is loop and not running[1].done():
            return running[1]
        generation = self._generation
        future: asyncio.Future[V] = asyncio.ensure_future(self._load_and_store(key, generation))
        self._inflight[key] = (loop, future)
        future.add_done_callback(lambda f: self._finished(key, f))
        return future

    async def _load_and_store(self, key: str, generation: int) -> V:
        value = await run_in_threadpool(self._load, key)
        with self._lock:
            if generation == self._generation and (self._keep is None or self._keep(value)):
                if len(self._entries) > self._max_entries:
                    self._entries.clear()
                self._entries[key] = (time.monotonic(), value)
        return value

    def _finished(self, key: str, future: asyncio.Future[V]) -> None:
        running = self._inflight.get(key)
        if running is not None and running[1] is future:
            del self._inflight[key]
        if not future.cancelled() and future.exception() is not None:
            # Read here so a failed background reload is not reported as "never retrieved";
            # waiters (if any) get the exception themselves.
            _log.warning("cache.load_failed", key=key, error=str(future.exception()))
