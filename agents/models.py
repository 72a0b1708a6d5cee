"""Members' automated agents (issue #18, ``docs/agents.md``).

* A **band policy** keeps one margin account's collateralisation ratio (equity / MM) inside a band
  by moving collateral between it and its member's funding account: below the *search* level it
  pulls from funding, above the *release* level it returns the excess, each time to the *target*
  ratio. Every transfer is an ``AutoTransfer`` (append-only) and a pair of ``auto_transfer``
  collateral movements.
* A **hedge policy** watches one underlying's dollar delta of a margin account and, when it strays
  from its target by more than a threshold, *proposes* the trade that brings it back or *requests*
  it from the member's execution system through a signed webhook (``HedgeRequest``, every
  delivery attempt a ``WebhookAttempt``, append-only). A booked fill may name the request
  (``HedgeFill``, append-only).
* Every change to a policy or an endpoint, by the member or by ops, is a ``PolicyChange``
  (append-only): who, when, before and after.

Policies and endpoints are never deleted (the history points at them): members switch them off
(``is_active``), ops suspend them (``suspended_at``).
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import F, Q

from clearing.ledger import AmountField, AppendOnlyModel, PriceField, QuantityField

LEVEL = {"max_digits": 12, "decimal_places": 4}


class Suspendable(models.Model):
    """A member's switch (``is_active``) and ops' suspension (``suspended_at``, by whom, why). A
    policy acts only while it is active and not suspended."""

    is_active = models.BooleanField(default=True, help_text="Switched off by the member when False.")
    suspended_at = models.DateTimeField(null=True, blank=True)
    suspended_by = models.ForeignKey(
        "accounts.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    suspension_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        "accounts.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        "accounts.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        abstract = True

    @property
    def is_running(self) -> bool:
        return self.is_active and self.suspended_at is None

    @property
    def state(self) -> str:
        if not self.is_active:
            return "off"
        return "suspended" if self.suspended_at is not None else "on"


class BandPolicy(Suspendable):
    """The band of one margin account's equity / MM, kept with its member's funding account."""

    account = models.OneToOneField(
        "accounts.MarginAccount", on_delete=models.PROTECT, related_name="band_policy"
    )
    funding_account = models.ForeignKey("accounts.MarginAccount", on_delete=models.PROTECT, related_name="+")
    search_level = models.DecimalField(**LEVEL, help_text="Below this equity / MM, collateral is pulled in.")
    target_level = models.DecimalField(**LEVEL, help_text="The equity / MM each transfer restores.")
    release_level = models.DecimalField(**LEVEL, help_text="Above this equity / MM, the excess goes back.")
    assets = models.JSONField(
        default=list,
        help_text="Asset symbols, most preferred first: pulled in this order, released in reverse.",
    )
    min_interval_seconds = models.PositiveIntegerField(
        default=60, help_text="At least this long between two transfers of this policy."
    )

    class Meta:
        ordering = ["account__code"]
        verbose_name_plural = "band policies"
        permissions = [("suspend_bandpolicy", "Can suspend or resume a band policy")]
        constraints = [
            models.CheckConstraint(
                name="bandpolicy_levels_ordered",
                condition=Q(search_level__gt=1)
                & Q(target_level__gt=F("search_level"))
                & Q(release_level__gt=F("target_level")),
                violation_error_message="Levels must satisfy 1 < search < target < release.",
            ),
            models.CheckConstraint(
                name="bandpolicy_funding_elsewhere", condition=~Q(funding_account=F("account"))
            ),
        ]

    def __str__(self) -> str:
        return f"band {self.search_level}–{self.target_level}–{self.release_level} on {self.account}"


class TransferDirection(models.TextChoices):
    TOP_UP = "top_up", "Pulled from funding"
    RELEASE = "release", "Released to funding"


class AutoTransfer(AppendOnlyModel):
    """One transfer of a band policy: the ledger holds its movements (``reference`` names this
    row); this row says why and what the engine saw before and expected after (its figures)."""

    policy = models.ForeignKey(BandPolicy, on_delete=models.PROTECT, related_name="transfers")
    account = models.ForeignKey("accounts.MarginAccount", on_delete=models.PROTECT, related_name="+")
    funding_account = models.ForeignKey("accounts.MarginAccount", on_delete=models.PROTECT, related_name="+")
    direction = models.CharField(max_length=10, choices=TransferDirection.choices)
    legs = models.JSONField(
        help_text='[{"asset": "USDC", "amount": "1250.000000"}, ...]: units of each asset moved to the '
        "account (top-up) or to funding (release)."
    )
    target_level = models.DecimalField(**LEVEL)
    ratio_before = models.FloatField()
    ratio_after = models.FloatField(null=True, blank=True)
    equity_before = models.FloatField()
    equity_after = models.FloatField()
    initial_margin_before = models.FloatField()
    initial_margin_after = models.FloatField()
    maintenance_margin_before = models.FloatField()
    maintenance_margin_after = models.FloatField()
    cause = models.CharField(max_length=300)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                name="autotransfer_direction_valid", condition=Q(direction__in=TransferDirection.values)
            ),
        ]

    def __str__(self) -> str:
        return f"auto transfer #{self.pk} ({self.direction}) on {self.account_id}"


class WebhookEndpoint(models.Model):
    """Where a member's execution system receives hedge requests. The signing secret is shown once,
    when the endpoint is created, and stored encrypted (``agents.crypto``)."""

    member = models.ForeignKey("accounts.Member", on_delete=models.PROTECT, related_name="webhook_endpoints")
    url = models.CharField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    secret_encrypted = models.TextField(editable=False)
    secret_hint = models.CharField(max_length=16, editable=False, help_text="The secret's first characters.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey("accounts.User", on_delete=models.PROTECT, related_name="+")
    deactivated_at = models.DateTimeField(null=True, blank=True)
    deactivated_by = models.ForeignKey(
        "accounts.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["member__code", "pk"]

    def __str__(self) -> str:
        return f"{self.url} ({self.member_id})"


class HedgeMode(models.TextChoices):
    PROPOSE = "propose", "Propose (a notification with the trade and its margin effect)"
    REQUEST = "request", "Request (a signed webhook to the member's execution system)"


class HedgePolicy(Suspendable):
    """Keep one underlying's dollar delta of a margin account near a target."""

    account = models.ForeignKey(
        "accounts.MarginAccount", on_delete=models.PROTECT, related_name="hedge_policies"
    )
    underlying = models.ForeignKey("clearing.Underlying", on_delete=models.PROTECT, related_name="+")
    instrument = models.ForeignKey(
        "clearing.Instrument", on_delete=models.PROTECT, related_name="+",
        help_text="A perpetual or future on the underlying: the hedge trades it.",
    )  # fmt: skip
    target_delta_usd = AmountField(default=0, help_text="The dollar delta wanted (USD, signed).")
    threshold_usd = AmountField(help_text="Act when the delta is further than this from the target (USD).")
    max_quantity = QuantityField(help_text="At most this many units of the instrument per hedge.")
    min_interval_seconds = models.PositiveIntegerField(
        default=300, help_text="At least this long between two hedges of this policy."
    )
    mode = models.CharField(max_length=10, choices=HedgeMode.choices, default=HedgeMode.PROPOSE)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.PROTECT, null=True, blank=True, related_name="policies",
        help_text="Where requests are sent (request mode).",
    )  # fmt: skip

    class Meta:
        ordering = ["account__code", "underlying__symbol"]
        verbose_name_plural = "hedge policies"
        permissions = [("suspend_hedgepolicy", "Can suspend or resume a hedge policy")]
        constraints = [
            models.CheckConstraint(name="hedgepolicy_threshold_positive", condition=Q(threshold_usd__gt=0)),
            models.CheckConstraint(name="hedgepolicy_max_quantity_positive", condition=Q(max_quantity__gt=0)),
            models.CheckConstraint(name="hedgepolicy_mode_valid", condition=Q(mode__in=HedgeMode.values)),
            models.CheckConstraint(
                name="hedgepolicy_request_has_endpoint",
                condition=~Q(mode=HedgeMode.REQUEST) | Q(endpoint__isnull=False),
                violation_error_message="Request mode needs a webhook endpoint.",
            ),
            models.UniqueConstraint(
                fields=["account", "underlying"],
                condition=Q(is_active=True),
                name="hedgepolicy_one_active_per_underlying",
            ),
        ]

    def __str__(self) -> str:
        return f"hedge {self.underlying_id} on {self.account} ({self.mode})"


