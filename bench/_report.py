"""The tables bench.pipeline prints (sections 1-4) and the verdicts of its targets."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.pipeline import Result

MB = 1 << 20
THROUGHPUT_RATIO = 0.5
P99_TARGET_MS = 10.0
BOOT_TARGET_S = 2.0
WORKER_RSS_MB = 60.0
TOTAL_RSS_MB = 250.0


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_section1(ours: list[Result], base: dict[int, Result], concurrency: int,
                   processes: str) -> list[bool]:
    """Prints the tables; returns the verdicts of the targets."""
    verdicts: list[bool] = []
    print(f"\n1) End-to-end: request -> echo agent in a worker process -> reply, through one "
          f"nats-server\n   throughput: closed loop, {concurrency} requests outstanding; latency: "
          f"open loop at half of each system's own max\n   workers: runtime.agents.processes = "
          f"{processes}; baseline = one bare nats-py responder process")
    print(f"\n   {'agents':<18}{'workers':>8}{'ours msg/s':>12}{'base msg/s':>12}{'ratio':>8}"
          f"   >= {THROUGHPUT_RATIO:.2f}x   {'ours p50/p99 @K':>16}{'base p50/p99 @K':>17}")
    for r in ours:
        b = base[r.agents]
        ratio = r.sat.rate / b.sat.rate if b.sat.rate else 0.0
        verdicts.append(ratio >= THROUGHPUT_RATIO)
        print(f"   {r.label:<18}{r.workers:>8}{r.sat.rate:>12,.0f}{b.sat.rate:>12,.0f}{ratio:>8.2f}"
              f"   {verdict(ratio >= THROUGHPUT_RATIO):<9}"
              f"{r.sat.p50:>8.1f}/{r.sat.p99:<7.1f}{b.sat.p50:>9.1f}/{b.sat.p99:<7.1f}")
    print(f"\n   {'agents':<18}{'ours @msg/s':>12}{'p50 ms':>8}{'p99 ms':>8}   p99 <= {P99_TARGET_MS:g} ms"
          f"{'base @msg/s':>13}{'p50 ms':>8}{'p99 ms':>8}{'p99 ratio':>10}")
    for r in ours:
        b = base[r.agents]
        verdicts.append(r.half.p99 <= P99_TARGET_MS)
        print(f"   {r.label:<18}{r.half.rate:>12,.0f}{r.half.p50:>8.2f}{r.half.p99:>8.2f}   "
              f"{verdict(r.half.p99 <= P99_TARGET_MS):<15}{b.half.rate:>10,.0f}{b.half.p50:>8.2f}"
              f"{b.half.p99:>8.2f}{r.half.p99 / b.half.p99:>10.1f}")
    errors = sum(x.sat.bad + x.sat.timeouts + x.half.bad + x.half.timeouts
                 for x in [*ours, *base.values()])
    print(f"\n   replies checked (text and correlation_id): {errors} wrong or missing")
    print("\n   CPU per message inside the throughput window (us/msg; 1e6/msgs-per-s = one "
          "core fully busy)")
    roles = ["main", "workers", "other", "responder", "nats-server", "loadgen"]
    print(f"   {'system':<24}" + "".join(f"{r:>12}" for r in roles) + f"{'one core':>10}")
    rows = [(f"ours {r.label}", r) for r in ours] + [(f"base {b.agents}", b) for b in base.values()]
    for name, r in rows:
        n = r.sat.raw["received"] or 1
        cells = "".join(f"{r.sat.cpu[k] / n * 1e6:>12.0f}" if k in r.sat.cpu else f"{'-':>12}"
                        for k in roles)
        print(f"   {name:<24}{cells}{1e6 / r.sat.rate if r.sat.rate else 0:>10.0f}")
    four = next((r for r in ours if r.label == "4"), None)
    if four is not None and four.more and 4 in base:
        print("\n   closed-loop concurrency sweep, 4 agents (is ours CPU-bound or latency-bound?)")
        print(f"   {'K':>5}{'ours msg/s':>12}{'p50 ms':>8}{'p99 ms':>8}{'main us/msg':>13}"
              f"{'base msg/s':>12}{'p50 ms':>8}{'p99 ms':>8}{'ratio':>7}")
        loads = {**four.more, concurrency: four.sat}
        base_loads = {**base[4].more, concurrency: base[4].sat}
        for k in sorted(loads):
            ol, bl = loads[k], base_loads[k]
            main_us = ol.cpu.get("main", 0.0) / max(1, ol.raw["received"]) * 1e6
            print(f"   {k:>5}{ol.rate:>12,.0f}{ol.p50:>8.2f}{ol.p99:>8.2f}{main_us:>13.0f}"
                  f"{bl.rate:>12,.0f}{bl.p50:>8.2f}{bl.p99:>8.2f}{ol.rate / bl.rate:>7.2f}")
    return verdicts


def print_section2(ours_boot: list[tuple[float, float]], base_boot: list[float],
                   nexo_help: float, n: int) -> list[bool]:
    running = statistics.median(b[0] for b in ours_boot)
    first = statistics.median(b[1] for b in ours_boot)
    base = statistics.median(base_boot)
    print(f"\n2) Boot to first answered message (4 agents, fresh data dir, median of {n})")
    print(f"   {'':<44}{'seconds':>9}{'target':>12}")
    print(f"   {'ours: exec bin/nexo start -> first reply':<44}{first:>9.2f}   "
          f"<= {BOOT_TARGET_S:g} s {verdict(first <= BOOT_TARGET_S)}")
    label = '   exec -> "nexo is running" logged'
    print(f"   {label:<44}{running:>9.2f}   (logged after attach; may trail the first reply)")
    print(f"   {'   (bin/nexo --help alone: bootstrap+CLI)':<44}{nexo_help:>9.2f}")
    print(f"   {'baseline: exec responder -> first reply':<44}{base:>9.2f}")
    print(f"   {'ratio ours / baseline':<44}{first / base:>9.1f}")
    print(f"   all runs ours: {', '.join(f'{b[1]:.2f}' for b in ours_boot)}; "
          f"baseline: {', '.join(f'{b:.2f}' for b in base_boot)}")
    return [first <= BOOT_TARGET_S]


def print_section3(r: Result, base: Result) -> list[bool]:
    print(f"\n3) Memory with 4 agents after the load runs ({r.workers} workers; sidecar off)")
    print(f"   {'process':<34}{'pid':>8}{'RSS MB':>9}{'PSS MB':>9}")
    for label, pid, rss, pss in r.rss:
        print(f"   {label:<34}{pid:>8}{rss / MB:>9.1f}{pss / MB:>9.1f}")
    workers = [row for row in r.rss if row[0].startswith("agent-worker")]
    worst = max((row[2] for row in workers), default=0) / MB
    total = r.rss_total / MB
    total_pss = sum(row[3] for row in r.rss) / MB
    print(f"   {'largest worker RSS':<34}{'':>8}{worst:>9.1f}{'':>9}   <= {WORKER_RSS_MB:g} MB "
          f"{verdict(worst <= WORKER_RSS_MB)}")
    print(f"   {'runtime total (main + descendants)':<34}{'':>8}{total:>9.1f}{total_pss:>9.1f}"
          f"   <= {TOTAL_RSS_MB:g} MB {verdict(total <= TOTAL_RSS_MB)}")
    b = base.rss[0]
    print(f"   {'baseline responder':<34}{b[1]:>8}{b[2] / MB:>9.1f}{b[3] / MB:>9.1f}")
    return [worst <= WORKER_RSS_MB, total <= TOTAL_RSS_MB]


def print_section4(rows: list[Result], base: dict[int, Result]) -> None:
    print("\n4) Growth with the number of agents (one channel per agent)")
    print("   (msg/s: closed loop; p99: open loop at half of that msg/s; RSS/PSS: runtime total)")
    print(f"   {'agents':>6}{'workers':>8}{'msg/s':>9}{'p99 ms':>8}{'RSS MB':>9}{'PSS MB':>9}"
          f"{'MB/agent':>10}{'base msg/s':>12}")
    for r in rows:
        b = base.get(r.agents)
        pss = sum(row[3] for row in r.rss) / MB
        print(f"   {r.agents:>6}{r.workers:>8}{r.sat.rate:>9,.0f}{r.half.p99:>8.2f}"
              f"{r.rss_total / MB:>9.1f}{pss:>9.1f}{r.rss_total / MB / r.agents:>10.1f}"
              f"{(f'{b.sat.rate:,.0f}' if b else '-'):>12}")
