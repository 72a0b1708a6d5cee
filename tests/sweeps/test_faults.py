"""Fault injection on real processes: a Celery worker killed with SIGKILL mid-shard, its database
connection terminated mid-task, the broker killed and restarted during a sweep, a duplicate and a
late (redelivered) shard after a newer sweep. Each test asserts that nothing is lost (every account
stored), nothing duplicated (one snapshot per account and sweep), that the newest margin wins and
that recovery happens within a bound.

The workers are real ``celery worker`` processes (their own session, so SIGKILL takes the whole
worker: main process and pool child) on a queue of their own (see ``test_two_workers``). A shard is
held mid-flight by a row lock the test takes on the shard (``SELECT … FOR UPDATE`` from a
connection of its own): the worker computes the shard, then waits for that lock before storing.
The bounds are made small for the test's own workers through the environment: the broker's
visibility timeout (``BROKER_VISIBILITY_TIMEOUT``, 300 s in production) and the worker's lock
timeout (so the held lock outlasts the kill).
"""

import io
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from accounts.models import MarginAccount
from clearing.config.celery import app
from riskengine.sweeps import services
from riskengine.sweeps.models import (
    AccountMargin,
    MarginCall,
    MarginSnapshot,
    ShardStatus,
    Sweep,
    SweepShard,
    SweepStatus,
)
from riskengine.sweeps.recovery import shard_resend_after, sweeps_recover
from riskengine.sweeps.tasks import sweep_shard
from tests.factories import demo_quotes, moved, queue_purge

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 120  # a worker imports Django and numpy: slow on a loaded machine
VISIBILITY_SECONDS = 5  # the test workers' visibility timeout
# A lost message comes back after the visibility timeout, at the next restore scan (every 10 s):
# the bound the tests hold the recovery to (plus the second worker's start-up, measured apart).
REDELIVERY_BOUND = VISIBILITY_SECONDS + 10 + 15
SUCCEEDED = re.compile(r"Task sweeps\.shard\[[^]]+\] succeeded")
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgresql("fault injection with real workers on a shared server (pg_terminate_backend)"),
]


def database_dsn() -> str:
    database = connection.settings_dict
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    return (
        f"postgres://{database['USER']}{password}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}"
    )


class Workers:
    """Real worker processes on one queue, with their logs for every failure message."""

    def __init__(self, *, broker: str, **env: str) -> None:
        self.token = uuid.uuid4().hex[:10]
        self.queue = f"faults-{self.token}"
        self.logs = Path(tempfile.mkdtemp(prefix="sweep-faults-"))
        self.env = {
            **os.environ,
            "DATABASE_URL": database_dsn(),
            "REDIS_URL": broker,
            "CELERY_BROKER_URL": broker,
            "BROKER_VISIBILITY_TIMEOUT": str(VISIBILITY_SECONDS),
            **env,
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, label: str) -> str:
        name = f"{label}-{self.token}@{socket.gethostname()}"
        command = [sys.executable, "-m", "celery", "-A", "clearing.config", "worker", "-c", "1", "-n", name,
                   "-Q", self.queue, "--without-gossip", "--without-mingle", "--without-heartbeat",
                   "-l", "info"]  # fmt: skip
        log = (self.logs / f"{label}.log").open("w")
        self.processes[name] = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(lambda: "ready." in (self.logs / f"{label}.log").read_text(), START_SECONDS, self, "start")
        return name

    def kill(self, name: str) -> None:
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)  # the whole worker: main process and pool child
        process.wait(timeout=30)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=30)

    def text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.logs.glob("*.log")))


