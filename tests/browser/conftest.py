"""A real ASGI server (uvicorn, HTTP + websockets) on the test database, and Debian's Chromium
driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections

from tests import factories

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(settings.BASE_DIR) / "artifacts" / "screenshots"


@pytest.fixture
def demo_venue(transactional_db, monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are plain
    # synchronous code between browser steps, which Django would otherwise refuse.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    call_command("seed_demo", stdout=io.StringIO())


@pytest.fixture
def asgi_server(demo_venue, tmp_path):
    """uvicorn serving clearing.config.asgi on a free loopback port, reading the test database."""
    port = factories.free_port()
    # DEBUG on: whitenoise serves static files straight from the apps (no collectstatic in tests).
    env = {**os.environ, "DATABASE_URL": factories.server_database_url(), "DJANGO_DEBUG": "1"}
    log = (tmp_path / "uvicorn.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "clearing.config.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError("uvicorn did not start")
    if process.poll() is not None:
        raise RuntimeError(f"uvicorn exited: {(tmp_path / 'uvicorn.log').read_text()}")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture
def browser():
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is required at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        # While Playwright's event loop runs in this thread, Django keeps the test's database
        # connection per async context, apart from the thread's own: close it here, or it
        # outlives the test and the test database cannot be dropped.
        connections.close_all()
        browser.close()
