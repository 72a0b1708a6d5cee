"""Prometheus metrics (docs/operations.md, "Metrics"): what the platform is doing, read two ways.

State is read from the database at scrape time (``DatabaseCollector``): outbox depth and relay
lag, event-sweep backlog, the last full sweep's duration and phases, stuck and failed shards,
stuck liquidations, each symbol's oracle status, the insurance fund, open ops alerts, table sizes.
Any web process answers for the whole venue (workers on any number of hosts write the rows), and
nothing is lost when a process restarts.

Events are counted where they happen, by ``prometheus_client`` metrics in the process: Celery task
durations, failures and retries (signal handlers below: ``riskengine.sweeps.services`` needs no
edit), shard durations, the relay's sends, failures and lag, rows pruned, throttle fail-opens.
With ``PROMETHEUS_MULTIPROC_DIR`` set (``docker/bin/web`` and ``docker/bin/worker`` set it and
empty it at start) every process writes its values to files there and a scrape adds them up
(prometheus_client's multiprocess mode), so the several uvicorn processes of a web container,
and a Celery worker's pool processes, each answer as one. Web processes are scraped at
``/metrics``; a worker host's counters at ``WORKER_METRICS_PORT`` (``worker_metrics_server_start``).

Access: ``METRICS_TOKEN`` set → every scrape needs ``Authorization: Bearer <token>`` (compared in
constant time, 403 otherwise). Unset → in production the endpoint does not exist (404); in
development it answers requests from loopback only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from wsgiref.simple_server import WSGIRequestHandler, make_server

from celery.signals import task_failure, task_postrun, task_prerun, task_retry
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, make_wsgi_app, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from clearing.bulk import tables_size
from clearing.models import OutboxEvent
from clearing.ops.alerts import ALERT_SEVERITIES
from clearing.ops.models import OpsAlert

log = logging.getLogger(__name__)

# --- Counted where they happen (multiprocess-safe) ------------------------------------------------

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TASK_DURATION = Histogram(
    "clearing_task_duration_seconds",
    "Celery task run time, by task and outcome (SUCCESS, FAILURE, RETRY).",
    ["task", "outcome"],
    buckets=DURATION_BUCKETS,
)
SHARD_DURATION = Histogram(
    "clearing_sweep_shard_duration_seconds",
    "Run time of a full-sweep shard task that stored its shard (read, compute, store, calls).",
    buckets=DURATION_BUCKETS,
)
TASK_FAILURES = Counter(
    "clearing_task_failures", "Celery tasks that failed, by task and exception.", ["task", "exception"]
)
TASK_RETRIES = Counter("clearing_task_retries", "Celery tasks sent again after a transient error.", ["task"])
RELAY_SENT = Counter("clearing_relay_events_sent", "Outbox events handed to the channel layer.")
RELAY_SEND_FAILURES = Counter(
    "clearing_relay_send_failures", "group_send calls that failed or timed out (their events are retried)."
)
RELAY_RELEASED = Counter("clearing_relay_events_released", "Claimed outbox events put back to pending.")
RELAY_LAG = Histogram(
    "clearing_relay_lag_seconds",
    "From an outbox event's creation to its claim by a relay.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
THROTTLE_FAIL_OPENS = Counter(
    "clearing_api_throttle_fail_opens",
    "API requests let through because the throttle's counter store (Redis) could not be reached.",
)
OUTBOX_PRUNED = Counter("clearing_outbox_pruned", "Outbox rows deleted by retention.")
SNAPSHOTS_PRUNED = Counter("clearing_margin_snapshots_pruned", "Margin snapshots deleted by retention.")
INSURANCE_CHECK_FAILURES = Counter(
    "clearing_insurance_fund_check_failures", "Insurance-fund checks after a liquidation that failed."
)


# --- Celery signal handlers ----------------------------------------------------------------------

_started: dict[str, float] = {}


def _task_prerun(task_id=None, **kwargs) -> None:
    _started[task_id] = time.monotonic()


def _task_postrun(sender=None, task_id=None, state=None, **kwargs) -> None:
    started = _started.pop(task_id, None)
    if started is None or sender is None:
        return
    seconds = time.monotonic() - started
    TASK_DURATION.labels(task=sender.name, outcome=state or "UNKNOWN").observe(seconds)
    if sender.name == "sweeps.shard" and state == "SUCCESS":
        SHARD_DURATION.observe(seconds)


def _task_failure(sender=None, exception=None, **kwargs) -> None:
    name = getattr(sender, "name", None) or "unknown"
    TASK_FAILURES.labels(task=name, exception=type(exception).__name__).inc()


def _task_retry(sender=None, **kwargs) -> None:
    TASK_RETRIES.labels(task=getattr(sender, "name", None) or "unknown").inc()


def celery_signals_connect() -> None:
    task_prerun.connect(_task_prerun, weak=False, dispatch_uid="ops.metrics.prerun")
    task_postrun.connect(_task_postrun, weak=False, dispatch_uid="ops.metrics.postrun")
    task_failure.connect(_task_failure, weak=False, dispatch_uid="ops.metrics.failure")
    task_retry.connect(_task_retry, weak=False, dispatch_uid="ops.metrics.retry")


# --- Read from the database at scrape time -------------------------------------------------------

SIZED_TABLES = (
    "sweeps_marginsnapshot",
    "frontend_outboxevent",
    "sweeps_sweep",
    "sweeps_sweepshard",
    "sweeps_margincallevent",
    "marketdata_indexprice",
    "marketdata_priceobservation",
)


# What each app adds to a scrape: ``read(now)`` yields its families, in a bounded number of queries.
# Apps register in their ``AppConfig.ready()`` (the oracle's status, the sweeps and the insurance
# fund), so this module reads only the kernel's own rows (the outbox, ops alerts, table sizes).
StateReader = Callable[[datetime], Iterable[Metric]]
_STATE_READERS: dict[str, StateReader] = {}


def metrics_state_register(*, key: str, read: StateReader) -> None:
    """Add (or, with the same ``key``, replace) what ``read(now)`` yields to every scrape's state."""
    _STATE_READERS[key] = read


