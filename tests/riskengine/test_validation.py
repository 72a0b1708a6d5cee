"""A malformed document is rejected with an error naming the field; the CLI prints no results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from riskengine.core import DocumentError, check_correlation, compute_document, nearest_correlation
from tests.riskengine.documents import hand_example_document, set_path

MALFORMED = [
    ("unknown instrument", ("portfolios", 0, "positions", 1, "instrument"), "XYZ",
     "portfolios[0].positions[1].instrument"),
    ("unknown collateral asset", ("portfolios", 0, "collateral"), {"DOGE": 1},
     "portfolios[0].collateral.DOGE"),
    ("unknown market asset", ("market", "assets", "DOGE"), {"price": 0.1}, "market.assets.DOGE"),
    ("non-positive underlying price", ("market", "underlyings", "BTC", "price"), 0,
     "market.underlyings.BTC.price"),
    ("non-positive asset price", ("market", "assets", "USDC", "price"), "-1", "market.assets.USDC.price"),
    ("non-positive vol", ("market", "instruments", "BTC-26MAR27-70000-C", "iv"), 0,
     "market.instruments.BTC-26MAR27-70000-C.iv"),
    ("non-positive strike", ("market", "instruments", "BTC-26MAR27-70000-C", "strike"), -5,
     "market.instruments.BTC-26MAR27-70000-C.strike"),
    ("non-positive multiplier", ("market", "instruments", "BTC-PERP", "multiplier"), 0,
     "market.instruments.BTC-PERP.multiplier"),
    ("non-positive entry price", ("portfolios", 0, "positions", 0, "entry_price"), "0",
     "portfolios[0].positions[0].entry_price"),
    ("instrument on a missing underlying", ("market", "instruments", "SOL-PERP"),
     {"kind": "perpetual", "underlying": "SOL", "multiplier": 1}, "market.instruments.SOL-PERP.underlying"),
    ("underlying without a price", ("market", "underlyings"), {"BTC": {"price": 60000}},
     "market.instruments.ETH-PERP.underlying"),
    ("asymmetric correlation", ("parameters", "correlation", "matrix"), [[1.0, 0.8], [0.7, 1.0]],
     "parameters.correlation.matrix"),
    ("non-unit diagonal", ("parameters", "correlation", "matrix"), [[1.0, 0.5], [0.5, 0.9]],
     "parameters.correlation.matrix"),
    ("correlation not covering every underlying", ("parameters", "correlation"),
     {"underlyings": ["BTC"], "matrix": [[1.0]]}, "parameters.correlation.underlyings"),
    ("haircut brackets that do not increase", ("parameters", "assets", "USDC", "haircuts"),
     [{"up_to": 100, "haircut": 0.0}, {"up_to": 50, "haircut": 0.1}, {"up_to": None, "haircut": 0.2}],
     "parameters.assets.USDC.haircuts[1].up_to"),
    ("a closed last haircut bracket", ("parameters", "assets", "USDC", "haircuts"),
     [{"up_to": 100, "haircut": 0.0}], "parameters.assets.USDC.haircuts[0].up_to"),
    ("a quantity that is not a number", ("portfolios", 0, "positions", 0, "quantity"), "1,5",
     "portfolios[0].positions[0].quantity"),
    ("a negative allocated margin", ("portfolios", 0, "positions", 1, "allocated_margin"), "-0.01",
     "portfolios[0].positions[1].allocated_margin"),
    ("an allocated margin that is not a number", ("portfolios", 0, "positions", 0, "allocated_margin"),
     True, "portfolios[0].positions[0].allocated_margin"),
    ("an allocated margin in words", ("portfolios", 0, "positions", 0, "allocated_margin"), "1 000",
     "portfolios[0].positions[0].allocated_margin"),
    ("an unknown mode", ("portfolios", 0, "mode"), "spread", "portfolios[0].mode"),
    ("a naive valuation time", ("valuation_time",), "2026-11-24T00:00:00", "valuation_time"),
    ("a missing psr", ("parameters", "underlyings", "ETH", "psr"), None, "parameters.underlyings.ETH.psr"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "path", "value", "field"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_each_malformed_document_is_rejected_naming_the_field(case, path, value, field):
    doc = set_path(hand_example_document(), path, value)
    with pytest.raises(DocumentError) as raised:
        compute_document(doc)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


def test_a_correlation_matrix_that_is_not_positive_semi_definite_is_rejected():
    doc = hand_example_document()
    doc["parameters"]["underlyings"]["SOL"] = doc["parameters"]["underlyings"]["ETH"]
    doc["parameters"]["correlation"] = {
        "underlyings": ["BTC", "ETH", "SOL"],
        "matrix": [[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]],
    }
    with pytest.raises(DocumentError, match="not positive semi-definite") as raised:
        compute_document(doc)
    assert raised.value.field == "parameters.correlation.matrix"


def test_the_nearest_correlation_repair_yields_a_valid_matrix_close_to_the_input():
    bad = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])
    with pytest.raises(DocumentError):
        check_correlation(bad)
    fixed = nearest_correlation(bad)
    check_correlation(fixed)
    assert np.allclose(np.diag(fixed), 1.0)
    assert np.abs(fixed - bad).max() < 0.6
    good = np.array([[1.0, 0.8], [0.8, 1.0]])
    assert np.allclose(nearest_correlation(good), good, atol=1e-12)


def test_the_cli_replays_a_document_from_a_file_and_from_stdin(tmp_path, run_cli):
    doc = hand_example_document()
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    from_file = run_cli("margin", str(path))
    from_stdin = run_cli("margin", "-", stdin=json.dumps(doc))
    assert from_file.returncode == from_stdin.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout) == json.loads(from_stdin.stdout) == compute_document(doc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps(set_path(hand_example_document(), ("portfolios", 0, "positions", 1, "instrument"),
                             "XYZ")),
         "portfolios[0].positions[1].instrument: unknown instrument 'XYZ'"),
    ],
)  # fmt: skip
def test_the_cli_exits_non_zero_with_no_results_on_a_malformed_document(text, message, run_cli):
    completed = run_cli("margin", "-", stdin=text)
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert message in completed.stderr
