"""Fault drill: a whole Celery worker is lost (SIGKILL to its process group) in the middle of a
shard; how long until another worker runs the shard, and is it stored exactly once?

    redis-server --port 6390 --save '' --appendonly no &     # a broker of its own
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/clearing_tasks_bench \\
      REDIS_URL=redis://127.0.0.1:6390/0 .venv/bin/python -m bench.fault_worker_lost

Uses the venue ``bench.bench_tasks`` wrote (any PostgreSQL database with accounts will do). The
shard covers every account, so it runs for a few seconds; the first worker is killed as soon as it
has taken the message. Expected (settings, "Celery"): the message is handed back once it has been
out for the broker's visibility timeout (300 s), within one restore scan (10 s) — not after the
hour kombu defaults to.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clearing.config.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402

from clearing.config.celery import app  # noqa: E402
from riskengine.sweeps import services  # noqa: E402
from riskengine.sweeps.models import MarginSnapshot, ShardStatus, SweepShard  # noqa: E402
from riskengine.sweeps.tasks import sweep_shard  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def worker(name: str, queue: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "clearing.config", "worker", "-c", "1", "-n", name,
               "-Q", queue, "--without-gossip", "--without-mingle", "--without-heartbeat",
               "-l", "info"]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def main() -> None:
    assert settings.REDIS_URL, "set REDIS_URL to a Redis of this drill's own"
    queue = f"fault-{uuid.uuid4().hex[:8]}"
    logs = Path(tempfile.mkdtemp(prefix="fault-worker-lost-"))
    sweep = services.sweep_full_create(cause="fault drill", shard_size=10**7, enqueue=False)
    shard = sweep.shards.get()
    print(f"visibility timeout {app.conf.broker_transport_options['visibility_timeout']} s; "
          f"shard {shard.pk} of {sweep.accounts:,} accounts; logs in {logs}")  # fmt: skip
    first = worker("doomed@%h", queue, logs / "doomed.log")
    sweep_shard.apply_async(args=[shard.pk], queue=queue)
    while "received" not in (logs / "doomed.log").read_text():
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the whole worker: main process and pool child
    lost_at = time.monotonic()
    first.wait()
    assert SweepShard.objects.get(pk=shard.pk).status == ShardStatus.PENDING, "the shard finished first"
    print("worker killed mid-shard; starting another worker")
    second = worker("survivor@%h", queue, logs / "survivor.log")
    try:
        while SweepShard.objects.get(pk=shard.pk).status != ShardStatus.DONE:
            time.sleep(1)
            if time.monotonic() - lost_at > 900:
                raise SystemExit("the shard was not run again within 15 minutes")
        took = time.monotonic() - lost_at
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=60)
    stored = MarginSnapshot.objects.filter(shard_id=shard.pk).count()
    print(f"shard run again and stored {took:.0f} s after the worker was lost; "
          f"{stored:,} snapshots for {sweep.accounts:,} accounts")  # fmt: skip


if __name__ == "__main__":
    main()
