"""Run the web server, a Celery worker, Celery beat and the demo price feed for ``make run``.

Each process is started through the same entry-point script that docker compose uses
(``docker/bin/web|worker|beat``). A process that exits is restarted after a short pause (tasks are
safe to run again: acks late, idempotent). The embedded filesystem broker no longer crashes
workers on half-written message files (``clearing.broker``); the restart covers any other death.
Ctrl-C or SIGTERM stops all three.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from clearing.config.celery import embedded_broker_folders_ensure

PROCESSES = ("web", "worker", "beat")
# The demo's simulated price sources, on unless CLEARING_DEMO_FEED=0.
DEMO_FEED = "demo-feed"
RESTART_PAUSE_SECONDS = 2.0


class Command(BaseCommand):
    help = "Run web (ASGI), a Celery worker and Celery beat, restarting any that exits."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args, host: str, port: int, **options):
        scripts = Path(settings.BASE_DIR) / "docker" / "bin"
        env = {**os.environ, "HOST": host, "PORT": str(port), "PYTHON_BIN": sys.executable}
        # The demo custody confirms announced deposits and sends requested withdrawals after a few
        # seconds (acting as the ``custody`` user; development only, see CUSTODY_DEMO_AUTOCONFIRM).
        # CUSTODY_DEMO_AUTOCONFIRM=0 leaves them pending for a custodian using the API.
        env.setdefault("CUSTODY_DEMO_AUTOCONFIRM", "1")
        embedded_broker_folders_ensure()
        children: dict[str, subprocess.Popen] = {}
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

        def start(name: str) -> None:
            children[name] = subprocess.Popen(
                [str(scripts / name)], cwd=settings.BASE_DIR, env=env, start_new_session=True
            )

        processes = list(PROCESSES)
        if os.environ.get("CLEARING_DEMO_FEED", "1") != "0":
            processes.append(DEMO_FEED)
        for name in processes:
            start(name)
        self.stdout.write(
            self.style.SUCCESS(f"Clearing venue running at http://{host}:{port}/ (Ctrl-C to stop)")
        )
        self.stdout.write(f"Ops admin: http://{host}:{port}/admin/")
        self.stdout.flush()
        try:
            while not stopping:
                time.sleep(0.5)
                for name, child in list(children.items()):
                    if child.poll() is not None and not stopping:
                        self.stderr.write(f"{name} exited with {child.returncode}; restarting")
                        time.sleep(RESTART_PAUSE_SECONDS)
                        start(name)
        finally:
            for child in children.values():
                if child.poll() is None:
                    os.killpg(child.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            for child in children.values():
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
