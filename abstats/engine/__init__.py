"""abstats.engine: where abstats judges. Pure: statistics in; snapshot, decision and words out.
No database, no HTTP (import-linter contracts in ``pyproject.toml``).

- ``specs``: the typed experiment (metrics, policy, ``Amount``), parsed once per run.
- ``summarize``: sufficient statistics per variant and weight epoch -> a ``SnapshotResult``.
- ``snapshot``: the snapshot model, the contract between analysis, control, reports and the API.
- ``rules``: the one rule table; ``decide`` (applied by the control service) and ``recommend``
  (the same table, applied to nothing) cannot disagree.
- ``ramp`` and ``bandit``: ramp positions and weight vectors; Thompson shares for every kind.
- ``plan``: units per variant and days to a decision before launch (``POST /v1/plan``,
  ``abstats plan``), and each primary metric's planned sample in the snapshot.
- ``segments``: per-segment effects of a metric (BH, Cochran's Q); reported, never decisive.
- ``words``: every number and sentence a person reads.

``docs/architecture.md`` shows where the engine sits between the SQL of ``abstats.analysis`` and
the edges (scheduler, API, CLI).
"""
