"""/metrics: the venue's state read from the database, task and relay events counted in every
process and added up, and no scrape without the token in production."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.db import OperationalError
from django.test import override_settings
from django.utils import timezone
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from clearing.events import events_publish
from clearing.models import OutboxEvent
from clearing.ops.metrics import _worker_app, metrics_registry
from riskengine.sweeps import liquidation as liquidation_module
from riskengine.sweeps import services
from riskengine.sweeps.models import Sweep, SweepShard
from riskengine.sweeps.tasks import liquidation_execute, sweep_shard

ROOT = Path(__file__).resolve().parents[2]


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def counted(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_endpoint_exposes_the_venue_state_and_the_counters(client, quotes):
    sweep, _ = services.sweep_full_run(cause="test", quotes=quotes)
    events_publish(events=[(1, "margin.updated", {}), (2, "margin.updated", {})])
    OutboxEvent.objects.filter(pk=OutboxEvent.objects.order_by("id").first().pk).update(
        created_at=timezone.now() - timedelta(seconds=42)
    )
    stale = Sweep.objects.create(
        kind="full", cause="lost", parameter_set=sweep.parameter_set, valuation_time=sweep.valuation_time,
        market={}, shard_count=1,
    )  # fmt: skip
    Sweep.objects.filter(pk=stale.pk).update(started_at=timezone.now() - timedelta(minutes=10))
    SweepShard.objects.create(sweep=stale, number=0, first_account_id=1, last_account_id=1)

    samples = scrape(client)

    assert value(samples, "clearing_metrics_database_up") == 1
    pending = OutboxEvent.objects.filter(relayed_at=None).count()
    assert value(samples, "clearing_outbox_pending") == pending > 0
    assert value(samples, "clearing_outbox_oldest_pending_age_seconds") >= 42
    assert value(samples, "clearing_sweep_shards_stuck") == 1
    assert value(samples, "clearing_sweep_shards_failed") == 0
    assert value(samples, "clearing_sweep_last_duration_seconds") == pytest.approx(
        (sweep.finished_at - sweep.started_at).total_seconds()
    )
    assert value(samples, "clearing_sweep_last_phase_seconds", phase="compute") > 0
    assert value(samples, "clearing_liquidations_stuck") == 0
    assert value(samples, "clearing_insurance_fund_value_usd") > 0
    assert value(samples, "clearing_insurance_fund_floor_usd") == 0
    assert value(samples, "clearing_table_bytes", table="sweeps_marginsnapshot") > 0
    for name in (
        "clearing_relay_events_sent_total",
        "clearing_relay_send_failures_total",
        "clearing_api_throttle_fail_opens_total",
        "clearing_margin_snapshots_pruned_total",
        "clearing_outbox_pruned_total",
        "clearing_sweep_shard_duration_seconds_count",
        "clearing_relay_lag_seconds_count",
    ):
        assert (name, ()) in samples, name


def test_each_symbols_oracle_status_is_exposed(client, demo):
    from clearing.marketdata.models import IndexState

    IndexState.objects.filter(symbol="BTC").update(status="unconfirmed")
    samples = scrape(client)
    assert value(samples, "clearing_oracle_status", symbol="BTC", status="unconfirmed") == 1
    assert value(samples, "clearing_oracle_status", symbol="BTC", status="ok") == 0
    assert {labels for name, labels in samples if name == "clearing_oracle_status"} >= {
        (("status", status), ("symbol", "ETH")) for status in ("ok", "degraded", "stale", "unconfirmed")
    }


def test_task_durations_failures_and_retries_are_counted_from_celery_signals(quotes):
    sweep = services.sweep_full_create(cause="test", quotes=quotes, enqueue=False)
    shards = counted("clearing_sweep_shard_duration_seconds_count")
    runs = counted("clearing_task_duration_seconds_count", task="sweeps.shard", outcome="SUCCESS")
    sweep_shard.apply(args=[sweep.shards.first().pk])
    assert counted("clearing_sweep_shard_duration_seconds_count") == shards + 1
    assert counted("clearing_task_duration_seconds_count", task="sweeps.shard", outcome="SUCCESS") == runs + 1

    failed = {"task": "sweeps.liquidation_execute", "exception": "DoesNotExist"}
    failures = counted("clearing_task_failures_total", **failed)
    liquidation_execute.apply(args=[-1])
    assert counted("clearing_task_failures_total", **failed) == failures + 1

    retries = counted("clearing_task_retries_total", task="sweeps.liquidation_execute")
    done = mock.Mock(status="done")
    with mock.patch.object(
        liquidation_module, "liquidation_execute", side_effect=[OperationalError("gone"), done]
    ):
        assert liquidation_execute.apply(args=[1]).get() == "done"
    assert counted("clearing_task_retries_total", task="sweeps.liquidation_execute") == retries + 1


def test_counters_written_by_several_processes_are_added_up(tmp_path):
    # Each process is one of the platform's (web, worker): Django set up before the metrics load.
    script = (
        "import django\n"
        "django.setup()\n"
        "from clearing.ops.metrics import RELAY_SENT, TASK_RETRIES\n"
        "RELAY_SENT.inc(3)\n"
        "TASK_RETRIES.labels('x').inc()"
    )
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "clearing.config.settings",
    }
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=120)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # one file per process
    text = generate_latest(metrics_registry(database=False, path=str(tmp_path))).decode()
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("clearing_relay_events_sent_total", ())] == 6
    assert samples[("clearing_task_retries_total", (("task", "x"),))] == 2


@override_settings(PRODUCTION=True, METRICS_TOKEN="s3cret-token")
def test_in_production_a_scrape_without_the_token_is_refused(client, db):
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="s3cret-token").status_code == 403
    samples = scrape(client, HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert value(samples, "clearing_metrics_database_up") == 1


@override_settings(PRODUCTION=True, METRICS_TOKEN="")
def test_in_production_without_a_token_configured_there_is_no_endpoint(client, db):
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


@override_settings(PRODUCTION=False, METRICS_TOKEN="")
def test_in_development_without_a_token_only_loopback_may_scrape(client, db):
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403


@override_settings(PRODUCTION=True, METRICS_TOKEN="s3cret-token")
def test_a_workers_metrics_server_applies_the_same_rule():
    app = _worker_app(metrics_registry(database=False))
    statuses = []

    def start_response(status, headers):
        statuses.append(status.split()[0])

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", "REMOTE_ADDR": "10.0.0.9"}
    assert app(environ, start_response) == [b""]
    body = b"".join(app({**environ, "HTTP_AUTHORIZATION": "Bearer s3cret-token"}, start_response))
    assert statuses == ["403", "200"]
    assert b"clearing_task_duration_seconds" in body
