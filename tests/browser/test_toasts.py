"""Toasts inform without covering the page, in real Chromium: a member on the overview receives a
burst of price status changes (fine and degraded, for symbols its accounts depend on and for one
they do not), duplicates and margin warnings, all published through the outbox and the relay. The
screenshot is saved under artifacts/screenshots/overview-toasts.png."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from django.db import transaction

from accounts.models import Asset, MarginAccount
from accounts.services import collateral_deposit
from clearing.events import events_publish
from clearing.marketdata.signals import price_status_changed
from clearing.models import OutboxEvent
from riskengine.sweeps.services import sweep_accounts_run
from tests.browser.conftest import SCREENSHOTS
from tests.factories import browser_sign_in

pytestmark = pytest.mark.browser

# Every toast the page ever adds, and the most ever on screen at once, recorded before the page's
# own scripts run (toasts expire and the oldest are dropped: the screen alone cannot tell).
WATCH_TOASTS = """
window.__toasts = [];
window.__mostOnScreen = 0;
new MutationObserver((mutations) => {
  for (const mutation of mutations) {
    for (const node of mutation.addedNodes) {
      if (node.nodeType === 1 && node.classList.contains("toast")) {
        window.__toasts.push({
          text: node.querySelector("span").textContent,
          level: node.className.replace("toast", "").trim(),
          role: node.getAttribute("role"),
        });
      }
    }
  }
  window.__mostOnScreen = Math.max(window.__mostOnScreen, document.querySelectorAll("#toasts .toast").length);
}).observe(document, { childList: true, subtree: true });
"""


def margin_warning(account: MarginAccount, level: str, previous: str | None, **figures) -> tuple:
    payload = {
        "account_code": account.code,
        "level": level,
        "previous": previous,
        "driver": None,
        "distance_sigmas": None,
        "probability": None,
        **figures,
    }
    return (account.pk, "margin.warning", payload)


def oracle_says(*changes: tuple[str, str, str]) -> None:
    """The oracle's signal, as it sends it in the transaction that stores new statuses."""
    price_status_changed.send(sender=__name__, changes=list(changes))


def overlaps(a: dict, b: dict) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def assert_the_accounts_stay_visible(page, *, accounts: int) -> None:
    """Between one and three toasts on screen, none over an account card, the first card in view."""
    # One snapshot of every rectangle, taken in the page at once: a live region re-read between
    # two separate reads would replace the cards under the second.
    boxes = page.evaluate(
        """() => {
            const rects = (selector) =>
                [...document.querySelectorAll(selector)].map((e) => e.getBoundingClientRect().toJSON());
            return {toasts: rects("#toasts .toast"), cards: rects("[data-account-card]")};
        }"""
    )
    toast_boxes, card_boxes = boxes["toasts"], boxes["cards"]
    assert 1 <= len(toast_boxes) <= 3
    assert len(card_boxes) == accounts
    covered = [(t, c) for t in toast_boxes for c in card_boxes if overlaps(t, c)]
    assert not covered, "a toast covers an account"
    first = card_boxes[0]
    assert first["y"] >= 0, "the first account is on screen"
    assert first["y"] + first["height"] <= page.viewport_size["height"], "the first account is on screen"


