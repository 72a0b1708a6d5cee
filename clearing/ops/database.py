"""PostgreSQL timeouts per kind of process, set in the connection's start-up packet.

``statement_timeout`` ends a statement that runs longer than it should (a runaway query, a plan
gone wrong) and ``lock_timeout`` a wait for a row or table lock, each with an error the caller
sees at once instead of a thread or a worker process held indefinitely. They travel as libpq
``options`` (``-c name=value``) in ``DATABASES["default"]["OPTIONS"]``: no extra round trip per
connection, and they hold for every statement of the session, the pool's connections included.

Web processes and management commands use ``DATABASE_STATEMENT_TIMEOUT`` /
``DATABASE_LOCK_TIMEOUT`` (settings); a Celery worker switches to the longer
``DATABASE_WORKER_*`` values when it starts (``clearing.config.celery``), whatever command line started
it. Pure functions of the settings dict: settings import this module before Django is set up.
"""

from __future__ import annotations

import re

_OPTION = re.compile(r"\s*-c\s*(statement_timeout|lock_timeout)=\S+")


def timeout_options(*, existing: str = "", statement_timeout: float, lock_timeout: float) -> str:
    """libpq ``options`` carrying both timeouts (seconds; 0 turns one off), replacing any earlier
    value of the two in ``existing`` and keeping the rest of it."""
    kept = _OPTION.sub("", existing).strip()
    ours = f"-c statement_timeout={int(statement_timeout * 1000)} -c lock_timeout={int(lock_timeout * 1000)}"
    return f"{kept} {ours}".strip()


def database_timeouts_apply(
    *, databases: dict, statement_timeout: float, lock_timeout: float, alias: str = "default"
) -> bool:
    """Set the timeouts of ``databases[alias]`` in place (PostgreSQL only); returns whether it
    did. Connections opened afterwards use them; call ``connections.close_all()`` to drop older
    ones."""
    database = databases[alias]
    if "postgresql" not in database.get("ENGINE", ""):
        return False
    options = database.setdefault("OPTIONS", {})
    options["options"] = timeout_options(
        existing=options.get("options", ""), statement_timeout=statement_timeout, lock_timeout=lock_timeout
    )
    return True
