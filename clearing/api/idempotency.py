"""``Idempotency-Key`` for every state-changing POST.

* First request with a key: the ``(user, key)`` row is claimed (committed at once, state
  ``in_progress``), the view runs in a transaction and its response is stored *in that same
  transaction*, so the state change and its recorded outcome commit together or not at all.
* Same key, same request again: the stored response is replayed (header ``Idempotent-Replayed``).
* Same key, different method, path or body: 422, nothing runs.
* Same key while the first request still runs: 409, nothing runs.

What is stored: every response the view decided (2xx, and 4xx refusals such as a withdrawal
beyond margin). A server error or an unexpected exception stores nothing and releases the key, so
the client can retry. Requests without the header simply run in one transaction.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from functools import wraps

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import exceptions, status
from rest_framework.response import Response

from clearing.api.models import IdempotencyRecord, IdempotencyState
from riskengine.core.errors import DocumentError

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Longer than any request can take (what-if and booking are well under a second); a claim older
# than this belongs to a request whose process died.
LEASE = timedelta(seconds=60)
# Stored outcomes are kept this long (``idempotency_records_purge``).
RETENTION = timedelta(hours=24)


class IdempotencyConflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "A request with this Idempotency-Key is still being processed; retry later."
    default_code = "idempotency_in_progress"


class IdempotencyMismatch(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was used for a different request (method, path or body)."
    default_code = "idempotency_key_reused"


def request_fingerprint(request) -> str:
    """SHA-256 of method, path and the canonical JSON of the body (key order and whitespace do
    not matter; values do)."""
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _key_read(request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise exceptions.ValidationError(
            {HEADER: [f"Must be 1 to {MAX_KEY_LENGTH} printable ASCII characters."]}
        )
    return key


def _record_claim(*, user, key: str, fingerprint: str) -> IdempotencyRecord | Response:
    """Claim the key, or return the replayed response; raises 409/422."""
    now = timezone.now()
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(
                user=user,
                key=key,
                fingerprint=fingerprint,
                state=IdempotencyState.IN_PROGRESS,
                lease_until=now + LEASE,
            )
    except IntegrityError:
        pass
    record = IdempotencyRecord.objects.filter(user=user, key=key).first()
    if record is None:  # released by a failed first attempt between our insert and this read
        raise IdempotencyConflict()
    if record.fingerprint != fingerprint:
        raise IdempotencyMismatch()
    if record.state == IdempotencyState.DONE:
        return Response(
            record.response_body, status=record.status_code, headers={"Idempotent-Replayed": "true"}
        )
    # Take over an abandoned claim: exactly one of several retries wins the conditional update.
    taken = IdempotencyRecord.objects.filter(
        pk=record.pk, state=IdempotencyState.IN_PROGRESS, lease_until__lte=now
    ).update(lease_until=now + LEASE)
    if not taken:
        raise IdempotencyConflict()
    record.lease_until = now + LEASE
    return record


def idempotent(handler):
    """Decorate a view's ``post``: runs it atomically, honouring ``Idempotency-Key``. The wrapper
    is marked ``idempotent`` so that the OpenAPI schema documents the header on it
    (``clearing.api.schema``)."""

    @wraps(handler)
    def wrapper(view, request, *args, **kwargs):
        key = _key_read(request)
        if key is None:
            with transaction.atomic():
                return handler(view, request, *args, **kwargs)
        claimed = _record_claim(user=request.user, key=key, fingerprint=request_fingerprint(request))
        if isinstance(claimed, Response):
            return claimed
        try:
            with transaction.atomic():
                try:
                    with transaction.atomic():  # the view's writes roll back alone on a refusal
                        response = handler(view, request, *args, **kwargs)
                except (exceptions.APIException, DjangoValidationError, DocumentError) as error:
                    if isinstance(error, exceptions.APIException) and error.status_code >= 500:
                        raise
                    response = view.handle_exception(error)
                if response.status_code >= 500:
                    raise _ServerError(response)
                IdempotencyRecord.objects.filter(pk=claimed.pk).update(
                    state=IdempotencyState.DONE,
                    status_code=response.status_code,
                    response_body=response.data,
                )
                return response
        except _ServerError as failure:
            IdempotencyRecord.objects.filter(pk=claimed.pk, state=IdempotencyState.IN_PROGRESS).delete()
            return failure.response
        except BaseException:
            IdempotencyRecord.objects.filter(pk=claimed.pk, state=IdempotencyState.IN_PROGRESS).delete()
            raise

    wrapper.idempotent = True
    return wrapper


class _ServerError(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def idempotency_records_purge(*, older_than: timedelta = RETENTION) -> int:
    """Delete stored outcomes older than ``older_than``; returns how many."""
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - older_than).delete()
    return deleted
