"""The aggregation rule as a pure function: median, exclusion, degraded, stale, breaker."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from clearing.marketdata.aggregation import OracleRules, PriorState, Quote, index_aggregate

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
RULES = OracleRules(
    max_age=timedelta(seconds=60),
    max_deviation=Decimal("0.02"),
    min_sources=3,
    breaker_move=Decimal("0.15"),
    breaker_window=timedelta(seconds=300),
    event_move=Decimal("0.02"),
)
GOOD = PriorState(last_good_price=Decimal(100), last_good_at=NOW - timedelta(seconds=30))


def quotes(*prices, age=0):
    return [
        Quote(f"s{i}", Decimal(str(p)), NOW - timedelta(seconds=age)) for i, p in enumerate(prices, start=1)
    ]


def test_the_index_is_the_median_of_fresh_sources():
    result = index_aggregate(quotes(100, 101, 99.5, 100.5, 100.2), rules=RULES, prior=GOOD, now=NOW)
    assert result.status == "ok"
    assert result.price == Decimal("100.2")
    assert result.last_good_price == Decimal("100.2")
    assert result.sources == ("s1", "s2", "s3", "s4", "s5")
    assert result.exclusions == ()


def test_a_source_far_from_the_median_is_excluded_with_its_reason():
    result = index_aggregate(quotes(100, 101, 150, 100.4), rules=RULES, prior=GOOD, now=NOW)
    assert result.status == "ok"
    assert result.sources == ("s1", "s2", "s4")
    assert result.price == Decimal("100.4")
    [excluded] = result.exclusions
    assert excluded.source == "s3"
    assert "deviates" in excluded.reason
    assert "median" in excluded.reason


def test_sources_older_than_max_age_do_not_count_and_are_named():
    fresh = quotes(100, 101)
    old = [Quote("old", Decimal(90), NOW - timedelta(seconds=61))]
    result = index_aggregate(fresh + old, rules=RULES, prior=GOOD, now=NOW)
    assert "old" not in result.sources
    assert any(e.source == "old" and e.reason.startswith("stale") for e in result.exclusions)


def test_fewer_sources_than_required_is_degraded():
    result = index_aggregate(quotes(101), rules=RULES, prior=GOOD, now=NOW)
    assert result.status == "degraded"
    assert result.price == Decimal(101)
    assert result.last_good_price == Decimal(101)
    assert "1 of 3" in result.note


def test_two_sources_are_never_averaged_the_one_closest_to_the_last_good_price_wins():
    result = index_aggregate(quotes(100.5, 101.5), rules=RULES, prior=GOOD, now=NOW)
    assert result.status == "degraded"
    assert result.price == Decimal("100.5")  # not 101.0
    assert result.sources == ("s1", "s2")  # they agree within max_deviation: both count
    assert result.exclusions == ()
    assert "never averaged" in result.note


def test_two_sources_that_disagree_keep_the_one_closest_to_the_last_good_price():
    result = index_aggregate(quotes(130, 99), rules=RULES, prior=GOOD, now=NOW)
    assert result.status == "degraded"
    assert result.price == Decimal(99)
    assert result.sources == ("s2",)
    [excluded] = result.exclusions
    assert excluded.source == "s1"
    assert "closer to the last good price 100" in excluded.reason


def test_no_fresh_source_is_stale_and_the_last_good_price_stands():
    result = index_aggregate(quotes(100, 101, 102, age=61), rules=RULES, prior=GOOD, now=NOW)
    assert result.status == "stale"
    assert result.price is None
    assert result.last_good_price == Decimal(100)
    assert result.last_good_at == GOOD.last_good_at
    assert len(result.exclusions) == 3


def test_a_move_beyond_the_breaker_within_the_window_is_held_unconfirmed():
    result = index_aggregate(quotes(80, 80.1, 79.9), rules=RULES, prior=GOOD, now=NOW)
    assert result.status == "unconfirmed"
    assert result.price == Decimal("80")
    assert result.pending_price == Decimal("80")
    assert result.pending_status == "ok"
    assert result.last_good_price == Decimal(100)
    assert "circuit breaker" in result.note


def test_the_next_aggregation_agreeing_with_the_held_move_confirms_it():
    held = PriorState(
        Decimal(100),
        NOW - timedelta(seconds=30),
        pending_price=Decimal(80),
        pending_sources=frozenset({"s1"}),
    )
    result = index_aggregate(quotes(80.2, 80.1, 79.9), rules=RULES, prior=held, now=NOW)
    assert result.status == "ok"
    assert result.last_good_price == Decimal("80.1")
    assert "confirms" in result.note
    assert "s2, s3 agreeing with s1" in result.note


def test_the_sources_of_a_held_move_repeating_it_do_not_confirm_it():
    held = PriorState(
        Decimal(100),
        NOW - timedelta(seconds=30),
        pending_price=Decimal(80),
        pending_sources=frozenset({"s1", "s2", "s3"}),
    )
    result = index_aggregate(quotes(80.2, 80.1, 79.9), rules=RULES, prior=held, now=NOW)
    assert result.status == "unconfirmed"
    assert result.last_good_price == Decimal(100)
    assert result.pending_sources == ("s1", "s2", "s3")
    assert "another source or ops" in result.note


def test_a_held_move_records_the_sources_that_made_it():
    result = index_aggregate(quotes(80, 80.1), rules=RULES, prior=GOOD, now=NOW)
    assert result.status == "unconfirmed"
    assert sorted(result.pending_sources) == ["s1", "s2"]


def test_the_quorum_lasts_until_the_min_sources_th_freshest_quote_goes_stale():
    sources = [
        Quote(f"s{i}", Decimal(100), NOW - timedelta(seconds=age)) for i, age in enumerate((5, 20, 40, 50))
    ]
    result = index_aggregate(sources, rules=RULES, prior=GOOD, now=NOW)
    assert result.status == "ok"
    assert result.fresh_until == NOW - timedelta(seconds=5) + RULES.max_age
    assert result.quorum_until == NOW - timedelta(seconds=40) + RULES.max_age  # the third freshest
    degraded = index_aggregate(sources[:2], rules=RULES, prior=GOOD, now=NOW)
    assert (degraded.status, degraded.quorum_until) == ("degraded", None)


def test_a_return_to_normal_drops_the_held_move():
    held = PriorState(Decimal(100), NOW - timedelta(seconds=30), pending_price=Decimal(80))
    result = index_aggregate(quotes(100.1, 100.2, 99.9), rules=RULES, prior=held, now=NOW)
    assert result.status == "ok"
    assert result.last_good_price == Decimal("100.1")
    assert result.pending_price is None


def test_a_move_after_the_breaker_window_is_a_trend_not_a_tick():
    old_good = PriorState(Decimal(100), NOW - timedelta(seconds=301))
    result = index_aggregate(quotes(80, 80.1, 79.9), rules=RULES, prior=old_good, now=NOW)
    assert result.status == "ok"
    assert result.last_good_price == Decimal(80)


def test_a_move_within_the_breaker_limit_is_accepted_at_once():
    result = index_aggregate(quotes(86, 86.1, 85.9), rules=RULES, prior=GOOD, now=NOW)
    assert result.status == "ok"
    assert result.last_good_price == Decimal(86)
