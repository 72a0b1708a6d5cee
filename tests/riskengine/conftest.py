"""Fixtures of the engine tests (their documents are built by ``tests/riskengine/documents.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_cli():
    """``run_cli(*args, stdin=None)``: the engine's command line (``python -m riskengine``) run in a
    process of its own, its completed process returned (exit code, stdout, stderr)."""

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "riskengine", *args], input=stdin, capture_output=True, text=True,
            cwd=REPO, check=False, timeout=60,
        )  # fmt: skip

    return run
