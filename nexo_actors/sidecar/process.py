"""SidecarProcess: the runtime's side of the gunicorn sidecar (SPEC §1, §7).

The Supervisor owns one. It promises:

* `start()` returns once both ports answer HTTP, or raises SidecarError
  naming the port and the setting to change (a port taken before launch,
  or gunicorn exiting early);
* the gunicorn master runs in a session of its own (a signal to the
  runtime's process group does not reach it; `killpg` takes down master
  and workers together) and is in the ChildRegistry, so a second SIGTERM
  or the shutdown watchdog can kill it from the main thread;
* an unexpected exit of the master (crash, `kill -9`) kills what is left of
  its process group and restarts it with the workers' policy
  (`RestartTracker(runtime.agents.restart)`, ChildState transitions,
  `actor_restarts_total{actor="sidecar"}`);
* `stop(deadline)` sends SIGTERM (gunicorn's graceful stop), then SIGKILLs
  the group at the deadline; `kill_now()` SIGKILLs at once;
* `states()` is safe from any thread (the control handler calls it).
"""

from __future__ import annotations

import http.client
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from prometheus_client import multiprocess

from nexo_actors import metrics
from nexo_actors.config.load import Config, parse_bind
from nexo_actors.errors import SidecarError
from nexo_actors.messages import ActorState
from nexo_actors.sidecar import EXIT_PORT_IN_USE, bind_error, probe_host
from nexo_actors.supervision import ChildRegistry, ChildState, RestartTracker, describe_exit

log = logging.getLogger(__name__)

NAME = "sidecar"
# How often start-up polls the ports, and how long one probe may take.
POLL = 0.05
PROBE_TIMEOUT = 1.0


@dataclass
class _Child:
    """One generation of the gunicorn master."""

    proc: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.monotonic)
    exited: threading.Event = field(default_factory=threading.Event)


