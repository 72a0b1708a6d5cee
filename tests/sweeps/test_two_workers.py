"""A full sweep split into shards over two real Celery worker processes with a Redis broker."""

import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.models import Count

from accounts.models import MarginAccount
from clearing.celery import app
from riskengine.sweeps import services
from riskengine.sweeps.models import MarginSnapshot, ShardStatus
from tests.sweeps.conftest import demo_quotes

ROOT = Path(__file__).resolve().parents[2]


def worker_start(name: str, env: dict, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "clearing", "worker", "-c", "1", "-n", f"{name}@%h",
               "--without-gossip", "--without-mingle", "-l", "info"]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.mark.django_db(transaction=True)
def test_two_workers_sweep_every_account_exactly_once():
    assert settings.REDIS_URL, "this test needs REDIS_URL (a Redis broker); it does not skip"
    app.connection_for_write().ensure_connection(max_retries=1)  # fails here when Redis is down
    app.control.purge()
    call_command("seed_demo", stdout=io.StringIO())
    database = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
    }
    workers = []
    logs = Path(tempfile.mkdtemp(prefix="sweep-workers-"))
    try:
        workers = [worker_start(name, env, logs / f"{name}.log") for name in ("sweep-a", "sweep-b")]
        deadline = time.monotonic() + 60
        while len(app.control.ping(timeout=1.0) or []) < 2:
            assert time.monotonic() < deadline, "workers did not start: " + (logs / "sweep-a.log").read_text()
            assert all(w.poll() is None for w in workers), (logs / "sweep-a.log").read_text()

        sweep = services.sweep_full_create(cause="two workers", quotes=demo_quotes(), shard_size=8)
        assert sweep.shard_count >= 4

        deadline = time.monotonic() + 120
        while sweep.shards.exclude(status=ShardStatus.DONE).exists():
            assert not sweep.shards.filter(status=ShardStatus.FAILED).exists(), sweep.shards.values("error")
            assert time.monotonic() < deadline, "shards not done in time"
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.kill()
        for worker in workers:
            worker.wait(timeout=30)

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
    assert {worker.split("@")[0] for _, worker, _ in shards} == {"sweep-a", "sweep-b"}
