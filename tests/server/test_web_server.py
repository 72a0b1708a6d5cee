"""``python -m clearing.server.webserver`` (docker/bin/web): worker processes on their own sockets, spread
connections, replaced when they die, stopped together."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests import factories

START_SECONDS = 60


def listening_inodes(port: int) -> set[int]:
    return {inode for state, inode in _tcp_sockets(port) if state == "0A"}


def _tcp_sockets(port: int) -> list[tuple[str, int]]:
    """(state, inode) of the sockets whose local port is ``port`` (``/proc/net/tcp``)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.append((fields[3], int(fields[9])))
    return found


def socket_inodes_of(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def workers_of(pid: int, port: int) -> list[int]:
    """The children listening on ``port`` (multiprocessing also starts a resource tracker)."""
    listening = listening_inodes(port)
    return [child for child in children_of(pid) if socket_inodes_of(child) & listening]


def http_get(connection: socket.socket, path: str = "/healthz") -> int:
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    return int(head.split()[1])


def wait_for(condition, *, seconds: float, what: str, log: Path):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; server log:\n{log.read_text()}")


@pytest.fixture
def web_server(db, tmp_path):
    """Two workers on a free port, reading the test database; stopped (and checked) afterwards."""
    port = factories.free_port()
    log = tmp_path / "web.log"
    env = {
        **os.environ, "DATABASE_URL": factories.server_database_url(), "HOST": "127.0.0.1", "PORT": str(port),
        "WEB_CONCURRENCY": "2", "UVICORN_LOG_LEVEL": "warning", "PYTHON_BIN": sys.executable,
    }  # fmt: skip
    process = subprocess.Popen(
        [str(Path(settings.BASE_DIR) / "docker" / "bin" / "web")],
        cwd=settings.BASE_DIR, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(
            lambda: len(listening_inodes(port)) == 2, seconds=START_SECONDS, what="two listeners", log=log
        )
        yield process, port, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_each_worker_listens_on_its_own_socket_and_connections_are_spread_over_both(web_server):
    process, port, _log = web_server
    workers = workers_of(process.pid, port)
    assert len(workers) == 2
    connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
    try:
        assert {http_get(c) for c in connections} == {200}
        established = {inode for state, inode in _tcp_sockets(port) if state == "01"}
        held = [len(socket_inodes_of(w) & established) for w in workers]
        # A shared accept queue put 44 of 50 such connections on one worker; with a socket per
        # worker the kernel hashes them over both (8 or fewer of 40: probability below 1e-5).
        assert sum(held) == 40
        assert min(held) >= 8, held
    finally:
        for c in connections:
            c.close()


def test_a_worker_that_dies_is_replaced_and_sigterm_stops_the_whole_server(web_server):
    process, port, log = web_server
    victim = workers_of(process.pid, port)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: victim not in children_of(process.pid) and len(workers_of(process.pid, port)) == 2,
        seconds=START_SECONDS, what="a replacement worker", log=log,
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        assert http_get(connection) == 200
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=40) == 0
    assert listening_inodes(port) == set()


def test_a_port_taken_by_another_program_stops_the_server_instead_of_restarting_forever(db, tmp_path):
    with socket.socket() as squatter:  # no SO_REUSEPORT: nobody may share its port
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {**os.environ, "DATABASE_URL": factories.server_database_url(), "HOST": "127.0.0.1",
               "PORT": str(port), "WEB_CONCURRENCY": "2", "PYTHON_BIN": sys.executable}  # fmt: skip
        result = subprocess.run(
            [str(Path(settings.BASE_DIR) / "docker" / "bin" / "web")],
            cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 3
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stdout + result.stderr
