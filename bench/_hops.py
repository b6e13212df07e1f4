"""Where a request's time goes inside the runtime: bench.pipeline's hop table.

It starts the runtime with `bench/_probe` on PYTHONPATH (its sitecustomize
records a timestamp per event id at each hop, in the main process and in the
workers), drives it with the same load generator, and prints:

* per hop, p50/p90/p99 of the time from the previous point (ms), with the
  thread that ends the hop; hops marked `after reply` are off the path the
  requester waits on (the reply has left for NATS by then);
* per OS thread of the main process and the workers, CPU seconds in the run
  and CPU per message, labelled by the probe points that ran on it.

Diagnosis only: the probe adds about 12 us of CPU per message. Only events
whose every point was seen, from the middle 70 % of the run, are counted.
"""

from __future__ import annotations

import collections
import glob
import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from bench.pipeline import Load, Ours, Profile

PROBE_DIR = Path(__file__).resolve().parent / "_probe"
ORDER = ["nats_cb", "journaled", "host_in", "pipe_out", "w_read", "w_reply", "reader",
         "host_reply", "loop_pub", "written", "confirmed", "inbox_done"]
HOPS = {
    "journaled": "NATS callback -> inbox journal committed",
    "host_in": "store thread -> AgentHost mailbox",
    "pipe_out": "AgentHost -> Deliver frame on the pipe",
    "w_read": "pipe -> worker reader thread",
    "w_reply": "worker reader -> its loop -> echo turn",
    "reader": "Reply frame -> parent reader thread",
    "host_reply": "reader thread -> AgentHost mailbox",
    "loop_pub": "AgentHost -> publish call",
    "written": "publish call -> loop writes the batch",
    "confirmed": "flush confirm (after reply)",
    "inbox_done": "inbox done -> AgentHost (after reply)",
}
THREAD_NAMES = {
    frozenset({"nats_cb", "written", "confirmed"}): "bridge asyncio loop",
    frozenset({"journaled"}): "QueueStore actor",
    frozenset({"host_in", "pipe_out", "host_reply", "loop_pub", "inbox_done"}): "AgentHost actor",
    frozenset({"reader"}): "AgentHost pipe reader",
    frozenset({"w_read"}): "worker pipe reader",
    frozenset({"w_reply"}): "worker asyncio loop",
}


def probe_env(out: str) -> dict[str, str]:
    # The probe imports the runtime before the daemon sets PROMETHEUS_MULTIPROC_DIR;
    # pointing it somewhere now keeps prometheus_client in multiprocess mode, as in a real run.
    return {"PYTHONPATH": str(PROBE_DIR), "NEXO_PROBE_DIR": out,
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="probe-metrics-")}


def thread_cpu(pid: int) -> dict[int, float]:
    out: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))]


def run(ours_factory: type[Ours], url: str, tmp: Path, nats_proc: psutil.Process,
        profile: Profile, *, mode: str, rate: float, concurrency: int, processes: str,
        agents: int = 4) -> None:
    from bench.pipeline import run_load

    out = tempfile.mkdtemp(prefix="probe-", dir=tmp)
    ours = ours_factory(url, tmp, agents, processes, env=probe_env(out))
    ours.start()
    try:
        pids = [ours.rp.pid, *ours.worker_pids()]
        before = {pid: thread_cpu(pid) for pid in pids}
        load = run_load(url, ours.subjects, ours.roles(), nats_proc, mode=mode,
                        concurrency=concurrency, rate=rate, profile=profile)
        after = {pid: thread_cpu(pid) for pid in pids}
        time.sleep(0.7)  # the probe writes every 0.3 s
    finally:
        ours.stop()
    report(out, load, before, after, pids, mode, concurrency)


def report(out: str, load: Load, before: dict[int, dict[int, float]],
           after: dict[int, dict[int, float]], pids: list[int], mode: str,
           concurrency: int) -> None:
    events: dict[str, dict[str, int]] = collections.defaultdict(dict)
    threads: dict[int, set[str]] = collections.defaultdict(set)
    for path in glob.glob(os.path.join(out, "*.tsv")):
        with open(path) as f:
            for line in f:
                key, point, stamp, thread_id = line.rstrip("\n").split("\t")
                events[key][point] = int(stamp)
                threads[int(thread_id)].add(point)
    complete = sorted((e for e in events.values() if all(p in e for p in ORDER)),
                      key=lambda e: e["nats_cb"])
    n = len(complete)
    middle = complete[int(n * 0.15):int(n * 0.85)]
    how = (f"open loop at {load.rate:,.0f} msg/s" if mode == "open"
           else f"closed loop, {concurrency} outstanding, {load.rate:,.0f} msg/s")
    print(f"\n   hops, 4 agents, {how} (client p50 {load.p50:.2f} / p99 {load.p99:.2f} ms; "
          f"{len(middle)} events traced)")
    if not middle:
        print("   (no complete traces: the probe could not attach to this version of the runtime)")
        return
    print(f"   {'hop (ms from the previous point)':<44}{'p50':>7}{'p90':>7}{'p99':>7}{'mean':>7}")
    for a, b in itertools.pairwise(ORDER):
        d = [(e[b] - e[a]) / 1e6 for e in middle]
        print(f"   {HOPS[b]:<44}{pct(d, .5):>7.2f}{pct(d, .9):>7.2f}{pct(d, .99):>7.2f}"
              f"{sum(d) / len(d):>7.2f}")
    d = [(e["written"] - e["nats_cb"]) / 1e6 for e in middle]
    print(f"   {'= inside the runtime, callback -> reply out':<44}{pct(d, .5):>7.2f}{pct(d, .9):>7.2f}"
          f"{pct(d, .99):>7.2f}{sum(d) / len(d):>7.2f}")
    messages = len(events)
    wall = load.raw["wall_s"]
    print(f"\n   CPU by thread over the load run ({messages} messages, {wall:.1f} s)")
    print(f"   {'process':<8}{'thread':<26}{'CPU s':>7}{'% core':>8}{'us/msg':>8}")
    for pid in pids:
        rows = []
        for tid, cpu in after[pid].items():
            used = cpu - before[pid].get(tid, 0.0)
            name = THREAD_NAMES.get(frozenset(threads.get(tid, set())), "other")
            rows.append((name, used))
        merged: dict[str, float] = collections.defaultdict(float)
        for name, used in rows:
            merged[name] += used
        proc = "main" if pid == pids[0] else f"w{pids.index(pid) - 1}"
        for name, used in sorted(merged.items(), key=lambda kv: -kv[1]):
            if used < 0.01:
                continue
            print(f"   {proc:<8}{name:<26}{used:>7.2f}{used / wall * 100:>7.0f}%"
                  f"{used / max(1, messages) * 1e6:>8.0f}")