def test_a_burst_of_events_shows_at_most_three_toasts_once_each_and_never_covers_the_accounts(
    asgi_server, browser
):
    # A symbol alice's member (ALPHA, exposed to every demo symbol) does not depend on: EURC, held
    # by another member only.
    eurc = Asset.objects.create(symbol="EURC", name="Euro Coin", decimals=6)
    collateral_deposit(account=MarginAccount.objects.get(code="BOREAL-01"), asset=eurc, amount=Decimal(1000))
    alpha = {account.code: account for account in MarginAccount.objects.filter(member__code="ALPHA")}
    sweep_accounts_run(account_ids=[account.pk for account in alpha.values()], cause="browser test: demo")
    # The page starts from the database: what the sweep pushed before it existed is not its news.
    OutboxEvent.objects.all().delete()

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(WATCH_TOASTS)
    page = context.new_page()
    browser_sign_in(page, asgi_server)
    page.wait_for_selector("#live-status[data-state=on]")
    page.wait_for_function("() => document.body.dataset.refreshed")  # the hello arrived: subscribed
    refreshed = page.evaluate("document.body.dataset.refreshed")

    # A margin warning on a watched account: its toast, and the live region re-reads.
    with transaction.atomic():
        events_publish(
            events=[margin_warning(alpha["ALPHA-03"], "warning", "watch", driver="BTC", distance_sigmas=2.1)]
        )
    warning_text = "ALPHA-03: warning — 2.1 σ from liquidation on BTC"
    page.wait_for_selector(f".toast.warn[role=status]:has-text('{warning_text}')", timeout=5000)
    page.wait_for_function(
        "(before) => document.body.dataset.refreshed !== before", arg=refreshed, timeout=5000
    )

    call_on_alpha_05 = margin_warning(
        alpha["ALPHA-05"], "margin_call", "warning", driver="ETH", distance_sigmas=0.4
    )
    # The burst, in one transaction as a sweep or the oracle would write it.
    with transaction.atomic():
        oracle_says(("BTC", "ok", "degraded"), ("ETH", "ok", "stale"), ("SOL", "ok", "ok"))
        oracle_says(("BTC", "ok", "degraded"))  # a duplicate
        oracle_says(("USDC", "degraded", "ok"))  # a recovery this page never saw degrade
        oracle_says(("EURC", "ok", "stale"))  # none of alice's accounts depends on it
        oracle_says(("BTC", "degraded", "ok"))  # a recovery of what the page showed
        events_publish(
            events=[
                margin_warning(alpha["ALPHA-03"], "warning", "watch", driver="BTC", distance_sigmas=2.1),
                *[call_on_alpha_05] * 2,  # a duplicate
                margin_warning(alpha["ALPHA-03"], "ok", "warning"),
            ]
        )
    expected = {
        warning_text: ("warn", "status"),
        "BTC price degraded: fewer fresh sources than required; liquidations paused": ("warn", "status"),
        "ETH price stale: no fresh source; margins use the last good price": ("warn", "status"),
        "BTC price back to normal": ("note", "status"),
        "ALPHA-05: margin call — 0.4 σ from liquidation on ETH": ("bad", "alert"),
        "ALPHA-03: back to ok": ("note", "status"),
    }
    page.wait_for_function("(n) => window.__toasts.length >= n", arg=len(expected), timeout=5000)
    assert_the_accounts_stay_visible(page, accounts=len(alpha))
    path = SCREENSHOTS / "overview-toasts.png"
    page.screenshot(path=path)
    print(f"screenshot: {path}")
    # A last event after the whole burst was delivered (the relay sends one claimed batch before
    # it claims the next): once its toast shows, anything the burst would have added is there too.
    with transaction.atomic():
        events_publish(
            events=[margin_warning(alpha["ALPHA-07"], "watch", "ok", driver="SOL", distance_sigmas=3.5)]
        )
    last_text = "ALPHA-07: watch — 3.5 σ from liquidation on SOL"
    page.wait_for_selector(f".toast.info:has-text('{last_text}')", timeout=5000)
    expected[last_text] = ("info", "status")

    history = page.evaluate("window.__toasts")
    texts = Counter(toast["text"] for toast in history)
    assert {toast["text"]: (toast["level"], toast["role"]) for toast in history} == expected
    assert max(texts.values()) == 1, f"a duplicate was shown twice: {texts}"
    assert not [text for text in texts if "EURC" in text], "a toast for a symbol alice does not depend on"
    fine = [text for text in texts if "USDC" in text or "SOL price" in text]
    assert not fine, "a toast for a price that is fine"
    assert page.evaluate("window.__mostOnScreen") <= 3
    assert_the_accounts_stay_visible(page, accounts=len(alpha))

    # Dismissable: the close button removes its toast.
    on_screen = page.locator("#toasts .toast")
    before = on_screen.count()
    on_screen.last.locator("button.toast-close").click()
    assert on_screen.count() == before - 1
    context.close()
