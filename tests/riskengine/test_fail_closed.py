"""Methodology v1.1 section 5 validation and fail-closed figures in the engine (riskengine.core)."""

from __future__ import annotations

import copy
import io
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from riskengine.core import (
    STATUSES,
    DocumentError,
    DocumentLimits,
    compute_document,
    compute_margin,
    non_finite_figures,
    parse_document,
    parse_parameters,
)
from riskengine.core.jsontext import JSONInputError, loads
from riskengine.core.params import check_underlying
from riskengine.core.results import _texts, write_json
from tests.riskengine.documents import hand_example_document, make_document, set_path, spec_parameters
from tests.riskengine.pathological import base_documents, pathological_documents

OPTION_BOOK = {
    "id": "OPT-1", "mode": "portfolio", "collateral": {"USDC": "100000"},
    "positions": [{"instrument": "BTC-26MAR27-70000-C", "quantity": "-5"}],
}  # fmt: skip


def refused(doc: dict) -> DocumentError:
    with pytest.raises(DocumentError) as raised:
        compute_document(doc)
    return raised.value


# --- Scan ranges that would take a price to zero or below ------------------------------------------


def test_a_psr_of_0_9_with_the_default_extreme_moves_is_refused_naming_the_psr():
    doc = set_path(hand_example_document(), ("parameters", "underlyings", "BTC", "psr"), 0.9)
    error = refused(doc)
    assert error.field == "parameters.underlyings.BTC.psr"
    assert "zero or below" in error.message


@pytest.mark.parametrize(
    ("psr", "extreme", "accepted"),
    [
        (0.49, None, True),  # 0.98 < 1 with the default ±2
        (0.5, None, False),  # exactly 1: the price would reach zero
        (0.6, [{"multiple": -1.5, "coverage": 0.35}], True),
        (0.7, [{"multiple": 1.5, "coverage": 0.35}], False),  # the sign does not matter: |multiple|
        (0.99, [], True),  # the standard scan alone: psr < 1
        (1.0, [], False),
        (0.9, [{"multiple": 0.5, "coverage": 1.0}], True),  # max(1, |multiple|) = 1
    ],
)
def test_psr_times_the_largest_move_must_stay_below_one(psr, extreme, accepted):
    params = spec_parameters()
    params["underlyings"]["ETH"]["psr"] = psr
    if extreme is not None:
        params["underlyings"]["ETH"]["extreme"] = extreme
    if accepted:
        parse_parameters(params)
    else:
        with pytest.raises(DocumentError) as raised:
            parse_parameters(params)
        assert raised.value.field == "parameters.underlyings.ETH.psr"


@pytest.mark.parametrize("steps", [0, -1, 51, 300000, 2.5, "4.5", True, None])
def test_price_steps_outside_1_to_50_are_refused_naming_the_field(steps):
    doc = set_path(hand_example_document(), ("parameters", "price_steps"), steps)
    assert refused(doc).field == "parameters.price_steps"


def test_price_steps_of_1_and_50_are_accepted():
    for steps in (1, 50, "50"):
        doc = set_path(hand_example_document(), ("parameters", "price_steps"), steps)
        assert compute_document(doc)[0]["status"] in STATUSES


# --- Keys the methodology does not define -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("parameters",), "parameters.mm_ratoi"),
        (("parameters", "vol_term"), "parameters.vol_term.mm_ratoi"),
        (("parameters", "standard"), "parameters.standard.mm_ratoi"),
        (("parameters", "underlyings", "BTC"), "parameters.underlyings.BTC.mm_ratoi"),
        (("parameters", "underlyings", "BTC", "extreme", 0),
         "parameters.underlyings.BTC.extreme[0].mm_ratoi"),
        (("parameters", "correlation"), "parameters.correlation.mm_ratoi"),
        (("parameters", "assets", "USDC"), "parameters.assets.USDC.mm_ratoi"),
        (("parameters", "assets", "USDC", "haircuts", 1), "parameters.assets.USDC.haircuts[1].mm_ratoi"),
    ],
)  # fmt: skip
def test_a_parameter_key_the_methodology_does_not_define_is_refused_naming_it(path, field):
    doc = hand_example_document()
    target = doc
    for key in path:
        target = target[key]
    target["mm_ratoi"] = 0.8
    error = refused(doc)
    assert error.field == field
    assert "not a parameter the methodology defines" in error.message


