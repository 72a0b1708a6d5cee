"""Bookkeeping of the operations module (docs/operations.md)."""

from __future__ import annotations

from django.db import models

from clearing.ledger import AmountField, AppendOnlyModel


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


class UncoveredDeficit(AppendOnlyModel):
    """A deficit the insurance fund could not cover (append-only; ``riskengine.sweeps.insurance``).

    After a liquidation whose deficit the fund paid while its value went below zero,
    ``uncovered`` is the part of that deficit the fund did not have (at most the deficit). Without
    a liquidation (the fund fell below zero as prices moved), it is the fund's shortfall when that
    was first seen. Until auto-deleveraging exists, nothing else happens to it: ops decide."""

    at = models.DateTimeField()
    fund_value = AmountField(help_text="The fund's value (USD) when recorded: negative.")
    uncovered = AmountField(help_text="USD the fund could not cover.")
    cause = models.CharField(max_length=200)
    liquidation = models.OneToOneField(
        "sweeps.Liquidation", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(name="uncovereddeficit_positive", condition=models.Q(uncovered__gt=0)),
        ]

    def __str__(self) -> str:
        return f"{self.uncovered} USD uncovered ({self.cause})"


class OpsAlert(models.Model):
    """Something ops must look at, raised by any app (the oracle, the sweeps, the insurance fund,
    governance) through ``clearing.ops.alerts``. At most one open alert per ``(kind, key)``: raising
    it again bumps its count and message instead of piling up duplicates."""

    kind = models.CharField(max_length=40)
    key = models.CharField(max_length=100)
    message = models.TextField()
    raise_count = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    last_raised_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # The table keeps the name it had when the model lived in the oracle's app (marketdata).
        db_table = "marketdata_opsalert"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "key"], condition=models.Q(resolved_at__isnull=True), name="opsalert_one_open"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.key}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None
