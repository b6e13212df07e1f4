"""Read the runtime's Prometheus multiprocess files directly (real files, no HTTP)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families


def sample(data_dir: Path, name: str, **labels: str) -> float:
    """The value of one sample (0 when absent) as a scrape would show it."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(data_dir / "run" / "metrics"))
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0
