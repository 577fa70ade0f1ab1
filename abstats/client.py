"""A small Python client for abstats.

    from abstats.client import Client

    with Client("http://localhost:8000", api_key="abs_...") as client:
        client.log_exposure("churn", "v2", unit_id="c-1")
        client.log_prediction("churn", "v2", unit_id="c-1", request_id="r-9", score=0.83,
                              latency_ms=12.5, features={"tenure": 12, "plan": "gold"})
        client.log_outcome("churn", unit_id="c-1", name="churned", value=1, request_id="r-9")
    # leaving the block flushes and stops the background thread

``log_*`` calls only enqueue: a background thread sends batches of up to ``batch_size`` events
every ``flush_interval`` seconds (sooner when a batch is full). Each event gets a ``message_id``
(a UUID) when it is enqueued, so resending a batch after a timeout or a 503 never counts an event
twice. Failed sends are retried with exponential backoff (honouring ``Retry-After``) on 503, 502,
504, 429 and connection errors, and never on other 4xx responses: those mean the request itself
is wrong and are reported through ``on_error`` and ``last_error``.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx

__all__ = ["ApiError", "Client", "ClientStats"]

_log = logging.getLogger("abstats.client")
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class ApiError(Exception):
    """A non-2xx answer that retrying cannot fix (or that persisted through every retry)."""

    def __init__(self, status: int, detail: str, body: Any = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.body = body


@dataclass
class ClientStats:
    batches: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0  # events in batches given up on (4xx, or retries exhausted)
    retries: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)  # the latest, at most 100


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


def _timestamp(value: datetime | str | float | None) -> str | float:
    if value is None:
        return datetime.now(UTC).isoformat()
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value


class Client:
    """Buffered event logging and thin REST helpers. Thread-safe."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_queue: int = 100_000,
        max_retries: int = 10,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 30.0,
        on_error: Callable[[ApiError, list[dict[str, Any]]], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.on_error = on_error
        self.stats = ClientStats()
        self.last_error: ApiError | None = None
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "abstats-python"},
            timeout=timeout,
            transport=transport,
        )
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="abstats-client", daemon=True)
        self._worker.start()

    # --- event logging ---------------------------------------------------------------------

    def log_exposure(
        self,
        experiment: str,
        variant: str,
        unit_id: str,
        *,
        timestamp: datetime | str | float | None = None,
        message_id: str | None = None,
    ) -> str:
        """Unit ``unit_id`` was routed to ``variant``. Returns the event's message_id."""
        return self._enqueue(
            {
                "type": "exposure",
                "experiment": experiment,
                "variant": variant,
                "unit_id": unit_id,
                "timestamp": _timestamp(timestamp),
            },
            message_id,
        )

    def log_prediction(
        self,
        experiment: str,
        variant: str,
        unit_id: str,
        *,
        request_id: str | None = None,
        score: float | None = None,
        label: float | None = None,
        value: float | None = None,
        latency_ms: float | None = None,
        error: bool = False,
        features: dict[str, float | int | str] | None = None,
        timestamp: datetime | str | float | None = None,
        message_id: str | None = None,
    ) -> str:
        """One model call. Returns the event's message_id."""
        event: dict[str, Any] = {
            "type": "prediction",
            "experiment": experiment,
            "variant": variant,
            "unit_id": unit_id,
            "timestamp": _timestamp(timestamp),
            "error": error,
        }
        for name, item in (
            ("request_id", request_id),
            ("score", score),
            ("label", label),
            ("value", value),
            ("latency_ms", latency_ms),
            ("features", features),
        ):
            if item is not None:
                event[name] = item
        return self._enqueue(event, message_id)

    def log_outcome(
        self,
        experiment: str,
        unit_id: str,
        name: str,
        value: float,
        *,
        request_id: str | None = None,
        timestamp: datetime | str | float | None = None,
        message_id: str | None = None,
    ) -> str:
        """Something observed for a unit (or one request). Returns the event's message_id."""
        event: dict[str, Any] = {
            "type": "outcome",
            "experiment": experiment,
            "unit_id": unit_id,
            "name": name,
            "value": value,
            "timestamp": _timestamp(timestamp),
        }
        if request_id is not None:
            event["request_id"] = request_id
        return self._enqueue(event, message_id)

    def _enqueue(self, event: dict[str, Any], message_id: str | None) -> str:
        if self._closed:
            raise RuntimeError("the client is closed")
        event["message_id"] = message_id or uuid.uuid4().hex
        self._queue.put(event)  # blocks when max_queue events are waiting (back-pressure)
        return str(event["message_id"])

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything logged so far; True when it was sent (or given up on) in time."""
        marker = _Flush()
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = 60.0) -> None:
        """Flush, stop the background thread and close connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._worker.join(timeout)
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self) -> None:
        buffer: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.flush_interval
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                item = None
            if isinstance(item, dict):
                buffer.append(item)
                if len(buffer) < self.batch_size:
                    continue
            if buffer:
                self._send_batch(buffer)
                buffer = []
            deadline = time.monotonic() + self.flush_interval
            if isinstance(item, _Flush):
                item.done.set()
            elif item is _STOP:
                return

    def _send_batch(self, events: list[dict[str, Any]]) -> None:
        try:
            result = self.post_events(events)
        except ApiError as exc:
            self.stats.failed += len(events)
            self.last_error = exc
            _log.error("abstats: %d events not stored: %s", len(events), exc)
            if self.on_error is not None:
                self.on_error(exc, events)
            return
        self.stats.batches += 1
        self.stats.accepted += int(result.get("accepted", 0))
        self.stats.duplicates += int(result.get("duplicates", 0))
        rejected = result.get("rejected") or []
        if rejected:
            self.stats.rejected += len({r.get("index") for r in rejected})
            self.stats.rejections = (self.stats.rejections + list(rejected))[-100:]
            _log.warning("abstats: %d event problem(s), first: %s", len(rejected), rejected[0])

    # --- REST ------------------------------------------------------------------------------

    def post_events(self, events: Iterable[dict[str, Any]], *, strict: bool = False) -> Any:
        """POST one batch now (with retries); returns ``{"accepted", "duplicates", "rejected"}``.
        Events without a message_id get one, so the retries are idempotent."""
        batch = [e if "message_id" in e else {**e, "message_id": uuid.uuid4().hex} for e in events]
        params = {"strict": "true"} if strict else None
        return self._request("POST", "/v1/events", json={"events": batch}, params=params)

    def create_experiment(self, spec: dict[str, Any]) -> Any:
        return self._request("POST", "/v1/experiments", json=spec)

    def get_experiment(self, key: str) -> Any:
        return self._request("GET", f"/v1/experiments/{key}")

    def find_experiment(self, key: str) -> Any:
        """The experiment, or None when no experiment has this key."""
        try:
            return self.get_experiment(key)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def start_experiment(self, key: str, *, reason: str | None = None) -> Any:
        """draft -> running (admin scope); returns the recorded decision."""
        body = {"reason": reason} if reason else None
        return self._request("POST", f"/v1/experiments/{key}/start", json=body)

    def decisions(self, key: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """The latest decisions of an experiment, newest first."""
        page = self._request("GET", f"/v1/experiments/{key}/decisions", params={"limit": limit})
        return list(page["data"])

    def assign_many(self, key: str, unit_ids: Iterable[str]) -> dict[str, str]:
        """Sticky assignment of several units: ``{unit_id: variant}`` (one ``/assign`` each)."""
        return {unit: self.assign(key, unit)["variant"] for unit in unit_ids}

    def assign(self, key: str, unit_id: str, *, target_variant: str | None = None) -> Any:
        """Sticky assignment: ``{"variant", "model_version", "weights_epoch"}``."""
        headers = {"X-Target-Variant": target_variant} if target_variant else None
        return self._request(
            "GET", f"/v1/experiments/{key}/assign", params={"unit_id": unit_id}, headers=headers
        )

    def run_analysis(self, key: str) -> Any:
        """Run the analysis and the policy's decision step now; returns snapshot and decision."""
        return self._request("POST", f"/v1/experiments/{key}/analysis")

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                error = ApiError(0, f"{type(exc).__name__}: {exc}")
            else:
                if response.status_code < 300:
                    return response.json() if response.content else None
                error = _api_error(response)
                if response.status_code not in RETRY_STATUSES:
                    raise error
                header = response.headers.get("retry-after", "")
                retry_after = float(header) if header.replace(".", "", 1).isdigit() else None
            if attempt >= self.max_retries:
                raise error
            delay = min(self.max_backoff, self.backoff * 2**attempt)
            delay = delay * (0.5 + random.random() / 2)  # jitter: spread retries of many clients
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.max_backoff))
            attempt += 1
            self.stats.retries += 1
            _log.info(
                "abstats: %s %s failed (%s); retry %d in %.1fs", method, path, error, attempt, delay
            )
            time.sleep(delay)


def _api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
        detail = body.get("detail") or response.reason_phrase
    except ValueError:
        body, detail = response.text, response.reason_phrase or response.text[:200]
    return ApiError(response.status_code, str(detail), body)
