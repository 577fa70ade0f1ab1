"""Drift on binned counts from SQL: quiet on an A/A stream over 50 consecutive windows, flags an
injected 0.2 sd shift of one feature (and the variant imbalance it causes), nothing else."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session

from abstats.analysis.drift import DriftConfig, run_drift
from abstats.db.models import Experiment
from abstats.errors import InvalidInput

from .conftest import T0, Events, make_experiment, minutes, write_events

METRICS = [{"key": "errors", "kind": "error_rate"}]


def window(rng: np.random.Generator, per_variant: int, shift: float = 0.0) -> Events:
    ev = Events()
    for variant, mu in (("control", 0.0), ("treatment", shift)):
        x = rng.normal(mu, 1.0, per_variant)
        plan = rng.choice(["gold", "silver", "bronze"], per_variant, p=[0.2, 0.3, 0.5])
        score = rng.beta(2, 5, per_variant)
        for i in range(per_variant):
            features: dict[str, Any] = {"x": float(x[i]), "plan": str(plan[i])}
            if rng.random() < 0.02:
                features = {"plan": str(plan[i])}  # a missing value lands in the null bin
            ev.predictions.append(
                {
                    "variant": variant,
                    "unit_id": uuid.uuid4().hex,
                    "request_id": None,
                    "ts": T0 + minutes(1),
                    "score": float(score[i]),
                    "features": features,
                }
            )
    return ev


def test_quiet_on_an_a_a_stream_over_50_windows(db_session: Session) -> None:
    rng = np.random.default_rng(11)
    experiment = make_experiment(db_session, metrics=METRICS)
    config = DriftConfig(reference_size=2000, window_min=1000)
    write_events(db_session, experiment, window(rng, 2000))  # the reference (control's first)
    run_drift(db_session, experiment.key, config=config, wait_seconds=1)
    flagged: list[str] = []
    checks_seen = 0
    smallest_p = 1.0
    for _ in range(50):
        write_events(db_session, experiment, window(rng, 500))
        checks = run_drift(db_session, experiment.key, config=config, wait_seconds=1)
        assert checks, "every window of 1,000 predictions is checked"
        checks_seen += len(checks)
        flagged += [f"{c.variant}:{c.target}" for c in checks if c.flagged]
        smallest_p = min([smallest_p, *[c.p_value_adjusted or 1.0 for c in checks]])
    targets = {c.target for c in checks}
    assert targets == {
        "score",
        "feature:x",
        "feature:plan",
        "balance:feature:x",
        "balance:feature:plan",
    }
    assert flagged == [], f"false alarms on an A/A stream: {flagged}"
    print(
        f"A/A: {checks_seen} checks over 50 windows, none flagged; smallest BH p {smallest_p:.3g}"
    )


def test_flags_a_0_2_sd_shift_in_one_feature(db_session: Session) -> None:
    rng = np.random.default_rng(12)
    experiment = make_experiment(db_session, metrics=METRICS)
    # PSI of a 0.2 sd normal shift is about 0.04, below the default warn level of 0.1 by design;
    # the experiment's drift settings lower it
    experiment.metadata_ = {"drift": {"psi_warn": 0.02, "reference_size": 5000, "window_min": 8000}}
    db_session.flush()
    write_events(db_session, experiment, window(rng, 5000))
    assert run_drift(db_session, experiment.key, wait_seconds=1) == []  # reference only
    results = []
    for _ in range(2):
        write_events(db_session, experiment, window(rng, 4000, shift=0.2))
        results.append(run_drift(db_session, experiment.key, wait_seconds=1))
    first, second = ({f"{c.variant}:{c.target}": c for c in r} for r in results)
    assert first["treatment:feature:x"].level in ("warn", "alert")
    assert not first["treatment:feature:x"].flagged  # one window is not enough
    assert second["treatment:feature:x"].flagged
    assert second["treatment:feature:x"].consecutive_windows == 2
    assert second["treatment:balance:feature:x"].flagged  # the randomisation check sees it too
    quiet = [k for k, c in second.items() if c.flagged and not k.endswith("feature:x")]
    assert quiet == [] and not second["control:feature:x"].flagged
    check = second["treatment:feature:x"]
    assert len(check.bin_labels) == len(check.current_counts) == len(check.reference_counts)
    assert check.bin_labels[-1] == "null" and check.current_counts[-1] > 0


def test_bad_drift_settings_say_what_to_fix(db_session: Session) -> None:
    experiment: Experiment = make_experiment(db_session, metrics=METRICS)
    experiment.metadata_ = {"drift": {"psi_warm": 0.1, "alpha": -1}}
    with pytest.raises(InvalidInput) as info:
        DriftConfig.for_experiment(experiment)
    assert "metadata.drift.psi_warm: unknown" in info.value.detail
    assert "metadata.drift.alpha: must be a positive number" in info.value.detail
