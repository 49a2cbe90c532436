"""Processes the benchmark starts (always stopped again, by their own process group) and what they cost.

The Sampler thread reads the resident set size of every process in each watched tree every 50 ms, and
CPU times twice a second, so each measured window can report peak RSS per process and CPU per tree.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import psutil


class BenchError(Exception):
    pass


class Service:
    """A server subprocess in its own session, so that stopping it reaches its workers and nothing else."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        try:
            workers = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            workers = []
        if self.proc.poll() is None:
            # The group this Popen created (start_new_session); its leader is alive, so the id is ours.
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(5)
        # Workers that outlived their supervisor: psutil checks that each pid is still the same process.
        for worker in workers:
            with contextlib.suppress(psutil.Error):
                if worker.is_running():
                    worker.kill()
        psutil.wait_procs(workers, timeout=5)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


def wait_ready(service: Service, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise BenchError(f"{service.name} exited with {service.proc.returncode}:\n{service.log_tail()}")
        try:
            resp = httpx.get(url, timeout=2)
            if resp.status_code == 200:
                return
            last = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise BenchError(f"{service.name} not ready after {timeout:.0f}s ({last}):\n{service.log_tail()}")


def run_cli(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    try:
        done = subprocess.run(
            cmd,
            env=env,
            cwd=cwd,
            capture_output=True,
            check=False,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(cmd)}: no answer after {timeout:.0f}s") from None
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


def _label(proc: psutil.Process, root: int) -> str:
    if proc.pid == root:
        return "main"
    try:
        cmd = " ".join(proc.cmdline())
        name = proc.name()
    except psutil.Error:
        return "?"
    if "spawn_main" in cmd:
        return "worker"
    if "resource_tracker" in cmd:
        return "resource_tracker"
    return name


@dataclass
class Window:
    """What one measured interval cost."""

    started: float
    cpu_start: dict[str, dict[int, float]]
    machine_start: Any
    client_start: float
    rss_peak: dict[str, dict[int, int]] = field(default_factory=dict)


class Sampler:
    RSS_INTERVAL = 0.05
    TREE_INTERVAL = 0.5

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._procs: dict[str, dict[int, psutil.Process]] = {name: {} for name in roots}
        self._labels: dict[str, dict[int, str]] = {name: {} for name in roots}
        self._cpu: dict[str, dict[int, float]] = {name: {} for name in roots}
        self._window: Window | None = None
        self._me = psutil.Process()
        self._refresh()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _refresh(self) -> None:
        for name, root in self.roots.items():
            try:
                top = psutil.Process(root)
                procs = [top, *top.children(recursive=True)]
            except psutil.Error:
                procs = []
            with self._lock:
                known = self._procs[name]
                for p in procs:
                    if p.pid not in known:
                        known[p.pid] = p
                        self._labels[name][p.pid] = _label(p, root)
                for pid in [pid for pid in known if pid not in {p.pid for p in procs}]:
                    del known[pid]
            for p in procs:
                try:
                    t = p.cpu_times()
                    self._cpu[name][p.pid] = t.user + t.system
                except psutil.Error:
                    pass

    def _run(self) -> None:
        next_tree = time.monotonic() + self.TREE_INTERVAL
        while not self._stop.wait(self.RSS_INTERVAL):
            if time.monotonic() >= next_tree:
                self._refresh()
                next_tree = time.monotonic() + self.TREE_INTERVAL
            with self._lock:
                window = self._window
                snapshot = [(n, list(ps.values())) for n, ps in self._procs.items()]
            if window is None:
                continue
            for name, procs in snapshot:
                peaks = window.rss_peak.setdefault(name, {})
                for p in procs:
                    try:
                        rss = p.memory_info().rss
                    except psutil.Error:
                        continue
                    if rss > peaks.get(p.pid, 0):
                        peaks[p.pid] = rss

    def start(self) -> None:
        self._refresh()
        t = self._me.cpu_times()
        with self._lock:
            self._window = Window(
                time.perf_counter(),
                {n: dict(c) for n, c in self._cpu.items()},
                psutil.cpu_times(),
                t.user + t.system,
            )

    def stop(self) -> dict[str, Any]:
        """Peak RSS per process (MB) and CPU use (% of one core) per tree since start()."""
        self._refresh()
        with self._lock:
            window, self._window = self._window, None
        assert window is not None
        wall = time.perf_counter() - window.started
        t = self._me.cpu_times()
        out: dict[str, Any] = {
            "client_cpu_pct": round(100 * (t.user + t.system - window.client_start) / wall, 1)
        }
        m0, m1 = window.machine_start, psutil.cpu_times()
        total = sum(m1) - sum(m0)
        idle = (m1.idle - m0.idle) + (getattr(m1, "iowait", 0) - getattr(m0, "iowait", 0))
        out["machine_busy_pct"] = round(100 * (total - idle) / total, 1) if total > 0 else None
        out["machine_cores_busy"] = (
            round((total - idle) / total * psutil.cpu_count(), 2) if total > 0 else None
        )
        for name in self.roots:
            start, now = window.cpu_start.get(name, {}), self._cpu[name]
            used = {pid: v - start.get(pid, 0.0) for pid, v in now.items()}
            out[f"{name}_cpu_pct"] = round(100 * sum(used.values()) / wall, 1)
            if name == "postgres":
                continue  # backends' RSS counts the shared buffers they touched: not a useful figure
            peaks = window.rss_peak.get(name, {})
            # Per process: shows whether the workers shared the load.
            out[f"{name}_cpu_pct_by_process"] = {
                f"{self._labels[name].get(pid, '?')}:{pid}": round(100 * v / wall, 1)
                for pid, v in sorted(used.items())
                if v > 0
            }
            out[f"{name}_rss_peak_mb"] = {
                f"{self._labels[name].get(pid, '?')}:{pid}": round(rss / 2**20, 1)
                for pid, rss in sorted(peaks.items())
            }
        return out


def stop_all(stack: contextlib.ExitStack) -> None:
    """Stop everything the benchmark started; no second Ctrl-C may leave servers behind half-way through."""
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        print("stopping everything the benchmark started ...", flush=True)
        stack.close()
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