def wait_for(condition: Callable[[], bool], seconds: float, workers: Workers, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"{what}: not within {seconds} s\n" + workers.text()
        time.sleep(0.2)
    return time.monotonic() - started


@contextmanager
def shard_held(shard_id: int):
    """Hold the shard's row lock from a connection of the test's own (the worker stops there,
    before storing anything); yields the connection's backend pid."""
    with psycopg.connect(database_dsn()) as holder:
        holder.execute("SELECT id FROM sweeps_sweepshard WHERE id = %s FOR UPDATE", [shard_id])
        yield holder.info.backend_pid
        holder.rollback()


def blocked_by(pid: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [pid])
        return [row[0] for row in cursor.fetchall()]


def stored_once(sweep: Sweep) -> None:
    per_account = dict(
        MarginSnapshot.objects.filter(sweep=sweep).values_list("account_id").annotate(n=Count("id"))
    )
    assert set(per_account) == set(MarginAccount.objects.values_list("pk", flat=True))  # nothing lost
    assert set(per_account.values()) == {1}  # nothing duplicated


def one_shard_sweep() -> tuple[Sweep, SweepShard]:
    call_command("seed_demo", stdout=io.StringIO())
    sweep = services.sweep_full_create(cause="fault", quotes=demo_quotes(), shard_size=10**6, enqueue=False)
    return sweep, sweep.shards.get()


@pytest.fixture
def workers():
    assert settings.REDIS_URL, "this test needs REDIS_URL (a Redis broker); it does not skip"
    started: list[Workers] = []
    default_queue = app.conf.task_default_queue

    def make(**kwargs) -> Workers:
        group = Workers(**kwargs)
        started.append(group)
        return group

    yield make
    app.conf.task_default_queue = default_queue
    for group in started:
        group.stop()
    # Leave no task behind in the shared Redis db: the workers' queues, and the default queue the
    # seeding (event-sweep drains) sent to.
    for group in started:
        if group.env["CELERY_BROKER_URL"] == settings.CELERY_BROKER_URL:
            queue_purge(group.queue, delete=True)
    app.control.purge()


def test_a_shard_killed_mid_flight_is_redone_by_another_worker_once_and_late_cannot_undo_a_newer_sweep(
    workers,
):
    """SIGKILL of the worker running sweep A's shard; before the message comes back, sweep B runs
    (after a 15 % BTC move) and A's shard is also sent a second time (a duplicate). The survivor
    runs both A messages late: A is stored once, as history; B's margins and calls stand."""
    sweep, shard = one_shard_sweep()
    group = workers(broker=settings.CELERY_BROKER_URL, DATABASE_WORKER_LOCK_TIMEOUT="120")
    doomed = group.start("doomed")
    with shard_held(shard.pk) as holder:
        sweep_shard.apply_async(args=[shard.pk], queue=group.queue)
        wait_for(lambda: bool(blocked_by(holder)), START_SECONDS, group, "the shard reached its store")
        group.kill(doomed)
        lost_at = time.monotonic()
    assert SweepShard.objects.get(pk=shard.pk).status == ShardStatus.PENDING

    quotes = demo_quotes()
    newer = replace(
        moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.85),
        valuation_time=quotes.valuation_time + timedelta(minutes=1),
    )
    sweep_b, _ = services.sweep_full_run(cause="B", quotes=newer)
    calls = list(MarginCall.objects.order_by("pk").values_list("pk", "status", "deadline", "closed_at"))
    margins = dict(AccountMargin.objects.values_list("account_id", "snapshot_id"))
    sweep_shard.apply_async(args=[shard.pk], queue=group.queue)  # a duplicate of A's message

    group.start("survivor")
    # Both A messages consumed: the duplicate at once, the killed worker's one once the broker
    # hands it back (visibility timeout + restore scan).
    wait_for(
        lambda: len(SUCCEEDED.findall((group.logs / "survivor.log").read_text())) >= 2,
        REDELIVERY_BOUND + START_SECONDS,
        group,
        "the killed worker's shard redelivered and run",
    )
    took = time.monotonic() - lost_at
    shard.refresh_from_db()
    sweep.refresh_from_db()
    assert shard.status == ShardStatus.DONE
    assert shard.worker.startswith("survivor-")
    assert sweep.status == SweepStatus.DONE
    stored_once(sweep)  # the redelivery and the duplicate stored nothing twice
    stored_once(sweep_b)
    assert dict(AccountMargin.objects.values_list("account_id", "snapshot_id")) == margins  # newest wins
    assert set(AccountMargin.objects.values_list("sweep_id", flat=True)) == {sweep_b.pk}
    assert (
        list(MarginCall.objects.order_by("pk").values_list("pk", "status", "deadline", "closed_at")) == calls
    )
    assert took < REDELIVERY_BOUND + START_SECONDS, took


