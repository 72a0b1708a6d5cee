"""Model validation runs and their per-account results (methodology v1.1 sections 7 and 8).

- ``ValidationRun``: one backtest-and-stress run of one parameter set in one mode (``fixed``: the
  set as it is; ``calibrated``: psr recalibrated every day) over every member account holding
  something. It fixes what all its shards share: the valuation time and the ``market`` form of the
  margin document (today's option ivs and times to expiry, the stress scenarios' base prices),
  the daily price ``history`` (the oracle's stored closes, ``IndexClose``, aligned to the set's
  underlyings and assets) and the insurance fund's value at the run's prices. Kinds: ``nightly``
  (beat), ``on_demand`` (the admin's "run now"), ``proposal`` (a proposed set, and the active set
  beside it, both with ``proposal`` pointing at the proposed set). When its last shard is done it
  holds the venue's results (``report``, ``series``).
- ``ValidationShard``: a range of account ids, unique per ``(run, number)``; it stores its
  accounts' results and its partial sums for the venue in one transaction that also marks it
  ``done``, so running it again changes nothing.
- ``AccountBacktest``: section 7 for one account (holding at least one position: an account with
  none has no margin to test) in one run; ``AccountStress``: its worst stress scenario (section 8).

Compact columns (little-endian ``bytea``, ``riskengine.validation.storage``): an account's
``series`` records ``(initial_margin float32, loss float32)`` per observation day of its run (the
chart's resolution; the exceptions themselves are decided in float64 and kept exactly in
``exception_days``); a run's ``series`` records ``(venue_im, aggregate_im, aggregate_loss float64,
exceptions int64)`` per observation day; a shard's ``partial`` records ``(venue_im float64,
exceptions int64)``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class ValidationKind(models.TextChoices):
    NIGHTLY = "nightly", "Nightly"
    ON_DEMAND = "on_demand", "On demand"
    PROPOSAL = "proposal", "Proposal"


class ValidationMode(models.TextChoices):
    FIXED = "fixed", "Fixed (the set as it is)"
    CALIBRATED = "calibrated", "Calibrated (psr recalibrated daily)"


class ValidationStatus(models.TextChoices):
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Light(models.TextChoices):
    GREEN = "green", "Green"
    YELLOW = "yellow", "Yellow"
    RED = "red", "Red"


class ValidationRun(models.Model):
    kind = models.CharField(max_length=10, choices=ValidationKind.choices)
    mode = models.CharField(max_length=10, choices=ValidationMode.choices, default=ValidationMode.FIXED)
    mpor_days = models.PositiveSmallIntegerField(default=2)
    parameter_set = models.ForeignKey(
        "riskengine.ParameterSet", on_delete=models.PROTECT, related_name="validation_runs"
    )
    proposal = models.ForeignKey(
        "riskengine.ParameterSet",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="proposal_validation_runs",
        help_text="The proposed set this run judges: its own run and the active set's beside it.",
    )
    cause = models.CharField(max_length=200)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    request_key = models.CharField(
        max_length=200,
        null=True,
        blank=True,
        unique=True,
        help_text="The request that started it (a beat task's id and the mode): a duplicate starts nothing.",
    )
    status = models.CharField(
        max_length=8, choices=ValidationStatus.choices, default=ValidationStatus.RUNNING
    )
    error = models.TextField(blank=True, help_text="Why it failed.")
    valuation_time = models.DateTimeField()
    market = models.JSONField(help_text="The margin document's market section every shard uses.")
    statuses = models.JSONField(default=dict, help_text="Oracle status per symbol when the run started.")
    history = models.JSONField(
        default=dict, help_text='The daily closes used: {"days": [...], "series": {"BTC": [...], ...}}.'
    )
    first_day = models.DateField(null=True, blank=True, help_text="First observation day t.")
    last_day = models.DateField(null=True, blank=True, help_text="Last observation day t.")
    observations = models.PositiveIntegerField(default=0, help_text="Observation days.")
    shard_count = models.PositiveIntegerField(default=0)
    shards_done = models.PositiveIntegerField(default=0)
    accounts = models.PositiveIntegerField(default=0, help_text="Member accounts stressed.")
    backtested = models.PositiveIntegerField(default=0, help_text="Accounts holding a position: backtested.")
    fund_value = models.DecimalField(
        max_digits=28,
        decimal_places=10,
        null=True,
        blank=True,
        help_text="The insurance fund's value at the run's prices, USD (null: the venue has no fund).",
    )
    fund_unpriced = models.JSONField(default=list, blank=True, help_text="Fund assets without a price.")
    light = models.CharField(
        max_length=6,
        choices=Light.choices,
        blank=True,
        help_text="The venue's traffic light: the worse of the pooled accounts' and the aggregate book's.",
    )
    report = models.JSONField(
        default=dict,
        blank=True,
        help_text="Venue results: pooled and aggregate backtest, scenarios, Cover-1 and Cover-2, lights.",
    )
    series = models.BinaryField(null=True, blank=True, help_text="Venue series per day (module docstring).")
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        permissions = [("run_validationrun", "Can start a validation run now")]
        indexes = [models.Index(fields=["parameter_set", "mode", "-id"], name="validationrun_set_mode")]
        constraints = [
            models.CheckConstraint(
                name="validationrun_kind_valid", condition=Q(kind__in=ValidationKind.values)
            ),
            models.CheckConstraint(
                name="validationrun_mode_valid", condition=Q(mode__in=ValidationMode.values)
            ),
            models.CheckConstraint(
                name="validationrun_status_valid", condition=Q(status__in=ValidationStatus.values)
            ),
            models.CheckConstraint(name="validationrun_mpor_positive", condition=Q(mpor_days__gte=1)),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.mode} validation {self.pk} ({self.status})"


class ShardStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ValidationShard(models.Model):
    run = models.ForeignKey(ValidationRun, on_delete=models.CASCADE, related_name="shards")
    number = models.PositiveIntegerField()
    first_account_id = models.BigIntegerField()
    last_account_id = models.BigIntegerField()
    status = models.CharField(max_length=8, choices=ShardStatus.choices, default=ShardStatus.PENDING)
    accounts = models.PositiveIntegerField(default=0)
    backtested = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    timings = models.JSONField(default=dict, help_text="Seconds spent reading, computing, storing.")
    error = models.TextField(blank=True)
    partial = models.BinaryField(null=True, blank=True, help_text="Per day sums (module docstring).")
    counts = models.JSONField(
        default=dict, help_text="Exceptions and Christoffersen transition counts summed over the shard."
    )
    members = models.JSONField(
        default=dict, help_text="Member code → uncovered loss in each scenario, USD, summed over the shard."
    )
    book = models.JSONField(
        default=dict,
        help_text="Net units per instrument and net balance per asset of its backtested accounts.",
    )

    class Meta:
        ordering = ["run_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="validationshard_one_per_number"),
            models.CheckConstraint(
                name="validationshard_status_valid", condition=Q(status__in=ShardStatus.values)
            ),
        ]

    def __str__(self) -> str:
        return f"shard {self.number} of validation {self.run_id}"


class AccountBacktest(models.Model):
    """Section 7 for one account in one run. ``None`` for a figure that is undefined (a
    peak-to-trough ratio over a zero IM)."""

    # ``run`` carries no database constraint (bulk inserts of a shard; runs are never deleted
    # before their results, see the retention in ``riskengine.validation.services``).
    run = models.ForeignKey(
        ValidationRun, on_delete=models.CASCADE, related_name="account_backtests", db_constraint=False,
        db_index=False,
    )  # fmt: skip
    account = models.ForeignKey("accounts.MarginAccount", on_delete=models.CASCADE, related_name="+")
    observations = models.PositiveIntegerField()
    exceptions = models.PositiveIntegerField()
    coverage = models.FloatField()
    light = models.CharField(max_length=6, choices=Light.choices)
    kupiec_lr = models.FloatField(null=True)
    kupiec_p_value = models.FloatField(null=True)
    lr_ind = models.FloatField(null=True)
    lr_cc = models.FloatField(null=True)
    p_value_cc = models.FloatField(null=True)
    peak_to_trough = models.FloatField(null=True)
    max_increase_1 = models.FloatField(null=True)
    max_increase_5 = models.FloatField(null=True)
    max_increase_30 = models.FloatField(null=True)
    exception_days = models.JSONField(
        default=list,
        help_text='[{"day", "loss", "initial_margin", "underlying"}]: each exception, the underlying that '
        'caused it (the largest part of the loss) or "collateral".',
    )
    series = models.BinaryField(help_text="(IM, loss) float32 per observation day (module docstring).")

    class Meta:
        ordering = ["run_id", "account_id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "account"], name="accountbacktest_one_per_run"),
            models.CheckConstraint(name="accountbacktest_light_valid", condition=Q(light__in=Light.values)),
        ]
        indexes = [models.Index(fields=["account", "-run"], name="accountbacktest_account_recent")]

    def __str__(self) -> str:
        return f"{self.account_id} in validation {self.run_id}: {self.light}"


class AccountStress(models.Model):
    """Section 8 for one account in one run: its equity and its worst scenario (the largest
    stressed loss, first on ties), with the loss and the part of it its equity does not cover."""

    run = models.ForeignKey(
        ValidationRun, on_delete=models.CASCADE, related_name="account_stresses", db_constraint=False,
        db_index=False,
    )  # fmt: skip
    account = models.ForeignKey("accounts.MarginAccount", on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey("accounts.Member", on_delete=models.CASCADE, related_name="+")
    equity = models.FloatField()
    worst_scenario = models.CharField(max_length=200, blank=True)
    worst_loss = models.FloatField()
    worst_uncovered = models.FloatField()

    class Meta:
        ordering = ["run_id", "account_id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "account"], name="accountstress_one_per_run"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id} in validation {self.run_id}: {self.worst_scenario}"
