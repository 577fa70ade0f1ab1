"""The builtin router: ``/assign`` reads the weight epochs itself, so there is nothing to call."""

from __future__ import annotations

from abstats.control.routers.base import RouterResult


class BuiltinRouter:
    name = "builtin"

    def apply(self, weights: dict[str, float]) -> RouterResult:
        return RouterResult(backend=self.name, sent={"weights": weights}, read_back=dict(weights))

    def read(self) -> dict[str, float] | None:
        return None
