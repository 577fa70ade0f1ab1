"""What an experiment's router and notifications may touch: only what the operator configured.

An admin key chooses a router backend and its settings, but every file, command and host comes
from the operator's configuration (``abstats.config``, README section Security):

- ``nginx``: the include file is a ``*.conf`` name in ``ABSTATS_NGINX_INCLUDE_DIR``; the test and
  reload commands are ``ABSTATS_NGINX_TEST_COMMAND``/``ABSTATS_NGINX_RELOAD_COMMAND`` (the API
  cannot name a command); upstream names, the hash key and the variable follow a strict grammar
  because they are written into nginx's configuration.
- ``flagd_file``: the flag file is a ``*.json`` name in ``ABSTATS_FLAGD_DIR``.
- ``webhook``: ``url`` and ``read_url`` are http(s) URLs to a host in
  ``ABSTATS_WEBHOOK_ALLOWED_HOSTS``.
- ``sagemaker``: ``endpoint_url`` (optional; AWS's own endpoint without it) to a host in
  ``ABSTATS_SAGEMAKER_ALLOWED_HOSTS``; names and region by AWS's grammar.
- notifications: ``webhook_url`` to a host in ``ABSTATS_NOTIFICATION_ALLOWED_HOSTS``.

``router_problems`` runs when an experiment is created (422 naming the field and the setting)
and again before every router call (a target the operator has since withdrawn is refused then).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from abstats.config import Settings
from abstats.errors import FieldProblem

FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NGINX_UPSTREAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(?::[0-9]{1,5})?")
NGINX_VARIABLE = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]{0,63}")
# the split_clients key: variables ($name or ${name}) and plain characters, inside double quotes
NGINX_KEY = re.compile(
    r"(?:\$\{[A-Za-z_][A-Za-z0-9_]{0,63}\}|\$[A-Za-z_][A-Za-z0-9_]{0,63}|[A-Za-z0-9_.:/-]){1,200}"
)
FLAG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
AWS_NAME = re.compile(r"[a-zA-Z0-9](?:-*[a-zA-Z0-9]){0,62}")
AWS_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}")

ROUTER_FIELDS: dict[str, set[str]] = {
    "builtin": set(),
    "flagd_file": {"path", "flag_key", "variant_values"},
    "nginx": {"include_path", "upstreams", "key", "variable"},
    "sagemaker": {"endpoint_name", "region", "variant_names", "endpoint_url"},
    "webhook": {"url", "secret", "read_url"},
}
SECRET_FIELDS = {"secret"}
OPERATOR_FIELDS = {
    "test_command": "ABSTATS_NGINX_TEST_COMMAND",
    "reload_command": "ABSTATS_NGINX_RELOAD_COMMAND",
}


def url_problem(value: Any, allowed: list[str], setting: str) -> str | None:
    """What is wrong with ``value`` as a URL to one of the ``allowed`` hosts, or None."""
    if not isinstance(value, str) or len(value) > 2000:
        return "must be an http(s) URL of at most 2000 characters"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http:// or https:// URL, got scheme {parts.scheme or 'none'!r}"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@); use the secret field"
    host = parts.hostname.lower()
    port = port or (443 if parts.scheme == "https" else 80)
    if host in allowed or f"{host}:{port}" in allowed:
        return None
    listed = ", ".join(allowed) if allowed else "none"
    return (
        f"host {host}:{port} is not allowed; the operator allows hosts with {setting} "
        f"(now: {listed})"
    )


def _file_problem(value: Any, directory: Path | None, suffix: str, setting: str) -> str | None:
    if directory is None:
        return f"no {suffix} files may be written: the operator has not set {setting}"
    if not isinstance(value, str):
        return "must be a file name (string)"
    path = Path(value)
    name = path.name
    if not FILE_NAME.fullmatch(name) or not name.endswith(suffix):
        return f"the file name must be letters, digits, '.', '_', '-' and end in {suffix}"
    base = Path(directory).resolve()
    if (path.is_absolute() or len(path.parts) > 1) and path.parent.resolve() != base:
        return f"must be a file directly in {base} ({setting})"
    return None


def resolve_file(value: str, directory: Path | None) -> Path:
    """The file a checked ``path``/``include_path`` names: always inside ``directory``."""
    assert directory is not None
    return Path(directory).resolve() / Path(value).name


def router_problems(backend: str, config: dict[str, Any], settings: Settings) -> list[FieldProblem]:
    problems: list[FieldProblem] = []

    def problem(name: str, message: str) -> None:
        problems.append(FieldProblem(f"router.config.{name}", message))

    allowed_fields = ROUTER_FIELDS.get(backend, set())
    for name in sorted(set(config) - allowed_fields):
        if name in OPERATOR_FIELDS and backend == "nginx":
            problem(name, f"is set by the operator ({OPERATOR_FIELDS[name]}), not through the API")
        else:
            known = ", ".join(sorted(allowed_fields)) or "none"
            problem(name, f"is not a setting of the {backend} router (settings: {known})")

    def required(name: str) -> bool:
        if config.get(name) in (None, ""):
            problem(name, f"required by the {backend} router")
            return False
        return True

    if backend == "nginx":
        if required("include_path"):
            message = _file_problem(
                config["include_path"],
                settings.nginx_include_dir,
                ".conf",
                "ABSTATS_NGINX_INCLUDE_DIR",
            )
            if message:
                problem("include_path", message)
        upstreams = config.get("upstreams")
        if required("upstreams"):
            if not isinstance(upstreams, dict) or not upstreams:
                problem("upstreams", "must be an object {variant: upstream name}")
            else:
                for variant, upstream in upstreams.items():
                    if not isinstance(upstream, str) or not NGINX_UPSTREAM.fullmatch(upstream):
                        problem(
                            f"upstreams.{variant}",
                            "an upstream name is letters, digits, '_', '.', '-' (and an "
                            "optional :port); nothing else is written into nginx's config",
                        )
        key = config.get("key", "${http_x_unit_id}")
        if not isinstance(key, str) or not NGINX_KEY.fullmatch(key):
            problem(
                "key",
                "must be nginx variables ($name or ${name}) and letters, digits, '_.:/-', at "
                "most 200 characters, e.g. ${http_x_unit_id}",
            )
        variable = config.get("variable", "$abstats_upstream")
        if not isinstance(variable, str) or not NGINX_VARIABLE.fullmatch(variable):
            problem("variable", "must be one nginx variable name, e.g. $abstats_upstream")
    elif backend == "flagd_file":
        if required("path"):
            message = _file_problem(
                config["path"], settings.flagd_dir, ".json", "ABSTATS_FLAGD_DIR"
            )
            if message:
                problem("path", message)
        flag_key = config.get("flag_key")
        if flag_key is not None and (
            not isinstance(flag_key, str) or not FLAG_KEY.fullmatch(flag_key)
        ):
            problem("flag_key", "letters, digits, '.', '_', '-', at most 128 characters")
        values = config.get("variant_values")
        if values is not None and not isinstance(values, dict):
            problem("variant_values", "must be an object {variant: flag value}")
    elif backend == "webhook":
        for name in ("url", "read_url"):
            if name == "url" and not required(name):
                continue
            if config.get(name) is not None:
                message = url_problem(
                    config[name], settings.webhook_allowed_hosts, "ABSTATS_WEBHOOK_ALLOWED_HOSTS"
                )
                if message:
                    problem(name, message)
        secret = config.get("secret")
        if secret is not None and (not isinstance(secret, str) or len(secret) > 500):
            problem("secret", "must be a string of at most 500 characters")
    elif backend == "sagemaker":
        if required("endpoint_name") and not (
            isinstance(config["endpoint_name"], str) and AWS_NAME.fullmatch(config["endpoint_name"])
        ):
            problem("endpoint_name", "must be a SageMaker endpoint name (letters, digits, '-')")
        region = config.get("region", "us-east-1")
        if not isinstance(region, str) or not AWS_REGION.fullmatch(region):
            problem("region", "must be an AWS region, e.g. eu-west-1")
        names = config.get("variant_names")
        if names is not None:
            if not isinstance(names, dict):
                problem("variant_names", "must be an object {variant: production variant name}")
            else:
                for variant, name in names.items():
                    if not isinstance(name, str) or not AWS_NAME.fullmatch(name):
                        problem(f"variant_names.{variant}", "must be a production variant name")
        if config.get("endpoint_url") is not None:
            message = url_problem(
                config["endpoint_url"],
                settings.sagemaker_allowed_hosts,
                "ABSTATS_SAGEMAKER_ALLOWED_HOSTS",
            )
            if message:
                problem("endpoint_url", message)
    return problems


def notification_problems(webhook_url: str | None, settings: Settings) -> list[FieldProblem]:
    if webhook_url is None:
        return []
    message = url_problem(
        webhook_url, settings.notification_allowed_hosts, "ABSTATS_NOTIFICATION_ALLOWED_HOSTS"
    )
    return [FieldProblem("notifications.webhook_url", message)] if message else []


def redact_router(router: dict[str, Any]) -> dict[str, Any]:
    """The router as readers see it: secrets replaced by whether they are set."""
    config = dict(router.get("config") or {})
    for name in SECRET_FIELDS & set(config):
        config[f"{name}_set"] = bool(config.pop(name))
    return {**router, "config": config}


def redact_notifications(notifications: dict[str, Any]) -> dict[str, Any]:
    """Notifications as readers see them: the webhook URL is a secret for Slack-style hooks (the
    path is the credential), so only its host is shown."""
    if not notifications:
        return {}
    url = notifications.get("webhook_url")
    host = None
    if isinstance(url, str):
        try:
            host = urlsplit(url).hostname
        except ValueError:
            host = None
    return {
        "webhook_url_set": bool(url),
        "webhook_host": host,
        "secret_set": bool(notifications.get("secret")),
    }
