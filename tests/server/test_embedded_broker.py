"""The embedded stack's filesystem broker (clearing.broker): a producer never exposes a half-written
message, and a worker that meets one (written in place by some other producer) carries on and runs
it once it is whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from queue import Empty

import pytest
from django.db import connection
from kombu import Connection

from clearing import broker
from clearing.config.celery import app

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 120  # a worker imports Django and numpy: slow on a loaded machine
RUN_SECONDS = 60
TASK = "api.idempotency_records_purge"


def folders(base: Path) -> dict:
    """The transport options the settings give the embedded stack for ``CLEARING_VAR_DIR=base``."""
    options = {
        "data_folder_in": str(base / "broker"),
        "data_folder_out": str(base / "broker"),
        "processed_folder": str(base / "broker" / "processed"),
        "control_folder": str(base / "broker" / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
    for key in ("data_folder_in", "processed_folder", "control_folder"):
        Path(options[key]).mkdir(parents=True, exist_ok=True)
    return options


def broker_connection(base: Path) -> Connection:
    return Connection("filesystem://", transport="clearing.broker:Transport", transport_options=folders(base))


def messages(base: Path, queue: str = "q") -> list[Path]:
    return sorted(p for p in (base / "broker").iterdir() if p.name.partition(".")[2] == f"{queue}.msg")


def test_a_message_appears_in_the_folder_only_once_it_is_written_whole(tmp_path, monkeypatch):
    seen_before_rename = []
    real_replace = os.replace

    def replace(source, target):
        seen_before_rename.append(messages(tmp_path))
        real_replace(source, target)

    monkeypatch.setattr(broker.os, "replace", replace)
    with broker_connection(tmp_path) as conn:
        conn.default_channel._put("q", {"body": "x" * 100_000})
        assert seen_before_rename == [[]]  # written in full under a hidden name first
        (message,) = messages(tmp_path)
        assert not [p for p in (tmp_path / "broker").iterdir() if p.name.endswith(".part")]
        assert conn.default_channel._get("q") == {"body": "x" * 100_000}
    assert not message.exists()


def test_a_half_written_message_is_left_for_a_later_poll_and_read_once_whole(tmp_path):
    with broker_connection(tmp_path) as conn:
        channel = conn.default_channel
        channel._put("q", {"n": 1})
        time.sleep(0.01)  # names sort by the millisecond they were written
        channel._put("q", {"n": 2})
        first, _ = messages(tmp_path)
        whole = first.read_bytes()
        first.write_bytes(whole[: len(whole) // 2])  # as a producer writing in place leaves it

        assert channel._get("q") == {"n": 2}  # no JSONDecodeError: the next message is served
        with pytest.raises(Empty):
            channel._get("q")
        assert messages(tmp_path) == [first]  # given back under its own name

        first.write_bytes(whole)  # the producer finishes
        assert channel._get("q") == {"n": 1}
        assert messages(tmp_path) == []


def test_a_message_still_incomplete_after_the_grace_period_is_set_aside(tmp_path):
    with broker_connection(tmp_path) as conn:
        channel = conn.default_channel
        channel._put("q", {"n": 1})
        (stuck,) = messages(tmp_path)
        stuck.write_bytes(b'{"n": ')
        stale = time.time() - broker.INCOMPLETE_GRACE_SECONDS - 5
        os.utime(stuck, (stale, stale))

        with pytest.raises(Empty):
            channel._get("q")

        assert messages(tmp_path) == []
        assert (tmp_path / "broker" / broker.REJECTED_FOLDER / stuck.name).read_bytes() == b'{"n": '


def test_the_embedded_stack_uses_the_safe_transport_for_its_filesystem_broker(tmp_path):
    # The settings as `make run` reads them (no REDIS_URL), in a process of their own.
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "CELERY_BROKER_URL"}}
    env.update(CLEARING_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="clearing.config.settings")
    script = (
        "import django; django.setup()\n"
        "from clearing.config.celery import app, embedded_broker_folders_ensure\n"
        "embedded_broker_folders_ensure()\n"
        "with app.connection_for_write() as conn:\n"
        "    channel = conn.default_channel\n"
        "    print(type(channel).__module__, type(channel).__name__)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.stdout.split() == ["clearing.broker", "Channel"], shown.stderr[-2000:]


def database_url() -> str:
    database = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{database['NAME']}"
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    return (
        f"postgres://{database['USER']}{password}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}"
    )


def wait_for(condition, seconds: float, log: Path, what: str) -> None:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, (
            f"{what}: not within {seconds} s\n{log.read_text()[-4000:]}"
        )
        time.sleep(0.2)


def runs(log: Path) -> int:
    return sum(
        1 for line in log.read_text().splitlines() if f"Task {TASK}[" in line and " succeeded in " in line
    )


@pytest.mark.django_db(transaction=True)
def test_a_worker_meeting_a_half_written_message_survives_and_runs_it_once_whole(tmp_path):
    queue = app.conf.task_default_queue
    with broker_connection(tmp_path) as conn:
        app.amqp.queues[queue](conn.default_channel).declare()
        app.send_task(TASK, connection=conn)
        app.send_task(TASK, connection=conn)
    first, _ = messages(tmp_path, queue)
    whole = first.read_bytes()
    first.write_bytes(whole[: len(whole) // 2])

    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "CELERY_BROKER_URL"}}
    env.update(CLEARING_VAR_DIR=str(tmp_path), DATABASE_URL=database_url())
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "celery", "-A", "clearing.config", "worker", "--pool", "solo",
               "-Q", queue, "--without-gossip", "--without-mingle", "--without-heartbeat",
               "-l", "info"]  # fmt: skip
    with log.open("w") as out:
        worker = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(lambda: runs(log) >= 1, START_SECONDS, log, "the whole message ran")
        time.sleep(1.0)  # several polls over the half-written file
        assert worker.poll() is None, log.read_text()[-4000:]
        assert "not complete yet" in log.read_text()
        assert first.exists()  # still waiting in the folder, not lost

        first.write_bytes(whole)  # its producer finishes
        wait_for(lambda: runs(log) >= 2, RUN_SECONDS, log, "the completed one ran")
        assert worker.poll() is None
        assert "JSONDecodeError" not in log.read_text()
        assert messages(tmp_path, queue) == []
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)
