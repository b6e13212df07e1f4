"""How many agent worker processes to start (SPEC §5), and why.

`auto` = max(1, min(agents, floor(usable CPUs), floor(usable memory x 0.5 /
max_rss_mb))). "Usable" is the smaller of what the host reports (psutil, CPU
affinity) and what the cgroup allows, because inside a container psutil sees
the whole host. The result carries every input and which one bound it, so
the boot log and `nexo status` can say why there are N workers.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from nexo_actors.errors import ConfigError

log = logging.getLogger(__name__)

MIB = 1024**2
GIB = 1024**3
# Workers may use at most this share of usable memory; the rest is for the
# main process, the sidecar, the browser and the page cache.
MEMORY_SHARE = 0.5
# cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages).
V1_NO_LIMIT = 2**60
CGROUP_ROOT = Path("/sys/fs/cgroup")
_CONFIG_FILE = "runtime.yaml"


@dataclass(frozen=True)
class CgroupLimits:
    """What the cgroup allows this process; None = no limit found."""

    version: int | None
    cpus: float | None
    memory_bytes: int | None


@dataclass(frozen=True)
class Sizing:
    """The chosen worker count with its inputs and the reasons for it."""

    processes: int
    agents: int
    usable_cpus: float
    usable_memory_bytes: int
    max_rss_mb: int
    setting: str
    reasons: list[str]

    def summary(self) -> str:
        """One line for the boot log and `nexo status`."""
        plural = "" if self.processes == 1 else "es"
        return f"{self.processes} worker process{plural} ({self.setting}: {', '.join(self.reasons)})"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _unparsable(path: Path, text: str) -> None:
    log.warning("ignoring cgroup file %s: cannot parse %r", path, text, extra={"path": str(path)})


def _v2_cpus(path: Path) -> float | None:
    text = _read(path)
    if text is None:
        return None
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
    except ValueError:
        _unparsable(path, text)
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v2_memory(path: Path) -> int | None:
    text = _read(path)
    if text is None or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        _unparsable(path, text)
        return None
    return value if value > 0 else None


def _v1_cpus(dirs: list[Path]) -> float | None:
    for d in dirs:
        quota_text = _read(d / "cpu.cfs_quota_us")
        period_text = _read(d / "cpu.cfs_period_us")
        if quota_text is None or period_text is None:
            continue
        try:
            quota, period = int(quota_text), int(period_text)
        except ValueError:
            _unparsable(d / "cpu.cfs_quota_us", f"{quota_text} / {period_text}")
            return None
        return quota / period if quota > 0 and period > 0 else None  # -1 = no limit
    return None


def _v1_memory(path: Path) -> int | None:
    value = _v2_memory(path)  # same format: one integer
    if value is None or value >= V1_NO_LIMIT or value > psutil.virtual_memory().total:
        return None
    return value


def read_cgroup_limits(root: Path = CGROUP_ROOT) -> CgroupLimits:
    """CPU and memory limits of the cgroup mounted at `root` (v2, else v1)."""
    if any((root / f).exists() for f in ("cgroup.controllers", "cpu.max", "memory.max")):
        return CgroupLimits(2, _v2_cpus(root / "cpu.max"), _v2_memory(root / "memory.max"))
    cpu_dirs = [root / d for d in ("cpu", "cpu,cpuacct", "cpuacct,cpu")]
    memory_dir = root / "memory"
    if memory_dir.is_dir() or any(d.is_dir() for d in cpu_dirs):
        return CgroupLimits(1, _v1_cpus(cpu_dirs), _v1_memory(memory_dir / "memory.limit_in_bytes"))
    return CgroupLimits(None, None, None)


def _host_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return psutil.cpu_count() or 1


def _parse_setting(setting: int | str) -> int | None:
    """None for auto, else the configured count (ConfigError if neither)."""
    if isinstance(setting, str) and setting.strip() == "auto":
        return None
    if isinstance(setting, str) and setting.strip().isdigit():
        setting = int(setting.strip())
    if isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        return setting
    raise ConfigError(_CONFIG_FILE, "agents.processes",
                      f"expected 'auto' or a whole number >= 1, got {setting!r}")


def size_workers(
    setting: int | str,
    agents: int,
    max_rss_mb: int,
    *,
    cgroup_root: Path = CGROUP_ROOT,
    host_cpus: int | None = None,
    host_memory_bytes: int | None = None,
) -> Sizing:
    """The number of worker processes for `agents` agents, with every reason.

    `setting` is `runtime.agents.processes` ("auto" or N). N is used exactly;
    auto follows the formula above. No agents means no workers either way.
    `host_cpus` / `host_memory_bytes` default to what this host reports.
    """
    configured = _parse_setting(setting)
    if max_rss_mb < 1:
        raise ConfigError(_CONFIG_FILE, "agents.max_rss_mb", f"must be >= 1, got {max_rss_mb}")
    if agents < 0:
        raise ValueError(f"agents must be >= 0, got {agents}")
    limits = read_cgroup_limits(cgroup_root)
    cpu_file = "cpu.max" if limits.version == 2 else "cpu.cfs_quota_us"
    memory_file = "memory.max" if limits.version == 2 else "memory.limit_in_bytes"

    cpus = float(host_cpus if host_cpus is not None else _host_cpus())
    cpu_source = "host"
    if limits.cpus is not None and limits.cpus < cpus:
        cpus, cpu_source = limits.cpus, f"cgroup {cpu_file}"
    memory = host_memory_bytes if host_memory_bytes is not None else psutil.virtual_memory().total
    memory_source = "host"
    if limits.memory_bytes is not None and limits.memory_bytes < memory:
        memory, memory_source = limits.memory_bytes, f"cgroup {memory_file}"

    by_cpu = math.floor(cpus)
    by_memory = math.floor(memory * MEMORY_SHARE / (max_rss_mb * MIB))
    reasons = [
        f"{agents} agent{'' if agents == 1 else 's'}",
        f"{cpus:.1f} usable CPUs ({cpu_source}) -> {by_cpu} by CPU",
        f"{memory / GIB:.1f} GiB usable memory ({memory_source}) -> {by_memory} by memory "
        f"at {max_rss_mb} MB/worker",
    ]
    candidates = [("agents", agents), ("CPUs", by_cpu), ("memory", by_memory)]
    binding, auto = min(candidates, key=lambda c: c[1])  # first of equals: agents, CPUs, memory

    if agents == 0:
        processes = 0
        reasons.append("no agents configured")
    elif configured is not None:
        processes = configured
        reasons.append(f"configured agents.processes = {configured} in {_CONFIG_FILE}"
                       f" (auto would choose {max(1, auto)})")
    else:
        processes = max(1, auto)
        floor_note = " (rounds down to 0; at least 1 worker)" if auto < 1 else ""
        reasons.append(f"bound by {binding}{floor_note}")
    return Sizing(
        processes=processes,
        agents=agents,
        usable_cpus=cpus,
        usable_memory_bytes=memory,
        max_rss_mb=max_rss_mb,
        setting="auto" if configured is None else str(configured),
        reasons=reasons,
    )
