"""Custody through the API: members announce and request, only the custodian confirms, credits,
sends or fails; the attacks of issue #12 (a member crediting itself, ops moving money, venue
accounts paying out) are refused with nothing changed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.custody import deposit_announce, deposits_expire
from accounts.models import (
    CollateralBalance,
    CollateralMovement,
    Deposit,
    MarginAccount,
    Withdrawal,
)
from clearing.models import OutboxEvent
from riskengine.sweeps.models import MarginCall
from riskengine.sweeps.services import sweep_accounts_run
from riskengine.whatif import margin_what_if
from tests.factories import quotes_fixed

V1 = "/api/v1"


@dataclass(frozen=True)
class Books:
    """Everything a refused attack must leave as it was."""

    balances: dict
    movements: int
    deposits_credited: int
    withdrawals: int
    equity: dict

    @classmethod
    def read(cls, *accounts: MarginAccount) -> Books:
        return cls(
            balances={
                (b.account_id, b.asset_id): b.amount
                for b in CollateralBalance.objects.filter(account__in=accounts)
            },
            movements=CollateralMovement.objects.count(),
            deposits_credited=Deposit.objects.filter(step__kind="confirmed").count(),
            withdrawals=Withdrawal.objects.count(),
            equity={a.pk: margin_what_if(account=a).before["equity"] for a in accounts},
        )


def balance(account, symbol: str = "USDC") -> Decimal:
    row = CollateralBalance.objects.filter(account=account, asset__symbol=symbol).first()
    return row.amount if row else Decimal(0)


# --- Attack 1: a member credits itself collateral -------------------------------------------------


def test_a_member_cannot_credit_itself_collateral(world, swept):
    """The issue's attack: a trader 'deposits' 999999999999999 USD to cure its margin call and
    then withdraws. The announcement is accepted as pending and counts for nothing: the call stays
    open, the withdrawal is refused, and the trader cannot confirm its own announcement. (Fifteen
    nines: as many significant digits as the embedded SQLite stack stores exactly.)"""
    trader, account = world["trader_a"], world.account_a
    assert MarginCall.objects.get(account=account).status == "open"
    before = Books.read(account)

    response = trader.post(
        f"{V1}/accounts/{account.pk}/deposits/", {"asset": "USD", "amount": "999999999999999"}
    )
    assert response.status_code == 201, response.json()
    assert (response.json()["state"], response.json()["movement_id"]) == ("pending", None)
    announced = response.json()["id"]

    # The trader tries the custodian's endpoints itself.
    for path, body in (
        (f"{V1}/custody/deposits/{announced}/confirm/", {"reference": "0xmine"}),
        (f"{V1}/custody/deposits/", {"account": "AAA-01", "asset": "USD", "amount": "1", "reference": "x"}),
    ):
        assert trader.post(path, body).status_code == 403

    # The next sweep finds the account exactly as it was: still in its margin call.
    sweep_accounts_run(account_ids=[account.pk], cause="test", quotes=quotes_fixed())
    assert MarginCall.objects.get(account=account).status == "open"

    response = trader.post(f"{V1}/accounts/{account.pk}/withdrawals/", {"asset": "USDC", "amount": "1000"})
    assert response.status_code == 400
    assert "initial margin" in response.json()["amount"][0]

    assert Books.read(account) == before
    assert Deposit.objects.get(pk=announced).state == "pending"


def test_an_announcement_is_listed_as_pending_and_is_never_in_equity_or_balances(world):
    trader = world["trader_a"]
    before = Books.read(world.account_a)
    trader.post(f"{V1}/accounts/{world.account_a.pk}/deposits/", {"asset": "USDC", "amount": "5000"})

    (listed,) = trader.get(f"{V1}/accounts/{world.account_a.pk}/deposits/").json()["results"]
    assert (listed["state"], Decimal(listed["amount"]), listed["reference"]) == ("pending", 5000, None)
    assert listed["expires_at"] is not None
    account = trader.get(f"{V1}/accounts/{world.account_a.pk}/").json()
    assert [(b["asset"], Decimal(b["amount"])) for b in account["balances"]] == [("USDC", 100_000)]
    assert Books.read(world.account_a) == before
    # The custodian's queue shows it.
    queue = world["custodian"].get(f"{V1}/custody/deposits/").json()["results"]
    assert [d["id"] for d in queue] == [listed["id"]]


# --- Attack 3 (part): ops and venue accounts -----------------------------------------------------


def test_ops_can_no_longer_deposit_to_or_withdraw_from_any_account(world, fund):
    ops = world["ops"]
    before = Books.read(world.account_a, fund)
    for account in (world.account_a, fund):
        deposit = ops.post(f"{V1}/accounts/{account.pk}/deposits/", {"asset": "USD", "amount": "1000"})
        # IM 0 on the fund: before, all of it could leave.
        withdrawal = ops.post(
            f"{V1}/accounts/{account.pk}/withdrawals/", {"asset": "USD", "amount": "5000000"}
        )
        assert (deposit.status_code, withdrawal.status_code) == (403, 403)
    assert Books.read(world.account_a, fund) == before
    assert not Deposit.objects.exists()


@pytest.mark.parametrize("code", ["VENUE-INSURANCE", "VENUE-HOUSE"])
def test_venue_accounts_accept_no_withdrawal_or_deposit_announcement(world, fund, code):
    account = MarginAccount.objects.get(code=code)
    insider = world["venue_trader"]
    before = Books.read(account)

    withdrawal = insider.post(f"{V1}/accounts/{account.pk}/withdrawals/", {"asset": "USD", "amount": "1000"})
    deposit = insider.post(f"{V1}/accounts/{account.pk}/deposits/", {"asset": "USD", "amount": "1000"})

    for response in (withdrawal, deposit):
        assert response.status_code == 400, response.json()
        assert "accepts no deposit announcements or withdrawal requests" in response.json()["account"][0]
    assert Books.read(account) == before
    assert not Deposit.objects.exists()


def test_the_custodian_moves_no_money_through_the_members_endpoints(world):
    custodian = world["custodian"]
    before = Books.read(world.account_a)
    for kind in ("deposits", "withdrawals"):
        response = custodian.post(
            f"{V1}/accounts/{world.account_a.pk}/{kind}/", {"asset": "USDC", "amount": "1"}
        )
        assert response.status_code == 403
    assert Books.read(world.account_a) == before


# --- The custodian's steps ------------------------------------------------------------------------


def announce(world, amount: str = "100", account=None) -> int:
    account = account or world.account_a
    response = world["trader_a"].post(
        f"{V1}/accounts/{account.pk}/deposits/", {"asset": "USDC", "amount": amount}
    )
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def confirm(world, deposit_id: int, reference: str, **kwargs):
    return world["custodian"].post(
        f"{V1}/custody/deposits/{deposit_id}/confirm/", {"reference": reference}, **kwargs
    )


def test_confirming_again_with_the_same_reference_credits_once(world):
    deposit = announce(world)
    first, again = confirm(world, deposit, "0xaa"), confirm(world, deposit, "0xaa")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert balance(world.account_a) == Decimal(100_100)
    assert CollateralMovement.objects.filter(kind="deposit", reference="0xaa").count() == 1
    # The account's watchers were told of each change once (the page re-reads its custody section).
    events = OutboxEvent.objects.filter(type="custody.updated").order_by("id")
    assert [(e.group, e.payload["id"], e.payload["state"]) for e in events] == [
        (f"account-{world.account_a.pk}", deposit, "pending"),
        (f"account-{world.account_a.pk}", deposit, "confirmed"),
    ]


def test_a_confirmed_deposit_cannot_be_confirmed_again_with_another_reference(world):
    deposit = announce(world)
    assert confirm(world, deposit, "0xaa").status_code == 201
    response = confirm(world, deposit, "0xbb")
    assert response.status_code == 409
    assert "already confirmed" in response.json()["detail"]
    assert balance(world.account_a) == Decimal(100_100)


def test_the_same_external_reference_never_credits_twice(world):
    first, second = announce(world), announce(world, account=world.account_a2)
    assert confirm(world, first, "bank-ref-7").status_code == 201
    before = Books.read(world.account_a, world.account_a2)

    response = confirm(world, second, "bank-ref-7")
    assert response.status_code == 400
    assert "already credited" in response.json()["reference"][0]
    direct = world["custodian"].post(
        f"{V1}/custody/deposits/",
        {"account": "AAA-02", "asset": "USDC", "amount": "100", "reference": "bank-ref-7"},
    )
    assert direct.status_code == 400
    assert "reference" in direct.json()
    assert Books.read(world.account_a, world.account_a2) == before
    assert Deposit.objects.get(pk=second).state == "pending"


def test_an_announcement_past_its_ttl_cannot_be_confirmed_and_expires(world, settings):
    settings.CUSTODY_DEPOSIT_TTL_SECONDS = 60
    deposit = deposit_announce(
        account=world.account_a,
        asset=world.venue.usdc,
        amount=Decimal(100),
        announced_by=world["trader_a"].user,
        now=timezone.now() - timedelta(seconds=61),
    )
    before = Books.read(world.account_a)

    response = confirm(world, deposit.pk, "0xlate")
    assert response.status_code == 409
    assert "expired" in response.json()["detail"]
    assert Books.read(world.account_a) == before

    assert deposits_expire() == 1
    assert deposits_expire() == 0  # idempotent
    assert Deposit.objects.get(pk=deposit.pk).state == "expired"
    response = confirm(world, deposit.pk, "0xlate")
    assert response.status_code == 409
    assert "already expired" in response.json()["detail"]
    assert Books.read(world.account_a) == before


def test_the_custodian_credits_a_deposit_it_observed_without_announcement(world):
    response = world["custodian"].post(
        f"{V1}/custody/deposits/",
        {"account": "AAA-01", "asset": "USDC", "amount": "700", "reference": "0xseen"},
        key="credit-1",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["origin"], body["state"], body["reference"]) == ("observed", "confirmed", "0xseen")
    assert balance(world.account_a) == Decimal(100_700)
    replay = world["custodian"].post(
        f"{V1}/custody/deposits/",
        {"account": "AAA-01", "asset": "USDC", "amount": "700", "reference": "0xseen"},
        key="credit-1",
    )
    assert replay.json() == body
    assert balance(world.account_a) == Decimal(100_700)


def request_withdrawal(world, amount: str = "100") -> int:
    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/withdrawals/", {"asset": "USDC", "amount": amount}
    )
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def test_a_failed_withdrawal_releases_its_reservation_and_can_no_longer_be_sent(world):
    withdrawal = request_withdrawal(world)
    assert balance(world.account_a) == Decimal(99_900)
    custodian = world["custodian"]

    response = custodian.post(
        f"{V1}/custody/withdrawals/{withdrawal}/failed/", {"reason": "address rejected"}
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["state"], body["reason"]) == ("failed", "address rejected")
    release = CollateralMovement.objects.get(pk=body["release_id"])
    assert (release.kind, release.amount) == ("withdrawal_release", Decimal(100))
    assert balance(world.account_a) == Decimal(100_000)

    again = custodian.post(f"{V1}/custody/withdrawals/{withdrawal}/failed/", {"reason": "address rejected"})
    assert (again.status_code, again.json()) == (200, body)
    sent = custodian.post(f"{V1}/custody/withdrawals/{withdrawal}/sent/", {"reference": "0xpaid"})
    assert sent.status_code == 409
    assert balance(world.account_a) == Decimal(100_000)
    assert CollateralMovement.objects.filter(kind="withdrawal_release").count() == 1


def test_a_sent_withdrawal_is_final_and_cannot_fail(world):
    withdrawal = request_withdrawal(world)
    custodian = world["custodian"]
    assert (
        custodian.post(f"{V1}/custody/withdrawals/{withdrawal}/sent/", {"reference": "0x1"}).status_code
        == 201
    )
    assert (
        custodian.post(f"{V1}/custody/withdrawals/{withdrawal}/sent/", {"reference": "0x1"}).status_code
        == 200
    )
    assert (
        custodian.post(f"{V1}/custody/withdrawals/{withdrawal}/sent/", {"reference": "0x2"}).status_code
        == 409
    )
    failed = custodian.post(f"{V1}/custody/withdrawals/{withdrawal}/failed/", {"reason": "late"})
    assert failed.status_code == 409
    assert "already sent" in failed.json()["detail"]
    assert balance(world.account_a) == Decimal(99_900)
    assert not CollateralMovement.objects.filter(kind="withdrawal_release").exists()


def test_requests_already_reserved_are_not_available_to_the_next_one(world):
    request_withdrawal(world, "60000")
    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/withdrawals/", {"asset": "USDC", "amount": "40001"}
    )
    assert response.status_code == 400
    assert "available" in response.json()["amount"][0]
    assert Withdrawal.objects.count() == 1


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "custody/deposits/",
            {"account": "ZZZ", "asset": "USDC", "amount": "1", "reference": "r"},
            "account",
        ),
        (
            "custody/deposits/",
            {"account": "AAA-01", "asset": "NOPE", "amount": "1", "reference": "r"},
            "asset",
        ),
        (
            "custody/deposits/",
            {"account": "AAA-01", "asset": "USDC", "amount": "1", "reference": " "},
            "reference",
        ),
        (
            "custody/deposits/",
            {"account": "AAA-01", "asset": "USDC", "amount": "0", "reference": "r"},
            "amount",
        ),
        ("custody/deposits/", {"account": "AAA-01", "asset": "USDC", "amount": "1"}, "reference"),
    ],
)
def test_bad_custodian_input_is_refused_naming_the_field_and_changes_nothing(world, path, body, field):
    before = Books.read(world.account_a)
    response = world["custodian"].post(f"{V1}/{path}", body)
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert Books.read(world.account_a) == before
    assert not Deposit.objects.exists()


def test_the_custodian_lists_by_state(world):
    pending, confirmed = announce(world), announce(world)
    assert confirm(world, confirmed, "0xc").status_code == 201
    custodian = world["custodian"]

    def ids(state: str) -> list[int]:
        return [d["id"] for d in custodian.get(f"{V1}/custody/deposits/?state={state}").json()["results"]]

    assert ids("pending") == [pending]
    assert ids("confirmed") == [confirmed]
    assert ids("all") == [pending, confirmed]
    assert custodian.get(f"{V1}/custody/deposits/?state=bogus").status_code == 400


# --- The member's page ----------------------------------------------------------------------------


def test_the_account_page_lists_what_is_pending_with_custody(world, client):
    deposit = announce(world, "321.5")
    withdrawal = request_withdrawal(world, "42")
    settled = announce(world, "9")
    assert confirm(world, settled, "0xs").status_code == 201
    client.force_login(world["viewer_a"].user)

    for url in (f"/accounts/{world.account_a.code}/", f"/accounts/{world.account_a.code}/?fragment=1"):
        page = client.get(url).content.decode()
        assert f'data-deposit="{deposit}"' in page
        assert "321.5" in page
        assert f'data-withdrawal="{withdrawal}"' in page
        assert f'data-deposit="{settled}"' not in page


# --- The admin ------------------------------------------------------------------------------------


@pytest.mark.parametrize("staff", ["ops", "risk"])
def test_staff_see_custody_requests_and_their_steps_read_only_in_the_admin(world, client, staff):
    from django.urls import reverse

    confirmed, pending = announce(world), announce(world)
    assert confirm(world, confirmed, "0xadmin").status_code == 201
    failed = request_withdrawal(world)
    world["custodian"].post(f"{V1}/custody/withdrawals/{failed}/failed/", {"reason": "bounced"})
    client.force_login(world[staff].user)

    for model, state in (("deposit", "pending"), ("deposit", "confirmed"), ("withdrawal", "failed")):
        page = client.get(reverse(f"admin:accounts_{model}_changelist"), {"state": state, "q": "AAA"})
        assert page.status_code == 200, model
        assert page.context["cl"].result_count == 1, (model, state)
        assert client.get(reverse(f"admin:accounts_{model}_add")).status_code == 403
    page = client.get(reverse("admin:accounts_deposit_change", args=[confirmed])).content.decode()
    assert "0xadmin" in page
    assert 'name="_save"' not in page
    page = client.get(reverse("admin:accounts_withdrawal_change", args=[failed])).content.decode()
    assert "bounced" in page
    assert client.get(reverse("admin:accounts_deposit_change", args=[pending])).status_code == 200
