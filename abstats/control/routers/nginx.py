"""nginx: a ``split_clients`` include file, checked with ``nginx -t`` and applied with a reload.

The include (placed in the ``http`` context by the operator's nginx.conf) maps a hash of the
request key to an upstream per variant::

    split_clients "${http_x_unit_id}" $abstats_upstream {
        75% backend_v1;
        *   backend_v2;
    }

and the operator's ``proxy_pass http://$abstats_upstream;`` routes by it. Percentages are
integers by largest remainder; variants at 0% are left out. When ``nginx -t`` rejects the new
file, the old file is put back (so the running nginx and the next reload keep working) and a
``PermanentRouterError`` is raised: the outbox pauses the experiment with nginx's message.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from abstats.control.routers.base import PermanentRouterError, RouterResult
from abstats.engine.ramp import largest_remainder_percentages
from abstats.errors import RouterError

_ENTRY = re.compile(r"^\s*(\*|\d+(?:\.\d+)?%)\s+(\S+?)\s*;\s*$")


class NginxRouter:
    name = "nginx"

    def __init__(
        self,
        include_path: Path,
        upstreams: dict[str, str],
        *,
        key: str = "${http_x_unit_id}",
        variable: str = "$abstats_upstream",
        test_command: list[str] | None = None,
        reload_command: list[str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.include_path = include_path
        self.upstreams = upstreams
        self.key = key
        self.variable = variable
        self.test_command = test_command or ["nginx", "-t"]
        self.reload_command = reload_command or ["nginx", "-s", "reload"]
        self.timeout = timeout

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NginxRouter:
        return cls(
            Path(config["include_path"]),
            {str(k): str(v) for k, v in dict(config["upstreams"]).items()},
            key=str(config.get("key", "${http_x_unit_id}")),
            variable=str(config.get("variable", "$abstats_upstream")),
            test_command=list(config["test_command"]) if config.get("test_command") else None,
            reload_command=list(config["reload_command"]) if config.get("reload_command") else None,
        )

    def render(self, weights: dict[str, float]) -> str:
        unknown = sorted(set(weights) - set(self.upstreams))
        if unknown and any(weights[v] > 0 for v in unknown):
            raise PermanentRouterError(
                f"nginx router has no upstream for variant(s) {', '.join(unknown)}; "
                "add them to router.config.upstreams"
            )
        percentages = largest_remainder_percentages(weights)
        live = [(v, p) for v, p in percentages.items() if p > 0]
        lines = ["# managed by abstats: do not edit, changes are overwritten", ""]
        lines.append(f'split_clients "{self.key}" {self.variable} {{')
        for i, (variant, pct) in enumerate(live):
            share = "*" if i == len(live) - 1 else f"{pct}%"
            lines.append(f"    {share:<5} {self.upstreams[variant]};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _run(self, command: list[str], what: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                command, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RouterError(f"nginx {what} ({' '.join(command)}) could not run: {exc}") from exc

    def _write(self, text: str) -> None:
        self.include_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.include_path.name}.", dir=self.include_path.parent
        )
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.include_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _restore(self, old: str | None) -> None:
        if old is None:
            self.include_path.unlink(missing_ok=True)
        else:
            self._write(old)

    def apply(self, weights: dict[str, float]) -> RouterResult:
        text = self.render(weights)
        old = self.include_path.read_text() if self.include_path.exists() else None
        self._write(text)
        test = self._run(self.test_command, "config test")
        if test.returncode != 0:
            self._restore(old)
            message = (test.stderr or test.stdout).strip()
            raise PermanentRouterError(
                f"nginx -t rejected the new split ({self.include_path}); the previous file was "
                f"restored and nginx keeps its current config. nginx said: {message}"
            )
        reload = self._run(self.reload_command, "reload")
        if reload.returncode != 0:
            self._restore(old)
            raise RouterError(
                f"nginx reload failed ({' '.join(self.reload_command)}): "
                f"{(reload.stderr or reload.stdout).strip()}"
            )
        return RouterResult(
            backend=self.name,
            sent={"percentages": largest_remainder_percentages(weights)},
            read_back=self.read(),
            details={"include_path": str(self.include_path)},
        )

    def read(self) -> dict[str, float] | None:
        if not self.include_path.exists():
            return None
        by_upstream = {u: v for v, u in self.upstreams.items()}
        weights: dict[str, float] = dict.fromkeys(self.upstreams, 0.0)
        used = 0.0
        for line in self.include_path.read_text().splitlines():
            match = _ENTRY.match(line)
            if not match or match.group(2) not in by_upstream:
                continue
            share, upstream = match.groups()
            pct = 100.0 - used if share == "*" else float(share[:-1])
            used += pct
            weights[by_upstream[upstream]] = pct
        return weights