# --- Numbers that are not plain ASCII decimals -------------------------------------------------


@pytest.mark.parametrize(
    "text", ["١٢٣", "１２３", "1_000", " 1 ", "1 ", "\t2", "1e3\n", "nan", "Infinity", "0x10", "²", "1e999"]
)
def test_a_number_that_is_not_plain_ascii_is_refused_naming_the_field(text):
    doc = set_path(hand_example_document(), ("portfolios", 0, "collateral", "USDC"), text)
    assert refused(doc).field == "portfolios[0].collateral.USDC"
    doc = set_path(hand_example_document(), ("parameters", "underlyings", "BTC", "imf"), text)
    assert refused(doc).field == "parameters.underlyings.BTC.imf"
    doc = set_path(hand_example_document(), ("parameters", "correlation", "matrix", 0, 1), text)
    assert refused(doc).field == "parameters.correlation.matrix[0][1]"


@pytest.mark.parametrize("text", ["-1.5", "2e3", "+7", "0.5", ".5", "20000"])
def test_plain_decimal_strings_are_accepted(text):
    doc = set_path(hand_example_document(), ("portfolios", 0, "collateral", "USDC"), text)
    assert compute_document(doc)[0]["collateral_value"] == pytest.approx(
        float(text) * (1.05 if float(text) < 0 else 1)
    )


def test_an_integer_too_large_for_float64_is_refused_naming_the_field():
    doc = set_path(hand_example_document(), ("portfolios", 0, "positions", 0, "quantity"), 10**400)
    error = refused(doc)
    assert error.field == "portfolios[0].positions[0].quantity"


# --- Figures that would not be finite ---------------------------------------------------------


def test_a_document_whose_figures_would_overflow_is_refused_naming_the_portfolio():
    doc = make_document(
        {"id": "OK-1", "mode": "cross", "collateral": {"USDC": "1000"}, "positions": []},
        {"id": "HUGE", "mode": "cross", "collateral": {"USDC": "1e300"},
         "positions": [{"instrument": "BTC-PERP", "quantity": "1e306", "entry_price": "1"}]},
    )  # fmt: skip
    error = refused(doc)
    assert error.field == "portfolios[1]"
    assert "'HUGE'" in error.message
    assert "not be finite" in error.message


def test_a_portfolio_with_a_nan_figure_is_in_liquidation_never_healthy():
    # A parameter set that slipped past validation (psr 0.9: the -1.8 extreme move takes the price
    # below zero, the option revaluation is NaN).
    margin_input = parse_document(make_document(OPTION_BOOK))
    slipped = replace(margin_input.parameters, psr=np.array([0.9, 0.18]))
    result = compute_margin(replace(margin_input, parameters=slipped))
    assert not result.finite[0]
    assert math.isnan(result.initial_margin[0])
    assert STATUSES[result.status[0]] == "liquidation"
    assert "initial_margin" in non_finite_figures(result, 0)
    assert "by_underlying[BTC].scan_risk" in non_finite_figures(result, 0)


def test_infinite_equity_against_infinite_margin_is_not_healthy():
    doc = make_document(
        {"id": "INF", "mode": "cross", "collateral": {"USDC": "1e308"},
         "positions": [{"instrument": "BTC-PERP", "quantity": "1e306", "entry_price": "60000"}]},
    )  # fmt: skip
    result = compute_margin(parse_document(doc))
    assert not result.finite[0]
    assert STATUSES[result.status[0]] == "liquidation"


