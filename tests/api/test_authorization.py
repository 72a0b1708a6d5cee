"""The authorization matrix: every endpoint × every kind of caller.

Callers: anonymous (401), each role (allowed or 403), and a member user of another member on an
account-scoped endpoint (404: the account's existence does not leak). A route with several methods
has an entry per method (``name:put``, ``name:delete``; ``-list`` for a list's ``GET``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest

from accounts.trading import trade_book
from clearing.api import urls
from riskengine.selectors import parameter_set_active
from riskengine.validation.services import validation_run_complete, validation_run_create
from riskengine.whatif import margin_what_if
from tests.api.conftest import World
from tests.factories import price_history_load, quotes_fixed, recent

V1 = "/api/v1"
ROLES = ("trader_a", "viewer_a", "trader_b", "ops", "risk", "feed", "venue", "custodian")
MEMBER_A = {"trader_a", "viewer_a"}
READERS = {"trader_a", "viewer_a", "trader_b", "ops", "risk"}


@dataclass
class Endpoint:
    method: str
    path: Callable[[World], str]
    allowed: set[str]
    body: Callable[[World], dict] | None = None
    account_scoped: bool = False  # trader_b is refused with 404 (the account is member A's)
    ok: tuple[int, ...] = (200, 201)


def _fill(world: World) -> dict:
    return {"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "1", "price": "60000"}


def _document(world: World) -> dict:
    return margin_what_if(account=world.account_a, trades=[(world.venue.btc_perp, Decimal(1), None)]).document


def _backtested(world: World) -> str:
    """Member A's first account's backtest, after a completed validation run that holds it (made
    once per test: the path is asked for every caller)."""
    if "validated" not in world.__dict__:
        price_history_load()
        run = validation_run_create(
            kind="nightly", mode="fixed", parameter_set=parameter_set_active(), cause="matrix",
            quotes=quotes_fixed(), enqueue=False,
        )  # fmt: skip
        world.__dict__["validated"] = validation_run_complete(run=run)
    return f"{V1}/accounts/{world.account_a.pk}/backtest/"


def account(suffix: str = "") -> Callable[[World], str]:
    return lambda world: f"{V1}/accounts/{world.account_a.pk}/{suffix}"


def _pending(world: World, name: str):
    """A deposit announced, or a withdrawal requested, by member A's trader, made once per test
    (the path is asked for every caller) for the custodian's steps to act on."""
    from accounts.custody import deposit_announce
    from riskengine.withdrawals import withdrawal_request

    made = world.__dict__.setdefault("pending", {})
    if name not in made:
        trader = world["trader_a"].user
        if name == "deposit":
            made[name] = deposit_announce(
                account=world.account_a, asset=world.venue.usdc, amount=Decimal(5), announced_by=trader
            )
        else:
            made[name] = withdrawal_request(
                account=world.account_a2, asset=world.venue.usdc, amount=Decimal(5), requested_by=trader
            )
    return made[name]


