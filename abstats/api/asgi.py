"""ASGI entry point for ``uvicorn abstats.api.asgi:app`` (multi-worker deployments)."""

from abstats.api.app import create_app

app = create_app()
