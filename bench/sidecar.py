"""Sidecar benchmark: what /ready and /metrics sustain, and what scraping costs the runtime.

Run: .venv/bin/python bench/sidecar.py [--duration 5] [--rounds 3] [--clients 4] [--senders 4]

It starts `bin/nexo start` on a temporary config (local bus, echo agent, the
sidecar on free loopback ports with 2 gunicorn workers), then:

1. drives messages into the runtime (`--senders` threads, each a loop of
   SendRequest over the control socket, waiting for every reply) and, at
   the same time, hammers `/ready` and then `/metrics` with `--clients`
   keep-alive HTTP clients: requests per second and p50/p99 latency;
2. measures the runtime's own message throughput without any scraper
   (the baseline) and with a scraper hitting `/metrics` every 100 ms, in
   `--rounds` pairs of `--window`-second windows ordered ABBA (so a drift
   in machine load does not favour either side), and prints the ratio.
   The target is that scraping costs the runtime less than 5 %. Because
   throughput on a shared machine is noisy, it also prints the CPU the
   sidecar spends on those scrapes, which does not depend on the load.

Every process it starts is stopped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nexo_actors.control.client import request  # noqa: E402
from nexo_actors.errors import NexoError  # noqa: E402
from nexo_actors.messages import SendRequest  # noqa: E402

SCRAPE_INTERVAL = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(root: Path, health: int, metrics: int) -> Path:
    conf, data = root / "conf", root / "data"
    conf.mkdir()
    data.mkdir()
    docs = {
        "agents.yaml": {"agents": [{"id": "kate", "model": {"provider": "echo", "model": "echo-1"},
                                    "channels": ["cli"]}]},
        "broker.yaml": {"broker": {"type": "local",
                                   "persistence": {"path": str(data / "queue" / "broker.db")}}},
        "llm.yaml": {"providers": {"echo": {"prefix": "echo: "}}},
        "memory.yaml": {"short_term": {"max_history_turns": 50}},
        "runtime.yaml": {"data_dir": str(data), "sidecar": {
            "enabled": True, "workers": 2, "health_bind": f"127.0.0.1:{health}",
            "metrics_bind": f"127.0.0.1:{metrics}"}},
    }
    for name, doc in docs.items():
        (conf / name).write_text(yaml.safe_dump(doc))
    return conf


class Senders:
    """`count` threads sending messages and waiting for each reply; counts completed ones."""

    def __init__(self, sock: Path, count: int) -> None:
        self.sock = sock
        self.count = count
        self.done = 0
        self.errors = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def _run(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                request(self.sock, SendRequest(channel="cli", text=f"s{n} m{i}", sender=f"bench{n}",
                                               wait=10.0), timeout=15.0)
            except (NexoError, OSError):
                # OSError: the control socket's accept backlog is full (EAGAIN).
                with self.lock:
                    self.errors += 1
                time.sleep(0.01)
                continue
            with self.lock:
                self.done += 1

    def __enter__(self) -> Senders:
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                        for n in range(self.count)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(20)

    def measure(self, seconds: float) -> float:
        """Completed messages per second over the next `seconds`."""
        with self.lock:
            start_count, start = self.done, time.monotonic()
        time.sleep(seconds)
        with self.lock:
            return (self.done - start_count) / (time.monotonic() - start)


def hammer(port: int, path: str, clients: int, seconds: float) -> tuple[float, float, float, int]:
    """`clients` keep-alive clients GET `path` for `seconds`: (req/s, p50 ms, p99 ms, non-200)."""
    latencies: list[float] = []
    bad = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine: list[float] = []
        try:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                try:
                    conn.request("GET", path)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    status = 0
                mine.append(time.perf_counter() - t0)
                if status != 200:
                    with lock:
                        bad[0] += 1
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    elapsed = time.monotonic() - started
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else float("nan")
    return len(latencies) / elapsed, p50, p99, bad[0]


def scrape_loop(port: int, stop: Any, count: Any) -> None:
    """GET /metrics every SCRAPE_INTERVAL, as Prometheus would (a fresh connection each time)."""
    next_at = time.monotonic()
    while not stop.wait(max(0.0, next_at - time.monotonic())):
        next_at += SCRAPE_INTERVAL
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            conn.getresponse().read()
            with count.get_lock():
                count.value += 1
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()


class Scraper:
    """scrape_loop in a process of its own, like a real Prometheus: it takes no GIL from the senders."""

    def __init__(self, port: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self.count = ctx.Value("i", 0)
        self.process = ctx.Process(target=scrape_loop, args=(port, self.stop, self.count), daemon=True)

    @property
    def scrapes(self) -> int:
        return int(self.count.value)

    def __enter__(self) -> Scraper:
        self.process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


def sidecar_processes(sock: Path) -> list[psutil.Process]:
    """The gunicorn master and workers serving this runtime (found by their --control-socket)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "nexo_actors.sidecar.serve" in cmdline and str(sock) in cmdline:
            found.append(proc)
    return found


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.05)


def ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def run(args: argparse.Namespace) -> None:
    health, metrics = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="nexo-bench-") as tmp:
        conf = write_config(Path(tmp), health, metrics)
        sock = Path(tmp) / "data" / "run" / "nexo.sock"
        env = dict(os.environ, LOG_LEVEL="warning")
        proc = subprocess.Popen([str(REPO / "bin" / "nexo"), "--config", str(conf), "start"],
                                env=env, start_new_session=True)
        try:
            wait_for(lambda: ready(health), 60, "the runtime and its sidecar to be ready")
            print(f"runtime pid {proc.pid}; sidecar :{health} (health) :{metrics} (metrics), "
                  f"2 gunicorn workers x 4 threads; {os.cpu_count()} CPUs, load average "
                  f"{os.getloadavg()[0]:.1f} at start")
            with Senders(sock, args.senders) as senders:
                senders.measure(1.0)  # warm-up
                print(f"\n1) HTTP under load ({args.clients} keep-alive clients, {args.duration:g}s each, "
                      f"{args.senders} senders driving messages meanwhile)")
                print(f"   {'endpoint':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-200':>8}")
                for path, port in (("/ready", health), ("/metrics", metrics)):
                    rps, p50, p99, bad = hammer(port, path, args.clients, args.duration)
                    print(f"   {path:<10} {rps:>8.0f} {p50:>8.2f} {p99:>8.2f} {bad:>8}")

                print(f"\n2) runtime message throughput ({args.senders} senders, {args.rounds} pairs of "
                      f"{args.window:g}s windows, ABBA order)")
                sidecar = sidecar_processes(sock)
                base: list[float] = []
                scraped: list[float] = []
                scrapes, scrape_cpu, scrape_time = 0, 0.0, 0.0
                for r in range(args.rounds):
                    for scraping in ((False, True) if r % 2 == 0 else (True, False)):
                        if not scraping:
                            base.append(senders.measure(args.window))
                            continue
                        with Scraper(metrics) as scraper:
                            wait_for(lambda sc=scraper: sc.scrapes > 0, 30, "the first scrape")
                            cpu0, n0 = cpu_seconds(sidecar), scraper.scrapes
                            scraped.append(senders.measure(args.window))
                            scrape_cpu += cpu_seconds(sidecar) - cpu0
                            scrapes += scraper.scrapes - n0
                        scrape_time += args.window
                    print(f"   pair {r + 1}: without scraper {base[-1]:7.1f} msg/s   "
                          f"with /metrics every {SCRAPE_INTERVAL * 1000:.0f} ms {scraped[-1]:7.1f} msg/s")
                b, s = statistics.median(base), statistics.median(scraped)
                # Adjacent windows share the machine's load of the moment, so the
                # median of their ratios is the figure that survives load drift.
                pairs = statistics.median(x / y for x, y in zip(scraped, base, strict=True))
                cost = (1 - pairs) * 100
                print(f"   median: without {b:.1f} msg/s, with {s:.1f} msg/s (ratio {s / b:.3f}); "
                      f"median of pair ratios {pairs:.3f} -> scraping costs {cost:+.1f} % "
                      f"(target < 5 %: {'met' if cost < 5 else 'NOT met'})")
                print(f"   sidecar CPU while scraped: {scrape_cpu / max(scrape_time, 1e-9) * 100:.1f} % "
                      f"of one core ({scrape_cpu / max(scrapes, 1) * 1000:.2f} ms per scrape, "
                      f"{scrapes} scrapes)")
                print(f"   send errors (control socket backlog full, retried): {senders.errors}")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per HTTP measurement")
    parser.add_argument("--rounds", type=int, default=6, help="baseline/scraped pairs (ABBA)")
    parser.add_argument("--window", type=float, default=2.0, help="seconds per throughput window")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--senders", type=int, default=4, help="concurrent message senders")
    args = parser.parse_args()
    try:
        run(args)
    except KeyboardInterrupt:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
