"""Bookkeeping of the operations module (docs/operations.md)."""

from __future__ import annotations

from django.db import models


class SnapshotRetention(models.Model):
    """Where margin-snapshot retention stands (one row, ``pk=1``; ``clearing.ops.retention``).

    ``final_below_id``: every snapshot with a smaller id has had its final decision (deleted, or
    kept for good: referenced by a call, a call event or a liquidation, or the last of its account's
    UTC day once that day is over), so runs never scan below it again. ``checkpoints``: ``[time,
    highest snapshot id visible then]`` pairs; a snapshot with an id at or below a checkpoint's
    was read before that checkpoint's time, which bounds a run's scan without an index on read
    time."""

    final_below_id = models.BigIntegerField(default=0)
    checkpoints = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"snapshots final below {self.final_below_id}"
