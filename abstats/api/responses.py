"""JSON responses rendered with orjson (fast, handles datetimes and numpy scalars)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import JSONResponse


class JsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(
                content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
            )
        except TypeError:
            # orjson refuses integers beyond 64 bits; PostgreSQL's jsonb hands a stored 1e49
            # back as such an integer. The standard library writes them; this path is rare.
            return json.dumps(content, default=str, allow_nan=False).encode()
