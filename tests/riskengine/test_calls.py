"""The margin-call decision table (``riskengine.core.calls.call_decisions``): each rule, row by row,
and the invariants over every combination of inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

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
    call_decisions,
)
from riskengine.core.margin import HEALTHY, LIQUIDATION, MARGIN_CALL

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


def decide(rows, equity=None, initial_margin=None):
    columns = {name: np.array(values) for name, values in zip(FIELDS, zip(*rows, strict=True), strict=True)}
    n = len(rows)
    return call_decisions(
        **columns,
        equity=np.full(n, 700.0) if equity is None else equity,
        initial_margin=np.full(n, 1000.0) if initial_margin is None else initial_margin,
    )


@pytest.mark.parametrize(
    ("inputs", "expected"), TABLE, ids=[f"{i}-{ACTIONS[e]}" for i, (_, e) in enumerate(TABLE)]
)
def test_each_rule_of_the_decision_table_gives_its_action(inputs, expected):
    assert ACTIONS[decide([inputs]).action[0]] == ACTIONS[expected]


def test_the_whole_table_is_decided_in_one_vectorised_call_in_input_order():
    decisions = decide([inputs for inputs, _ in TABLE])

    assert [ACTIONS[a] for a in decisions.action] == [ACTIONS[e] for _, e in TABLE]


def test_a_call_opened_now_is_due_im_minus_equity_and_no_other_account_has_an_amount():
    rows = [
        (MARGIN_CALL, True, False, False, False, False, False),  # opens
        (LIQUIDATION, True, False, False, False, False, False),  # opens and escalates
        (MARGIN_CALL, True, True, False, False, False, False),  # already open
        (HEALTHY, True, False, False, False, False, False),
    ]
    decisions = decide(
        rows, equity=np.array([700.0, -50.0, 10.0, 5.0]), initial_margin=np.array([1000.0, 400.0, 90.0, 1.0])
    )

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
