"""A full sweep split into shards over two real Celery worker processes with a Redis broker.

Robust on a loaded 2-core CI machine and next to other runs sharing the Redis server:

- the workers consume only a queue named for this run (``-Q``) and the shard tasks are routed to
  it, so neither stale tasks left in the Redis db by earlier tests or killed workers nor another
  run's workers (same Redis db, another test database) can take or feed them; the queue is
  purged at start all the same;
- the readiness check pings these two worker names only (another run's workers do not count);
- tasks the demo seeding enqueued (event-sweep drains) go to the default queue, which these
  workers do not consume, so both workers are idle when the shards arrive;
- generous deadlines (worker start-up imports Django and numpy, slow under load) and the worker
  logs in every failure message.
"""

import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.models import Count

from accounts.models import MarginAccount
from clearing.config.celery import app
from riskengine.sweeps import services
from riskengine.sweeps.models import MarginSnapshot, ShardStatus
from tests.factories import demo_quotes, queue_purge

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 180
SWEEP_SECONDS = 300


def worker_start(name: str, queue: str, env: dict, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "clearing.config", "worker", "-c", "1", "-n", name,
               "-Q", queue, "--without-gossip", "--without-mingle", "--without-heartbeat",
               "-l", "info"]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def worker_stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: closes its broker and database connections
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=30)


@pytest.mark.postgresql("two real workers racing for shards on a shared server")
@pytest.mark.django_db(transaction=True)
def test_two_workers_sweep_every_account_exactly_once():
    assert settings.REDIS_URL, "this test needs REDIS_URL (a Redis broker); it does not skip"
    token = uuid.uuid4().hex[:10]
    queue = f"sweeps-test-{token}"
    names = [f"sweep-a-{token}@{socket.gethostname()}", f"sweep-b-{token}@{socket.gethostname()}"]
    queue_purge(queue)
    call_command("seed_demo", stdout=io.StringIO())
    database = connection.settings_dict
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}{password}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
    }
    logs = Path(tempfile.mkdtemp(prefix="sweep-workers-"))

    def worker_logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(logs.glob("*.log")))

    workers = []
    default_queue = app.conf.task_default_queue
    try:
        workers = [worker_start(name, queue, env, logs / f"{name.split('@')[0]}.log") for name in names]
        deadline = time.monotonic() + START_SECONDS
        while True:
            replies = app.control.ping(destination=names, timeout=1.0) or []
            if {name for reply in replies for name in reply} >= set(names):
                break
            assert all(w.poll() is None for w in workers), "a worker exited:\n" + worker_logs()
            assert time.monotonic() < deadline, "workers did not start in time:\n" + worker_logs()
            time.sleep(0.5)

        # The shard tasks go to this run's queue (the router reads the default queue per send).
        app.conf.task_default_queue = queue
        sweep = services.sweep_full_create(cause="two workers", quotes=demo_quotes(), shard_size=8)
        assert sweep.shard_count >= 4

        deadline = time.monotonic() + SWEEP_SECONDS
        while sweep.shards.exclude(status=ShardStatus.DONE).exists():
            failed = list(sweep.shards.filter(status=ShardStatus.FAILED).values_list("number", "error"))
            assert not failed, f"shards failed: {failed}\n" + worker_logs()
            assert all(w.poll() is None for w in workers), "a worker exited:\n" + worker_logs()
            assert time.monotonic() < deadline, "shards not done in time:\n" + worker_logs()
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker_stop(worker)
        # Leave no task behind in the Redis db: this run's queue, and the default queue the seeding
        # and the workers (liquidations) sent to.
        app.conf.task_default_queue = default_queue
        queue_purge(queue, delete=True)
        app.control.purge()

    sweep.refresh_from_db()
    assert sweep.status == "done"
    per_account = dict(
        MarginSnapshot.objects.filter(sweep=sweep).values_list("account_id").annotate(n=Count("id"))
    )
    assert set(per_account) == set(MarginAccount.objects.values_list("pk", flat=True))
    assert set(per_account.values()) == {1}
    shards = list(sweep.shards.values_list("number", "worker", "accounts"))
    assert sorted(number for number, _, _ in shards) == list(range(sweep.shard_count))
    assert sum(accounts for _, _, accounts in shards) == sweep.accounts
    assert {worker for _, worker, _ in shards} == set(names), worker_logs()
