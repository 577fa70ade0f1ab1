"""The router interface: apply a weight vector, read back what the router now does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from abstats.errors import RouterError


class PermanentRouterError(RouterError):
    """The router refused the change (e.g. ``nginx -t`` failed): retrying cannot help, so the
    outbox pauses the experiment at once instead of retrying."""


@dataclass(frozen=True)
class RouterResult:
    backend: str
    sent: dict[str, Any]  # what was sent (percentages, payload)
    read_back: dict[str, float] | None  # weights the router reports after the change
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "sent": self.sent,
            "read_back": self.read_back,
            **self.details,
        }


class Router(Protocol):
    name: str

    def apply(self, weights: dict[str, float]) -> RouterResult:
        """Make the router split traffic by ``weights``; raise RouterError when it cannot."""
        ...

    def read(self) -> dict[str, float] | None:
        """The weights the router currently applies (None: the backend cannot tell)."""
        ...
