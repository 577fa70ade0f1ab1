"""Crash safety: ``kill -9`` of the API under load loses no acknowledged event and double-counts
nothing once the client has resent what was not acknowledged.

A real ``abstats serve`` subprocess on a scratch database; a loader thread posts mixed batches
continuously and records every message_id acknowledged by a 200. The API is killed with SIGKILL at
random moments (seeded) while requests are in flight, and restarted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from tests.reliability.harness import (
    ApiProcess,
    Loader,
    event_counts,
    seed,
    start_thread,
    stored_message_ids,
    subprocess_env,
    wait_for,
)

KILLS = 12


def test_kill9_under_load_loses_nothing_acknowledged(
    scratch_url: str,
    scratch_engine: Engine,
    api_factory: Callable[[dict[str, str]], ApiProcess],
    tmp_path: Path,
) -> None:
    seeded = seed(scratch_engine)
    api = api_factory(subprocess_env(scratch_url, tmp_path / "data"))
    api.start()
    api.wait_ready()
    loader = Loader(api.url, seeded.ingest_key, batch_size=300)
    thread = start_thread(loader.run)
    rng = random.Random(20261122)
    kills = 0
    try:
        for _ in range(KILLS):
            before = loader.statuses["200"]
            # let the loader get through at least one batch on this incarnation, then kill at a
            # random moment (most kills land while a batch is being read, written or committed)
            wait_for(lambda b=before: loader.statuses["200"] > b, 30, "a 200 after restart")
            time.sleep(rng.uniform(0.05, 0.6))
            api.kill9()
            kills += 1
            api.start()
            api.wait_ready()
        wait_for(lambda: loader.statuses["200"] > 0, 30, "traffic after the last restart")
    finally:
        loader.stop()
        thread.join(30)

    acknowledged = set(loader.acknowledged)
    stored = stored_message_ids(scratch_engine, seeded.experiment_id)
    missing = acknowledged - stored.keys()
    # a request cut off mid-way: the connection dropped after the request was sent
    cut_off = sum(loader.statuses[k] for k in ("RemoteProtocolError", "ReadError", "ReadTimeout"))
    print(
        f"\ncrash safety: {kills} kill -9 survived ({cut_off} cut a request off); "
        f"{len(acknowledged)} events acknowledged, {len(stored)} stored before resending; "
        f"{len(loader.pending)} unacknowledged batches; answers {dict(loader.statuses)}"
    )
    assert kills >= 10
    assert not loader.bad_answers, loader.bad_answers[:5]
    assert not missing, f"{len(missing)} acknowledged events were lost, e.g. {sorted(missing)[:5]}"
    assert cut_off >= KILLS // 2, "most kills should land while a request is in flight"

    resent = loader.drain()
    stored = stored_message_ids(scratch_engine, seeded.experiment_id)
    doubled = {m: n for m, n in stored.items() if n > 1}
    counts = event_counts(scratch_engine, seeded.experiment_id)
    print(
        f"after resending {resent} batches: {loader.generated} events generated, "
        f"{len(loader.acknowledged)} acknowledged, {sum(stored.values())} stored {counts}; "
        f"accepted {loader.accepted} + duplicates {loader.duplicates}"
    )
    assert not doubled, f"events stored twice: {list(doubled.items())[:5]}"
    assert len(loader.acknowledged) == loader.generated
    assert stored.keys() == loader.acknowledged
    assert sum(stored.values()) == loader.generated
    # every event counted once as accepted; the rest of the answers were duplicates of events a
    # killed request had committed before its answer was lost
    assert loader.accepted <= loader.generated
    assert loader.accepted + loader.duplicates >= loader.generated
    assert "Traceback" not in api.all_logs()