ENDPOINTS = {
    "underlyings": Endpoint("get", lambda w: f"{V1}/underlyings/", READERS | {"venue"}),
    "instruments": Endpoint("get", lambda w: f"{V1}/instruments/", READERS | {"venue"}),
    "assets": Endpoint("get", lambda w: f"{V1}/assets/", READERS | {"venue"}),
    "index-prices": Endpoint("get", lambda w: f"{V1}/index-prices/", READERS | {"venue"}),
    "price-observations": Endpoint(
        "post",
        lambda w: f"{V1}/price-observations/",
        {"feed"},
        lambda w: {"symbol": "BTC", "price": "60000", "source_time": recent()},
    ),
    "vol-observations": Endpoint(
        "post",
        lambda w: f"{V1}/vol-observations/",
        {"feed"},
        lambda w: {"instrument": "BTC-70000-C", "iv": "0.5", "source_time": recent()},
    ),
    # Allowed ops and price sources get a 400: no move is held for confirmation in this world.
    "index-price-confirm": Endpoint(
        "post", lambda w: f"{V1}/index-prices/BTC/confirm/", {"ops", "feed"}, lambda w: {}, ok=(400,)
    ),
    "accounts": Endpoint("get", lambda w: f"{V1}/accounts/", READERS),
    "account": Endpoint("get", account(), READERS, account_scoped=True),
    "account-positions": Endpoint("get", account("positions/"), READERS, account_scoped=True),
    "account-trades": Endpoint("get", account("trades/"), READERS, account_scoped=True),
    "account-movements": Endpoint("get", account("collateral-movements/"), READERS, account_scoped=True),
    "account-deposits-list": Endpoint("get", account("deposits/"), READERS, account_scoped=True),
    # Only the account's member's traders announce deposits and request withdrawals: ops no longer
    # move money through the API, and only the custodian confirms, credits, sends or fails.
    "account-deposits": Endpoint(
        "post",
        account("deposits/"),
        {"trader_a", "trader_b"},
        lambda w: {"asset": "USDC", "amount": "1"},
        account_scoped=True,
    ),
    "account-withdrawals-list": Endpoint("get", account("withdrawals/"), READERS, account_scoped=True),
    # On A's second account: the first one is in a margin call, where a withdrawal is refused.
    "account-withdrawals": Endpoint(
        "post",
        lambda w: f"{V1}/accounts/{w.account_a2.pk}/withdrawals/",
        {"trader_a", "trader_b"},
        lambda w: {"asset": "USDC", "amount": "1"},
        account_scoped=True,
    ),
    "custody-deposits-list": Endpoint("get", lambda w: f"{V1}/custody/deposits/", {"custodian"}),
    "custody-deposits": Endpoint(
        "post",
        lambda w: f"{V1}/custody/deposits/",
        {"custodian"},
        lambda w: {"account": "AAA-01", "asset": "USDC", "amount": "1", "reference": "tx-matrix"},
    ),
    "custody-deposit-confirm": Endpoint(
        "post",
        lambda w: f"{V1}/custody/deposits/{_pending(w, 'deposit').pk}/confirm/",
        {"custodian"},
        lambda w: {"reference": "tx-confirm"},
    ),
    "custody-withdrawals": Endpoint("get", lambda w: f"{V1}/custody/withdrawals/", {"custodian"}),
    "custody-withdrawal-sent": Endpoint(
        "post",
        lambda w: f"{V1}/custody/withdrawals/{_pending(w, 'withdrawal').pk}/sent/",
        {"custodian"},
        lambda w: {"reference": "tx-sent"},
    ),
    "custody-withdrawal-failed": Endpoint(
        "post",
        lambda w: f"{V1}/custody/withdrawals/{_pending(w, 'withdrawal').pk}/failed/",
        {"custodian"},
        lambda w: {"reason": "bank refused"},
    ),
    "account-what-if": Endpoint(
        "post",
        account("what-if/"),
        {"trader_a", "trader_b", "ops", "risk"},
        lambda w: {"trades": [{"instrument": "BTC-PERP", "quantity": "1"}]},
        account_scoped=True,
    ),
    # Authorization comes before the move itself: a trader of A reaches it (A's account is not
    # isolated, so the move is refused with 422 naming the field), anyone else does not.
    "account-position-margin": Endpoint(
        "post",
        account("positions/1/margin/"),
        {"trader_a", "trader_b"},
        lambda w: {"amount": "1"},
        account_scoped=True,
        ok=(201, 422),
    ),
    "positions": Endpoint("get", lambda w: f"{V1}/positions/", READERS),
    "trades-list": Endpoint("get", lambda w: f"{V1}/trades/", READERS),
    "trades-book": Endpoint("post", lambda w: f"{V1}/trades/", {"venue"}, _fill),
    "margin-simulate": Endpoint("post", lambda w: f"{V1}/margin/simulate/", READERS, World.simulate_document),
    "risk-parameters": Endpoint("get", lambda w: f"{V1}/risk-parameters/", READERS),
    "risk-parameters-active": Endpoint("get", lambda w: f"{V1}/risk-parameters/active/", READERS),
    "account-margin": Endpoint("get", account("margin/"), READERS, account_scoped=True),
    "account-margin-history": Endpoint("get", account("margin-history/"), READERS, account_scoped=True),
    "account-backtest": Endpoint("get", _backtested, READERS, account_scoped=True),
    "margin-calls": Endpoint("get", lambda w: f"{V1}/margin-calls/", READERS),
    # Member B's users do not see member A's call: 404.
    "margin-call": Endpoint(
        "get", lambda w: f"{V1}/margin-calls/{w.swept.call.pk}/", READERS, account_scoped=True
    ),
    "liquidations": Endpoint("get", lambda w: f"{V1}/liquidations/", READERS),
    "liquidation": Endpoint(
        "get", lambda w: f"{V1}/liquidations/{w.swept.liquidation.pk}/", READERS, account_scoped=True
    ),
    "risk-parameter-set": Endpoint("get", lambda w: f"{V1}/risk-parameters/{_active_id()}/", READERS),
    # The automated agents: member A's traders change them, readers read them, member B gets 404.
    "account-band-policy": Endpoint("get", account("band-policy/"), READERS, account_scoped=True),
    "account-band-policy:put": Endpoint(
        "put",
        account("band-policy/"),
        {"trader_a", "trader_b"},
        lambda w: {
            "funding_account": "AAA-FUND",
            "search_level": "1.3",
            "target_level": "1.6",
            "release_level": "3",
            "assets": ["USDC"],
        },
        account_scoped=True,
    ),
    "account-band-policy:delete": Endpoint(
        "delete", account("band-policy/"), {"trader_a", "trader_b"}, account_scoped=True
    ),
    "account-hedge-policies-list": Endpoint("get", account("hedge-policies/"), READERS, account_scoped=True),
    "account-hedge-policies": Endpoint(
        "post",
        account("hedge-policies/"),
        {"trader_a", "trader_b"},
        lambda w: {
            "underlying": "ETH",
            "instrument": "ETH-PERP",
            "threshold_usd": "1000",
            "max_quantity": "5",
        },
        account_scoped=True,
    ),
    "account-hedge-policy": Endpoint(
        "get",
        lambda w: f"{V1}/accounts/{w.account_a.pk}/hedge-policies/{w.hedge_policy.pk}/",
        READERS,
        account_scoped=True,
    ),
    "account-hedge-policy:put": Endpoint(
        "put",
        lambda w: f"{V1}/accounts/{w.account_a.pk}/hedge-policies/{w.hedge_policy.pk}/",
        {"trader_a", "trader_b"},
        lambda w: {"instrument": "BTC-PERP", "threshold_usd": "2000", "max_quantity": "2"},
        account_scoped=True,
    ),
    "account-hedge-policy:delete": Endpoint(
        "delete",
        lambda w: f"{V1}/accounts/{w.account_a.pk}/hedge-policies/{w.hedge_policy.pk}/",
        {"trader_a", "trader_b"},
        account_scoped=True,
    ),
    "account-hedge-requests": Endpoint("get", account("hedge-requests/"), READERS, account_scoped=True),
    "account-auto-transfers": Endpoint("get", account("auto-transfers/"), READERS, account_scoped=True),
    "webhook-endpoints-list": Endpoint("get", lambda w: f"{V1}/webhook-endpoints/", READERS),
    # Each member's traders make their own member's endpoints.
    "webhook-endpoints": Endpoint(
        "post",
        lambda w: f"{V1}/webhook-endpoints/",
        {"trader_a", "trader_b"},
        lambda w: {"url": "https://hedges.example.org/hook"},
    ),
    "webhook-endpoint": Endpoint(
        "get", lambda w: f"{V1}/webhook-endpoints/{w.endpoint.pk}/", READERS, account_scoped=True
    ),
    "webhook-endpoint:delete": Endpoint(
        "delete",
        lambda w: f"{V1}/webhook-endpoints/{w.endpoint.pk}/",
        {"trader_a", "trader_b"},
        account_scoped=True,
    ),
    "webhook-endpoint-deliveries": Endpoint(
        "get", lambda w: f"{V1}/webhook-endpoints/{w.endpoint.pk}/deliveries/", READERS, account_scoped=True
    ),
}


