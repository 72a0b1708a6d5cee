"""Stress testing and default-fund sizing (methodology v1.1 section 8): Cover-1 and Cover-2 on three
members worked by hand, the scenarios (historical windows, the default hypothetical ones), losses
of options, linked collateral and stablecoins, the ``stress`` command and a run over the real
history."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from riskengine.core import parse_document
from riskengine.core.black76 import black76_price
from riskengine.core.cli import main
from riskengine.core.errors import DocumentError
from riskengine.core.stress import (
    CRISIS_PERIODS,
    DEFAULT_HYPOTHETICAL,
    CrisisPeriod,
    HypotheticalScenario,
    historical_scenarios,
    hypothetical_scenarios,
    stress,
    stress_report,
)
from tests.riskengine.documents import (
    REAL_PRICES,
    daily_days,
    make_document,
    perp,
    price_history,
    real_document,
    spec_parameters,
    write_prices,
)

DOWN_40 = HypotheticalScenario("down 40%", others=0.6)
UP_50 = HypotheticalScenario("up 50%", others=1.5)


def account(portfolio_id: str, member: str, quantity: str, usdc: str) -> dict:
    """A cross account of ``member``: ``quantity`` BTC-PERP entered at the mark (value 0), USDC."""
    return {"id": portfolio_id, "member": member, "mode": "cross", "collateral": {"USDC": usdc},
            "positions": [perp("BTC-PERP", quantity, "60000")]}  # fmt: skip


def three_members() -> dict:
    return make_document(
        account("A1", "A", "1", "10000"),
        account("B1", "B", "-1", "18000"),
        account("C1", "C", "0.5", "2000"),
        account("C2", "C", "-0.5", "14000"),
    )


def members_of(doc: dict) -> list[str]:
    return [p["member"] for p in doc["portfolios"]]


def test_cover_2_on_three_members_is_the_worst_same_scenario_pair():
    # S = 60,000; entries at the mark, so E = the USDC (no haircut under 10M). L = -q * 60,000 * (f - 1).
    #                     E       down 40% (f 0.6)        up 50% (f 1.5)
    #   A1 long 1       10,000   L 24,000  U 14,000       L -30,000  U 0
    #   B1 short 1      18,000   L -24,000 U 0            L 30,000   U 12,000
    #   C1 long 0.5      2,000   L 12,000  U 10,000       L -15,000  U 0
    #   C2 short 0.5    14,000   L -12,000 U 0            L 15,000   U 1,000
    # Members (sum of their accounts' U; C2's gain in the fall does not offset C1's loss):
    #   down 40%: A 14,000, B 0, C 10,000        up 50%: A 0, B 12,000, C 1,000
    # Cover-1 = max(14,000, 12,000) = 14,000 (down 40%, A).
    # Cover-2 = max(14,000 + 10,000, 12,000 + 1,000) = 24,000 (down 40%, A and C): not A's 14,000
    # plus B's 12,000, which never happen in the same scenario.
    doc = three_members()
    margin_input = parse_document(doc)
    scenarios = hypothetical_scenarios(margin_input, [DOWN_40, UP_50])
    result = stress(margin_input, scenarios, members=members_of(doc))
    assert result.equity.tolist() == [10_000.0, 18_000.0, 2_000.0, 14_000.0]
    assert result.loss.tolist() == [[24_000.0, -24_000.0, 12_000.0, -12_000.0],
                                     [-30_000.0, 30_000.0, -15_000.0, 15_000.0]]  # fmt: skip
    assert result.members == ("A", "B", "C")
    assert result.member_uncovered.tolist() == [[14_000.0, 0.0, 10_000.0], [0.0, 12_000.0, 1_000.0]]
    report = stress_report(margin_input, result)
    assert report["cover_1"] == {"amount": 14_000.0, "scenario": "down 40%", "members": ["A"]}
    assert report["cover_2"] == {"amount": 24_000.0, "scenario": "down 40%", "members": ["A", "C"]}
    assert [p["worst"] for p in report["portfolios"]] == [
        {"scenario": "down 40%", "loss": 24_000.0, "uncovered": 14_000.0},
        {"scenario": "up 50%", "loss": 30_000.0, "uncovered": 12_000.0},
        {"scenario": "down 40%", "loss": 12_000.0, "uncovered": 10_000.0},
        {"scenario": "up 50%", "loss": 15_000.0, "uncovered": 1_000.0},
    ]
    assert [p["member"] for p in report["portfolios"]] == ["A", "B", "C", "C"]


def test_when_nothing_is_uncovered_no_scenario_or_member_sets_the_cover():
    doc = make_document(account("RICH", "R", "1", "1000000"))
    margin_input = parse_document(doc)
    result = stress(margin_input, hypothetical_scenarios(margin_input, [DOWN_40, UP_50]))
    report = stress_report(margin_input, result)
    assert report["cover_1"] == report["cover_2"] == {"amount": 0.0, "scenario": None, "members": []}
    assert report["portfolios"][0]["member"] == "RICH"  # no member given: the portfolio's own id


def test_with_one_member_uncovered_cover_2_is_that_member_alone():
    doc = make_document(account("A1", "A", "1", "10000"), account("B1", "B", "1", "1000000"))
    margin_input = parse_document(doc)
    result = stress(margin_input, hypothetical_scenarios(margin_input, [DOWN_40]), members=members_of(doc))
    assert (result.cover_2.amount, result.cover_2.members) == (14_000.0, (0,))


def test_the_default_hypothetical_scenarios_of_section_8():
    # Spec parameters: underlyings BTC, ETH; assets USDC (a stablecoin) and BTC (linked). Plus XRP,
    # which the second scenario does not name: it falls like SOL, the largest fall it names.
    parameters = spec_parameters()
    parameters["underlyings"]["XRP"] = copy.deepcopy(parameters["underlyings"]["ETH"])
    parameters["correlation"] = {
        "underlyings": ["BTC", "ETH", "XRP"], "matrix": [[1, 0.8, 0.5], [0.8, 1, 0.5], [0.5, 0.5, 1]],
    }  # fmt: skip
    doc = make_document(parameters=parameters)
    doc["market"]["assets"] = {"USDC": {"price": 0.9995}}
    margin_input = parse_document(doc)
    scenarios = hypothetical_scenarios(margin_input)
    assert scenarios.names == tuple(d.name for d in DEFAULT_HYPOTHETICAL)
    assert scenarios.kinds == ("hypothetical",) * 4
    assert scenarios.underlying_factor.tolist() == [
        [0.6, 0.6, 0.6],
        [0.7, 0.55, 0.4],
        [1, 1, 1],
        [1.5, 1.5, 1.5],
    ]
    usdc, btc = margin_input.parameters.assets.index("USDC"), margin_input.parameters.assets.index("BTC")
    assert scenarios.asset_factor[:, btc].tolist() == [0.6, 0.7, 1.0, 1.5]  # linked: moves with BTC
    assert scenarios.asset_factor[:, usdc] == pytest.approx([1.0, 1.0, 0.87 / 0.9995, 1.0])  # at 0.87
    assert scenarios.iv_factor.tolist() == [1.5, 2.0, 1.0, 1.5]


@pytest.mark.parametrize(
    ("definition", "field"),
    [
        (HypotheticalScenario("zero", others=0.0), "scenarios[0].others"),
        (HypotheticalScenario("named", underlyings=(("BTC", -0.1),)), "scenarios[0].underlyings.BTC"),
        (HypotheticalScenario("vol", iv_factor=float("nan")), "scenarios[0].iv_factor"),
        (HypotheticalScenario("stable", stablecoin_price=0.0), "scenarios[0].stablecoin_price"),
    ],
)
def test_a_hypothetical_scenario_with_a_factor_that_is_not_positive_is_refused_naming_it(definition, field):
    with pytest.raises(DocumentError) as refused:
        hypothetical_scenarios(parse_document(make_document()), [definition])
    assert refused.value.field == field


def test_historical_scenarios_are_the_windows_inside_a_period_that_the_history_holds():
    # Days 2021-01-01..10 without 01-06; period 01-03..01-07, h = 2: t = 03 (-> 05), t = 04 has no
    # 06, t = 05 (-> 07); t = 06 is missing and t + 2 of 01-07 is outside the period.
    doc = make_document()
    margin_input = parse_document(doc)
    days = np.delete(daily_days("2021-01-01", 10), 5)
    btc = [100.0, 101, 102, 103, 104, 106, 107, 108, 109]
    history = price_history(
        margin_input.parameters, {"BTC": btc, "ETH": [10.0] * 9, "USDC": [1.0] * 9}, days=days
    )
    scenarios = historical_scenarios(
        margin_input, history, periods=[CrisisPeriod("test", "2021-01-03", "2021-01-07")]
    )
    assert scenarios.names == ("test 2021-01-03..2021-01-05", "test 2021-01-05..2021-01-07")
    assert scenarios.underlying_factor[:, 0] == pytest.approx([104 / 102, 106 / 104])
    assert scenarios.kinds == ("historical", "historical")
    assert scenarios.iv_factor.tolist() == [1.0, 1.0]  # the history has no ivs


def test_a_short_call_loses_its_revaluation_at_the_stressed_price_vol_and_time():
    # Short 1 ETH-25DEC26-3000-C (iv 0.70, T = 31 days 8 hours) at ETH 3,000; ETH +20 % with ivs x2
    # over h = 2 days: L = price(3,600, 3,000, 1.40, T - 2/365) - price(3,000, 3,000, 0.70, T).
    doc = make_document(
        {"id": "SHORT-CALL", "mode": "cross", "collateral": {"USDC": "10000"},
         "positions": [{"instrument": "ETH-25DEC26-3000-C", "quantity": "-1"}]},
    )  # fmt: skip
    margin_input = parse_document(doc)
    years = (31 + 8 / 24) / 365
    scenario = HypotheticalScenario("ETH up", underlyings=(("ETH", 1.2),), iv_factor=2.0)
    result = stress(margin_input, hypothetical_scenarios(margin_input, [scenario]))
    expected = black76_price(3600.0, 3000.0, 1.4, years - 2 / 365, True) - black76_price(
        3000.0, 3000.0, 0.7, years, True
    )
    assert result.loss[0, 0] == pytest.approx(float(expected), rel=1e-12)
    assert result.loss[0, 0] > 600.0  # more than the intrinsic gain of the call


def test_collateral_is_stressed_at_market_value_and_covered_by_equity_after_haircuts():
    # 10,000 USDC and 1 BTC (linked, haircut 5 % under 1M) and nothing else. E = 10,000 + 57,000 =
    # 67,000. Every stablecoin at 0.87: L = 10,000 * 0.13 = 1,300. All crypto -40 %: L = 24,000.
    # Neither exceeds E: nothing uncovered.
    doc = make_document({"id": "CASH", "mode": "cross", "collateral": {"USDC": "10000", "BTC": "1"}})
    margin_input = parse_document(doc)
    result = stress(margin_input, hypothetical_scenarios(margin_input))
    assert result.equity.tolist() == [67_000.0]
    assert result.loss[:, 0] == pytest.approx([24_000.0, 18_000.0, 1_300.0, -30_000.0])
    assert not result.uncovered.any()


# --- the command ------------------------------------------------------------------------------------


def assert_stress_shape(report: dict) -> None:
    assert set(report) == {"scenarios", "portfolios", "cover_1", "cover_2"}
    for scenario in report["scenarios"]:
        assert set(scenario) == {"name", "kind", "prices", "iv_factor"}
        assert scenario["kind"] in {"historical", "hypothetical"}
    for portfolio in report["portfolios"]:
        assert set(portfolio) == {"id", "member", "worst"}
        assert set(portfolio["worst"]) == {"scenario", "loss", "uncovered"}
    for cover in (report["cover_1"], report["cover_2"]):
        assert set(cover) == {"amount", "scenario", "members"}


def test_the_stress_command_prints_the_issues_shape(tmp_path, run_cli):
    # A history outside the crisis periods: the four hypothetical scenarios only.
    doc = three_members()
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    write_prices(tmp_path, {"BTC": [60000.0] * 5, "ETH": [3000.0] * 5, "USDC": [1.0] * 5})
    done = run_cli("stress", str(tmp_path / "doc.json"), "--prices", str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert_stress_shape(report)
    assert [s["name"] for s in report["scenarios"]] == [d.name for d in DEFAULT_HYPOTHETICAL]
    # Every underlying's and asset's factor (BTC the underlying and its linked asset are one).
    assert report["scenarios"][0]["prices"] == {"BTC": 0.6, "ETH": 0.6, "USDC": 1.0}
    # All crypto -40 % is the down 40 % of the hand example: Cover-2 24,000 by A and C.
    assert report["cover_2"] == {
        "amount": 24_000.0,
        "scenario": "all crypto -40%, ivs x1.5",
        "members": ["A", "C"],
    }


def test_a_member_that_is_not_a_string_is_refused_naming_it(tmp_path, capsys):
    doc = three_members()
    doc["portfolios"][1]["member"] = 7
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    write_prices(tmp_path, {"BTC": [60000.0] * 3, "ETH": [3000.0] * 3, "USDC": [1.0] * 3})
    assert main(["stress", str(tmp_path / "doc.json"), "--prices", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == "error: portfolios[1].member: must be a non-empty string, got 7"


def test_the_stress_command_needs_every_price_file_too(tmp_path, capsys):
    (tmp_path / "doc.json").write_text(json.dumps(three_members()))
    write_prices(tmp_path, {"BTC": [60000.0] * 3, "USDC": [1.0] * 3})
    assert main(["stress", str(tmp_path / "doc.json"), "--prices", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'ETH-USD.csv'}: missing"


def test_the_stress_runs_end_to_end_over_the_real_history(tmp_path, run_cli):
    (tmp_path / "doc.json").write_text(json.dumps(real_document()))
    done = run_cli("stress", str(tmp_path / "doc.json"), "--prices", str(REAL_PRICES))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert_stress_shape(report)
    names = [s["name"] for s in report["scenarios"]]
    # Two-day windows inside the four crisis weeks: May 2021 t = 05-12..05-21 (10), LUNA 05-07..05-10
    # (4), FTX 11-06..11-07 (2), USDC depeg 03-10..03-11 (2); then the four hypothetical ones.
    assert len(names) == 18 + 4
    assert [p.name for p in CRISIS_PERIODS] == ["May 2021", "LUNA", "FTX", "USDC depeg"]
    ftx = report["scenarios"][names.index("FTX 2022-11-07..2022-11-09")]
    assert ftx["kind"] == "historical"
    assert ftx["prices"]["SOL"] == pytest.approx(13.940857 / 29.601345)  # SOL -53 % in two days
    depeg = report["scenarios"][names.index("USDC depeg 2023-03-10..2023-03-12")]
    assert depeg["prices"]["USDC"] == pytest.approx(0.992069 / 0.999479)
    assert set(ftx["prices"]) == {"BTC", "ETH", "SOL", "USDC", "USDT", "USD"}
    assert ftx["prices"]["USD"] == 1.0
    assert [p["member"] for p in report["portfolios"]] == ["M1", "M2", "M1"]
    # M2's book is short SOL and short an ETH call: its worst scenario is a rise, not a crash.
    assert report["portfolios"][1]["worst"]["scenario"] == "all crypto +50%, ivs x1.5"
