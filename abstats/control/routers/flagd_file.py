"""OpenFeature flagd flag file: one flag whose ``fractional`` targeting rule splits traffic.

The file is rewritten atomically (temporary file in the same directory, fsync, ``os.replace``),
so flagd's file watcher never reads half a file; other flags in the file are kept. Weights are
integer percentages (largest remainder), which is what flagd's fractional operator takes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from abstats.control.routers.base import RouterResult
from abstats.engine.ramp import largest_remainder_percentages
from abstats.errors import RouterError

SCHEMA = "https://flagd.dev/schema/v0/flags.json"


class FlagdFileRouter:
    name = "flagd_file"

    def __init__(
        self, path: Path, flag_key: str, variant_values: dict[str, Any] | None = None
    ) -> None:
        self.path = path
        self.flag_key = flag_key
        self.variant_values = variant_values or {}

    @classmethod
    def from_config(cls, config: dict[str, Any], *, experiment: str) -> FlagdFileRouter:
        return cls(
            Path(config["path"]),
            str(config.get("flag_key") or experiment),
            dict(config.get("variant_values") or {}),
        )

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"$schema": SCHEMA, "flags": {}}
        try:
            document = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise RouterError(f"flagd file {self.path} is not readable JSON: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("flags", {}), dict):
            raise RouterError(f"flagd file {self.path} has no 'flags' object")
        document.setdefault("flags", {})
        return document

    def flag_definition(self, weights: dict[str, float]) -> dict[str, Any]:
        percentages = largest_remainder_percentages(weights)
        default = max(percentages, key=lambda v: percentages[v])
        return {
            "state": "ENABLED",
            "variants": {v: self.variant_values.get(v, v) for v in weights},
            "defaultVariant": default,
            # shorthand form: buckets by flag key + targetingKey (the unit id)
            "targeting": {"fractional": [[v, p] for v, p in percentages.items()]},
        }

    def apply(self, weights: dict[str, float]) -> RouterResult:
        document = self._load()
        definition = self.flag_definition(weights)
        document["flags"][self.flag_key] = definition
        text = json.dumps(document, indent=2, sort_keys=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise RouterError(f"cannot write flagd file {self.path}: {exc}") from exc
        read_back = self.read()
        sent = {"flag": self.flag_key, "fractional": definition["targeting"]["fractional"]}
        return RouterResult(
            backend=self.name, sent=sent, read_back=read_back, details={"path": str(self.path)}
        )

    def read(self) -> dict[str, float] | None:
        flag = self._load()["flags"].get(self.flag_key)
        if not isinstance(flag, dict):
            return None
        rule = flag.get("targeting", {}).get("fractional")
        if not isinstance(rule, list):
            return None
        weights: dict[str, float] = {}
        for entry in rule:
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str):
                weights[entry[0]] = float(entry[1])
        return weights
