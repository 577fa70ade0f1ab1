"""``/docs``: Swagger UI served from this server. The assets come from the ``swagger-ui-py``
wheel (Swagger UI 5, which reads FastAPI's OpenAPI 3.1); nothing is loaded from a CDN, so the
page works offline."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from abstats.errors import NotFound

router = APIRouter(include_in_schema=False)
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


@lru_cache(maxsize=1)
def assets_dir() -> Path:
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: pip install swagger-ui-py")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@router.get("/docs")
def docs() -> HTMLResponse:
    response = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="abstats API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
    )
    # Swagger UI runs one inline script (its start-up); everything else is this server's
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'"
    )
    return response


@router.get("/docs/assets/{name}")
def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise NotFound(f"No such asset: {name}.")
    return FileResponse(
        assets_dir() / name, media_type=ASSETS[name], headers={"Cache-Control": "max-age=86400"}
    )
