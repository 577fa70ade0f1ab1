"""Simulated production traffic: units arrive, are assigned a variant by abstats' ``/assign``,
make requests that the assigned real model scores, and their true labels arrive later as outcomes.

Time is real (the server's clock stamps exposures, weight epochs and decisions, so the events are
stamped with the real time too); the demo compresses the policy's durations instead.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from abstats.demo.models import DemoData, ModelVersion


@dataclass
class PendingOutcome:
    due: datetime
    event: dict[str, Any]


@dataclass
class TrafficStats:
    units: int = 0
    requests: int = 0
    outcomes: int = 0
    by_variant: dict[str, int] = field(default_factory=dict)


class TrafficSimulator:
    """Generates prediction and outcome events; ``assign`` maps a unit to a variant key."""

    def __init__(
        self,
        data: DemoData,
        *,
        seed: int = 7,
        outcome_delay: timedelta = timedelta(seconds=2),
        returning_share: float = 0.3,
    ) -> None:
        self.data = data
        self.rng = np.random.default_rng(seed)
        self.models: dict[str, ModelVersion] = {m.key: m for m in data.models}
        self.outcome_delay = outcome_delay
        self.returning_share = returning_share
        self.known_units: list[str] = []
        self.pending: deque[PendingOutcome] = deque()
        self.stats = TrafficStats()

    def tick(
        self, *, new_units: int, now: datetime, assign: Callable[[list[str]], dict[str, str]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One step: returns (predictions to post now, outcomes that became due)."""
        units = [f"u-{uuid.uuid4().hex[:12]}" for _ in range(new_units)]
        returning = int(self.returning_share * new_units)
        if self.known_units and returning:
            picks = self.rng.choice(
                len(self.known_units), size=min(returning, len(self.known_units)), replace=False
            )
            units += [self.known_units[int(i)] for i in picks]
        self.known_units.extend(units[:new_units])
        self.stats.units += new_units
        variants = assign(units)

        predictions: list[dict[str, Any]] = []
        for unit in units:
            variant = variants[unit]
            model = self.models[variant]
            n_requests = int(self.rng.integers(1, 4))
            rows = self.rng.integers(0, len(self.data.labels), size=n_requests)
            scores = model.predict_scores(self.data.features[rows])
            for row, score in zip(rows, scores, strict=True):
                request_id = f"r-{uuid.uuid4().hex}"
                latency = float(model.latency_median_ms * np.exp(self.rng.normal(0.0, 0.35)))
                failed = bool(self.rng.random() < model.error_rate)
                predictions.append(
                    {
                        "type": "prediction",
                        "message_id": f"p-{request_id}",
                        "variant": variant,
                        "unit_id": unit,
                        "request_id": request_id,
                        "timestamp": now.isoformat(),
                        "score": None if failed else round(float(score), 6),
                        "label": None if failed else int(score >= 0.5),
                        "latency_ms": round(latency, 3),
                        "error": failed,
                        "features": {
                            "ink": float(self.data.features[row].sum()),
                            "source": "scanner" if row % 3 else "mobile",
                        },
                    }
                )
                if not failed:
                    self.pending.append(
                        PendingOutcome(
                            now + self.outcome_delay,
                            {
                                "type": "outcome",
                                "message_id": f"o-{request_id}",
                                "unit_id": unit,
                                "request_id": request_id,
                                "name": "label",
                                "value": int(self.data.labels[row]),
                            },
                        )
                    )
                self.stats.requests += 1
                self.stats.by_variant[variant] = self.stats.by_variant.get(variant, 0) + 1

        due: list[dict[str, Any]] = []
        while self.pending and self.pending[0].due <= now:
            item = self.pending.popleft()
            due.append({**item.event, "timestamp": now.isoformat()})
        self.stats.outcomes += len(due)
        return predictions, due


def utcnow() -> datetime:
    return datetime.now(UTC)
