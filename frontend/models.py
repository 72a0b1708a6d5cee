"""The transactional outbox of live events.

A state change and the event announcing it are written in the same transaction
(``frontend.events.event_publish``); a relay inside the ASGI web process hands new rows to the
channel layer. So a margin call can never be pushed without being stored, nor stored without being
pushed, and the same code serves the embedded stack (one web process, in-memory layer) and
production (Redis layer, any number of web processes: each row is claimed by exactly one relay).
"""

from __future__ import annotations

from django.db import models


class OutboxEvent(models.Model):
    group = models.CharField(max_length=100, help_text="Channel-layer group, e.g. account-42.")
    type = models.CharField(max_length=50, help_text="Event type, e.g. margin_call.opened.")
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    relayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["id"], condition=models.Q(relayed_at__isnull=True), name="outbox_pending"),
        ]

    def __str__(self) -> str:
        return f"{self.type} → {self.group}"
