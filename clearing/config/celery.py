"""The Celery application shared by workers, beat and the web process (which only enqueues)."""

import os
from pathlib import Path

from celery import Celery
from celery.signals import worker_init, worker_ready
from django.conf import settings
from django.db import connections

from clearing.ops.database import database_timeouts_apply

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clearing.config.settings")

app = Celery("clearing")
# Every Celery setting lives in Django settings under the CELERY_ prefix.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _worker_database_timeouts(**kwargs) -> None:
    """A worker's tasks get the worker's PostgreSQL timeouts (settings, "PostgreSQL timeouts"),
    however the worker was started. Runs in the worker's main process before the pool forks, so
    every pool process inherits them; connections opened earlier are closed to pick them up."""
    database_timeouts_apply(
        databases=settings.DATABASES,
        statement_timeout=settings.DATABASE_WORKER_STATEMENT_TIMEOUT,
        lock_timeout=settings.DATABASE_WORKER_LOCK_TIMEOUT,
    )
    connections.close_all()


@worker_ready.connect
def _worker_metrics_server(**kwargs) -> None:
    """With WORKER_METRICS_PORT set, the worker's main process serves the task metrics of all its
    pool processes (clearing.ops.metrics); started once the pool is up."""
    if settings.WORKER_METRICS_PORT:
        # Imported when the worker is ready: the metrics module reads models, which cannot be
        # imported while this module loads (it is imported before Django's app registry is ready).
        from clearing.ops.metrics import worker_metrics_server_start

        worker_metrics_server_start(port=settings.WORKER_METRICS_PORT, addr=settings.WORKER_METRICS_ADDR)


def embedded_broker_folders_ensure() -> None:
    """The embedded stack's ``filesystem://`` broker writes messages into folders that must exist:
    created before anything enqueues (``seed_demo`` activates the first parameter set and so
    enqueues an event sweep before ``runstack`` starts any worker)."""
    if settings.CELERY_BROKER_URL == "filesystem://":
        for folder in ("data_folder_in", "processed_folder", "control_folder"):
            Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS[folder]).mkdir(parents=True, exist_ok=True)
