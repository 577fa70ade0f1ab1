"""The hot-path cache of /assign (experiment configs, API keys): single flight, stale while
revalidating, bounded staleness, invalidation that voids loads in flight."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from abstats.control.assign import RefreshingCache


class Loader:
    """A blocking load (it runs in the thread pool) that counts calls and can be held."""

    def __init__(self, delay: float = 0.05) -> None:
        self.calls = 0
        self.delay = delay
        self.value = "v1"
        self.fail: Exception | None = None
        self.release = threading.Event()
        self.release.set()
        self._lock = threading.Lock()

    def __call__(self, key: str) -> str:
        with self._lock:
            self.calls += 1
        value = self.value  # what the "database" said when the load began
        time.sleep(self.delay)
        self.release.wait(5)
        if self.fail is not None:
            raise self.fail
        return f"{key}:{value}"


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def test_concurrent_cold_misses_share_one_load() -> None:
    load = Loader()
    cache = RefreshingCache(load, ttl=10, max_stale=20)

    async def main() -> list[str]:
        return await asyncio.gather(*(cache.get("exp") for _ in range(50)))

    assert asyncio.run(main()) == ["exp:v1"] * 50
    assert load.calls == 1


def test_an_expired_entry_is_served_while_one_reload_runs() -> None:
    load = Loader(delay=0.0)
    cache = RefreshingCache(load, ttl=0.05, max_stale=10)

    async def main() -> None:
        assert await cache.get("exp") == "exp:v1"
        load.value = "v2"
        load.release.clear()  # hold the reload
        await asyncio.sleep(0.06)  # expired, not too old
        answers = [await cache.get("exp") for _ in range(20)]
        assert answers == ["exp:v1"] * 20  # served at once, from memory
        await until(lambda: load.calls == 2)  # the reload has started (and is held)
        assert [await cache.get("exp") for _ in range(20)] == ["exp:v1"] * 20
        await asyncio.sleep(0.05)
        assert load.calls == 2  # one reload for all forty
        load.release.set()
        await until(lambda: cache.peek("exp") == "exp:v2")
        assert await cache.get("exp") == "exp:v2"

    asyncio.run(main())


def test_an_entry_older_than_max_stale_is_waited_for() -> None:
    load = Loader(delay=0.0)
    cache = RefreshingCache(load, ttl=0.02, max_stale=0.04)

    async def main() -> None:
        assert await cache.get("exp") == "exp:v1"
        load.value = "v2"
        await asyncio.sleep(0.06)
        assert await cache.get("exp") == "exp:v2"  # never the too-old value

    asyncio.run(main())


def test_invalidate_voids_a_load_that_began_before_it() -> None:
    load = Loader(delay=0.0)
    cache = RefreshingCache(load, ttl=0.02, max_stale=10)

    async def main() -> None:
        await cache.get("exp")
        await asyncio.sleep(0.03)
        load.release.clear()
        assert await cache.get("exp") == "exp:v1"  # stale; a reload starts and reads "v1"
        await asyncio.sleep(0.02)
        load.value = "v2"  # the weights change and the writer invalidates
        cache.invalidate("exp")
        load.release.set()
        await asyncio.sleep(0.05)  # the old reload finishes, but may not store
        assert cache.peek("exp") is None
        assert await cache.get("exp") == "exp:v2"

    asyncio.run(main())


def test_a_failed_load_fails_its_waiters_and_caches_nothing() -> None:
    load = Loader()
    load.fail = RuntimeError("database unreachable")
    cache = RefreshingCache(load, ttl=10, max_stale=20)

    async def main() -> None:
        results = await asyncio.gather(
            *(cache.get("exp") for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        assert load.calls == 1
        load.fail = None
        assert await cache.get("exp") == "exp:v1"
        assert load.calls == 2

    asyncio.run(main())


def test_a_failed_background_reload_keeps_the_stale_value_until_max_stale() -> None:
    load = Loader(delay=0.0)
    cache = RefreshingCache(load, ttl=0.02, max_stale=1.0)

    async def main() -> None:
        await cache.get("exp")
        load.fail = RuntimeError("database unreachable")
        await asyncio.sleep(0.03)
        assert await cache.get("exp") == "exp:v1"
        await asyncio.sleep(0.02)
        assert await cache.get("exp") == "exp:v1"  # still within max_stale
        await asyncio.sleep(1.0)
        with pytest.raises(RuntimeError, match="unreachable"):
            await cache.get("exp")

    asyncio.run(main())
