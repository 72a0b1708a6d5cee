"""Market data: price sources, their append-only observations, the index price history the oracle
derives from them, the oracle's per-symbol state, option IV marks, daily closes and ops alerts.

Symbols: an oracle *symbol* is an underlying (``BTC``) or a collateral asset that is not linked to
an underlying (``USDC``). Linked assets take their underlying's index; the settlement asset (USD)
is exactly 1 and never fed.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from clearing.ledger import AppendOnlyModel, PriceField


class PriceSource(models.Model):
    """An external pricing system, authenticated as one ``price_source`` system user."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="price_source"
    )
    name = models.CharField(max_length=50, unique=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PriceObservation(AppendOnlyModel):
    """One price as a source saw it (``source_time``) and as the platform received it."""

    source = models.ForeignKey(PriceSource, on_delete=models.PROTECT, related_name="observations")
    symbol = models.CharField(max_length=20)
    price = PriceField()
    source_time = models.DateTimeField()
    received_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["symbol", "received_at"], name="priceobs_symbol_received")]
        constraints = [
            models.CheckConstraint(name="priceobservation_price_positive", condition=Q(price__gt=0))
        ]

    def __str__(self) -> str:
        return f"{self.symbol} {self.price} from {self.source_id}"


class VolObservation(AppendOnlyModel):
    """A mark implied volatility for one option (0.55 = 55 %)."""

    source = models.ForeignKey(PriceSource, on_delete=models.PROTECT, related_name="vol_observations")
    instrument = models.ForeignKey("clearing.Instrument", on_delete=models.PROTECT, related_name="+")
    iv = models.DecimalField(max_digits=12, decimal_places=8)
    source_time = models.DateTimeField()
    received_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.CheckConstraint(name="volobservation_iv_positive", condition=Q(iv__gt=0))]

    def __str__(self) -> str:
        return f"{self.instrument_id} iv {self.iv}"


class IndexStatus(models.TextChoices):
    OK = "ok", "OK"
    DEGRADED = "degraded", "Degraded (fewer sources than required)"
    STALE = "stale", "Stale (no fresh source)"
    UNCONFIRMED = "unconfirmed", "Unconfirmed (circuit breaker)"


class IndexPrice(AppendOnlyModel):
    """One aggregation of the oracle: the history of every index price with its evidence.

    ``price`` is what the sources say now (null when none is fresh); ``last_good_price`` is what
    the platform uses (equal to ``price`` when the status is ``ok`` or ``degraded``).
    """

    symbol = models.CharField(max_length=20)
    status = models.CharField(max_length=12, choices=IndexStatus.choices)
    price = PriceField(null=True, blank=True)
    last_good_price = PriceField(null=True, blank=True)
    sources = models.JSONField(default=list, help_text="Names of the sources in the price.")
    exclusions = models.JSONField(default=list, help_text='[{"source", "price", "reason"}]')
    note = models.TextField(blank=True)
    observation = models.ForeignKey(
        PriceObservation, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    computed_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["symbol", "computed_at"], name="indexprice_symbol_computed")]
        constraints = [
            models.CheckConstraint(
                name="indexprice_status_valid", condition=Q(status__in=[c.value for c in IndexStatus])
            ),
            models.CheckConstraint(
                name="indexprice_prices_positive",
                condition=(Q(price__isnull=True) | Q(price__gt=0))
                & (Q(last_good_price__isnull=True) | Q(last_good_price__gt=0)),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.symbol} {self.price} ({self.status})"


class SymbolKind(models.TextChoices):
    UNDERLYING = "underlying", "Underlying"
    ASSET = "asset", "Collateral asset"


class IndexState(models.Model):
    """The oracle's current view of one symbol (derived; written only by the oracle's services).

    The row is locked (``SELECT … FOR UPDATE``) while a symbol aggregates, so concurrent sources
    serialise per symbol.
    """

    symbol = models.CharField(max_length=20, unique=True)
    kind = models.CharField(max_length=10, choices=SymbolKind.choices)
    status = models.CharField(max_length=12, choices=IndexStatus.choices, default=IndexStatus.STALE)
    price = PriceField(null=True, blank=True)
    last_good_price = PriceField(null=True, blank=True)
    last_good_at = models.DateTimeField(null=True, blank=True)
    # The candidate held by the circuit breaker, the status it would have had and the sources that
    # made it (none of them can confirm it: another source or ops must).
    pending_price = PriceField(null=True, blank=True)
    pending_status = models.CharField(max_length=12, blank=True, default="")
    pending_since = models.DateTimeField(null=True, blank=True)
    pending_sources = models.JSONField(
        default=list, blank=True, help_text="Names of the sources of the held move."
    )
    # When the freshest contributing source goes stale: readers treat the symbol as stale after it.
    fresh_until = models.DateTimeField(null=True, blank=True)
    # When fewer than the required number of contributing sources are fresh: an ``ok`` symbol reads
    # ``degraded`` after it (and liquidation is suspended) until an aggregation has the quorum again.
    quorum_until = models.DateTimeField(null=True, blank=True)
    last_index_price = models.ForeignKey(
        IndexPrice, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    last_good_index_price = models.ForeignKey(
        IndexPrice, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # The price at the last sweep: a move beyond ``event_move`` from it triggers an event sweep.
    reference_price = PriceField(null=True, blank=True)
    reference_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(name="indexstate_kind_valid", condition=Q(kind__in=SymbolKind.values)),
            models.CheckConstraint(
                name="indexstate_status_valid", condition=Q(status__in=[c.value for c in IndexStatus])
            ),
        ]

    def __str__(self) -> str:
        return f"{self.symbol}: {self.last_good_price} ({self.status})"


class SourceQuote(models.Model):
    """The latest observation of each source for each symbol (derived, one row per pair)."""

    symbol = models.CharField(max_length=20)
    source = models.ForeignKey(PriceSource, on_delete=models.PROTECT, related_name="+")
    price = PriceField()
    source_time = models.DateTimeField()
    received_at = models.DateTimeField()
    observation = models.ForeignKey(PriceObservation, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["symbol", "source"]
        constraints = [models.UniqueConstraint(fields=["symbol", "source"], name="sourcequote_unique")]

    def __str__(self) -> str:
        return f"{self.symbol} {self.price} from {self.source_id}"


class VolMark(models.Model):
    """The current mark implied volatility of one option: its latest accepted observation."""

    instrument = models.OneToOneField("clearing.Instrument", on_delete=models.PROTECT, related_name="+")
    iv = models.DecimalField(max_digits=12, decimal_places=8)
    source_time = models.DateTimeField()
    received_at = models.DateTimeField()
    observation = models.ForeignKey(VolObservation, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["instrument"]

    def __str__(self) -> str:
        return f"{self.instrument_id} iv {self.iv}"


class IndexClose(models.Model):
    """The daily close of a symbol: the real history loaded by ``seed_demo`` (``origin=history``)
    and, for each day the oracle runs, its last good price of the day (``origin=oracle``).
    Calibration reads these."""

    symbol = models.CharField(max_length=20)
    day = models.DateField()
    price = PriceField()
    origin = models.CharField(max_length=10, default="oracle")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["symbol", "day"]
        constraints = [
            models.UniqueConstraint(fields=["symbol", "day"], name="indexclose_unique"),
            models.CheckConstraint(name="indexclose_price_positive", condition=Q(price__gt=0)),
        ]

    def __str__(self) -> str:
        return f"{self.symbol} {self.day}: {self.price}"