def metric_age(now: datetime, moment: datetime | None) -> float:
    return max(0.0, (now - moment).total_seconds()) if moment else 0.0


def metric_gauge(name: str, documentation: str, value: float, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


class DatabaseCollector:
    """Venue state, read at each scrape in a fixed number of queries (≈ 15): the kernel's rows here,
    the apps' through ``metrics_state_register``."""

    def describe(self) -> list[Metric]:
        return []  # read the database at scrape time only, never at registration

    def collect(self) -> Iterator[Metric]:
        try:
            families = list(self._families())
        except DatabaseError:
            log.exception("metrics: the database could not be read")
            yield metric_gauge("clearing_metrics_database_up", "Whether the state below could be read.", 0)
            return
        yield metric_gauge("clearing_metrics_database_up", "Whether the state below could be read.", 1)
        yield from families

    def _families(self) -> Iterator[Metric]:
        now = timezone.now()

        pending = OutboxEvent.objects.filter(relayed_at__isnull=True)
        oldest = pending.order_by("id").values_list("created_at", flat=True).first()
        yield metric_gauge("clearing_outbox_pending", "Outbox events not yet relayed.", pending.count())
        yield metric_gauge(
            "clearing_outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox event not yet relayed (relay lag; 0 when none).",
            metric_age(now, oldest),
        )
        for read in _STATE_READERS.values():
            yield from read(now)

        alerts = GaugeMetricFamily(
            "clearing_ops_alerts_open", "Open ops alerts, by kind and severity.", labels=["kind", "severity"]
        )
        for kind, count in (
            OpsAlert.objects.filter(resolved_at=None)
            .values_list("kind")
            .annotate(n=Count("pk"))
            .values_list("kind", "n")
        ):
            alerts.add_metric([kind, ALERT_SEVERITIES.get(kind, "warning")], count)
        yield alerts

        rows = GaugeMetricFamily(
            "clearing_table_rows_estimate",
            "Rows per table (PostgreSQL: planner estimate; SQLite: exact count).",
            labels=["table"],
        )
        size = GaugeMetricFamily(
            "clearing_table_bytes", "Size per table, indexes (and TOAST) included.", labels=["table"]
        )
        for table, (estimate, total) in tables_size(tables=SIZED_TABLES).items():
            rows.add_metric([table], estimate)
            if total is not None:
                size.add_metric([table], total)
        yield from (rows, size)


# --- Exposition ----------------------------------------------------------------------------------


class _ProcessMetrics:
    """This process's own metrics (single-process mode)."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def metrics_registry(*, database: bool, path: str | None = None) -> CollectorRegistry:
    """What a scrape returns: every process's counters (from ``path``, default
    ``PROMETHEUS_MULTIPROC_DIR``, when set; else this process's) and, with ``database``, the
    venue's state."""
    registry = CollectorRegistry()
    path = path or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry.register(_ProcessMetrics())
    if database:
        registry.register(DatabaseCollector())
    return registry


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def metrics_access(*, authorization: str, remote_addr: str) -> int:
    """200 if a scrape with this ``Authorization`` header from ``remote_addr`` may read the
    metrics, else the status to answer (module docstring)."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, presented = authorization.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(_digest(presented.strip()), _digest(token))
        return 200 if ok else 403
    if settings.PRODUCTION:
        return 404
    return 200 if remote_addr in ("127.0.0.1", "::1") else 403


def _worker_app(registry: CollectorRegistry):
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        status = metrics_access(
            authorization=environ.get("HTTP_AUTHORIZATION", ""), remote_addr=environ.get("REMOTE_ADDR", "")
        )
        if status != 200:
            start_response(f"{status} {'Forbidden' if status == 403 else 'Not Found'}", [])
            return [b""]
        return metrics(environ, start_response)

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # scrapes every 15 s would flood the worker's log
        pass


def worker_metrics_server_start(*, port: int, addr: str = "0.0.0.0") -> ThreadingWSGIServer:
    """Serve this worker host's task metrics (every pool process, from the multiprocess directory)
    on ``addr:port`` from a daemon thread of the worker's main process, behind the same access
    rule as ``/metrics``."""
    app = _worker_app(metrics_registry(database=False))
    server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