class HedgeStatus(models.TextChoices):
    PROPOSED = "proposed", "Proposed (shown to the member)"
    REQUESTED = "requested", "Requested (being delivered)"
    DELIVERED = "delivered", "Delivered (acknowledged by the endpoint)"
    FILLED = "filled", "Filled (a booked fill names it)"
    SUPERSEDED = "superseded", "Superseded by a newer request"
    UNDELIVERABLE = "undeliverable", "Undeliverable (no acknowledgement within the retry window)"
    WITHHELD = "withheld", "Withheld (not sent, see reason)"


# Requests still waiting for their fill: a newer request of the same policy supersedes them.
HEDGE_OPEN = (HedgeStatus.PROPOSED, HedgeStatus.REQUESTED, HedgeStatus.DELIVERED)
# A fill may name a request in these states (once).
HEDGE_LINKABLE = (*HEDGE_OPEN, HedgeStatus.SUPERSEDED, HedgeStatus.UNDELIVERABLE)


class HedgeRequest(models.Model):
    """One hedge a policy proposed or requested (or withheld, saying why): the exact trade, the
    dollar delta before and after and the engine's margin figures before and after it. Its
    ``idempotency_id`` travels in every delivery of its webhook: the member executes it once."""

    idempotency_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    policy = models.ForeignKey(HedgePolicy, on_delete=models.PROTECT, related_name="requests")
    account = models.ForeignKey(
        "accounts.MarginAccount", on_delete=models.PROTECT, related_name="hedge_requests"
    )
    instrument = models.ForeignKey("clearing.Instrument", on_delete=models.PROTECT, related_name="+")
    mode = models.CharField(max_length=10, choices=HedgeMode.choices)
    quantity = QuantityField(help_text="Signed units of the instrument: + buy, − sell.")
    price = PriceField(help_text="The index price the hedge was sized at (USD).")
    delta_usd_before = models.FloatField()
    delta_usd_after = models.FloatField()
    target_delta_usd = AmountField()
    equity_before = models.FloatField()
    equity_after = models.FloatField()
    initial_margin_before = models.FloatField()
    initial_margin_after = models.FloatField()
    maintenance_margin_before = models.FloatField()
    maintenance_margin_after = models.FloatField()
    status = models.CharField(max_length=14, choices=HedgeStatus.choices)
    reason = models.CharField(max_length=300, blank=True)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.PROTECT, null=True, blank=True, related_name="requests"
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    deliver_until = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    filled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                name="hedgerequest_status_valid", condition=Q(status__in=HedgeStatus.values)
            ),
            models.CheckConstraint(name="hedgerequest_mode_valid", condition=Q(mode__in=HedgeMode.values)),
            models.CheckConstraint(name="hedgerequest_quantity_nonzero", condition=~Q(quantity=0)),
            models.CheckConstraint(
                name="hedgerequest_withheld_says_why",
                condition=~Q(status=HedgeStatus.WITHHELD) | ~Q(reason=""),
            ),
        ]

    def __str__(self) -> str:
        return f"hedge request #{self.pk} {self.quantity} {self.instrument_id} ({self.status})"