def test_a_task_whose_database_connection_is_terminated_mid_task_retries_and_completes(workers):
    sweep, shard = one_shard_sweep()
    group = workers(broker=settings.CELERY_BROKER_URL, DATABASE_WORKER_LOCK_TIMEOUT="120")
    group.start("worker")
    with shard_held(shard.pk) as holder:
        sweep_shard.apply_async(args=[shard.pk], queue=group.queue)
        wait_for(lambda: bool(blocked_by(holder)), START_SECONDS, group, "the shard reached its store")
        (backend,) = blocked_by(holder)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
        terminated_at = time.monotonic()
    # First retry after ≤ 2 s (back-off with jitter), then the shard runs in well under a second.
    took = wait_for(
        lambda: SweepShard.objects.get(pk=shard.pk).status == ShardStatus.DONE, 60, group, "the retry"
    )
    assert "Retry in" in group.text()
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.DONE
    stored_once(sweep)
    assert time.monotonic() - terminated_at < 60, took


@contextmanager
def redis_server(port: int):
    command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def app_broker(url: str):
    """This process sends through ``url`` (the test's own Redis) while inside. The usual pools are
    set aside, not closed (kombu keeps one pool per broker for the process: closing it would break
    every later send of the session), and put back on the way out."""
    saved = app.conf.broker_url, app.conf.broker_write_url, app._pool, app.amqp._producer_pool
    app.conf.broker_url = app.conf.broker_write_url = url
    app._pool, app.amqp._producer_pool = None, None
    try:
        yield
    finally:
        if app._pool is not None:
            app._pool.force_close_all()  # the test broker's connections only
        app.conf.broker_url, app.conf.broker_write_url, app._pool, app.amqp._producer_pool = saved


def test_a_sweep_started_during_a_broker_outage_completes_once_the_broker_is_back(workers):
    call_command("seed_demo", stdout=io.StringIO())
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    with redis_server(port) as redis:
        group = workers(broker=broker)
        group.start("worker")
        redis.kill()  # the broker goes away with the worker connected
        redis.wait(timeout=10)
        app.conf.task_default_queue = group.queue
        with app_broker(broker):
            sweep = services.sweep_full_create(cause="outage", quotes=demo_quotes(), shard_size=8)
            # Created and committed; every send failed and was logged, nothing raised.
            assert sweep.shard_count >= 2
            assert set(sweep.shards.values_list("status", flat=True)) == {ShardStatus.PENDING}
            with redis_server(port):  # the broker is back (empty: it kept nothing)
                back_at = time.monotonic()
                outcome = sweeps_recover(now=timezone.now() + shard_resend_after() + timedelta(seconds=1))
                assert len(outcome.resent) == sweep.shard_count
                # The worker reconnects (back-off of a few seconds) and runs the shards. The broker
                # came back empty: a send made before the worker re-declared its queue's binding is
                # routed nowhere, so, as beat does every minute, recovery runs again (every 5 s
                # here) until the sweep is done; running a shard twice is a no-op.
                last_recover = [time.monotonic()]

                def done() -> bool:
                    if Sweep.objects.get(pk=sweep.pk).status == SweepStatus.DONE:
                        return True
                    if time.monotonic() - last_recover[0] >= 5:
                        sweeps_recover(now=timezone.now() + shard_resend_after() + timedelta(seconds=1))
                        last_recover[0] = time.monotonic()
                    return False

                wait_for(done, 60, group, "the sweep done after the broker came back")
                took = time.monotonic() - back_at
    stored_once(sweep)
    assert took < 60
