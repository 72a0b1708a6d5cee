"""Idempotency records: the stored outcome of each ``Idempotency-Key`` a user sent.

A request with a key first claims its ``(user, key)`` row in its own short transaction (state
``in_progress``), so a concurrent duplicate finds the row and is refused with 409 instead of
running twice. The outcome is stored in the same transaction as the state change it reports
(state ``done``), so a replay can never return a response whose effect was rolled back.
"""

from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q


class IdempotencyState(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress"
    DONE = "done", "Done"


class IdempotencyRecord(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(
        max_length=64, help_text="SHA-256 of the method, path and canonical JSON body of the first request."
    )
    state = models.CharField(max_length=12, choices=IdempotencyState.choices)
    # A claim whose request died (process killed between claim and outcome) may be taken over
    # once its lease has expired; until then duplicates get 409.
    lease_until = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_one_record_per_user_key"),
            models.CheckConstraint(
                name="idempotency_state_valid", condition=Q(state__in=[c.value for c in IdempotencyState])
            ),
            models.CheckConstraint(
                name="idempotency_done_has_response",
                condition=Q(state="in_progress") | Q(status_code__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}/{self.key} ({self.state})"
