"""Margin sweeps: what was computed, from which inputs, and what it set in motion.

- ``Sweep``: one run of the engine over many accounts (``full``: every account, split into shards;
  ``event``: the accounts a trade, a collateral movement or an index move touched). It fixes the
  inputs shared by all its accounts: the parameter set, the valuation time and the ``market`` form
  of the margin document (stored once, for replay) with the oracle's index price row ids.
- ``SweepShard``: a range of account ids (full sweeps) or an explicit list (event sweeps). Unique
  per ``(sweep, number)``; a shard stores its results in one transaction that also marks it
  ``done``, so running it again (a redelivered task) changes nothing.
- ``MarginSnapshot``: one account's figures from one sweep, unique per ``(sweep, account)``, with
  the account's exact engine input (``positions``, ``collateral``) so the margin document can be
  rebuilt and recomputed (``selectors.margin_snapshot_document``). Figures are the engine's float64
  outputs stored as ``double precision`` (``FigureField``: NaN included, on SQLite too): a replay
  reproduces them bit for bit. Money that moves (call amounts, fees, deficits) is ``NUMERIC``.
- ``AccountMargin``: the current snapshot of each account: the newest valuation by ``(valued_at,
  sweep_id)``, never the one that arrived last; for fast reads.
- ``MarginCall`` / ``MarginCallEvent``: at most one open call per account (partial unique index);
  every transition is appended to the event log with its time and cause.
- ``Liquidation``: at most one in progress per account (partial unique index).
- ``SweepRequest``: pending event-sweep requests, one row per account, drained in one engine run;
  this is what coalesces bursts across machines.

Compact arrays (stored as ``bytea``, little-endian, decoded by ``riskengine.sweeps.codec``):
``positions`` records ``(instrument_id int64, quantity float64, entry_price float64)`` in the
order the engine saw them; ``position_allocations`` float64 ``a_i`` per position in the same
order (methodology v1.1 section 4a), NULL for an account that is not isolated or allocates
nothing; ``collateral`` records ``(asset_id int64, amount float64)``;
``by_underlying`` records ``(underlying index int64, worst scenario index int64, scan_risk,
directional, delta_usd, gamma_usd, vega_usd, theta_usd)``, indices into the parameter set's
underlyings and scenario grid. Writing 100,000 snapshots as JSON would cost more than the whole
engine run (see docs/performance.md).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from clearing.ledger import AmountField, AppendOnlyModel, FigureField


class SweepKind(models.TextChoices):
    FULL = "full", "Full sweep"
    EVENT = "event", "Event sweep"


class SweepStatus(models.TextChoices):
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    # Some shard can no longer complete (re-sent and still not done past the recovery bound):
    # given up, with the reason in ``error`` and an ops alert (``riskengine.sweeps.recovery``).
    EXPIRED = "expired", "Expired"


class Sweep(models.Model):
    kind = models.CharField(max_length=8, choices=SweepKind.choices)
    cause = models.CharField(max_length=200, help_text="What triggered it: beat, command, trade, index BTC…")
    parameter_set = models.ForeignKey("riskengine.ParameterSet", on_delete=models.PROTECT, related_name="+")
    valuation_time = models.DateTimeField()
    market = models.JSONField(help_text="The margin document's market section used by every account.")
    statuses = models.JSONField(default=dict, help_text="Oracle status per symbol at the sweep.")
    index_price_ids = models.JSONField(default=dict, help_text="Symbol → stored index price row used.")
    status = models.CharField(max_length=8, choices=SweepStatus.choices, default=SweepStatus.RUNNING)
    shard_count = models.PositiveIntegerField(default=0)
    shards_done = models.PositiveIntegerField(default=0)
    accounts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    request_key = models.CharField(
        max_length=200,
        null=True,
        blank=True,
        unique=True,
        help_text="The request that started it (a sweeps.full task id): a duplicate starts no second sweep.",
    )
    error = models.TextField(blank=True, help_text="Why it failed or expired.")

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(name="sweep_kind_valid", condition=Q(kind__in=SweepKind.values)),
            models.CheckConstraint(name="sweep_status_valid", condition=Q(status__in=SweepStatus.values)),
        ]

    def __str__(self) -> str:
        return f"{self.kind} sweep {self.pk} ({self.status})"


class ShardStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class SweepShard(models.Model):
    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="shards")
    number = models.PositiveIntegerField()
    first_account_id = models.BigIntegerField(null=True, blank=True)
    last_account_id = models.BigIntegerField(null=True, blank=True)
    account_ids = models.JSONField(null=True, blank=True, help_text="Explicit accounts (event sweeps).")
    status = models.CharField(max_length=8, choices=ShardStatus.choices, default=ShardStatus.PENDING)
    accounts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True, help_text="Host that stored the results.")
    read_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    timings = models.JSONField(default=dict, help_text="Seconds spent reading, computing, storing.")
    error = models.TextField(blank=True)
    sent_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time its task was sent again by the recovery task."
    )
    resends = models.PositiveIntegerField(default=0, help_text="Times the recovery task sent it again.")

    class Meta:
        ordering = ["sweep_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["sweep", "number"], name="sweepshard_one_per_number"),
            models.CheckConstraint(
                name="sweepshard_status_valid", condition=Q(status__in=ShardStatus.values)
            ),
        ]

    def __str__(self) -> str:
        return f"shard {self.number} of sweep {self.sweep_id}"


class MarginStatus(models.TextChoices):
    HEALTHY = "healthy", "Healthy"
    MARGIN_CALL = "margin_call", "Margin call"
    LIQUIDATION = "liquidation", "Liquidation"


class MarginSnapshot(models.Model):
    # The hot insert path of every sweep (100,000 rows a minute): no index that another one
    # already covers. ``sweep`` is the first column of the unique (sweep, account) index and
    # ``account`` of the (account, -read_at) one; ``parameter_set`` is only read through the
    # snapshot (PROTECT makes deleting a set scan, which never happens to a used set).
    # ``sweep``, ``shard`` and ``parameter_set`` carry no database constraint: PostgreSQL's deferred
    # FK checks cost ~2.5 s per 100,000-row sweep at commit, and these rows are written only by
    # the shard that created (or read) the sweep, shard and set in the same transaction; sweeps and
    # parameter sets are never deleted by the platform (the ORM still cascades/protects). The
    # account keeps its constraint: accounts are the data other code writes.
    sweep = models.ForeignKey(
        Sweep, on_delete=models.CASCADE, related_name="snapshots", db_index=False, db_constraint=False
    )
    shard = models.ForeignKey(
        SweepShard, on_delete=models.CASCADE, related_name="snapshots", db_constraint=False
    )
    account = models.ForeignKey(
        "accounts.MarginAccount", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    parameter_set = models.ForeignKey(
        "riskengine.ParameterSet",
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    read_at = models.DateTimeField(help_text="When the account's positions and balances were read.")
    mode = models.CharField(max_length=10)
    status = models.CharField(max_length=12, choices=MarginStatus.choices)
    equity = FigureField()
    collateral_value = FigureField()
    initial_margin = FigureField()
    maintenance_margin = FigureField()
    excess = FigureField()
    margin_ratio = FigureField(null=True, blank=True)
    scan_directional = FigureField()
    scan_non_directional = FigureField()
    correlation_credit = FigureField()
    basis = FigureField()
    short_option_minimum = FigureField()
    concentration = FigureField()
    required_isolated = FigureField()
    required_cross = FigureField()
    required_portfolio = FigureField()
    free_collateral = FigureField(
        null=True, blank=True, help_text="Isolated accounts: collateral value less the allocations, USD."
    )
    by_underlying = models.BinaryField(help_text="Per-underlying figures (see the module docstring).")
    positions = models.BinaryField(help_text="The engine's input positions (see the module docstring).")
    collateral = models.BinaryField(help_text="The engine's input balances (see the module docstring).")
    position_allocations = models.BinaryField(
        null=True, blank=True, help_text="Isolated accounts: each position's allocated margin (see above)."
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["sweep", "account"], name="marginsnapshot_one_per_sweep_account"),
        ]
        indexes = [models.Index(fields=["account", "-read_at"], name="marginsnapshot_account_recent")]

    def __str__(self) -> str:
        return f"{self.account_id} in sweep {self.sweep_id}: {self.status}"


class AccountMargin(models.Model):
    """The current margin of one account: its snapshot with the newest valuation, by
    ``(valued_at, sweep_id)`` — not the one that arrived last, so a late or redelivered shard of
    an older sweep never replaces a newer sweep's figures (``storage.current_upsert``)."""

    account = models.OneToOneField(
        "accounts.MarginAccount", on_delete=models.CASCADE, primary_key=True, related_name="margin"
    )
    snapshot = models.ForeignKey(MarginSnapshot, on_delete=models.CASCADE, related_name="+")
    read_at = models.DateTimeField()
    valued_at = models.DateTimeField(help_text="The valuation time of the snapshot's sweep.")
    # No database constraint: the snapshot's FK already keeps its sweep (retention deletes a sweep
    # only once it holds no snapshot).
    sweep = models.ForeignKey(
        Sweep, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    status = models.CharField(max_length=12, choices=MarginStatus.choices)
    equity = FigureField()
    initial_margin = FigureField()
    maintenance_margin = FigureField()

    def __str__(self) -> str:
        return f"{self.account_id}: {self.status}"


class CallStatus(models.TextChoices):
    OPEN = "open", "Open"
    CURED = "cured", "Cured"
    ESCALATED = "escalated", "Escalated to liquidation"


class MarginCall(models.Model):
    account = models.ForeignKey(
        "accounts.MarginAccount", on_delete=models.PROTECT, related_name="margin_calls"
    )
    status = models.CharField(max_length=10, choices=CallStatus.choices, default=CallStatus.OPEN)
    amount = AmountField(
        help_text="When opened, USD: IM − equity; isolated accounts: what restores each unhealthy position "
        "plus negative free collateral (riskengine.core.calls.call_amounts)."
    )
    deadline = models.DateTimeField()
    opened_at = models.DateTimeField()
    opened_by = models.ForeignKey(MarginSnapshot, on_delete=models.PROTECT, related_name="+")
    closed_at = models.DateTimeField(null=True, blank=True)
    positions = models.JSONField(
        default=list,
        blank=True,
        help_text="Isolated accounts: each position not healthy when the call opened, with its status and "
        "amount (IM_i − e_i, USD as decimal text); empty otherwise.",
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account"], condition=Q(status="open"), name="margincall_one_open_per_account"
            ),
            models.CheckConstraint(name="margincall_status_valid", condition=Q(status__in=CallStatus.values)),
            models.CheckConstraint(name="margincall_amount_positive", condition=Q(amount__gt=0)),
        ]

    def __str__(self) -> str:
        return f"call {self.pk} on {self.account_id} ({self.status})"