def test_finite_portfolios_keep_their_status_next_to_a_non_finite_one():
    margin_input = parse_document(make_document(OPTION_BOOK, {**OPTION_BOOK, "id": "ETH-ONLY",
        "positions": [{"instrument": "ETH-PERP", "quantity": "1", "entry_price": "3000"}]}))  # fmt: skip
    slipped = replace(margin_input.parameters, psr=np.array([0.9, 0.18]))
    result = compute_margin(replace(margin_input, parameters=slipped))
    assert result.finite.tolist() == [False, True]
    assert STATUSES[result.status[1]] == "healthy"


# --- Size limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (DocumentLimits(portfolios=1), "portfolios"),
        (DocumentLimits(positions=1), "portfolios[0].positions"),
        (DocumentLimits(instruments=5), "market.instruments"),
        (DocumentLimits(underlyings=1), "parameters.underlyings"),
        (DocumentLimits(assets=1), "parameters.assets"),
        (DocumentLimits(haircut_brackets=1), "parameters.assets.USDC.haircuts"),
        (DocumentLimits(extreme_moves=1), "parameters.underlyings.BTC.extreme"),
    ],
)
def test_a_document_over_a_size_limit_is_refused_naming_the_field(limits, field):
    doc = make_document(*hand_example_document()["portfolios"], {"id": "X", "mode": "cross", "positions": []})
    with pytest.raises(DocumentError) as raised:
        compute_document(doc, limits=limits)
    assert raised.value.field == field
    assert "too large" in raised.value.message
    compute_document(doc, limits=DocumentLimits(portfolios=2, positions=2, instruments=6))


# --- Strict JSON text ---------------------------------------------------------------------------


def test_strict_json_refuses_a_repeated_key_naming_it():
    with pytest.raises(JSONInputError, match="duplicate key 'quantity'"):
        loads('{"a": [{"quantity": 1, "quantity": 2}]}')


def test_strict_json_refuses_nan_and_infinity():
    for text in ('{"a": NaN}', "[Infinity]", "[-Infinity]"):
        with pytest.raises(JSONInputError):
            loads(text)


def test_strict_json_refuses_nesting_deeper_than_the_limit_without_recursion_error():
    assert loads("[" * 400 + "]" * 400) is not None
    for text in ("[" * 401 + "]" * 401, "[" * 100_000, '{"a":' * 1000 + "1" + "}" * 1000):
        with pytest.raises(JSONInputError, match="nested deeper than 400"):
            loads(text)
    # Brackets inside strings are not nesting.
    assert loads(json.dumps(["[" * 1000, "{" * 1000])) == ["[" * 1000, "{" * 1000]


@pytest.mark.parametrize(
    "text",
    [
        "123456789012345678901234567890", "[-9223372036854775809, 18446744073709551616]",
        "[18446744073709551615, -9223372036854775808, 1e16, 1e400, -1e400, -0, -0.0]",
        '{"a\\u003a": 1}', '{"a:b": "c:d", "e": [{"f": "::"}]}', '"\\ud800"', "null", "0.1",
        '{"x": 0.30000000000000004, "y": 5e-324, "z": 1.7976931348623157e308}',
        '{"a": {"b": 1}, "b": {"a": 2}}',
    ],
)  # fmt: skip
def test_strict_json_reads_the_same_values_as_the_standard_library_whichever_parser_reads_it(text):
    expected = json.loads(text)
    value = loads(text)
    assert value == expected
    assert repr(value) == repr(expected)  # ints stay ints, exactly


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 1}', '[{"q": 1}, {"q": 1, "q": 1}]', '{"k": {"a:": 1, "a:": 2}}',
        '{"a": 1, "\\u0061": 2}',
    ],
)  # fmt: skip
def test_strict_json_refuses_a_repeated_key_even_with_colons_in_strings_or_escaped_keys(text):
    with pytest.raises(JSONInputError, match="duplicate key"):
        loads(text)


# --- The compact writer is exactly json.dumps -------------------------------------------------------


