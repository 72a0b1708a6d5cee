"""Members' model validation pages: their own account's backtest on the account page, and the
venue's aggregate results on the disclosure page — never another member's detail."""

import re

import pytest
from django.urls import reverse

from accounts.models import Role
from frontend.templatetags.clearing_format import usd
from riskengine.validation.models import ValidationKind, ValidationRun
from riskengine.validation.selectors import venue_disclosure
from riskengine.validation.services import validation_run_complete, validation_runs_start
from tests import factories


@pytest.fixture
def validated(venue, active_set, member_a, member_b, validation_ready):
    """The small venue's books (members AAA and BBB both long, on thin cash: both stand behind
    Cover-2), validated in both modes; a trader of AAA, a viewer of BBB."""
    book = factories.validation_book_make(
        venue, member_a, member_b, long_usd="10000", short_usd="8000", other_eth="100"
    )
    for run in validation_runs_start(kind=ValidationKind.NIGHTLY, cause="test", enqueue=False):
        validation_run_complete(run=run)
    alice = factories.user_make(username="alice", role=Role.TRADER, member=member_a)
    bob = factories.user_make(username="bob", role=Role.VIEWER, member=member_b)
    return book, alice, bob


def test_the_account_page_shows_the_accounts_coverage_exceptions_and_chart(client, validated):
    book, alice, _ = validated
    client.force_login(alice)

    page = client.get(reverse("frontend:account-detail", args=[book.long_btc.code])).content.decode()

    run = ValidationRun.objects.get(kind="nightly", mode="fixed")
    row = run.account_backtests.get(account=book.long_btc)
    section = page[page.index('id="backtest"') :]
    assert f"on <strong>{row.exceptions}</strong> days" in section
    assert f"coverage <strong>{row.coverage * 100:.2f} %</strong>" in section
    assert "<svg" in section
    newest = row.exception_days[-1]
    assert f"<td>{newest['day']}</td><td>{newest['underlying']}</td>" in section
    assert "Worst stress scenario" in section


def test_an_account_without_a_position_says_there_was_nothing_to_backtest(client, validated):
    book, alice, _ = validated
    client.force_login(alice)

    page = client.get(reverse("frontend:account-detail", args=[book.cash_only.code])).content.decode()

    assert "Nothing to backtest" in page


def test_the_disclosure_page_shows_the_venues_figures_to_every_member(client, validated):
    _, _, bob = validated
    fixed = ValidationRun.objects.get(kind="nightly", mode="fixed")
    client.force_login(bob)

    page = client.get(reverse("frontend:disclosure")).content.decode()

    pooled = fixed.report["pooled"]
    days, exceptions = pooled["observations"], pooled["exceptions"]
    assert f'<td class="num">{days:,}</td><td class="num">{exceptions:,}</td>' in page
    assert f"{pooled['coverage'] * 100:.2f} %" in page
    assert usd(fixed.report["cover_2"]["amount"]) in page
    assert fixed.report["cover_2"]["scenario"] in page
    assert "psr recalibrated" in page  # both modes
    assert "below Cover-2" in page or "covers Cover-2" in page


def test_the_disclosure_names_no_member_and_no_account(client, validated):
    book, alice, bob = validated
    fixed = ValidationRun.objects.get(kind="nightly", mode="fixed")
    assert fixed.report["cover_2"]["members"] == ["AAA", "BBB"]  # the run knows who sets Cover-2…

    disclosed = venue_disclosure()
    assert "members" not in str(disclosed)
    for user in (alice, bob):
        client.force_login(user)
        page = client.get(reverse("frontend:disclosure")).content.decode()
        body = page[page.index("<main>") :]
        body = body.replace(f"{user.username} · {user.member.name}", "")  # the page's own header
        # …but the page names neither members nor accounts, its reader's own included.
        for code in ("AAA", "BBB", "Member AAA", "Member BBB", book.long_btc.code, book.other_member.code):
            assert not re.search(rf"\b{re.escape(code)}\b", body), code


def test_the_disclosure_page_needs_a_signed_in_user(client, validated):
    response = client.get(reverse("frontend:disclosure"))

    assert response.status_code == 302
