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
from collections.abc import Iterator
from datetime import datetime, timedelta
from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Q
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, make_wsgi_app, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from clearing.bulk import tables_size

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
    from celery.signals import task_failure, task_postrun, task_prerun, task_retry

    task_prerun.connect(_task_prerun, weak=False, dispatch_uid="ops.metrics.prerun")
    task_postrun.connect(_task_postrun, weak=False, dispatch_uid="ops.metrics.postrun")
    task_failure.connect(_task_failure, weak=False, dispatch_uid="ops.metrics.failure")
    task_retry.connect(_task_retry, weak=False, dispatch_uid="ops.metrics.retry")


# --- Read from the database at scrape time -------------------------------------------------------

ORACLE_STATUSES = ("ok", "degraded", "stale", "unconfirmed")
SIZED_TABLES = (
    "sweeps_marginsnapshot",
    "frontend_outboxevent",
    "sweeps_sweep",
    "sweeps_sweepshard",
    "sweeps_margincallevent",
    "marketdata_indexprice",
    "marketdata_priceobservation",
)


def _age(now: datetime, moment: datetime | None) -> float:
    return max(0.0, (now - moment).total_seconds()) if moment else 0.0


def _gauge(name: str, documentation: str, value: float, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


class DatabaseCollector:
    """Venue state, read at each scrape in a fixed number of queries (≈ 15)."""

    def describe(self) -> list[Metric]:
        return []  # read the database at scrape time only, never at registration

    def collect(self) -> Iterator[Metric]:
        try:
            families = list(self._families())
        except DatabaseError:
            log.exception("metrics: the database could not be read")
            yield _gauge("clearing_metrics_database_up", "Whether the state below could be read.", 0)
            return
        yield _gauge("clearing_metrics_database_up", "Whether the state below could be read.", 1)
        yield from families

    def _families(self) -> Iterator[Metric]:
        from clearing.marketdata.models import IndexState, OpsAlert
        from clearing.ops.insurance import SEVERITY, insurance_fund_value
        from frontend.models import OutboxEvent
        from riskengine.sweeps.models import (
            Liquidation,
            LiquidationStatus,
            ShardStatus,
            Sweep,
            SweepKind,
            SweepRequest,
            SweepShard,
            SweepStatus,
        )

        now = timezone.now()
        stuck_after = now - timedelta(seconds=settings.BROKER_VISIBILITY_TIMEOUT)
        recent = now - timedelta(hours=1)
        day = now - timedelta(days=1)

        pending = OutboxEvent.objects.filter(relayed_at__isnull=True)
        oldest = pending.order_by("id").values_list("created_at", flat=True).first()
        yield _gauge("clearing_outbox_pending", "Outbox events not yet relayed.", pending.count())
        yield _gauge(
            "clearing_outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox event not yet relayed (relay lag; 0 when none).",
            _age(now, oldest),
        )
        requests = SweepRequest.objects.order_by("requested_at").values_list("requested_at", flat=True)
        yield _gauge(
            "clearing_sweep_requests_pending", "Accounts waiting for an event sweep.", requests.count()
        )
        yield _gauge(
            "clearing_sweep_requests_oldest_age_seconds",
            "Age of the oldest pending event-sweep request (0 when none).",
            _age(now, requests.first()),
        )

        last = (
            Sweep.objects.filter(kind=SweepKind.FULL, status=SweepStatus.DONE, started_at__gte=day)
            .order_by("-finished_at")
            .values_list("pk", "started_at", "finished_at")
            .first()
        )
        duration = GaugeMetricFamily(
            "clearing_sweep_last_duration_seconds",
            "The last completed full sweep, from creation to its last shard stored.",
        )
        age = GaugeMetricFamily(
            "clearing_sweep_last_finished_age_seconds",
            "Time since the last full sweep completed (absent: none in the last day).",
        )
        phases = GaugeMetricFamily(
            "clearing_sweep_last_phase_seconds",
            "The last completed full sweep's time in each phase, summed over its shards.",
            labels=["phase"],
        )
        if last is not None:
            pk, started, finished = last
            duration.add_metric([], (finished - started).total_seconds())
            age.add_metric([], _age(now, finished))
            totals: dict[str, float] = {}
            for timings in SweepShard.objects.filter(sweep_id=pk).values_list("timings", flat=True):
                for phase, seconds in (timings or {}).items():
                    totals[phase] = totals.get(phase, 0.0) + float(seconds)
            for phase, seconds in sorted(totals.items()):
                phases.add_metric([phase], seconds)
        yield from (duration, age, phases)

        shards = dict(
            SweepShard.objects.filter(sweep__started_at__gte=day)
            .filter(
                Q(status=ShardStatus.PENDING, sweep__started_at__lt=stuck_after)
                | Q(status=ShardStatus.FAILED, sweep__started_at__gte=recent)
            )
            .values_list("status")
            .annotate(n=Count("pk"))
            .values_list("status", "n")
        )
        yield _gauge(
            "clearing_sweep_shards_stuck",
            "Shards still pending longer than the broker's visibility timeout after their sweep began.",
            shards.get(ShardStatus.PENDING, 0),
        )
        yield _gauge(
            "clearing_sweep_shards_failed",
            "Shards of the last hour's sweeps that failed (and were not retried successfully).",
            shards.get(ShardStatus.FAILED, 0),
        )
        yield _gauge(
            "clearing_sweeps_running",
            "Sweeps of the last day still running.",
            Sweep.objects.filter(status=SweepStatus.RUNNING, started_at__gte=day).count(),
        )
        liquidations = Liquidation.objects.filter(status=LiquidationStatus.IN_PROGRESS)
        yield _gauge("clearing_liquidations_in_progress", "Liquidations in progress.", liquidations.count())
        yield _gauge(
            "clearing_liquidations_stuck",
            "Liquidations in progress for longer than the broker's visibility timeout.",
            liquidations.filter(started_at__lt=stuck_after).count(),
        )

        status = GaugeMetricFamily(
            "clearing_oracle_status",
            "1 for each symbol's current oracle status (a fresh price past fresh_until reads stale).",
            labels=["symbol", "status"],
        )
        good_age = GaugeMetricFamily(
            "clearing_oracle_last_good_age_seconds",
            "Age of each symbol's last good price.",
            labels=["symbol"],
        )
        for symbol, current, last_good_at, fresh_until in IndexState.objects.values_list(
            "symbol", "status", "last_good_at", "fresh_until"
        ):
            if current in ("ok", "degraded") and fresh_until is not None and fresh_until < now:
                current = "stale"
            for name in ORACLE_STATUSES:
                status.add_metric([symbol, name], 1.0 if name == current else 0.0)
            if last_good_at is not None:
                good_age.add_metric([symbol], _age(now, last_good_at))
        yield from (status, good_age)

        fund = insurance_fund_value()
        if fund is not None:
            yield _gauge(
                "clearing_insurance_fund_value_usd",
                "The insurance fund's balances at the oracle's last good prices (unpriced assets left out).",
                float(fund.value),
            )
            yield _gauge(
                "clearing_insurance_fund_floor_usd",
                "The active parameter set's insurance fund floor.",
                float(fund.floor),
            )

        alerts = GaugeMetricFamily(
            "clearing_ops_alerts_open", "Open ops alerts, by kind and severity.", labels=["kind", "severity"]
        )
        for kind, count in (
            OpsAlert.objects.filter(resolved_at=None)
            .values_list("kind")
            .annotate(n=Count("pk"))
            .values_list("kind", "n")
        ):
            alerts.add_metric([kind, SEVERITY.get(kind, "warning")], count)
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
