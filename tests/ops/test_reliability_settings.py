"""Celery and PostgreSQL settings that bound how long a crash, a stuck statement or a lost message
can hold work up (settings, "Operations")."""

from copy import deepcopy

import pytest
from django.conf import settings
from django.db import OperationalError, connection, connections

from clearing.config.celery import _worker_database_timeouts, app
from clearing.ops.database import database_timeouts_apply, timeout_options
from clearing.ops.retry import RETRY_BACKOFF_MAX


def project_tasks() -> dict:
    app.loader.import_default_modules()
    return {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}


def test_every_task_has_a_soft_limit_below_a_hard_limit():
    tasks = project_tasks()
    assert {"sweeps.shard", "sweeps.liquidation_execute", "sweeps.full", "sweeps.requests_drain"} <= set(
        tasks
    )
    for name, task in tasks.items():
        assert task.soft_time_limit, name
        assert task.soft_time_limit < task.time_limit, name


def test_a_message_is_handed_back_only_after_its_task_can_no_longer_be_running():
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    longest = max(task.time_limit for task in project_tasks().values())
    # A task still running (up to its hard limit) or waiting for a retry countdown keeps its
    # message unacknowledged: handing it back earlier would run it twice at once.
    assert visibility > longest + RETRY_BACKOFF_MAX
    # …and a lost one comes back within minutes, not the hour kombu defaults to.
    assert visibility <= 600
    assert app.conf.broker_transport_options["unacked_restore_throttle"] == 1


def test_idempotent_tasks_are_acknowledged_after_they_ran_and_the_others_before():
    for name, task in project_tasks().items():
        idempotent = name != "marketdata.calibrate"
        assert task.acks_late is idempotent, name
        assert bool(task.reject_on_worker_lost) is idempotent, name
    assert app.conf.worker_prefetch_multiplier == 1


def test_sweep_tasks_retry_transient_errors_with_back_off():
    tasks = project_tasks()
    for name in ("sweeps.shard", "sweeps.liquidation_execute", "sweeps.requests_drain", "sweeps.full"):
        assert OperationalError in tasks[name].autoretry_for, name
        assert tasks[name].retry_backoff, name
        assert tasks[name].max_retries, name


def test_timeout_options_replace_earlier_values_and_keep_other_options():
    options = timeout_options(
        existing="-c search_path=x -c statement_timeout=1", statement_timeout=2.5, lock_timeout=0
    )
    assert options == "-c search_path=x -c statement_timeout=2500 -c lock_timeout=0"


def show(cursor, name: str) -> str:
    cursor.execute(f"SHOW {name}")
    return cursor.fetchone()[0]


@pytest.mark.postgresql("PostgreSQL's statement and lock timeouts")
def test_web_connections_carry_the_web_timeouts(db):
    with connection.cursor() as cursor:
        assert show(cursor, "statement_timeout") == f"{int(settings.DATABASE_STATEMENT_TIMEOUT)}s"
        assert show(cursor, "lock_timeout") == f"{int(settings.DATABASE_LOCK_TIMEOUT)}s"


def connection_with(*, statement_timeout: float, lock_timeout: float):
    """A second connection to the test database with other timeouts, set the way settings set
    them."""
    database = deepcopy(connection.settings_dict)
    database_timeouts_apply(
        databases={"default": database}, statement_timeout=statement_timeout, lock_timeout=lock_timeout
    )
    return type(connections["default"])(database, alias="timeouts")


@pytest.mark.postgresql("PostgreSQL's statement and lock timeouts")
def test_a_statement_longer_than_the_statement_timeout_is_cancelled(db):
    other = connection_with(statement_timeout=0.2, lock_timeout=5)
    try:
        with other.cursor() as cursor, pytest.raises(OperationalError, match="statement timeout"):
            cursor.execute("SELECT pg_sleep(2)")
    finally:
        other.close()


@pytest.mark.postgresql("PostgreSQL's statement and lock timeouts")
def test_a_lock_wait_longer_than_the_lock_timeout_fails(db):
    other = connection_with(statement_timeout=5, lock_timeout=0.2)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(913)")  # held until the test's rollback
        with other.cursor() as cursor, pytest.raises(OperationalError, match="lock timeout"):
            cursor.execute("SELECT pg_advisory_lock(913)")
    finally:
        other.close()


@pytest.fixture
def restore_database_options():
    options = deepcopy(settings.DATABASES["default"].get("OPTIONS", {}))
    yield
    settings.DATABASES["default"]["OPTIONS"] = options
    connections.close_all()


@pytest.mark.postgresql("PostgreSQL's statement and lock timeouts")
def test_a_celery_worker_switches_to_the_worker_timeouts_when_it_starts(
    transactional_db, restore_database_options
):
    _worker_database_timeouts()
    with connection.cursor() as cursor:
        assert show(cursor, "statement_timeout") == "1min"
        assert show(cursor, "lock_timeout") == "30s"
