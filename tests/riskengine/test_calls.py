"""The margin-call decision table (``riskengine.core.calls.call_decisions``): each rule, row by row,
and the invariants over every combination of inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from riskengine.core import compute_margin, parse_document
from riskengine.core.calls import (
    ACTIONS,
    CURE,
    ESCALATE,
    HOLD_NOT_FINITE,
    NONE,
    OPEN,
    OPEN_ESCALATE,
    OPEN_SUSPEND,
    OPENS,
    SUSPEND,
    call_amounts,
    call_decisions,
    position_call_amounts,
)
from riskengine.core.margin import HEALTHY, LIQUIDATION, MARGIN_CALL
from tests.riskengine.documents import two_perpetuals

# (status, finite, has_call, deadline_elapsed, busy, venue, exposed) → action
TABLE = [
    # rule 1: venue accounts are never called, whatever their figures
    ((LIQUIDATION, True, False, True, False, True, False), NONE),
    ((MARGIN_CALL, False, False, False, False, True, False), NONE),
    # rule 2: figures not finite: an open call is held (not cured, not escalated); none opened
    ((LIQUIDATION, False, True, True, False, False, False), HOLD_NOT_FINITE),
    ((LIQUIDATION, False, True, False, True, False, True), HOLD_NOT_FINITE),
    ((LIQUIDATION, False, False, True, False, False, False), NONE),
    # rule 3: healthy cures an open call, and does nothing without one
    ((HEALTHY, True, True, True, False, False, True), CURE),
    ((HEALTHY, True, True, False, True, False, False), CURE),
    ((HEALTHY, True, False, False, False, False, False), NONE),
    # rule 4: no new call while the account's liquidation is in progress
    ((LIQUIDATION, True, False, True, True, False, False), NONE),
    ((MARGIN_CALL, True, False, False, True, False, False), NONE),
    # rules 5 and 6: in margin call, inside the cure period
    ((MARGIN_CALL, True, False, False, False, False, False), OPEN),
    ((MARGIN_CALL, True, False, False, False, False, True), OPEN),
    ((MARGIN_CALL, True, True, False, False, False, False), NONE),
    # rule 7: due, but a liquidation of the account is already in progress
    ((MARGIN_CALL, True, True, True, True, False, False), NONE),
    ((LIQUIDATION, True, True, False, True, False, False), NONE),
    # rule 8: due and exposed to an untrusted price: escalation suspended
    ((LIQUIDATION, True, False, False, False, False, True), OPEN_SUSPEND),
    ((MARGIN_CALL, True, True, True, False, False, True), SUSPEND),
    ((LIQUIDATION, True, True, False, False, False, True), SUSPEND),
    # rule 9: due: escalated to a liquidation
    ((LIQUIDATION, True, False, False, False, False, False), OPEN_ESCALATE),
    ((MARGIN_CALL, True, False, True, False, False, False), OPEN_ESCALATE),  # a cure period of zero
    ((MARGIN_CALL, True, True, True, False, False, False), ESCALATE),
    ((LIQUIDATION, True, True, False, False, False, False), ESCALATE),
]

FIELDS = ("status", "finite", "has_call", "deadline_elapsed", "busy", "venue", "exposed")


def decide(rows, amount_due=None):
    columns = {name: np.array(values) for name, values in zip(FIELDS, zip(*rows, strict=True), strict=True)}
    due = np.full(len(rows), 300.0) if amount_due is None else amount_due
    return call_decisions(**columns, amount_due=due)


@pytest.mark.parametrize(
    ("inputs", "expected"), TABLE, ids=[f"{i}-{ACTIONS[e]}" for i, (_, e) in enumerate(TABLE)]
)
def test_each_rule_of_the_decision_table_gives_its_action(inputs, expected):
    assert ACTIONS[decide([inputs]).action[0]] == ACTIONS[expected]


def test_the_whole_table_is_decided_in_one_vectorised_call_in_input_order():
    decisions = decide([inputs for inputs, _ in TABLE])

    assert [ACTIONS[a] for a in decisions.action] == [ACTIONS[e] for _, e in TABLE]


def test_a_call_opened_now_is_for_its_amount_due_and_no_other_account_has_an_amount():
    rows = [
        (MARGIN_CALL, True, False, False, False, False, False),  # opens
        (LIQUIDATION, True, False, False, False, False, False),  # opens and escalates
        (MARGIN_CALL, True, True, False, False, False, False),  # already open
        (HEALTHY, True, False, False, False, False, False),
    ]
    decisions = decide(rows, amount_due=np.array([300.0, 450.0, 80.0, 0.0]))

    assert decisions.amount[:2].tolist() == [300.0, 450.0]
    assert np.isnan(decisions.amount[2:]).all()


def test_over_every_combination_venue_accounts_get_nothing_and_only_accounts_without_a_call_open_one():
    combos = list(itertools.product((HEALTHY, MARGIN_CALL, LIQUIDATION), *[(False, True)] * 6))
    decisions = decide(combos)
    action = decisions.action
    status, finite, has_call, _, busy, venue, _ = (np.array(c) for c in zip(*combos, strict=True))

    assert (action[venue] == NONE).all()
    opens = np.isin(action, OPENS)
    assert not (opens & has_call).any()
    assert not (opens & busy).any()
    assert not (opens & ~finite).any()
    assert (action[~finite & ~venue & has_call] == HOLD_NOT_FINITE).all()
    assert (np.isfinite(decisions.amount) == opens).all()
    calling = np.isin(action, (OPEN, ESCALATE, OPEN_ESCALATE, SUSPEND, OPEN_SUSPEND))
    assert not ((status == HEALTHY) & calling).any()


def test_an_isolated_call_names_each_unhealthy_position_and_is_positive_when_one_is_in_liquidation():
    # The book with everything on the short: the short is in liquidation (e = 1,000 < MM
    # 3,000), the long healthy, free collateral 0: the spec's amount due is 0, yet a call opened
    # now is for IM - e = 6,000 - 1,000 = 5,000, named on the short.
    result = compute_margin(parse_document(two_perpetuals(mode="isolated", short_allocation=5000)))

    assert result.amount_due.tolist() == [0.0]
    assert position_call_amounts(result).tolist() == [0.0, 5_000.0]
    assert call_amounts(result).tolist() == [5_000.0]


def test_an_isolated_call_adds_negative_free_collateral_to_the_positions_in_margin_call():
    # 4,000 on the short (e = 0 < MM): liquidation, 6,000 due on it; 1,500 on the long beyond the
    # 5,000 of collateral (free = 5,000 - 5,500 = -500): the call is 6,000 + 500.
    doc = two_perpetuals(mode="isolated", short_allocation=4000, long_allocation=1500)
    result = compute_margin(parse_document(doc))

    assert position_call_amounts(result).tolist() == [0.0, 6_000.0]
    assert call_amounts(result).tolist() == [6_500.0]


def test_a_cross_or_portfolio_call_is_for_im_minus_equity():
    # Cross: E 11,000 against IM 12,000.
    result = compute_margin(parse_document(two_perpetuals(mode="cross", short_allocation=5000)))

    assert call_amounts(result).tolist() == [1_000.0]
    assert position_call_amounts(result).tolist() == [0.0, 0.0]
