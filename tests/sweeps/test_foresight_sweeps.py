"""Liquidation foresight after full sweeps (riskengine.sweeps.foresight): who is graded, the
stored result, the ``margin.warning`` event on a change of level only, newest valuation wins."""

from __future__ import annotations

import json
from unittest import mock

import pytest

from clearing.models import OutboxEvent
from riskengine.core import compute_document
from riskengine.core.cli import main
from riskengine.core.document import parse_document
from riskengine.core.foresight import distances
from riskengine.sweeps import services, tasks
from riskengine.sweeps.foresight import foresight_accounts_grade
from riskengine.sweeps.models import AccountForesight, MarginSnapshot
from riskengine.sweeps.selectors import foresight_document, margin_snapshot_document
from tests.factories import btc_long_account, moved, quotes_fixed

# Long 10 BTC-PERP at 60,000 on 150,000 USDC, cross: E/MM = 5 at 60,000; at 50,300 equity is
# 53,000 and MM 25,150 (E/MM 2.107: healthy, below the default warning ratio 2.2).
WARNING_PRICE = 50_300.0
PAYLOAD_KEYS = {
    "type",
    "account",
    "account_code",
    "level",
    "previous",
    "driver",
    "distance_sigmas",
    "probability",
}


@pytest.fixture
def sweep_graded(django_capture_on_commit_callbacks, monkeypatch):
    """A full sweep at BTC = ``price`` whose commit runs the foresight tasks it sends, as a worker
    would; returns the sweep."""

    def run(price: float):
        with (
            mock.patch.object(
                tasks.foresight_grade, "delay", side_effect=lambda *a: tasks.foresight_grade.apply(args=a)
            ),
            django_capture_on_commit_callbacks(execute=True),
        ):
            sweep, _ = services.sweep_full_run(cause="test", quotes=moved(quotes_fixed(), BTC=price))
        return sweep

    return run


@pytest.fixture
def long_btc(venue, active_set, history, member_a):
    return btc_long_account(member=member_a, venue=venue, code="AAA-01", usdc="150000")


@pytest.fixture
def rich(venue, active_set, member_a):
    return btc_long_account(member=member_a, venue=venue, code="AAA-02", usdc="5000000")


def warnings_of(account) -> list[dict]:
    return [
        e.payload for e in OutboxEvent.objects.filter(type="margin.warning", group=f"account-{account.pk}")
    ]


def test_a_sweep_that_changes_the_level_publishes_exactly_one_warning(sweep_graded, long_btc, rich):
    sweep = sweep_graded(WARNING_PRICE)

    foresight = AccountForesight.objects.get(account=long_btc)
    assert foresight.level == "warning"
    assert foresight.sweep_id == sweep.pk
    (event,) = warnings_of(long_btc)
    assert set(event) == PAYLOAD_KEYS
    assert event["type"] == "margin.warning"
    assert event["account"] == long_btc.pk
    assert event["account_code"] == "AAA-01"
    assert (event["level"], event["previous"], event["driver"]) == ("warning", None, "BTC")
    assert event["distance_sigmas"] == pytest.approx(foresight.distance_sigmas)
    assert 0.0 < event["probability"] < 1.0
    # The richly collateralised account is above the governed level: not graded, nothing sent.
    assert not AccountForesight.objects.filter(account=rich).exists()
    assert warnings_of(rich) == []


def test_an_unchanged_level_publishes_nothing(sweep_graded, long_btc):
    sweep_graded(WARNING_PRICE)
    second = sweep_graded(WARNING_PRICE)

    assert len(warnings_of(long_btc)) == 1
    foresight = AccountForesight.objects.get(account=long_btc)
    assert (foresight.sweep_id, foresight.level) == (second.pk, "warning")


def test_a_level_comes_back_down_when_clearly_past_its_thresholds(sweep_graded, long_btc):
    sweep_graded(WARNING_PRICE)
    sweep_graded(60_000.0)  # E/MM 5: above the graded level, graded again because it was at warning

    events = warnings_of(long_btc)
    assert [(e["level"], e["previous"]) for e in events] == [("warning", None), ("ok", "warning")]
    assert AccountForesight.objects.get(account=long_btc).level == "ok"