class MarginCallEvent(AppendOnlyModel):
    """One transition of a margin call (append-only): opened, cured, escalated, or a suspended
    escalation (``to_status`` stays ``open``)."""

    call = models.ForeignKey(MarginCall, on_delete=models.PROTECT, related_name="events")
    at = models.DateTimeField()
    from_status = models.CharField(max_length=10, blank=True)
    to_status = models.CharField(max_length=10)
    cause = models.CharField(max_length=300)
    snapshot = models.ForeignKey(MarginSnapshot, on_delete=models.PROTECT, null=True, related_name="+")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.call_id}: {self.from_status or '∅'} → {self.to_status}"


class LiquidationStatus(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress"
    DONE = "done", "Done"


class Liquidation(models.Model):
    account = models.ForeignKey(
        "accounts.MarginAccount", on_delete=models.PROTECT, related_name="liquidations"
    )
    call = models.ForeignKey(MarginCall, on_delete=models.PROTECT, related_name="liquidations")
    sweep = models.ForeignKey(Sweep, on_delete=models.PROTECT, related_name="liquidations")
    status = models.CharField(
        max_length=12, choices=LiquidationStatus.choices, default=LiquidationStatus.IN_PROGRESS
    )
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    plan = models.JSONField(
        default=list, help_text="Positions closed, in order, with the margin each released."
    )
    trades = models.ManyToManyField("clearing.Trade", related_name="+", blank=True)
    equity_before = FigureField(null=True, blank=True)
    initial_margin_before = FigureField(null=True, blank=True)
    equity_after = FigureField(null=True, blank=True)
    initial_margin_after = FigureField(null=True, blank=True)
    closed_notional = AmountField(default=0)
    fee = AmountField(default=0, help_text="Paid to the insurance fund, USD.")
    deficit_covered = AmountField(default=0, help_text="Negative equity covered by the insurance fund, USD.")

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account"],
                condition=Q(status="in_progress"),
                name="liquidation_one_in_progress_per_account",
            ),
            models.CheckConstraint(
                name="liquidation_status_valid", condition=Q(status__in=LiquidationStatus.values)
            ),
        ]

    def __str__(self) -> str:
        return f"liquidation {self.pk} of {self.account_id} ({self.status})"


