"""A generic webhook router: POST the new weights (signed JSON) to the operator's endpoint; an
optional ``read_url`` answers ``{"weights": {...}}`` for the read-back."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from abstats.control.routers.base import RouterResult
from abstats.control.signing import SIGNATURE_HEADER, sign
from abstats.engine.ramp import largest_remainder_percentages
from abstats.errors import RouterError
from abstats.logging import get_logger

_log = get_logger(__name__)


class WebhookRouter:
    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        experiment: str,
        secret: str | None = None,
        read_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.experiment = experiment
        self.secret = secret
        self.read_url = read_url
        self.timeout = timeout

    @classmethod
    def from_config(cls, config: dict[str, Any], *, experiment: str) -> WebhookRouter:
        return cls(
            str(config["url"]),
            experiment=experiment,
            secret=config.get("secret"),
            read_url=config.get("read_url"),
        )

    def apply(self, weights: dict[str, float]) -> RouterResult:
        payload = {
            "experiment": self.experiment,
            "weights": weights,
            "percentages": largest_remainder_percentages(weights),
        }
        body = orjson.dumps(payload)
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(body, self.secret)
        try:
            response = httpx.post(self.url, content=body, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise RouterError(f"webhook router {self.url} unreachable: {exc}") from exc
        if response.status_code >= 300:
            # the response body stays in the server's log: decision reasons are read-scope data
            _log.warning(
                "webhook router refused",
                url=self.url,
                status=response.status_code,
                body=response.text[:500],
            )
            raise RouterError(f"webhook router {self.url} answered {response.status_code}")
        return RouterResult(
            backend=self.name,
            sent=payload,
            read_back=self.read(),
            details={"status_code": response.status_code},
        )

    def read(self) -> dict[str, float] | None:
        if not self.read_url:
            return None
        try:
            response = httpx.get(self.read_url, timeout=self.timeout)
            response.raise_for_status()
            weights = response.json()["weights"]
            return {str(k): float(v) for k, v in weights.items()}
        except httpx.HTTPStatusError as exc:
            raise RouterError(
                f"webhook router read {self.read_url} answered {exc.response.status_code}"
            ) from exc
        except httpx.HTTPError as exc:
            raise RouterError(f"webhook router read {self.read_url} failed: {exc}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # not the body itself: it could be anything the host answers
            raise RouterError(
                f'webhook router read {self.read_url} did not answer {{"weights": {{...}}}} '
                f"({type(exc).__name__})"
            ) from exc
