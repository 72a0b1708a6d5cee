"""JSON bodies, strictly.

``StrictJSONParser`` reads at most ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes (a longer body is a 413
naming the limit, refused before it is read when it says its length) and parses them with the
engine's strict loader (``riskengine.core.jsontext.loads``, the one the margin CLI uses): no
``NaN``/``Infinity`` literals, no key repeated within an object (the refusal names the key), no
nesting deeper than ``MAX_DEPTH`` (400: a deeper body is a 400, never a ``RecursionError``). NUL
characters are refused too: no text column (nor PostgreSQL's JSONB, where outcomes are stored) can
hold them.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser

from riskengine.core.jsontext import MAX_DEPTH, loads


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"

    def __init__(self, limit: int):
        super().__init__(f"The request body is larger than {limit:,} bytes.")


def body_limit() -> int:
    """The largest body accepted, bytes (Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``)."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = body_limit()
        request = (parser_context or {}).get("request")
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        except ValueError:
            declared = 0
        if declared > limit:
            raise RequestTooLarge(limit)
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestTooLarge(limit)
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as error:
            raise exceptions.ParseError(f"JSON parse error - not {encoding} text: {error}") from None
        try:
            data = loads(text, max_depth=MAX_DEPTH)
        except ValueError as error:
            raise exceptions.ParseError(f"JSON parse error - {error}") from None
        if _has_nul(data):
            raise exceptions.ParseError("JSON parse error - NUL characters (\\u0000) are not accepted.")
        return data
