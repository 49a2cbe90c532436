"""Worker processes for `gateway serve`.

Each worker binds its own listening socket with SO_REUSEPORT, so the kernel spreads connections evenly
across workers. With one shared socket (uvicorn's own --workers), whichever worker is quickest to accept
takes the connections, and clients that keep connections alive can all land on one worker.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import time
from typing import Any

import uvicorn

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


def _worker(app: str, host: str, port: int, uvicorn_options: dict[str, Any]) -> None:
    sock = bind(host, port)
    config = uvicorn.Config(app, factory=True, **uvicorn_options)
    uvicorn.Server(config).run(sockets=[sock])


def run(app: str, host: str, port: int, workers: int, **uvicorn_options: Any) -> None:
    """Run `workers` processes serving the app factory `app`; restart any that dies; stop on SIGINT/SIGTERM."""
    if workers <= 1:
        uvicorn.run(app, factory=True, host=host, port=port, **uvicorn_options)
        return
    bind(host, port).close()  # fail here, in the parent, if the address cannot be bound at all
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> Any:
        proc = ctx.Process(target=_worker, args=(app, host, port, uvicorn_options), daemon=False)
        proc.start()
        return proc

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    procs = [start() for _ in range(workers)]
    try:
        while not stopping:
            time.sleep(0.2)
            for i, proc in enumerate(procs):
                if not proc.is_alive() and not stopping:
                    print(f"worker {proc.pid} exited with {proc.exitcode}; restarting", flush=True)
                    time.sleep(RESTART_PAUSE_SECONDS)
                    procs[i] = start()
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
