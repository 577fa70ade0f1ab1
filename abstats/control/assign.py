"""Sticky assignment for ``GET /v1/experiments/{key}/assign``.

Weighted rendezvous hashing (Schindelhauer and Schomaker 2005, "Weighted distributed hash
tables"): for every variant ``v`` with weight ``w_v > 0`` draw ``u_v = H(salt, unit, v)`` uniform
on (0, 1) and pick the variant with the smallest ``-ln(u_v) / w_v``. The ``-ln(u)`` are independent
Exp(1) draws, so ``-ln(u_v)/w_v`` is Exp(w_v) and the minimum falls on ``v`` with probability
``w_v / sum(w)``. A unit's draws never change, so it keeps its variant while the weights stay; when
weights change only the scores of the changed variants move, so a unit moves only *into* a variant
whose weight grew or *out of* one whose weight shrank (relative to the others).

The request path reads no database: experiment configs are cached in-process
(``RefreshingCache``: reloaded in the background, at most ``CONFIG_MAX_AGE_SECONDS`` old) and an
exposure is one append to a buffer that a writer process stores in batches
(``abstats.control.exposures``), one exposure per unit and weight epoch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import orjson
from sqlalchemy.orm import Session

from abstats.cache import RefreshingCache
from abstats.db.engine import new_session
from abstats.db.models import Experiment
from abstats.experiments import repository

# A config is reloaded in the background once it is CONFIG_TTL_SECONDS old and never served
# older than CONFIG_MAX_AGE_SECONDS: a weight change made by another process (the scheduler)
# reaches /assign within 2 s, which keeps exposures stamped after a change from being assigned
# under the old weights for long (the SRM check compares them with the weight history by time).
CONFIG_TTL_SECONDS = 1.5
CONFIG_MAX_AGE_SECONDS = 2.0
_TWO_64 = float(2**64)


def unit_draw(salt: str, unit_id: str, variant: str) -> float:
    """``H(salt, unit, variant)`` mapped to the open interval (0, 1)."""
    digest = hashlib.blake2b(f"{salt}\x1f{unit_id}\x1f{variant}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _TWO_64


def rendezvous_variant(salt: str, unit_id: str, weights: Mapping[str, float]) -> str:
    """The variant of ``unit_id`` under ``weights`` (see module docstring)."""
    best: str | None = None
    best_score = math.inf
    for variant, weight in weights.items():
        if weight <= 0:
            continue
        score = -math.log(unit_draw(salt, unit_id, variant)) / weight
        if score < best_score:
            best, best_score = variant, score
    if best is None:
        raise ValueError("at least one weight must be positive")
    return best


@dataclass(frozen=True)
class AssignmentConfig:
    """What ``/assign`` needs of one experiment (cached)."""

    experiment_id: int
    key: str
    status: str
    salt: str
    control: str
    winner: str | None
    weights: dict[str, float]
    weight_epoch: int
    variant_ids: dict[str, int]
    model_versions: dict[str, str]
    _bodies: dict[tuple[str, bool], bytes] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def randomizing(self) -> bool:
        return self.status == "running"

    def fixed_variant(self) -> str:
        """Not running: concluded answers the winner, everything else the control."""
        if self.status == "concluded" and self.winner:
            return self.winner
        return self.control

    def answer_body(self, assignment: Assignment) -> bytes:
        """``assignment.as_dict`` as JSON. Every unit given the same variant gets the same
        bytes, so they are rendered once per config (a new config is a new object)."""
        key = (assignment.variant, assignment.forced)
        body = self._bodies.get(key)
        if body is None:
            body = self._bodies[key] = orjson.dumps(assignment.as_dict(self.key, self.status))
        return body


def load_config(session: Session, key: str) -> AssignmentConfig:
    experiment: Experiment = repository.get_experiment(session, key)
    epoch = repository.current_epoch(session, experiment.id)
    retired = {v.key for v in experiment.variants if v.retired}
    weights = {
        k: (0.0 if k in retired else float(w)) for k, w in (epoch.weights if epoch else {}).items()
    }
    return AssignmentConfig(
        experiment_id=experiment.id,
        key=experiment.key,
        status=experiment.status,
        salt=experiment.salt,
        control=experiment.control_variant,
        winner=experiment.winner_variant,
        weights=weights,
        weight_epoch=epoch.epoch if epoch else 0,
        variant_ids={v.key: v.id for v in experiment.variants},
        model_versions={v.key: v.model_version for v in experiment.variants},
    )


def _load_config_blocking(key: str) -> AssignmentConfig:
    with new_session() as session:
        config = load_config(session, key)
        session.commit()
    return config


config_cache: RefreshingCache[AssignmentConfig] = RefreshingCache(
    _load_config_blocking, ttl=CONFIG_TTL_SECONDS, max_stale=CONFIG_MAX_AGE_SECONDS
)


@dataclass(frozen=True)
class Assignment:
    variant: str
    model_version: str
    weights_epoch: int
    forced: bool
    logged: bool

    def as_dict(self, key: str, status: str) -> dict[str, object]:
        return {
            "experiment": key,
            "variant": self.variant,
            "model_version": self.model_version,
            "weights_epoch": self.weights_epoch,
            "status": status,
            "forced": self.forced,
        }


def assign(
    config: AssignmentConfig,
    unit_id: str,
    *,
    target_variant: str | None = None,
    log: Callable[[AssignmentConfig, str, str], bool] | None = None,
) -> Assignment:
    """Assign ``unit_id``; ``log(config, unit_id, variant)`` records a randomized exposure.

    Forced (``X-Target-Variant``) and non-running answers are not randomized and are not logged
    as exposures: they would bias the sample ratio check and the comparison.
    """
    if target_variant is not None:
        return Assignment(
            target_variant,
            config.model_versions.get(target_variant, ""),
            config.weight_epoch,
            forced=True,
            logged=False,
        )
    if not config.randomizing:
        variant = config.fixed_variant()
        return Assignment(
            variant, config.model_versions.get(variant, ""), config.weight_epoch, False, False
        )
    variant = rendezvous_variant(config.salt, unit_id, config.weights)
    logged = log(config, unit_id, variant) if log is not None else False
    return Assignment(
        variant, config.model_versions.get(variant, ""), config.weight_epoch, False, logged
    )
