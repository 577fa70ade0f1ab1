"""Two real model versions, trained like the SageMaker A/B example: the same kind of task,
different training subsets. The dataset ships inside scikit-learn (``load_digits``), so nothing is
downloaded: the task is "is this handwritten digit 5 or more?" (a balanced binary label).

- ``v1`` (control): a logistic regression trained on a small early sample (80 images).
- ``v2`` (candidate): gradient-boosted trees trained on the whole training half.

Scores, labels, accuracy, F1 and AUC in the demo are therefore real, and the candidate is truly
better. Latency and errors are simulated per scenario (see ``Scenario``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ModelVersion:
    key: str
    model_version: str
    metadata: dict[str, Any]
    model: Any
    latency_median_ms: float
    error_rate: float

    def predict_scores(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(features)[:, 1], dtype=float)


@dataclass(frozen=True)
class Scenario:
    """What the candidate does differently in production."""

    name: str
    description: str
    candidate_latency_factor: float
    candidate_error_rate: float


SCENARIOS = {
    "promote": Scenario(
        "promote",
        "v2 is more accurate and as fast: abstats ramps it up and promotes it.",
        candidate_latency_factor=0.97,
        candidate_error_rate=0.002,
    ),
    "regression": Scenario(
        "regression",
        "v2 is more accurate but 60% slower: the p95 latency guardrail rolls it back.",
        candidate_latency_factor=1.6,
        candidate_error_rate=0.002,
    ),
}


@dataclass(frozen=True)
class DemoData:
    features: np.ndarray  # the serving pool: the test half of the dataset
    labels: np.ndarray
    models: tuple[ModelVersion, ModelVersion]


def train_models(scenario: Scenario, *, seed: int = 0) -> DemoData:
    try:
        from sklearn.datasets import load_digits
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - the demo extra installs it
        raise SystemExit(
            "The demo needs scikit-learn: pip install 'abstats[demo]' (make demo does)."
        ) from exc

    features, digits = load_digits(return_X_y=True)
    labels = (digits >= 5).astype(int)
    x_train, x_serve, y_train, y_serve = train_test_split(
        features, labels, test_size=0.5, random_state=seed, stratify=labels
    )
    rng = np.random.default_rng(seed + 1)
    small = rng.choice(len(x_train), size=80, replace=False)
    v1 = LogisticRegression(max_iter=3000).fit(x_train[small], y_train[small])
    v2 = HistGradientBoostingClassifier(random_state=seed).fit(x_train, y_train)
    base_latency = 20.0
    return DemoData(
        features=x_serve,
        labels=y_serve,
        models=(
            ModelVersion(
                "v1",
                "digits-logreg-2026-10",
                {
                    "framework": "scikit-learn",
                    "algorithm": "LogisticRegression",
                    "training_rows": 80,
                    "artifact": "s3://models/digits/logreg-2026-10.joblib",
                },
                v1,
                base_latency,
                0.002,
            ),
            ModelVersion(
                "v2",
                "digits-hgb-2026-11",
                {
                    "framework": "scikit-learn",
                    "algorithm": "HistGradientBoostingClassifier",
                    "training_rows": len(x_train),
                    "artifact": "s3://models/digits/hgb-2026-11.joblib",
                },
                v2,
                base_latency * scenario.candidate_latency_factor,
                scenario.candidate_error_rate,
            ),
        ),
    )
