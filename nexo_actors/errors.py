"""Every error the runtime raises on purpose, in one tree.

    NexoError                      root; `str(err)` is the operator's message
    ├── ConfigError                one problem in one config file (file, path, detail)
    │   └── ConfigErrors           all problems of one load, reported together
    ├── PreflightError             the host is not fit to run (data dir, disk)
    ├── LockHeldError              another runtime owns the data dir
    ├── MessageDecodeError         bytes that are not a valid event / frame
    ├── BusError                   broker side
    │   ├── SubjectError           not a valid NATS subject / pattern
    │   ├── PayloadTooLargeError   over broker.limits.max_payload
    │   └── IntakePausedError      disk queue full: new work is refused, not dropped
    ├── StoreError                 broker.db cannot be opened / written
    │   └── DeadLetterNotFoundError
    ├── ControlError               the CLI cannot talk to the daemon
    │   ├── DaemonNotRunningError
    │   └── ControlBusyError       its accept backlog is full (retry)
    ├── SidecarError               the health/metrics server cannot start
    └── ExtensionError             an extension manifest, search path or id set is unusable
        ├── ManifestError          every problem of one plugin.toml
        ├── IdCollisionError       two manifests declare the same id
        └── SearchPathError        a search path exists but cannot be read

Each message names the file, field, path or port involved and says what the
operator should do next; callers print `str(err)` and exit, no traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class NexoError(Exception):
    """Root of every error the runtime raises deliberately."""


class ConfigError(NexoError):
    """One configuration problem, located by file and field path."""

    def __init__(self, file: str, path: str, detail: str) -> None:
        self.file = file
        self.path = path
        self.detail = detail
        where = f"{file}: {path}" if path else file
        super().__init__(f"{where}: {detail}")


class ConfigErrors(NexoError):
    """Every problem found while loading a configuration directory."""

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors: list[ConfigError] = list(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        n = len(self.errors)
        super().__init__(f"configuration is invalid ({n} error{'s' if n != 1 else ''}):\n{lines}")


class PreflightError(NexoError):
    """The host is not fit to run the runtime (data dir, free disk)."""


class LockHeldError(NexoError):
    """Another live runtime holds the data directory's lock."""

    def __init__(self, lock_path: str, pid: int, detail: str = "") -> None:
        self.lock_path = lock_path
        self.pid = pid
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"{lock_path} is held by a running nexo, pid {pid}{extra}; stop it "
            f"(nexo stop, or kill {pid}) or start without --no-takeover to replace it"
        )


class MessageDecodeError(NexoError):
    """Bytes that do not decode into the expected message type."""


class BusError(NexoError):
    """Broker-side failure."""


class SubjectError(BusError):
    """Not a valid NATS subject (or subscription pattern)."""


class PayloadTooLargeError(BusError):
    """An event bigger than `broker.limits.max_payload`."""

    def __init__(self, topic: str, size: int, limit: int) -> None:
        self.topic = topic
        self.size = size
        self.limit = limit
        super().__init__(
            f"event on {topic} is {size} bytes, over broker.limits.max_payload ({limit} bytes); "
            "send a smaller payload or raise the limit in broker.yaml (and the server's max_payload)"
        )


class IntakePausedError(BusError):
    """New inbound work refused because the disk queue is at `max_pending`."""


class StoreError(NexoError):
    """The queue database cannot be opened or written."""


class DeadLetterNotFoundError(StoreError):
    """`nexo dlq replay <id>` named an id that is not in dead_letters."""


class ControlError(NexoError):
    """The CLI could not complete a request to the running daemon."""


class DaemonNotRunningError(ControlError):
    """No daemon answers on the control socket."""


class ControlBusyError(ControlError):
    """The control socket's accept backlog is full: the daemon is busy, try again."""


class SidecarError(NexoError):
    """The health/metrics server could not start."""


class ExtensionError(NexoError):
    """Extension layer: a manifest, a search path or the set of ids is unusable."""


class ManifestError(ExtensionError):
    """Every problem of one `plugin.toml`; `problems` each name the file and key path."""

    def __init__(self, file: str, problems: Iterable[ConfigError], plugin_id: str | None = None) -> None:
        self.file = file
        self.problems: list[ConfigError] = list(problems)
        # The id the file declares (when it is a string), so listings can name it.
        self.plugin_id = plugin_id
        n = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{file} is invalid ({n} problem{'s' if n != 1 else ''}):\n{lines}")


class IdCollisionError(ExtensionError):
    """Two manifests declare the same id; only the first (by search path order) is kept."""

    def __init__(self, plugin_id: str, paths: list[str]) -> None:
        self.plugin_id = plugin_id
        self.paths = paths
        super().__init__(
            f"extension id '{plugin_id}' is declared by {len(paths)} manifests: {', '.join(paths)}; "
            f"ids must be unique: rename one, or remove it from extensions.search_paths "
            f"(only {paths[0]} is listed)"
        )


class SearchPathError(ExtensionError):
    """A search path (or a directory below it) exists but cannot be read."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: {detail}; extensions below it are not discovered")

