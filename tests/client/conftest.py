from tests.ingest.conftest import LiveServer, live_server

__all__ = ["LiveServer", "live_server"]
