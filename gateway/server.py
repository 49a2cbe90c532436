"""Worker processes for `gateway serve`.

Each worker binds its own listening socket with SO_REUSEPORT, so the kernel spreads connections evenly
across workers. With one shared socket (uvicorn's own --workers), whichever worker is quickest to accept
takes the connections, and clients that keep connections alive can all land on one worker.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from . import metrics
from .config import Settings
from .http import GatewayHttpProtocol
from .logging import configure_logging, get_logger

log = get_logger()

RESTART_PAUSE_SECONDS = 1.0


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """A uvicorn server that says when it serves: its app started up and its socket accepts connections."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None],
                 on_stopped: Callable[[], None] = lambda: None) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._on_stopped = on_stopped

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets=sockets)
        # Here rather than after run(): uvicorn raises the signal that stopped it again once run() ends, which
        # ends this process before any code after run().
        self._on_stopped()


def _configure_logging() -> None:
    """JSON lines from the first moment of a process, uvicorn's own included: its loggers, given no logging
    config of theirs, propagate to the root logger, which renders through structlog."""
    configure_logging(Settings.from_env().log_level)


# What every worker runs with unless told otherwise: the request head bounded (gateway/http.py), no
# `server` header naming the software, and logging left to configure_logging. The `date` header stays:
# HTTP requires it of a server that has a clock, and it tells nothing about the server.
UVICORN_DEFAULTS: dict[str, Any] = {"http": GatewayHttpProtocol, "server_header": False, "log_config": None}


def server_config(app: Any, **uvicorn_options: Any) -> uvicorn.Config:
    """uvicorn's configuration for `app`, an app factory's import path or an application."""
    factory = isinstance(app, str)
    return uvicorn.Config(app, factory=factory, **{**UVICORN_DEFAULTS, **uvicorn_options})


def _worker(app: str, host: str, port: int, started: Any, uvicorn_options: dict[str, Any]) -> None:
    _configure_logging()
    sock = bind(host, port)
    config = server_config(app, **uvicorn_options)
    _Server(config, on_started=lambda: started.put(os.getpid())).run(sockets=[sock])


def restart(proc: Any, start: Callable[[], Any]) -> Any:
    """A worker that died is replaced, after a pause so that one failing at once does not spin the CPU."""
    log.warning("worker_exited", worker_pid=proc.pid, exitcode=proc.exitcode, restart_in=RESTART_PAUSE_SECONDS)
    metrics.process_dead(proc.pid)
    time.sleep(RESTART_PAUSE_SECONDS)
    return start()


def run(app: str, host: str, port: int, workers: int, ready: Callable[[], None] | None = None,
        companion: tuple[Callable[..., None], tuple[Any, ...]] | None = None, **uvicorn_options: Any) -> None:
    """Run `workers` processes serving the app factory `app`; restart any that dies; stop on SIGINT/SIGTERM.

    `ready` is called once, when every worker accepts connections. (The CLI prints "Serving on ..." there:
    a plain line for the operator at the terminal, not a log line.) `companion`, a (function, arguments)
    pair, runs in a process of its own beside the workers (the webhook worker), restarted as they are when
    they are processes of their own, and stopped with them.
    """
    _configure_logging()
    with metrics.run_dir():  # every process of this run counts into it, and /metrics sums them
        _run(app, host, port, workers, ready or (lambda: None), companion, uvicorn_options)


def _run(app: str, host: str, port: int, workers: int, announce: Callable[[], None],
         companion: tuple[Callable[..., None], tuple[Any, ...]] | None, uvicorn_options: dict[str, Any]) -> None:
    ctx = multiprocessing.get_context("spawn")

    def start_companion() -> Any:
        assert companion is not None
        proc = ctx.Process(target=companion[0], args=companion[1], daemon=False)
        proc.start()
        return proc

    if workers <= 1:
        helper = start_companion() if companion else None

        def stop_helper() -> None:
            if helper is not None and helper.is_alive():
                helper.terminate()
                helper.join(timeout=30)

        server = _Server(server_config(app, host=host, port=port, **uvicorn_options), on_started=announce,
                         on_stopped=stop_helper)
        try:
            server.run()
        finally:
            stop_helper()  # when the server failed to start, say
        if not server.started:
            sys.exit(STARTUP_FAILURE)
        return
    bind(host, port).close()  # fail here, in the parent, if the address cannot be bound at all
    started = ctx.Queue()
    serving: set[int] = set()
    announced = False
    stopping = False

    def start() -> Any:
        proc = ctx.Process(target=_worker, args=(app, host, port, started, uvicorn_options), daemon=False)
        proc.start()
        return proc

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    starters = [start] * workers + ([start_companion] if companion else [])
    procs = [begin() for begin in starters]
    try:
        while not stopping:
            try:
                serving.add(started.get(timeout=0.2))
            except queue.Empty:
                pass
            if not announced and {proc.pid for proc in procs[:workers]} <= serving:
                announced = True
                announce()
            for i, proc in enumerate(procs):
                if not proc.is_alive() and not stopping:
                    procs[i] = restart(proc, starters[i])
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # uvicorn finishes in-flight requests on SIGTERM
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