@pytest.fixture
def agents_configured(world):
    """Member A's funding account, a band policy, a webhook endpoint and a hedge policy in request
    mode on its first account (its traders made them)."""
    from accounts.models import AccountKind, MarginAccount
    from agents.services import band_policy_set, hedge_policy_create, webhook_endpoint_create

    trader = world["trader_a"].user
    funding = MarginAccount.objects.create(member=trader.member, code="AAA-FUND", kind=AccountKind.FUNDING)
    band_policy_set(
        account=world.account_a, funding_account=funding, search_level="1.3", target_level="1.6",
        release_level="3", assets=["USDC"], user=trader,
    )  # fmt: skip
    world.endpoint, _ = webhook_endpoint_create(
        member=trader.member, url="https://hedges.example.org/a", user=trader
    )
    world.hedge_policy = hedge_policy_create(
        account=world.account_a, underlying="BTC", instrument="BTC-PERP", threshold_usd="1000",
        max_quantity="1", mode="request", endpoint=world.endpoint, user=trader,
    )  # fmt: skip


def _active_id() -> int:
    from riskengine.selectors import parameter_set_active

    return parameter_set_active().pk


def expected_status(endpoint: Endpoint, caller: str) -> str:
    if caller == "anonymous":
        return "401"
    if caller not in endpoint.allowed:
        return "403"
    if endpoint.account_scoped and caller == "trader_b":
        return "404"
    return "ok"


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_every_caller_gets_exactly_what_its_role_allows(world, swept, agents_configured, name):
    world.swept = swept
    endpoint = ENDPOINTS[name]
    outcomes = {}
    for caller in ("anonymous", *ROLES):
        client = world[caller]
        path = endpoint.path(world)
        if endpoint.method in ("get", "delete"):
            response = getattr(client, endpoint.method)(path)
        else:
            response = getattr(client, endpoint.method)(path, endpoint.body(world))
        code = response.status_code
        outcomes[caller] = "ok" if code in endpoint.ok else str(code)
    assert outcomes == {caller: expected_status(endpoint, caller) for caller in outcomes}