def test_the_stored_figures_are_the_engines_on_the_snapshot(sweep_graded, long_btc):
    sweep_graded(WARNING_PRICE)
    foresight = AccountForesight.objects.select_related("snapshot").get(account=long_btc)
    document = margin_snapshot_document(snapshot=foresight.snapshot)
    found = distances(parse_document(document))
    (btc,) = foresight.by_underlying
    assert btc["underlying"] == "BTC"
    assert btc["down"]["move"] == found.down[0]
    assert btc["down"]["price"] == pytest.approx(WARNING_PRICE * (1 + found.down[0]))
    assert btc["up"] is None
    # Liquidation (cross): 150,000 + 10·(S − 60,000) = 0.05·10·S, S = 47,368.42.
    assert btc["down"]["price"] == pytest.approx(450_000 / 9.5, abs=WARNING_PRICE * 1e-4)
    (replayed,) = compute_document(document)
    assert foresight.lookahead_im == pytest.approx(replayed["initial_margin"])  # a perpetual: no change
    assert foresight.lookahead_excess == pytest.approx(replayed["equity"] - replayed["initial_margin"])
    assert foresight.lookahead_reason == "tomorrow"
    assert foresight.vols["BTC"] > 0


def test_a_late_task_of_an_older_sweep_does_not_replace_a_newer_result(sweep_graded, long_btc):
    first = sweep_graded(WARNING_PRICE)
    second = sweep_graded(60_000.0)

    outcome = foresight_accounts_grade(sweep_id=first.pk, account_ids=[long_btc.pk])

    assert (outcome.stored, outcome.skipped, outcome.events) == (0, 1, 0)
    foresight = AccountForesight.objects.get(account=long_btc)
    assert (foresight.sweep_id, foresight.level) == (second.pk, "ok")
    assert MarginSnapshot.objects.filter(account=long_btc).count() == 2


def test_an_untrusted_price_grades_at_least_warning(sweep_graded, long_btc, monkeypatch):
    quotes = moved(quotes_fixed(), BTC=60_000.0)
    quotes.statuses["BTC"] = "stale"
    with mock.patch.object(
        tasks.foresight_grade, "delay", side_effect=lambda *a: tasks.foresight_grade.apply(args=a)
    ):
        sweep, _ = services.sweep_full_run(cause="test", quotes=quotes)
    # E/MM is 5 here: not due on the ratio; grade it directly as the task would.
    foresight_accounts_grade(sweep_id=sweep.pk, account_ids=[long_btc.pk])
    assert AccountForesight.objects.get(account=long_btc).level == "warning"


def test_a_stored_foresight_replays_with_the_command_line(sweep_graded, long_btc, tmp_path, capsys):
    sweep_graded(WARNING_PRICE)
    foresight = AccountForesight.objects.select_related("snapshot__sweep", "snapshot__account").get(
        account=long_btc
    )
    path = tmp_path / "replay.json"
    path.write_text(json.dumps(foresight_document(foresight=foresight)))

    assert main(["foresight", str(path), "--horizon-days", repr(foresight.horizon_days)]) == 0

    (replayed,) = json.loads(capsys.readouterr().out)["portfolios"]
    (btc,) = replayed["by_underlying"]
    assert btc["down"]["move"] == foresight.by_underlying[0]["down"]["move"]
    assert btc["down"]["price"] == pytest.approx(foresight.by_underlying[0]["down"]["price"], rel=1e-12)
    assert replayed["probability"]["value"] == pytest.approx(foresight.probability, rel=1e-9)


def test_an_event_sweep_grades_nothing(long_btc, django_capture_on_commit_callbacks):
    with (
        mock.patch.object(tasks.foresight_grade, "delay") as sent,
        mock.patch.object(services, "_drain_enqueue"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.sweep_accounts_run(
            account_ids=[long_btc.pk], cause="test", quotes=moved(quotes_fixed(), BTC=WARNING_PRICE)
        )
    assert not sent.called
    assert not AccountForesight.objects.exists()


def test_a_full_sweep_sends_one_task_per_chunk_of_due_accounts(long_btc, django_capture_on_commit_callbacks):
    with (
        mock.patch.object(tasks.foresight_grade, "delay") as sent,
        django_capture_on_commit_callbacks(execute=True),
    ):
        sweep, _ = services.sweep_full_run(cause="test", quotes=moved(quotes_fixed(), BTC=WARNING_PRICE))
    sent.assert_called_once_with(sweep.pk, [long_btc.pk])
