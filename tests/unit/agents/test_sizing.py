"""Worker process count from agents, CPUs and memory, seen through the cgroup (SPEC §5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexo_actors.agents.sizing import (
    CgroupLimits,
    read_cgroup_limits,
    size_workers,
)
from nexo_actors.errors import ConfigError

MIB = 1024**2
GIB = 1024**3
# A big host, so that only the cgroup files decide unless a test says otherwise.
HOST = {"host_cpus": 32, "host_memory_bytes": 256 * GIB}


def cgroup_v2(root: Path, cpu_max: str = "max 100000", memory_max: str = "max") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cpu.max").write_text(cpu_max + "\n")
    (root / "memory.max").write_text(memory_max + "\n")
    return root


def cgroup_v1(root: Path, quota: int, period: int = 100_000, memory: int = 2**63 - 4096,
              cpu_dir: str = "cpu,cpuacct") -> Path:
    (root / cpu_dir).mkdir(parents=True)
    (root / cpu_dir / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / cpu_dir / "cpu.cfs_period_us").write_text(f"{period}\n")
    (root / "memory").mkdir()
    (root / "memory" / "memory.limit_in_bytes").write_text(f"{memory}\n")
    return root


# --- reading the cgroup -------------------------------------------------------


def test_v2_limits_are_read(tmp_path: Path) -> None:
    root = cgroup_v2(tmp_path, "150000 100000", str(512 * MIB))
    assert read_cgroup_limits(root) == CgroupLimits(version=2, cpus=1.5, memory_bytes=512 * MIB)


def test_v2_max_means_no_limit(tmp_path: Path) -> None:
    assert read_cgroup_limits(cgroup_v2(tmp_path)) == CgroupLimits(2, None, None)


def test_v1_limits_are_read(tmp_path: Path) -> None:
    root = cgroup_v1(tmp_path, quota=250_000, memory=1 * GIB)
    assert read_cgroup_limits(root) == CgroupLimits(version=1, cpus=2.5, memory_bytes=1 * GIB)


def test_v1_unlimited_values_mean_no_limit(tmp_path: Path) -> None:
    root = cgroup_v1(tmp_path, quota=-1, memory=9223372036854771712, cpu_dir="cpu")
    assert read_cgroup_limits(root) == CgroupLimits(1, None, None)


def test_no_cgroup_found(tmp_path: Path) -> None:
    assert read_cgroup_limits(tmp_path / "absent") == CgroupLimits(None, None, None)


def test_unparsable_cgroup_file_is_ignored(tmp_path: Path) -> None:
    root = cgroup_v2(tmp_path, "lots 100000", "plenty")
    assert read_cgroup_limits(root) == CgroupLimits(2, None, None)


# --- sizing -------------------------------------------------------------------


def test_one_cpu_and_512_mib_cgroup_gives_one_process(tmp_path: Path) -> None:
    root = cgroup_v2(tmp_path, "100000 100000", str(512 * MIB))
    sizing = size_workers("auto", 4, 512, cgroup_root=root, **HOST)
    assert sizing.processes == 1
    assert sizing.usable_cpus == 1.0
    assert sizing.usable_memory_bytes == 512 * MIB
    # 512 MiB x 0.5 / 512 MB = 0 by memory: the floor of one worker applies.
    assert sizing.reasons[-1] == "bound by memory (rounds down to 0; at least 1 worker)"


def test_fractional_cpu_quota_rounds_down(tmp_path: Path) -> None:
    root = cgroup_v2(tmp_path, "150000 100000")
    sizing = size_workers("auto", 4, 512, cgroup_root=root, **HOST)
    assert sizing.processes == 1
    assert sizing.usable_cpus == 1.5
    assert "1.5 usable CPUs (cgroup cpu.max) -> 1 by CPU" in sizing.reasons
    assert sizing.reasons[-1] == "bound by CPUs"


def test_without_cgroup_limits_the_host_values_bind(tmp_path: Path) -> None:
    root = cgroup_v2(tmp_path)
    sizing = size_workers("auto", 8, 512, cgroup_root=root, host_cpus=3, host_memory_bytes=64 * GIB)
    assert sizing.processes == 3
    assert sizing.usable_cpus == 3.0
    assert sizing.usable_memory_bytes == 64 * GIB
    assert "3.0 usable CPUs (host) -> 3 by CPU" in sizing.reasons
    assert sizing.reasons[-1] == "bound by CPUs"


def test_a_cgroup_limit_above_the_host_does_not_bind(tmp_path: Path) -> None:
    root = cgroup_v2(tmp_path, "800000 100000", str(128 * GIB))
    sizing = size_workers("auto", 8, 512, cgroup_root=root, host_cpus=2, host_memory_bytes=8 * GIB)
    assert sizing.usable_cpus == 2.0
    assert sizing.usable_memory_bytes == 8 * GIB


def test_v1_cgroup_limits_bind(tmp_path: Path) -> None:
    root = cgroup_v1(tmp_path, quota=200_000, memory=4 * GIB)
    sizing = size_workers("auto", 8, 256, cgroup_root=root, **HOST)
    # 2 CPUs; 4 GiB x 0.5 / 256 MiB = 8 by memory.
    assert sizing.processes == 2
    assert "2.0 usable CPUs (cgroup cpu.cfs_quota_us) -> 2 by CPU" in sizing.reasons
    assert "4.0 GiB usable memory (cgroup memory.limit_in_bytes) -> 8 by memory at 256 MB/worker" \
        in sizing.reasons


def test_memory_bound(tmp_path: Path) -> None:
    root = cgroup_v2(tmp_path, "800000 100000", str(2 * GIB))
    sizing = size_workers("auto", 6, 512, cgroup_root=root, **HOST)
    # 8 CPUs, but 2 GiB x 0.5 / 512 MiB = 2.
    assert sizing.processes == 2
    assert sizing.reasons[-1] == "bound by memory"


def test_agent_count_bound(tmp_path: Path) -> None:
    sizing = size_workers("auto", 3, 512, cgroup_root=cgroup_v2(tmp_path), **HOST)
    assert sizing.processes == 3
    assert sizing.reasons[-1] == "bound by agents"


def test_configured_count_is_honoured(tmp_path: Path) -> None:
    root = cgroup_v2(tmp_path, "100000 100000", str(512 * MIB))
    sizing = size_workers(3, 4, 512, cgroup_root=root, **HOST)
    assert sizing.processes == 3
    assert sizing.setting == "3"
    assert sizing.reasons[-1] == "configured agents.processes = 3 in runtime.yaml (auto would choose 1)"
    assert size_workers("5", 2, 512, cgroup_root=root, **HOST).processes == 5


def test_no_agents_means_no_workers(tmp_path: Path) -> None:
    for setting in ("auto", 3):
        sizing = size_workers(setting, 0, 512, cgroup_root=cgroup_v2(tmp_path), **HOST)
        assert sizing.processes == 0
        assert sizing.reasons[-1] == "no agents configured"


@pytest.mark.parametrize("setting", ["many", "0", 0, -2, True, ""])
def test_an_invalid_setting_is_a_config_error(tmp_path: Path, setting: int | str) -> None:
    with pytest.raises(ConfigError, match=r"runtime\.yaml: agents\.processes"):
        size_workers(setting, 2, 512, cgroup_root=tmp_path, **HOST)


def test_summary_names_the_binding_reason(tmp_path: Path) -> None:
    root = cgroup_v2(tmp_path, "200000 100000")
    sizing = size_workers("auto", 4, 512, cgroup_root=root, host_cpus=16, host_memory_bytes=24 * GIB)
    assert sizing.summary() == (
        "2 worker processes (auto: 4 agents, 2.0 usable CPUs (cgroup cpu.max) -> 2 by CPU, "
        "24.0 GiB usable memory (host) -> 24 by memory at 512 MB/worker, bound by CPUs)"
    )
    one = size_workers("auto", 1, 512, cgroup_root=root, **HOST)
    assert one.summary().startswith("1 worker process (auto: 1 agent, ")
    assert one.summary().endswith("bound by agents)")


def test_defaults_read_this_host(tmp_path: Path) -> None:
    sizing = size_workers("auto", 1000, 1, cgroup_root=tmp_path)
    assert sizing.usable_cpus >= 1
    assert sizing.usable_memory_bytes > 0
    assert 1 <= sizing.processes <= sizing.usable_cpus