def test_the_matrix_covers_every_api_route():
    """A new endpoint must be added to the matrix before it ships."""
    covered = {name.split(":")[0].removesuffix("-list").removesuffix("-book") for name in ENDPOINTS}
    assert {pattern.name for pattern in urls.v1} == covered


def test_lists_show_only_the_callers_member_accounts(world):
    trade_book(account=world.account_a, instrument="BTC-PERP", quantity=Decimal(1), price=Decimal(60_000))
    trade_book(account=world.account_b, instrument="ETH-PERP", quantity=Decimal(1), price=Decimal(3_000))

    def codes(client, path, key="account"):
        return {row[key] for row in client.get(f"{V1}/{path}").json()["results"]}

    for caller in ("trader_a", "viewer_a"):
        assert codes(world[caller], "accounts/", "code") == {"AAA-01", "AAA-02"}
        assert codes(world[caller], "positions/") == {"AAA-01"}
        assert codes(world[caller], "trades/") == {"AAA-01"}
    assert codes(world["trader_b"], "accounts/", "code") == {"BBB-01"}
    assert codes(world["trader_b"], "trades/") == {"BBB-01"}
    assert codes(world["trader_b"], "margin-calls/") == set()
    for staff in ("ops", "risk"):
        assert {"AAA-01", "AAA-02", "BBB-01"} <= codes(world[staff], "accounts/", "code")
        assert codes(world[staff], "trades/") == {"AAA-01", "BBB-01"}


def test_a_revoked_token_is_refused(world):
    from accounts.models import ApiToken
    from accounts.services import api_token_revoke

    for token in ApiToken.objects.filter(user=world["trader_a"].user):
        api_token_revoke(token=token)
    assert world["trader_a"].get(f"{V1}/accounts/").status_code == 401


def test_a_session_signed_in_member_sees_its_own_accounts_only(world, client):
    client.force_login(world["viewer_a"].user)
    assert client.get(f"{V1}/accounts/{world.account_a.pk}/").status_code == 200
    assert client.get(f"{V1}/accounts/{world.account_b.pk}/").status_code == 404
