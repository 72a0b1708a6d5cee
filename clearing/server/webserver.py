"""The web server: uvicorn worker processes that each accept connections on their own socket.

``python -m clearing.server.webserver`` (what ``docker/bin/web`` runs for compose, ``make run`` and CI)
serves ``clearing.config.asgi:application`` with ``WEB_CONCURRENCY`` worker processes.

Why not ``uvicorn --workers N``: it binds one listening socket in the parent and shares it, so
every worker waits on the same accept queue and Linux hands each new connection to the worker
that went back to waiting most recently. Clients of an API keep their connections open, so the
split made when they connect is the split for good — in the API benchmark 44 of 50 connections
landed on one of two workers, which then queued requests while the other idled
(docs/performance.md, "REST API"). Here each worker binds its own socket with ``SO_REUSEPORT``:
Linux gives each socket its own accept queue and spreads new connections over them by a hash
of the addresses, independent of which worker happens to be awake.

The parent only supervises: a worker that dies is started again; SIGTERM or SIGINT stops the
workers gracefully (uvicorn finishes the requests in flight) and then the parent. A worker
that cannot start (the port is taken by another program, the application fails to import)
stops the whole server with uvicorn's start-up failure code instead of restarting forever.
One worker, or a system without ``SO_REUSEPORT`` load balancing (it is Linux's), runs uvicorn
as it comes.

Environment: ``HOST`` (``0.0.0.0``), ``PORT`` (``8000``), ``WEB_CONCURRENCY`` (``1``),
``FORWARDED_ALLOW_IPS`` (``127.0.0.1``: proxies whose ``X-Forwarded-*`` headers are trusted),
``UVICORN_LOG_LEVEL`` (``info``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from dataclasses import asdict, dataclass

import uvicorn

APPLICATION = "clearing.config.asgi:application"
STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that failed before serving
RESTART_PAUSE_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 30.0

logger = logging.getLogger("clearing.server.webserver")


@dataclass(frozen=True)
class ServerOptions:
    host: str
    port: int
    workers: int
    forwarded_allow_ips: str
    log_level: str

    @classmethod
    def from_environment(cls, environ=os.environ) -> ServerOptions:
        return cls(
            host=environ.get("HOST", "0.0.0.0"),  # a container listens on all its interfaces
            port=int(environ.get("PORT", "8000")),
            workers=int(environ.get("WEB_CONCURRENCY", "1")),
            forwarded_allow_ips=environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
            log_level=environ.get("UVICORN_LOG_LEVEL", "info"),
        )


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other processes may bind too (``SO_REUSEPORT``)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    # proto is IPPROTO_TCP: accepted connections inherit it, and asyncio only turns Nagle's
    # algorithm off (TCP_NODELAY) on sockets that say they are TCP.
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        logging.getLogger("uvicorn.error").error("Cannot listen on %s:%s: %s", host, port, error)
        sys.exit(STARTUP_FAILURE)
    return sock


def _worker_main(options: dict) -> None:
    """One worker process: its own listening socket, then uvicorn until SIGTERM."""
    server_options = ServerOptions(**options)
    sock = reuse_port_socket(server_options.host, server_options.port)
    config = uvicorn.Config(
        APPLICATION,
        host=server_options.host,
        port=server_options.port,
        proxy_headers=True,
        forwarded_allow_ips=server_options.forwarded_allow_ips,
        log_level=server_options.log_level,
    )
    uvicorn.Server(config).run(sockets=[sock])


class Supervisor:
    """Keeps ``options.workers`` worker processes running until told to stop."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.stopping = threading.Event()
        self._context = multiprocessing.get_context("spawn")  # a fresh interpreter, like uvicorn's
        self.workers: list[multiprocessing.process.BaseProcess] = []

    def _start_worker(self):
        worker = self._context.Process(target=_worker_main, args=(asdict(self.options),), daemon=False)
        worker.start()
        return worker

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (exit code 0) or a worker that fails at start-up (3)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stopping.set())
        options = self.options
        logger.info("Starting %d web workers on %s:%d", options.workers, options.host, options.port)
        self.workers = [self._start_worker() for _ in range(options.workers)]
        exit_code = 0
        while not self.stopping.wait(0.5):
            for index, worker in enumerate(self.workers):
                if worker.is_alive():
                    continue
                if worker.exitcode == STARTUP_FAILURE:
                    logger.error("Web worker %s failed to start; stopping the server.", worker.pid)
                    exit_code = STARTUP_FAILURE
                    self.stopping.set()
                    break
                logger.warning("Web worker %s exited with %s; starting another.", worker.pid, worker.exitcode)
                if self.stopping.wait(RESTART_PAUSE_SECONDS):
                    break
                self.workers[index] = self._start_worker()
        self.stop()
        return exit_code

    def stop(self) -> None:
        for worker in self.workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: uvicorn stops accepting and finishes requests in flight
        for worker in self.workers:
            worker.join(STOP_TIMEOUT_SECONDS)
            if worker.is_alive():
                worker.kill()
                worker.join()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    options = ServerOptions.from_environment()
    if options.workers > 1 and sys.platform.startswith("linux"):
        return Supervisor(options).run()
    # One worker; or elsewhere, where SO_REUSEPORT does not spread connections: uvicorn as it comes.
    uvicorn.run(
        APPLICATION,
        host=options.host,
        port=options.port,
        workers=options.workers,
        proxy_headers=True,
        forwarded_allow_ips=options.forwarded_allow_ips,
        log_level=options.log_level,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
