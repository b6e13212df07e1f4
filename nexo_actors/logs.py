"""Logging setup: stderr, JSON lines in production, level from the environment.

`AGENT_ENV=production|prod` gives one JSON object per line; otherwise a short
human format. `LOG_LEVEL` picks the level and also takes `RUST_LOG`-style
values (`info`, `warn`, `trace`, `nexo=debug,info`); `RUST_LOG` itself is read
when `LOG_LEVEL` is unset. Structured fields go in `extra=` and appear as
`key=value` (text) or keys (JSON). Every line passes through a scrubber that
masks resolved secrets, so a value that slips into a message is never written.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping

from nexo_actors.config.redact import scrub

_RUST_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}
# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

_secrets_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()


def register_secrets(values: Iterable[str]) -> None:
    """Values the log scrubber must never let through (resolved `${file:...}`)."""
    global _secrets
    with _secrets_lock:
        _secrets = _secrets | frozenset(v for v in values if v)


def parse_level(env: Mapping[str, str]) -> int:
    """The root level from LOG_LEVEL (else RUST_LOG); INFO when neither names one."""
    raw = env.get("LOG_LEVEL") or env.get("RUST_LOG") or "info"
    # RUST_LOG style: comma-separated directives. A `nexo=LEVEL` directive wins
    # wherever it stands (`info,nexo=debug` means debug for us, as in
    # env_logger); otherwise the last bare level is the default.
    ours: int | None = None
    default: int | None = None
    for directive in raw.split(","):
        directive = directive.strip().lower()
        if "=" in directive:
            target, _, level = directive.partition("=")
            if target.strip() in ("nexo", "nexo_actors") and level.strip() in _RUST_LEVELS:
                ours = _RUST_LEVELS[level.strip()]
        elif directive in _RUST_LEVELS:
            default = _RUST_LEVELS[directive]
    if ours is not None:
        return ours
    return default if default is not None else logging.INFO


def is_production(env: Mapping[str, str]) -> bool:
    return env.get("AGENT_ENV", "").strip().lower() in ("production", "prod")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        secrets = _secrets
        doc: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": scrub(record.getMessage(), secrets),
        }
        # Values are scrubbed before encoding: json.dumps escapes quotes and
        # backslashes, so a secret holding one would no longer match afterwards.
        for key, value in _fields(record).items():
            if isinstance(value, str):
                doc[key] = scrub(value, secrets)
            elif isinstance(value, int | float | bool | type(None)):
                doc[key] = value
            else:
                doc[key] = scrub(str(value), secrets)
        if record.exc_info:
            doc["exc"] = scrub(self.formatException(record.exc_info), secrets)
        return json.dumps(doc, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        ms = int(record.msecs)
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{stamp}.{ms:03d} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extra:
            line += f" {extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line, _secrets)


def setup_logging(env: Mapping[str, str] | None = None) -> None:
    """Configure the root logger once per process (the daemon, a worker, the sidecar)."""
    env = os.environ if env is None else env
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if is_production(env) else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_level(env))
    # Third-party chatter stays at warning unless we debug.
    for noisy in ("pykka", "asyncio", "nats", "websockets", "pyppeteer"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
