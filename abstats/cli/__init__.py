"""The ``abstats`` command line (typer). Output meant for scripts is plain text on stdout.

Each domain's commands live in a module of this package and register on ``app`` (or a sub-app)
when imported below.
"""

from __future__ import annotations

from abstats.cli import analysis as _analysis  # noqa: F401
from abstats.cli import control as _control  # noqa: F401
from abstats.cli import db as _db  # noqa: F401
from abstats.cli import demo as _demo  # noqa: F401
from abstats.cli import experiments as _experiments  # noqa: F401
from abstats.cli import ingest as _ingest  # noqa: F401
from abstats.cli import keys as _keys  # noqa: F401
from abstats.cli import plan as _plan  # noqa: F401
from abstats.cli import policy as _policy  # noqa: F401
from abstats.cli import report as _report  # noqa: F401
from abstats.cli import scheduler as _scheduler  # noqa: F401
from abstats.cli import serve as _serve  # noqa: F401
from abstats.cli.main import app, main

__all__ = ["app", "main"]