def test_the_cli_writer_writes_exactly_what_json_dumps_writes_for_the_result_dicts():
    for doc in base_documents():
        doc = copy.deepcopy(doc)
        doc["portfolios"][0]["positions"].append(
            {"instrument": "BTC-PERP", "quantity": -0.0, "entry_price": 1}
        )
        doc["portfolios"].append({"id": 'ünïcode "quoted"', "mode": "cross", "collateral": {}})
        result = compute_margin(parse_document(doc))
        out = io.StringIO()
        write_json(result, out, chunk=1)
        assert out.getvalue() == json.dumps(result.to_dicts(), separators=(",", ":"), allow_nan=False)


def test_the_writers_float_texts_are_float_repr_for_every_magnitude_and_sign():
    rng = np.random.default_rng(7)
    values = np.concatenate([
        [0.0, -0.0, 1e-4, 9.999999999999999e-5, -1e-5, 1.5e-7, 5e-324, 1e15, 1e16, -1e22,
         0.30000000000000004, 1.7976931348623157e308, 2.5, 100.0],
        rng.standard_normal(20_000) * 10.0 ** rng.integers(-30, 30, 20_000),
        rng.integers(0, 2**63, 20_000, dtype=np.int64).view(np.float64),
    ])  # fmt: skip
    values = values[np.isfinite(values)]
    assert _texts(values, money=False) == [float.__repr__(x) for x in values.tolist()]
    assert _texts(values) == [float.__repr__(x + 0.0) for x in values.tolist()]
    assert _texts(values[::3]) == [float.__repr__(x + 0.0) for x in values[::3].tolist()]


# --- Pathological documents: a named refusal or a complete finite result, nothing else ------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pathological_documents())
def test_a_pathological_document_is_refused_naming_a_field_or_computed_finite(doc):
    try:
        results = compute_document(doc, limits=DocumentLimits(portfolios=100, positions=100))
    except DocumentError as error:
        refusal = error
    else:
        refusal = None
    if refusal is not None:
        assert refusal.field
        assert str(refusal).startswith(f"{refusal.field}: ")
        return
    text = json.dumps(results, allow_nan=False)  # every figure finite
    assert len(json.loads(text)) == len(doc["portfolios"])


def test_check_underlying_is_the_validator_the_admin_uses_and_names_the_psr():
    entry = copy.deepcopy(spec_parameters()["underlyings"]["BTC"]) | {"psr": "0.9"}
    with pytest.raises(DocumentError) as raised:
        check_underlying(entry, "underlyings.BTC")
    assert raised.value.field == "underlyings.BTC.psr"


# --- The CLI: a complete result or an error and nothing on stdout ------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"valuation_time": "2026-11-24T00:00:00Z", "valuation_time": "x"}',
         "duplicate key 'valuation_time'"),
        ("[" * 100_000, "nested deeper than 400"),
        ('{"a": NaN}', "NaN is not a JSON number"),
        (json.dumps(set_path(hand_example_document(), ("parameters", "underlyings", "BTC", "psr"), 0.9)),
         "parameters.underlyings.BTC.psr"),
        (json.dumps(make_document({"id": "HUGE", "mode": "cross", "positions": [
            {"instrument": "BTC-PERP", "quantity": "1e306", "entry_price": "1"}]})),
         "portfolios[0]: the figures of portfolio 'HUGE' would not be finite"),
        (json.dumps(set_path(hand_example_document(), ("portfolios", 0, "collateral", "USDC"), "１２３")),
         "portfolios[0].collateral.USDC"),
    ],
)  # fmt: skip
def test_the_cli_prints_an_error_and_no_result_exiting_non_zero(text, message, run_cli):
    completed = run_cli("margin", "-", stdin=text)
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert message in completed.stderr


def test_the_cli_writes_compact_json_by_default_and_indents_on_request(tmp_path, run_cli):
    doc = hand_example_document()
    compact = run_cli("margin", "-", stdin=json.dumps(doc))
    indented = run_cli("margin", "-", "--indent", "2", stdin=json.dumps(doc))
    assert compact.returncode == indented.returncode == 0
    assert compact.stdout == json.dumps(compute_document(doc), separators=(",", ":")) + "\n"
    assert json.loads(indented.stdout) == compute_document(doc)
    assert "\n  " in indented.stdout
