"""OpenAPI description of the API beyond what drf-spectacular infers (``DEFAULT_SCHEMA_CLASS``).

* The bearer-token authentication scheme.
* Every error an operation can answer, each with its JSON body: ``400`` (``ValidationErrors``: a
  field path → messages map; ``{"detail"}`` for a body that is not JSON) and ``{"detail": "…"}``
  (``Error``) for ``401``, ``403``, ``404``, ``409``, ``413``, ``422``, ``429`` (with
  ``Retry-After``) and ``503``. Which ones apply is read from the view — its method, path and
  pagination parameters, whether its handler is ``idempotent``, whether it carries a body — and
  from ``schema_errors`` on the view for the few it raises itself (an account never margined is a
  ``404``, no active parameter set a ``503``).
* The ``Idempotency-Key`` header with its rules, on every operation whose handler is
  ``@idempotent`` (``clearing.api.idempotency``), and the ``Idempotent-Replayed`` header of a
  replayed answer.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from clearing.api.idempotency import HEADER, MAX_KEY_LENGTH, RETENTION


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "clearing.api.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from `manage.py issue_api_token USERNAME`; it acts as its user.",
        }


IDEMPOTENCY_KEY = OpenApiParameter(
    HEADER,
    # Printable ASCII without leading or trailing spaces (HTTP strips those before we see them).
    {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": r"^[\x21-\x7E](?:[\x20-\x7E]*[\x21-\x7E])?$",
    },
    OpenApiParameter.HEADER,
    required=False,
    description=(
        f"Makes the request safe to retry. 1 to {MAX_KEY_LENGTH} printable ASCII characters, scoped to "
        "the caller's user and kept "
        f"{int(RETENTION.total_seconds() // 3600)} hours. The first request with a key runs and its "
        "answer (success or refusal, not a server error) is stored with the change it made; the same "
        "key with the same method, path and body replays that answer without applying anything again "
        "(header `Idempotent-Replayed: true`); the same key with a different request is refused "
        "with `422`; a duplicate sent while the first still runs gets `409` (retry later). A "
        "malformed key is a `400` naming `Idempotency-Key`. Without the header the request simply "
        "runs once."
    ),
)
IDEMPOTENT_REPLAYED = OpenApiParameter(
    "Idempotent-Replayed",
    {"type": "string", "enum": ["true"]},
    OpenApiParameter.HEADER,
    # What the handler decided is stored and replayed: its successes and its refusals (throttling,
    # authentication and role checks come before it and are never stored).
    response=[200, 201, 400, 403, 404],
    description="Present when this is the stored answer to an earlier request with the same Idempotency-Key.",
)
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    {"type": "integer", "minimum": 0},
    OpenApiParameter.HEADER,
    response=[429],
    description="Seconds until the throttling window ends and requests are counted afresh.",
)

ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string", "description": "What went wrong, in words."}},
    "required": ["detail"],
}
VALIDATION_ERRORS_SCHEMA = {
    "type": "object",
    "description": "Each offending field, named by its path (`fills[1].price`, `Idempotency-Key`; "
    "`non_field_errors` for the request as a whole), with its messages. Nothing was applied.",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
    "minProperties": 1,
}

DESCRIPTIONS = {
    400: "Bad input: every offending field with its messages; nothing applied.",
    401: "No credentials, or a token that is invalid, revoked or of a deactivated user or member.",
    403: "The caller's role may not do this (or a web session without its CSRF token).",
    404: "No such object, or one the caller may not see (another member's account answers 404 too).",
    409: "A request with this Idempotency-Key is still being processed: retry later.",
    413: "The request body is too large.",
    422: "This Idempotency-Key was used for a different request (method, path or body).",
    429: "Throttled: the caller's budget for this window is spent (see Retry-After).",
    503: "No risk parameter set is active.",
}
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's schema of each operation, with its error answers and idempotency rules."""

    def _idempotent(self) -> bool:
        handler = getattr(self.view, self.method.lower(), None)
        return bool(getattr(handler, "idempotent", False))

    def get_override_parameters(self):
        parameters = list(super().get_override_parameters())
        names = {(p.name, p.location) for p in parameters if isinstance(p, OpenApiParameter)}
        if self._idempotent():
            if (HEADER, OpenApiParameter.HEADER) not in names:
                parameters.append(IDEMPOTENCY_KEY)
            parameters.append(IDEMPOTENT_REPLAYED)
        parameters.append(RETRY_AFTER)
        return parameters

    def error_statuses(self) -> dict[int, str]:
        """The errors this operation can answer, with what each means here."""
        statuses = {401: DESCRIPTIONS[401], 403: DESCRIPTIONS[403], 429: DESCRIPTIONS[429]}
        if self.method in WRITE_METHODS:
            statuses[400] = DESCRIPTIONS[400]
            statuses[413] = DESCRIPTIONS[413]
        elif self._get_paginator() is not None:
            statuses[400] = "A malformed `limit` or `offset`, named."
        if "{" in self.path:
            statuses[404] = DESCRIPTIONS[404]
        if self._idempotent():
            statuses[409] = DESCRIPTIONS[409]
            statuses[422] = DESCRIPTIONS[422]
        statuses.update(getattr(self.view, "schema_errors", {}))
        return statuses

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, serializers.DecimalField) and "pattern" in schema:
            # drf-spectacular's decimal pattern has every digit optional, so "" and "-" would be
            # valid: at least one digit, before or after the point.
            whole, places = field.max_whole_digits, field.decimal_places
            schema["pattern"] = rf"^-?(?:\d{{1,{whole}}}(?:\.\d{{0,{places}}})?|\.\d{{1,{places}}})$"
        return schema

    def _error_ref(self, name: str, schema: dict) -> dict:
        component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema)
        self.registry.register_on_missing(component)
        return component.ref

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for status, description in sorted(self.error_statuses().items()):
            code = str(status)
            if code in responses:
                continue
            error = self._error_ref("Error", ERROR_SCHEMA)
            if status in (400, 422):
                # Field errors as a map (a 422 names the field a well-formed request cannot have:
                # a margin move beyond what the position allows); a body that is not JSON at all
                # as {"detail": ...}.
                error = {"anyOf": [self._error_ref("ValidationErrors", VALIDATION_ERRORS_SCHEMA), error]}
            responses[code] = self._get_response_for_code(
                OpenApiResponse(response=error, description=description), code, direction=direction
            )
        return responses