class SidecarProcess:
    def __init__(self, config: Config, children: ChildRegistry,
                 stopping: threading.Event | None = None) -> None:
        """`stopping`: the runtime's shutdown flag; once set, nothing is (re)started."""
        self.config = config
        self.settings = config.runtime.sidecar
        self.children = children
        self.tracker = RestartTracker(config.runtime.agents.restart)
        self.state = ChildState.STOPPED
        self.restarts = 0
        self.last_error = ""
        self.generation = 0
        self._child: _Child | None = None
        self._lock = threading.Lock()
        # Shared with the Supervisor: a sidecar killed during shutdown (second
        # SIGTERM) must not be restarted.
        self._stopping = stopping if stopping is not None else threading.Event()
        self._monitor: threading.Thread | None = None
        self._procs: dict[int, psutil.Process] = {}
        metrics.ACTOR_RESTARTS.labels(actor=NAME)
        metrics.ACTOR_UP.labels(actor=NAME).set(0)

    # --- launching ----------------------------------------------------------

    def argv(self) -> list[str]:
        s = self.settings
        return [sys.executable, "-m", "nexo_actors.sidecar.serve",
                "--control-socket", str(self.config.control_socket),
                "--metrics-dir", str(self.config.metrics_dir),
                "--health-bind", s.health_bind, "--metrics-bind", s.metrics_bind,
                "--workers", str(s.workers), "--threads", str(s.threads),
                "--control-timeout", str(s.control_timeout), "--health-timeout", str(s.health_timeout),
                "--graceful-timeout", str(s.graceful_timeout), "--parent-pid", str(os.getpid()),
                "--parent-check-interval", str(s.parent_check_interval)]

    def environment(self) -> dict[str, str]:
        """Our environment minus the metrics dir (workers must not write metrics) and secrets."""
        secrets = self.config.secret_values
        return {k: v for k, v in os.environ.items()
                if k != "PROMETHEUS_MULTIPROC_DIR" and v not in secrets}

    def port_problem(self) -> str | None:
        """The operator's message if a bind address is taken now, else None."""
        for key in ("health_bind", "metrics_bind"):
            bind = getattr(self.settings, key)
            problem = bind_error(bind)
            if problem is not None:
                port = parse_bind(bind)[1]
                return (f"port {port} is already in use (runtime.sidecar.{key} = {bind}: {problem}); "
                        f"stop what uses it or change runtime.sidecar.{key} in runtime.yaml")
        return None

    def _spawn(self, wait_ports: float) -> _Child:
        """Launch a master and wait until both ports answer; SidecarError otherwise."""
        deadline = time.monotonic() + wait_ports
        problem = self.port_problem()
        while problem is not None and time.monotonic() < deadline:
            if self._stopping.wait(POLL):
                raise SidecarError("sidecar start abandoned: the runtime is stopping")
            problem = self.port_problem()
        if problem is not None:
            raise SidecarError(problem)
        with self._lock:
            if self._stopping.is_set():
                raise SidecarError("sidecar start abandoned: the runtime is stopping")
            proc = subprocess.Popen(self.argv(), env=self.environment(), stdin=subprocess.DEVNULL,
                                    start_new_session=True, close_fds=True)
            self.children.add(proc.pid)
            self._record(proc)
            child = _Child(proc)
            self._child = child
            self.generation += 1
            self.state = ChildState.STARTING
        try:
            self._wait_serving(child)
        except SidecarError:
            self._kill_group(child)
            child.proc.wait()
            self._reaped(child)
            raise
        return child

    def _wait_serving(self, child: _Child) -> None:
        deadline = time.monotonic() + self.settings.start_timeout
        targets = [(parse_bind(self.settings.health_bind), "/health"),
                   (parse_bind(self.settings.metrics_bind), "/metrics")]
        while True:
            code = child.proc.poll()
            if code is not None:
                problem = self.port_problem() if code == EXIT_PORT_IN_USE else None
                raise SidecarError(problem or (
                    f"the sidecar (gunicorn) {describe_exit(code)} while starting; see its log "
                    "lines above"))
            if all(_answers(probe_host(host), port, path) for (host, port), path in targets):
                return
            if time.monotonic() > deadline:
                raise SidecarError(
                    f"the sidecar did not answer on {self.settings.health_bind} and "
                    f"{self.settings.metrics_bind} within runtime.sidecar.start_timeout "
                    f"({self.settings.start_timeout:g}s)")
            if self._stopping.wait(POLL):
                raise SidecarError("sidecar start abandoned: the runtime is stopping")

    @property
    def pid_file(self) -> Path:
        return self.config.run_dir / "sidecar.pid"

    def _record(self, proc: subprocess.Popen[bytes]) -> None:
        """Write the master's pid and start time, so the next instance can find it."""
        try:
            started = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            return  # already gone: nothing for anyone to clean up
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{proc.pid} {started!r}\n")

    def reap_stale(self) -> int | None:
        """Kill the sidecar left by a previous instance on this data dir; returns its pid.

        We hold the data dir's lock, so a sidecar recorded in run/sidecar.pid
        belongs to a runtime that is gone (SIGKILLed by a takeover, say) and
        has not noticed yet; its ports would fail our boot. The start time
        recorded next to the pid makes sure a reused pid is left alone.
        """
        try:
            pid_text, started_text = self.pid_file.read_text().split()
            pid, started = int(pid_text), float(started_text)
            alive = psutil.Process(pid).create_time() == started
        except (OSError, ValueError, psutil.Error):
            return None
        if not alive:
            return None
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        log.warning("killed the sidecar left by a previous instance", extra={"pid": pid})
        return pid

    def start(self) -> None:
        """Boot: launch and wait until it serves; SidecarError fails the boot."""
        # A stale sidecar releases its ports as soon as it is dead; anything
        # else holding them fails the boot at once.
        wait = self.settings.start_timeout if self.reap_stale() is not None else 0.0
        try:
            child = self._spawn(wait_ports=wait)
        except SidecarError as exc:
            stopping = self._stopping.is_set()
            with self._lock:
                self.state = ChildState.STOPPED if stopping else ChildState.FAILED
                self.last_error = "" if stopping else str(exc)
            if stopping:
                return  # SIGTERM during boot: not a failure, the shutdown goes on
            raise
        self._running(child)
        log.info("sidecar serving", extra={"pid": child.proc.pid, "health": self.settings.health_bind,
                                           "metrics": self.settings.metrics_bind,
                                           "workers": self.settings.workers})
        self._monitor = threading.Thread(target=self._supervise, name="sidecar-monitor", daemon=True)
        self._monitor.start()

    def _running(self, child: _Child) -> None:
        with self._lock:
            self.state = ChildState.RUNNING
            child.started_at = time.monotonic()
        metrics.ACTOR_UP.labels(actor=NAME).set(1)

    # --- supervision --------------------------------------------------------

    def _supervise(self) -> None:
        """Wait for the master to exit; restart it with backoff unless we are stopping."""
        child = self._child
        while child is not None:
            code = child.proc.wait()
            self._reaped(child)
            if self._stopping.is_set():
                break
            child = self._restart(describe_exit(code))
        with self._lock:
            self.state = ChildState.STOPPED
        metrics.ACTOR_UP.labels(actor=NAME).set(0)

    def _restart(self, how: str) -> _Child | None:
        """Backoff, then a new master; returns None when stopping interrupts the wait."""
        while True:
            metrics.ACTOR_UP.labels(actor=NAME).set(0)
            metrics.ACTOR_RESTARTS.labels(actor=NAME).inc()
            decision = self.tracker.record_exit()
            with self._lock:
                self.restarts += 1
                self.last_error = how
                self.state = ChildState.FAILED if decision.failed else ChildState.BACKOFF
            plan = (f"giving up for now (failed), retrying every {decision.delay:g}s" if decision.failed
                    else f"restarting in {decision.delay:.2f}s")
            log.warning("sidecar %s; %s", how, plan,
                        extra={"restarts_in_window": decision.recent_exits})
            if self._stopping.wait(decision.delay):
                return None
            try:
                child = self._spawn(wait_ports=self.settings.start_timeout)
            except SidecarError as exc:
                if self._stopping.is_set():
                    return None
                how = str(exc)
                continue
            self._running(child)
            log.info("sidecar restarted", extra={"pid": child.proc.pid, "restarts": self.restarts})
            return child

    def _reaped(self, child: _Child) -> None:
        """The master is gone: take its workers with it and forget its pid."""
        self._kill_group(child)
        self.children.discard(child.proc.pid)
        multiprocess.mark_process_dead(child.proc.pid, str(self.config.metrics_dir))  # type: ignore[no-untyped-call]
        child.exited.set()

    @staticmethod
    def _kill_group(child: _Child, sig: int = signal.SIGKILL) -> None:
        # The master leads its own session, so its pid is the group id; the
        # group outlives the master while orphaned workers are still in it.
        try:
            os.killpg(child.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    # --- stopping -----------------------------------------------------------

    def stop(self, deadline: float) -> None:
        """SIGTERM the master (graceful), SIGKILL the group at `deadline`; returns when it is gone."""
        self._stopping.set()
        with self._lock:
            child = self._child
            if self.state is not ChildState.STOPPED:
                self.state = ChildState.STOPPING
        if child is not None and not child.exited.is_set():
            try:
                os.kill(child.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not self._wait_exit(child, deadline):
                log.warning("sidecar did not stop in time; killing it", extra={"pid": child.proc.pid})
                self._kill_group(child)
                self._wait_exit(child, time.monotonic() + 1.0)
        if self._monitor is not None:
            self._monitor.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self.state = ChildState.STOPPED
        self.pid_file.unlink(missing_ok=True)
        metrics.ACTOR_UP.labels(actor=NAME).set(0)

    def _wait_exit(self, child: _Child, deadline: float) -> bool:
        if self._monitor is None or not self._monitor.is_alive():
            # Nobody else reaps it (stop before the monitor ran): reap here.
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return False
            self._reaped(child)
            return True
        return child.exited.wait(max(0.0, deadline - time.monotonic()))

    def kill_now(self) -> None:
        """SIGKILL master and workers at once (second signal during shutdown)."""
        self._stopping.set()
        with self._lock:
            child = self._child
        if child is not None:
            self._kill_group(child)

    # --- state record -------------------------------------------------------

    def _usage(self, pid: int) -> tuple[int, float, str]:
        """RSS and CPU of the master and its workers, and the workers' pids."""
        if not pid:
            return 0, 0.0, ""
        try:
            found = [psutil.Process(pid)]
            found += found[0].children(recursive=True)
        except psutil.Error:
            return 0, 0.0, ""
        rss, cpu = 0, 0.0
        with self._lock:
            # Kept between calls: cpu_percent measures since the previous call
            # on the same Process object.
            self._procs = {p.pid: self._procs.get(p.pid, p) for p in found}
            procs = list(self._procs.values())
        for proc in procs:
            try:
                rss += proc.memory_info().rss
                cpu += proc.cpu_percent(None)
            except psutil.Error:
                continue
        return rss, round(cpu, 1), ",".join(str(p.pid) for p in found[1:])

    def states(self) -> list[ActorState]:
        with self._lock:
            child, state = self._child, self.state
            restarts, last_error = self.restarts, self.last_error
        pid = child.proc.pid if child is not None and not child.exited.is_set() else 0
        up = state is ChildState.RUNNING and child is not None
        rss, cpu, workers = self._usage(pid)
        s = self.settings
        return [ActorState(
            name=NAME, kind="Sidecar", pid=pid, status=state.status, restarts=restarts,
            last_error=last_error,
            uptime_s=round(time.monotonic() - child.started_at, 3) if up and child else 0.0,
            rss_bytes=rss, cpu_percent=cpu,
            details={"health_bind": s.health_bind, "metrics_bind": s.metrics_bind,
                     "workers": s.workers, "threads": s.threads, "worker_pids": workers,
                     "generation": self.generation})]


def _answers(host: str, port: int, path: str) -> bool:
    """True once an HTTP request to host:port gets any response."""
    conn = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", path)
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return True