class SweepRequest(models.Model):
    """A pending event sweep of one account; many requests before the drain make one row."""

    account = models.OneToOneField(
        "accounts.MarginAccount", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    cause = models.CharField(max_length=200)
    requested_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"sweep {self.account_id} ({self.cause})"


class WarningLevel(models.TextChoices):
    """The warning ladder's one vocabulary (``riskengine.core.ladder.LEVELS``, in order)."""

    OK = "ok", "OK"
    WATCH = "watch", "Watch"
    WARNING = "warning", "Warning"
    MARGIN_CALL = "margin_call", "Margin call"
    LIQUIDATION = "liquidation", "Liquidation"


class AccountForesight(models.Model):
    """An account's latest liquidation foresight (methodology v1.1 section 9; issue #17): its
    distances, liquidation prices, probability within the horizon, look-ahead requirement and
    warning level, computed from ``snapshot`` (a full sweep's) after that sweep
    (``riskengine.sweeps.foresight``). One row per account, the newest valuation by ``(valued_at,
    sweep_id)``, like ``AccountMargin``: a late task of an older sweep never replaces it. The
    snapshot is kept by retention while a row points at it, and the vols used are stored, so the
    figures replay (``foresight_document`` + ``python -m riskengine foresight``).

    ``by_underlying``: ``[{"underlying", "down": {"move", "price", "sigmas"} | null, "up": …}]`` in
    the parameter set's order; ``joint``: ``{"down": {"move"} | null, "up": …}``; ``vols``:
    ``{underlying: annualised vol | null}``. Figures that are not numbers are stored as null
    (JSON) or NaN (``FigureField``)."""

    account = models.OneToOneField(
        "accounts.MarginAccount", on_delete=models.CASCADE, primary_key=True, related_name="foresight"
    )
    # No database constraints: retention deletes snapshots and sweeps with raw SQL, and keeps the
    # ones a row points at (clearing.ops.retention).
    snapshot = models.ForeignKey(
        MarginSnapshot, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False
    )
    sweep = models.ForeignKey(
        Sweep, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False, db_index=False
    )
    valued_at = models.DateTimeField(help_text="The valuation time of the snapshot's sweep.")
    computed_at = models.DateTimeField()
    level = models.CharField(max_length=12, choices=WarningLevel.choices)
    previous = models.CharField(max_length=12, choices=WarningLevel.choices, blank=True)
    driver = models.CharField(max_length=20, blank=True, help_text="The underlying of the nearest distance.")
    distance_sigmas = FigureField(null=True, blank=True)
    horizon_days = FigureField()
    probability = FigureField(null=True, blank=True)
    model = models.CharField(max_length=40)
    vols = models.JSONField(default=dict)
    by_underlying = models.JSONField(default=list)
    joint = models.JSONField(default=dict)
    lookahead_im = FigureField(null=True, blank=True)
    lookahead_excess = FigureField(null=True, blank=True)
    lookahead_reason = models.CharField(max_length=80, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                name="accountforesight_level_valid", condition=Q(level__in=WarningLevel.values)
            ),
        ]
        indexes = [models.Index(fields=["-probability"], name="accountforesight_probability")]

    def __str__(self) -> str:
        return f"{self.account_id}: {self.level}"
