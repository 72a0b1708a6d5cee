from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from accounts.services import collateral_deposit
from accounts.trading import Fill, trades_book
from riskengine.core import compute_document
from riskengine.models import AssetParameters
from riskengine.selectors import parameter_set_impact
from riskengine.services import parameter_set_draft_from
from tests import factories

PRICES = factories.VENUE_PRICES


@pytest.fixture
def quotes():
    return factories.quotes_fixed()


@pytest.fixture
def proposed(active_set, ops):
    """BTC's price scan range widened from 15 % to 40 %."""
    draft = parameter_set_draft_from(base=active_set, created_by=ops, version="v2")
    btc = draft.underlying_parameters.get(underlying__symbol="BTC")
    btc.psr = Decimal("0.40")
    btc.save()
    return draft


def short_btc_document(parameters: dict, usdc: float) -> dict:
    """A margin document written by hand: one portfolio short 2 BTC-PERP at the index price."""
    return {
        "valuation_time": "2026-11-24T00:00:00Z",
        "parameters": parameters,
        "market": {
            "underlyings": {s: {"price": p} for s, p in PRICES.items()},
            "assets": {"USD": {"price": 1.0}, "USDC": {"price": 1.0}},
            "instruments": {"BTC-PERP": {"kind": "perpetual", "underlying": "BTC", "multiplier": 1}},
        },
        "portfolios": [
            {
                "id": "X",
                "mode": "portfolio",
                "collateral": {"USDC": repr(usdc)},
                "positions": [{"instrument": "BTC-PERP", "quantity": "-2", "entry_price": "60000"}],
            }
        ],
    }


def margins(parameter_set, usdc: float = 0.0) -> dict:
    return compute_document(short_btc_document(parameter_set.to_parameters_form(), usdc))[0]


def test_the_impact_preview_matches_the_engine_account_by_account(
    active_set, proposed, venue, member_a, quotes
):
    im1, im2, mm2 = (
        margins(active_set)["initial_margin"],
        *(margins(proposed)[k] for k in ("initial_margin", "maintenance_margin")),
    )
    assert im1 < mm2 < im2  # the wider scan more than covers the old requirement
    deposits = {
        "AAA-CALL": Decimal(round((mm2 + im2) / 2)),  # healthy now, margin call under v2
        "AAA-LIQ": Decimal(round((im1 + mm2) / 2)),  # healthy now, liquidation under v2
        "AAA-SAFE": Decimal(round(im2 * 2)),  # healthy under both
    }
    accounts = {}
    for code, usdc in deposits.items():
        account = factories.account_make(member=member_a, code=code)
        collateral_deposit(account=account, asset=venue.usdc, amount=usdc)
        accounts[code] = account
    trades_book(
        fills=[
            Fill(account=a, instrument="BTC-PERP", quantity="-2", price="60000") for a in accounts.values()
        ]
    )
    idle = factories.account_make(member=member_a, code="AAA-IDLE")
    collateral_deposit(account=idle, asset=venue.usd, amount=Decimal(1000))

    impact = parameter_set_impact(proposed=proposed, quotes=quotes)

    assert (impact.active_version, impact.proposed_version) == ("v1", "v2")
    by_code = {a.code: a for a in impact.accounts}
    assert set(by_code) == {*deposits, "AAA-IDLE"}
    for code, usdc in deposits.items():
        for parameter_set, suffix in ((active_set, "active"), (proposed, "proposed")):
            expected = margins(parameter_set, float(usdc))
            account = by_code[code]
            assert getattr(account, f"im_{suffix}") == pytest.approx(expected["initial_margin"], rel=1e-12)
            assert getattr(account, f"mm_{suffix}") == pytest.approx(
                expected["maintenance_margin"], rel=1e-12
            )
            assert getattr(account, f"equity_{suffix}") == pytest.approx(expected["equity"], rel=1e-12)
            assert getattr(account, f"status_{suffix}") == expected["status"]
    assert [a.code for a in impact.entering_margin_call] == ["AAA-CALL"]
    assert [a.code for a in impact.entering_liquidation] == ["AAA-LIQ"]
    assert impact.total_im_active == pytest.approx(3 * im1, rel=1e-12)
    assert impact.total_im_proposed == pytest.approx(3 * im2, rel=1e-12)
    assert impact.total_mm_proposed == pytest.approx(3 * mm2, rel=1e-12)
    assert impact.total_im_change == pytest.approx(3 * (im2 - im1), rel=1e-12)
    # Movers: the three short accounts by IM change; the idle account did not move.
    assert {a.code for a in impact.largest_movers} == set(deposits)
    assert by_code["AAA-IDLE"].im_change == 0
    assert by_code["AAA-IDLE"].status_active == by_code["AAA-IDLE"].status_proposed == "healthy"


def test_a_set_that_cannot_margin_the_book_is_reported_naming_the_field(
    active_set, proposed, venue, member_a, quotes
):
    account = factories.account_make(member=member_a, code="AAA-01")
    collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(1000))
    AssetParameters.objects.filter(parameter_set=proposed, asset=venue.usdc).delete()
    proposed.haircut_brackets.filter(asset=venue.usdc).delete()
    with pytest.raises(ValidationError) as error:
        parameter_set_impact(proposed=proposed, quotes=quotes)
    ((field, (message,)),) = error.value.message_dict.items()
    assert field.endswith("assets.USDC")
    assert message.startswith("v2: ")
