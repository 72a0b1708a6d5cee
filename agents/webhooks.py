"""Delivering hedge requests to members' endpoints: signed, retried with exponential back-off for
``WEBHOOK_RETRY_HOURS``, every attempt logged (``docs/agents.md`` has the scheme and a payload).

A request is due while it is ``requested`` and its ``next_attempt_at`` has passed. Whoever delivers
it first *claims* it by moving ``next_attempt_at`` forward by ``CLAIM_SECONDS`` in one conditional
``UPDATE`` (two workers never post the same attempt; a worker that dies mid-attempt leaves a claim
that lapses, and the request is due again). The attempt is then made outside any transaction (a
slow endpoint holds no lock), and its outcome written with a ``WebhookAttempt`` row:

* any ``2xx`` answer: ``delivered``;
* anything else — another status (redirects are not followed), a timeout, a refused connection,
  an address that is not public in production: the next attempt is due after
  ``min(WEBHOOK_RETRY_BASE_SECONDS × 2^(n−1), WEBHOOK_RETRY_MAX_SECONDS)``, and when that would
  fall after ``deliver_until`` (a day after the request) the request is ``undeliverable``.

The Celery task ``agents.webhook_deliver`` makes one attempt; it is sent when a request is written
and by ``agents.webhooks_due`` (beat, every ``WEBHOOK_DUE_SECONDS``) for requests due again, so
back-off never rides on a Celery countdown (the broker would hand a long-delayed message to a
second worker after its visibility timeout).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from agents.crypto import InvalidToken, secret_decrypt, signature
from agents.hedge import hedge_events_publish
from agents.models import AttemptOutcome, HedgeRequest, HedgeStatus, WebhookAttempt

log = logging.getLogger(__name__)

# How long a claimed attempt may take before another worker may try again: above the HTTP
# timeout and below the task's time limit.
CLAIM_SECONDS = 45
EXCERPT = 500
USER_AGENT = "clearing-venue-webhooks/1"
EVENT = "hedge.requested"
HEADERS = {
    "id": "Clearing-Webhook-Id",
    "timestamp": "Clearing-Webhook-Timestamp",
    "signature": "Clearing-Webhook-Signature",
    "event": "Clearing-Webhook-Event",
    "attempt": "Clearing-Webhook-Attempt",
}


def webhook_payload(request: HedgeRequest) -> dict:
    """The body of a hedge request's webhook (the same in every attempt)."""
    account = request.account
    side = "buy" if request.quantity > 0 else "sell"
    return {
        "type": EVENT,
        "id": str(request.idempotency_id),
        "hedge_request": request.pk,
        "created_at": request.created_at,
        "deliver_until": request.deliver_until,
        "member": account.member.code,
        "account": {"id": account.pk, "code": account.code},
        "trade": {
            "instrument": request.instrument.symbol,
            "side": side,
            "quantity": request.quantity,
            "index_price": request.price,
        },
        "delta_usd": {
            "underlying": request.instrument.underlying.symbol,
            "before": request.delta_usd_before,
            "target": request.target_delta_usd,
            "after": request.delta_usd_after,
        },
        "margin": {
            "before": {
                "equity": request.equity_before,
                "initial_margin": request.initial_margin_before,
                "maintenance_margin": request.maintenance_margin_before,
            },
            "after": {
                "equity": request.equity_after,
                "initial_margin": request.initial_margin_after,
                "maintenance_margin": request.maintenance_margin_after,
            },
        },
        "book_fills": {"path": "/api/v1/trades/", "field": "hedge_request", "value": request.pk},
    }


def webhook_body(request: HedgeRequest) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys sorted, decimals and times as text."""
    return json.dumps(
        webhook_payload(request), cls=DjangoJSONEncoder, sort_keys=True, separators=(",", ":")
    ).encode()


def retry_delay(attempt: int) -> timedelta:
    """The wait after failed attempt number ``attempt`` (1, 2, …): doubling from the base."""
    base = settings.WEBHOOK_RETRY_BASE_SECONDS
    return timedelta(seconds=min(base * 2 ** (attempt - 1), settings.WEBHOOK_RETRY_MAX_SECONDS))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is the endpoint's answer, not a place to go: it fails the attempt."""

    def redirect_request(self, *args, **kwargs):
        return None


def _opener() -> urllib.request.OpenerDirector:
    # No proxy from the environment: only the one the venue configures.
    proxy = settings.WEBHOOK_PROXY
    proxies = {"http": proxy, "https": proxy} if proxy else {}
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies), _NoRedirects)


def _address_refusal(url: str) -> str | None:
    """Why ``url``'s host may not be called (it resolves to an address that is not public), or None.
    Only when ``WEBHOOK_ALLOW_PRIVATE_ADDRESSES`` is off (production)."""
    if settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        return None
    parts = urlsplit(url)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as error:
        return f"cannot resolve {parts.hostname}: {error}"
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            return f"{parts.hostname} resolves to {address}, not a public address"
    return None


