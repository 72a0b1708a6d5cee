"""The clearing domain: underlyings, instruments, trades (immutable fills) and positions.

A ``Position`` is derived from trades by ``accounts.trading.trade_book`` in the same transaction
as the trade; nothing else writes it. The database enforces what the model validates: positive
multipliers, strikes and prices; options with strike, right and expiry; one position row per
account and instrument.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from clearing.ledger import AmountField, AppendOnlyModel, PriceField, QuantityField


class Underlying(models.Model):
    """A risk group (BTC, ETH, SOL…) with an index price from the oracle."""

    symbol = models.CharField(max_length=20, unique=True)
    name = models.CharField(max_length=100)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["symbol"]

    def __str__(self) -> str:
        return self.symbol


class InstrumentKind(models.TextChoices):
    FUTURE = "future", "Dated future"
    PERPETUAL = "perpetual", "Perpetual"
    OPTION = "option", "Option"


class OptionRight(models.TextChoices):
    CALL = "call", "Call"
    PUT = "put", "Put"


class Instrument(models.Model):
    """A cleared contract. Futures and perpetuals are linear; options are European on the index."""

    symbol = models.CharField(max_length=40, unique=True)
    kind = models.CharField(max_length=10, choices=InstrumentKind.choices)
    underlying = models.ForeignKey(Underlying, on_delete=models.PROTECT, related_name="instruments")
    multiplier = QuantityField(default=1, help_text="Units of the underlying per contract.")
    expiry = models.DateTimeField(null=True, blank=True)
    strike = PriceField(null=True, blank=True)
    right = models.CharField(max_length=4, choices=OptionRight.choices, blank=True, default="")
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["underlying__symbol", "kind", "expiry", "strike", "right"]
        constraints = [
            models.CheckConstraint(
                name="instrument_kind_valid", condition=Q(kind__in=[c.value for c in InstrumentKind])
            ),
            models.CheckConstraint(
                name="instrument_multiplier_positive",
                condition=Q(multiplier__gt=0),
                violation_error_message="The multiplier must be positive.",
            ),
            models.CheckConstraint(
                name="instrument_option_terms",
                condition=~Q(kind=InstrumentKind.OPTION)
                | (
                    Q(strike__isnull=False)
                    & Q(strike__gt=0)
                    & Q(expiry__isnull=False)
                    & Q(right__in=[OptionRight.CALL.value, OptionRight.PUT.value])
                ),
                violation_error_message="An option needs a positive strike, an expiry and a call/put right.",
            ),
            models.CheckConstraint(
                name="instrument_future_terms",
                condition=~Q(kind=InstrumentKind.FUTURE)
                | (Q(expiry__isnull=False) & Q(strike__isnull=True) & Q(right="")),
                violation_error_message="A dated future needs an expiry and has no strike or right.",
            ),
            models.CheckConstraint(
                name="instrument_perpetual_terms",
                condition=~Q(kind=InstrumentKind.PERPETUAL)
                | (Q(expiry__isnull=True) & Q(strike__isnull=True) & Q(right="")),
                violation_error_message="A perpetual has no expiry, strike or right.",
            ),
        ]

    def __str__(self) -> str:
        return self.symbol

    def clean(self) -> None:
        """Field-level errors for the terms each kind requires (the constraints are the backstop)."""
        errors: dict[str, str] = {}
        if self.multiplier is not None and self.multiplier <= 0:
            errors["multiplier"] = "The multiplier must be positive."
        if self.kind == InstrumentKind.OPTION:
            if self.strike is None or self.strike <= 0:
                errors["strike"] = "An option needs a positive strike."
            if self.expiry is None:
                errors["expiry"] = "An option needs an expiry."
            if self.right not in OptionRight.values:
                errors["right"] = "An option is a call or a put."
        elif self.kind == InstrumentKind.FUTURE and self.expiry is None:
            errors["expiry"] = "A dated future needs an expiry."
        if self.kind in (InstrumentKind.FUTURE, InstrumentKind.PERPETUAL):
            if self.strike is not None:
                errors["strike"] = "Only options have a strike."
            if self.right:
                errors["right"] = "Only options have a right."
        if self.kind == InstrumentKind.PERPETUAL and self.expiry is not None:
            errors["expiry"] = "A perpetual has no expiry."
        if errors:
            raise ValidationError(errors)

    @property
    def is_linear(self) -> bool:
        return self.kind != InstrumentKind.OPTION


class Trade(AppendOnlyModel):
    """An executed fill, cleared into an account. Immutable: corrections are new trades."""

    account = models.ForeignKey("accounts.MarginAccount", on_delete=models.PROTECT, related_name="trades")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="trades")
    quantity = QuantityField(help_text="Signed: positive buys, negative sells.")
    price = PriceField()
    external_id = models.CharField(
        max_length=100, null=True, blank=True, unique=True, help_text="The venue's trade id, if it sent one."
    )
    executed_at = models.DateTimeField()
    booked_at = models.DateTimeField(auto_now_add=True, db_index=True)
    booked_by = models.ForeignKey(
        "accounts.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(name="trade_quantity_nonzero", condition=~Q(quantity=0)),
            models.CheckConstraint(
                name="trade_price_positive",
                condition=Q(price__gt=0),
                violation_error_message="The price must be positive.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} {self.instrument_id} @ {self.price} on {self.account_id}"


class Position(models.Model):
    """The net of an account's trades in one instrument, with the average entry price of the open
    quantity (zero when flat) and the P&L realised so far."""

    account = models.ForeignKey("accounts.MarginAccount", on_delete=models.PROTECT, related_name="positions")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="positions")
    quantity = QuantityField(default=0)
    entry_price = PriceField(default=0)
    realised_pnl = PriceField(default=0)
    # Methodology v1.1 section 4a: the part of the account's collateral committed to this position
    # (USD) when the account is isolated; 0 otherwise. Changed only through ``MarginAllocation``
    # rows written in the same transaction (``riskengine.allocations``).
    allocated_margin = AmountField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account_id", "instrument__symbol"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "instrument"], name="position_one_row_per_account_instrument"
            ),
            models.CheckConstraint(name="position_entry_price_not_negative", condition=Q(entry_price__gte=0)),
            models.CheckConstraint(
                name="position_open_has_entry_price", condition=Q(quantity=0) | Q(entry_price__gt=0)
            ),
            models.CheckConstraint(
                name="position_allocated_margin_not_negative",
                condition=Q(allocated_margin__gte=0),
                violation_error_message="A position's allocated margin cannot be negative.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account_id}: {self.quantity} {self.instrument_id}"


class AllocationKind(models.TextChoices):
    TRADE = "trade", "Allocated to a trade's added initial margin"
    RELEASE = "release", "Released by a trade that reduced or closed the position"
    MEMBER = "member", "Moved by the member"
    MODE_CHANGE = "mode_change", "Allocated or released by a change of margin mode"
    CARRY_OVER = "carry_over", "Allocated to a position opened before allocations existed"


class MarginAllocation(AppendOnlyModel):
    """An immutable entry of the allocation ledger: ``amount`` USD moved from the account's free
    collateral into the position (positive) or back (negative); ``allocated_after`` is the
    position's allocation once applied. ``Position.allocated_margin`` is the running sum,
    updated in the same transaction under the account lock. No collateral balance changes: an
    allocation commits collateral the account keeps to one position (spec section 4a)."""

    account = models.ForeignKey(
        "accounts.MarginAccount", on_delete=models.PROTECT, related_name="margin_allocations"
    )
    position = models.ForeignKey(Position, on_delete=models.PROTECT, related_name="allocations")
    kind = models.CharField(max_length=12, choices=AllocationKind.choices)
    amount = AmountField(help_text="USD, signed: + into the position, − back to free collateral.")
    allocated_after = AmountField()
    trade = models.ForeignKey(Trade, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    reference = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        "accounts.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                name="allocation_kind_valid", condition=Q(kind__in=[c.value for c in AllocationKind])
            ),
            models.CheckConstraint(name="allocation_amount_nonzero", condition=~Q(amount=0)),
            models.CheckConstraint(name="allocation_after_not_negative", condition=Q(allocated_after__gte=0)),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} USD to position {self.position_id}"


class OutboxEvent(models.Model):
    """The transactional outbox of live events (``clearing.events``).

    A state change and the event announcing it are written in the same transaction
    (``clearing.events.events_publish``); a relay inside the ASGI web process
    (``frontend.relay``) hands new rows to the channel layer. So a margin call can never be pushed
    without being stored, nor stored without being pushed, and the same code serves the embedded
    stack (one web process, in-memory layer) and production (Redis layer, any number of web
    processes: each row is claimed by exactly one relay)."""

    group = models.CharField(max_length=100, help_text="Channel-layer group, e.g. account-42.")
    type = models.CharField(max_length=50, help_text="Event type, e.g. margin_call.opened.")
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    relayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # The table keeps the name it had when the model lived in the web app (frontend).
        db_table = "frontend_outboxevent"
        ordering = ["id"]
        indexes = [
            models.Index(fields=["id"], condition=models.Q(relayed_at__isnull=True), name="outbox_pending"),
        ]

    def __str__(self) -> str:
        return f"{self.type} → {self.group}"
