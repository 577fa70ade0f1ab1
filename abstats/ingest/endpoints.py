"""REST: ``POST /v1/events`` (docs/events.md).

The body is read as a stream and refused with 413 as soon as it passes ``max_body_bytes`` (before
the rest is read); gzip bodies are limited after decompression too. Validation and the write run
in a worker thread in the request's transaction, which is committed before the 200 is sent.
"""

from __future__ import annotations

import zlib
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from abstats.config import Settings, get_settings
from abstats.deps import IngestKey, SessionDep
from abstats.errors import BadRequest, PayloadTooLarge
from abstats.ingest import cloudevents, service

router = APIRouter(prefix="/v1", tags=["events"])

NDJSON_TYPES = (
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
)


async def read_body(request: Request, settings: Settings) -> bytes:
    """The request body, at most ``max_body_bytes`` as sent and after gzip decompression."""
    limit = settings.max_body_bytes
    too_large = (
        f"The body is larger than {limit} bytes (ABSTATS_MAX_BODY_BYTES); send smaller batches."
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(too_large)
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise BadRequest(
            f"Content-Encoding {encoding!r} is not supported; send gzip or an uncompressed body."
        )
    return gunzip(body, limit)


def gunzip(body: bytes, limit: int) -> bytes:
    """Every member of a gzip body (RFC 1952 allows several, concatenated), at most ``limit``
    bytes in all; bytes after the last member that are not another member are refused."""
    too_large = (
        f"The body is larger than {limit} bytes once decompressed (ABSTATS_MAX_BODY_BYTES); "
        "send smaller batches."
    )
    data = bytearray()
    rest = body
    members = 0
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data += inflater.decompress(rest, limit + 1 - len(data))
        except zlib.error as exc:
            if members:
                raise BadRequest(
                    f"The body has bytes after gzip member {members} that are not gzip ({exc})."
                ) from None
            raise BadRequest(f"The body is not valid gzip ({exc}).") from None
        if len(data) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(too_large)
        if not inflater.eof:
            raise BadRequest("The gzip body is truncated.")
        members += 1
        rest = inflater.unused_data
        if not rest:
            return bytes(data)


def _ingest(session: SessionDep, body: bytes, ndjson: bool, strict: bool) -> dict[str, Any]:
    settings = get_settings()
    events = service.parse_events(body, ndjson=ndjson, settings=settings)
    result = service.ingest_events(session, events, strict=strict, settings=settings)
    session.commit()  # a 200 means the accepted events are durable
    return result.as_dict()


@router.post(
    "/events",
    responses={
        400: {"description": 'The body is not {"events": [...]}'},
        413: {"description": "Past the body or batch limit"},
        422: {"description": "strict=true and at least one event is invalid"},
        503: {"description": "The database is unreachable; retry after Retry-After seconds"},
    },
)
async def post_events(
    request: Request,
    _: IngestKey,
    session: SessionDep,
    strict: Annotated[
        bool, Query(description="All-or-nothing: any invalid event fails the batch with 422.")
    ] = False,
) -> dict[str, Any]:
    """Store a batch of exposures, predictions and outcomes.

    Body: ``{"events": [...]}``, or one event per line with ``Content-Type: application/x-ndjson``;
    optionally ``Content-Encoding: gzip``. Response: ``{"accepted", "duplicates", "rejected"}``.
    """
    settings = get_settings()
    body = await read_body(request, settings)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    ndjson = content_type in NDJSON_TYPES
    return await run_in_threadpool(_ingest, session, body, ndjson, strict)


def _ingest_cloudevents(
    session: SessionDep, headers: dict[str, str], body: bytes
) -> dict[str, Any]:
    settings = get_settings()
    events = cloudevents.parse_http(headers, body, settings)
    result = cloudevents.ingest_cloudevents(session, events, settings=settings)
    session.commit()  # a 200 means the halves and any paired prediction are durable
    return result.as_dict()


@router.post(
    "/cloudevents",
    tags=["events"],
    responses={
        400: {"description": "Not a CloudEvent (binary, structured or batch mode)"},
        413: {"description": "Past the body or batch limit"},
        422: {"description": "Not an inference event, or no experiment maps its endpoint"},
        503: {"description": "The database is unreachable; retry after Retry-After seconds"},
    },
)
async def post_cloudevents(request: Request, _: IngestKey, session: SessionDep) -> dict[str, Any]:
    """Inference-logger CloudEvents (KServe ``logger``): request and response events of each
    inference, paired by ``ce-id`` into one prediction of the variant that the endpoint maps to
    (the experiment's ``integrations.cloudevents.sources``). Binary mode (``ce-*`` headers),
    structured mode (``application/cloudevents+json``) or a batch
    (``application/cloudevents-batch+json``). Idempotent on the CloudEvent id.

    Response: ``{"accepted", "duplicates", "pending"}`` (pending: halves waiting for the other).
    """
    body = await read_body(request, get_settings())
    headers = dict(request.headers.items())
    return await run_in_threadpool(_ingest_cloudevents, session, headers, body)