def webhook_post(*, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str, str]:
    """POST ``body`` to ``url``: ``(status or None, response excerpt, error)``; never raises for
    the endpoint's failures."""
    refusal = _address_refusal(url)
    if refusal:
        return None, "", f"refused: {refusal}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener().open(request, timeout=settings.WEBHOOK_TIMEOUT_SECONDS) as response:
            return response.status, response.read(EXCERPT).decode("utf-8", "replace"), ""
    except urllib.error.HTTPError as error:
        excerpt = error.read(EXCERPT).decode("utf-8", "replace") if error.fp else ""
        return error.code, excerpt, f"HTTP {error.code}"
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
        reason = getattr(error, "reason", error)
        return None, "", f"{type(error).__name__}: {reason}"[:EXCERPT]


def _claim(hedge_request_id: int, now: datetime) -> bool:
    return bool(
        HedgeRequest.objects.filter(
            pk=hedge_request_id, status=HedgeStatus.REQUESTED, next_attempt_at__lte=now
        ).update(next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS))
    )


def hedge_request_deliver(*, hedge_request_id: int, now: datetime | None = None) -> WebhookAttempt | None:
    """One delivery attempt of a due hedge request (module docstring); None when it is not due or
    another worker holds it."""
    now = now or timezone.now()
    if not _claim(hedge_request_id, now):
        return None
    request = HedgeRequest.objects.select_related(
        "endpoint", "account__member", "instrument__underlying"
    ).get(pk=hedge_request_id)
    endpoint, number = request.endpoint, request.attempts + 1
    body = webhook_body(request)
    timestamp = int(now.timestamp())
    started = time.monotonic()
    if not endpoint.is_active:
        status, excerpt, error = None, "", "the endpoint is switched off"
    else:
        try:
            secret = secret_decrypt(endpoint.secret_encrypted)
        except InvalidToken:
            status, excerpt, error = (
                None,
                "",
                "the endpoint's secret cannot be decrypted (WEBHOOK_SECRET_KEYS)",
            )
        else:
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                HEADERS["id"]: str(request.idempotency_id),
                HEADERS["timestamp"]: str(timestamp),
                HEADERS["signature"]: signature(secret=secret, timestamp=timestamp, body=body),
                HEADERS["event"]: EVENT,
                HEADERS["attempt"]: str(number),
            }
            status, excerpt, error = webhook_post(url=endpoint.url, body=body, headers=headers)
    duration = int((time.monotonic() - started) * 1000)
    return _outcome_record(
        hedge_request_id=hedge_request_id, endpoint_id=endpoint.pk, url=endpoint.url, number=number,
        now=now, duration=duration, status=status, excerpt=excerpt, error=error,
        retry=endpoint.is_active,
    )  # fmt: skip


@transaction.atomic
def _outcome_record(
    *,
    hedge_request_id: int,
    endpoint_id: int,
    url: str,
    number: int,
    now: datetime,
    duration: int,
    status: int | None,
    excerpt: str,
    error: str,
    retry: bool,
) -> WebhookAttempt:
    request = (
        HedgeRequest.objects.select_for_update(of=("self",))
        .select_related("instrument")
        .get(pk=hedge_request_id)
    )
    delivered = status is not None and 200 <= status < 300
    next_at = None if delivered else now + retry_delay(number)
    outcome = AttemptOutcome.DELIVERED if delivered else AttemptOutcome.FAILED
    if not delivered and (not retry or request.deliver_until is None or next_at > request.deliver_until):
        outcome, next_at = AttemptOutcome.ABANDONED, None
    attempt = WebhookAttempt.objects.create(
        hedge_request=request,
        endpoint_id=endpoint_id,
        number=number,
        url=url,
        started_at=now,
        duration_ms=duration,
        status_code=status,
        outcome=outcome,
        error=error[:EXCERPT],
        response_excerpt=excerpt[:EXCERPT],
        next_attempt_at=next_at,
    )
    request.attempts = number
    # A request filled or superseded while its attempt was out keeps that state.
    if request.status == HedgeStatus.REQUESTED:
        if delivered:
            request.status, request.delivered_at = HedgeStatus.DELIVERED, now
        elif outcome == AttemptOutcome.ABANDONED:
            request.status = HedgeStatus.UNDELIVERABLE
            request.reason = f"No acknowledgement after {number} attempt(s): {error}"[:300]
        request.next_attempt_at = next_at
        request.save(update_fields=["attempts", "status", "delivered_at", "reason", "next_attempt_at"])
        if request.status != HedgeStatus.REQUESTED:
            hedge_events_publish([request])
    else:
        request.save(update_fields=["attempts"])
    if not delivered:
        log.warning("webhook attempt %s of hedge request %s failed: %s", number, hedge_request_id, error)
    return attempt


def hedge_requests_due(*, now: datetime | None = None, limit: int = 200) -> list[int]:
    """Ids of requests whose next attempt is due (oldest first), for ``agents.webhooks_due``."""
    now = now or timezone.now()
    return list(
        HedgeRequest.objects.filter(status=HedgeStatus.REQUESTED, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