class HedgeFill(AppendOnlyModel):
    """A booked trade that filled a hedge request (named in ``POST /api/v1/trades/``)."""

    hedge_request = models.ForeignKey(HedgeRequest, on_delete=models.PROTECT, related_name="fills")
    trade = models.OneToOneField("clearing.Trade", on_delete=models.PROTECT, related_name="hedge_fill")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"trade {self.trade_id} fills hedge request {self.hedge_request_id}"


class AttemptOutcome(models.TextChoices):
    DELIVERED = "delivered", "Delivered (2xx)"
    FAILED = "failed", "Failed (will retry)"
    ABANDONED = "abandoned", "Failed, no retry left"


class WebhookAttempt(AppendOnlyModel):
    """One delivery attempt of a hedge request's webhook, whatever its outcome."""

    hedge_request = models.ForeignKey(HedgeRequest, on_delete=models.PROTECT, related_name="attempt_log")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.PROTECT, related_name="attempts")
    number = models.PositiveIntegerField()
    url = models.CharField(max_length=500)
    started_at = models.DateTimeField(db_index=True)
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=AttemptOutcome.choices)
    error = models.CharField(max_length=500, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                name="webhookattempt_outcome_valid", condition=Q(outcome__in=AttemptOutcome.values)
            ),
            models.UniqueConstraint(fields=["hedge_request", "number"], name="webhookattempt_one_per_number"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of hedge request {self.hedge_request_id}: {self.outcome}"


class PolicyKind(models.TextChoices):
    BAND = "band_policy", "Band policy"
    HEDGE = "hedge_policy", "Hedge policy"
    ENDPOINT = "webhook_endpoint", "Webhook endpoint"


class PolicyAction(models.TextChoices):
    CREATED = "created", "Created"
    CHANGED = "changed", "Changed"
    SWITCHED_OFF = "switched_off", "Switched off"
    SUSPENDED = "suspended", "Suspended by ops"
    RESUMED = "resumed", "Resumed by ops"


class PolicyChange(AppendOnlyModel):
    """The audit log of the agents' configuration: every change of a band policy, a hedge policy
    or a webhook endpoint, by whom, when, and the fields before and after (never a secret)."""

    at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        "accounts.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    member = models.ForeignKey("accounts.Member", on_delete=models.PROTECT, related_name="+")
    account = models.ForeignKey(
        "accounts.MarginAccount", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=PolicyKind.choices)
    object_id = models.BigIntegerField()
    action = models.CharField(max_length=14, choices=PolicyAction.choices)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-at", "-pk"]
        constraints = [
            models.CheckConstraint(name="policychange_kind_valid", condition=Q(kind__in=PolicyKind.values)),
            models.CheckConstraint(
                name="policychange_action_valid", condition=Q(action__in=PolicyAction.values)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.object_id} {self.action} at {self.at:%Y-%m-%d %H:%M:%S}"
