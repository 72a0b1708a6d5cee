"""Input and output shapes of the API. Inputs are strict: unknown fields are refused, decimals are
finite with at most 10 decimal places and 18 integer digits (the database's NUMERIC(28, 10)), and
money comes back as decimal strings."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import Asset, CollateralMovement, MarginAccount
from clearing.models import Instrument, MarginAllocation, Position, Trade, Underlying
from clearing.validation import decimal_plain
from riskengine.models import ParameterSet
from riskengine.selectors import parameters_form
from riskengine.sweeps.models import Liquidation, MarginCall, MarginCallEvent, MarginSnapshot

# Upper bounds that keep one request's work bounded.
MAX_BATCH = 1000
MAX_WHAT_IF_TRADES = 500
MAX_WHAT_IF_COLLATERAL = 50


class FiniteFloatField(serializers.FloatField):
    """A stored margin figure: a JSON number, or null when it is not finite. A sweep stores what
    the engine computed, NaN or infinity included (an account with such a figure is in
    liquidation, its liquidation suspended); JSON has no NaN, and no figure is shown that is not
    a number."""

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_representation(self, value):
        number = float(value)
        return number if math.isfinite(number) else None


@cache
def _output_serializer(serializer_class: type[serializers.BaseSerializer]) -> serializers.BaseSerializer:
    return serializer_class()


def output_data(serializer_class: type[serializers.BaseSerializer], instance) -> dict:
    """``serializer_class(instance).data`` for an output serializer, without building its fields
    again: DRF deep-copies every declared field into each new serializer (≈ 0.2 ms for
    ``ForesightOut``), so one instance per class is kept and only read (``to_representation``
    keeps no state on it). For the hot read routes."""
    return _output_serializer(serializer_class).to_representation(instance)


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not declare, naming each (a typo must not be silently ignored)."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class ExactDecimal(serializers.DecimalField):
    """A decimal that fits NUMERIC(28, 10), as sent: JSON numbers or plain ASCII decimal strings
    (``clearing.validation.decimal_plain``: no ``"١٢٣"``, ``"１２３"``, ``"1_000"`` or ``" 1 "``),
    no NaN or infinity, at most 10 decimal places. Not rounded: ``250.5`` stays ``250.5`` so
    services can check an asset's own decimal places."""

    def __init__(self, **kwargs):
        super().__init__(max_digits=28, decimal_places=10, **kwargs)

    def to_internal_value(self, data):
        key = self.field_name or "value"
        try:
            number = decimal_plain(data, field=key)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict[key]) from None
        return super().to_internal_value(number)

    def quantize(self, value):
        return value


class PositiveDecimal(ExactDecimal):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value <= 0:
            raise serializers.ValidationError("Must be positive.")
        return value


class NonZeroDecimal(ExactDecimal):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value == 0:
            raise serializers.ValidationError("Must not be zero.")
        return value


# --- Reference data ------------------------------------------------------------------------------


class UnderlyingOut(serializers.ModelSerializer):
    class Meta:
        model = Underlying
        fields = ["id", "symbol", "name", "is_active"]


class InstrumentOut(serializers.ModelSerializer):
    underlying = serializers.SlugRelatedField(slug_field="symbol", read_only=True)

    class Meta:
        model = Instrument
        fields = [
            "id",
            "symbol",
            "kind",
            "underlying",
            "multiplier",
            "expiry",
            "strike",
            "right",
            "is_active",
        ]


class AssetOut(serializers.ModelSerializer):
    underlying = serializers.SlugRelatedField(slug_field="symbol", read_only=True, allow_null=True)

    class Meta:
        model = Asset
        fields = ["id", "symbol", "name", "underlying", "decimals", "is_active"]


# --- Prices ---------------------------------------------------------------------------------------


class PriceObservationIn(StrictSerializer):
    symbol = serializers.CharField(
        max_length=20, help_text="An underlying (BTC) or a collateral asset (USDC)."
    )
    price = PositiveDecimal()
    source_time = serializers.DateTimeField(
        help_text="When the source observed the price (with a time zone)."
    )


class PriceObservationBatchIn(StrictSerializer):
    observations = PriceObservationIn(many=True, min_length=1, max_length=MAX_BATCH)


class IndexPriceOut(serializers.Serializer):
    id = serializers.IntegerField()
    symbol = serializers.CharField()
    status = serializers.CharField(help_text="ok, degraded, stale or unconfirmed.")
    price = serializers.DecimalField(max_digits=28, decimal_places=10, allow_null=True)
    last_good_price = serializers.DecimalField(max_digits=28, decimal_places=10, allow_null=True)
    sources = serializers.ListField(child=serializers.CharField())
    note = serializers.CharField()
    computed_at = serializers.DateTimeField()


class IndexPricesOut(serializers.Serializer):
    index_prices = IndexPriceOut(many=True)


class VolObservationIn(StrictSerializer):
    instrument = serializers.CharField(max_length=40, help_text="An option's symbol.")
    iv = PositiveDecimal(help_text="Annualised implied volatility (0.55 = 55 %).")
    source_time = serializers.DateTimeField()


class VolObservationBatchIn(StrictSerializer):
    observations = VolObservationIn(many=True, min_length=1, max_length=MAX_BATCH)


class VolObservationOut(serializers.Serializer):
    id = serializers.IntegerField()
    instrument = serializers.CharField(source="instrument.symbol")
    iv = serializers.DecimalField(max_digits=12, decimal_places=8)
    source_time = serializers.DateTimeField()
    received_at = serializers.DateTimeField()


class VolObservationsOut(serializers.Serializer):
    observations = VolObservationOut(many=True)


class IndexStateOut(serializers.Serializer):
    symbol = serializers.CharField()
    kind = serializers.CharField(help_text="underlying or asset.")
    status = serializers.CharField(
        help_text="ok, degraded, stale or unconfirmed; a symbol whose sources went quiet reads stale."
    )
    price = serializers.DecimalField(
        max_digits=28, decimal_places=10, allow_null=True, help_text="What the fresh sources say now."
    )
    last_good_price = serializers.DecimalField(
        max_digits=28, decimal_places=10, allow_null=True, help_text="The price margin is computed with."
    )
    last_good_at = serializers.DateTimeField(allow_null=True)
    pending_price = serializers.DecimalField(
        max_digits=28, decimal_places=10, allow_null=True, help_text="A move held by the circuit breaker."
    )
    updated_at = serializers.DateTimeField()


# --- Accounts, positions, trades, collateral ---------------------------------------------------


class AccountMarginOut(serializers.Serializer):
    """The account's latest swept margin (null until its first sweep)."""

    snapshot_id = serializers.IntegerField()
    read_at = serializers.DateTimeField()
    status = serializers.CharField(help_text="healthy, margin_call or liquidation.")
    equity = FiniteFloatField()
    initial_margin = FiniteFloatField()
    maintenance_margin = FiniteFloatField()


class BalanceOut(serializers.Serializer):
    asset = serializers.CharField(source="asset.symbol")
    amount = serializers.DecimalField(max_digits=28, decimal_places=10)


class AccountOut(serializers.ModelSerializer):
    member = serializers.SlugRelatedField(slug_field="code", read_only=True)
    balances = serializers.SerializerMethodField()
    margin = serializers.SerializerMethodField()

    class Meta:
        model = MarginAccount
        fields = ["id", "code", "name", "member", "mode", "kind", "created_at", "balances", "margin"]

    @extend_schema_field(AccountMarginOut(allow_null=True))
    def get_margin(self, account) -> dict | None:
        current = getattr(account, "margin", None)
        if current is None:
            return None
        return AccountMarginOut(current).data

    @extend_schema_field(BalanceOut(many=True))
    def get_balances(self, account) -> list[dict]:
        rows = [b for b in account.balances.all() if b.amount != 0]
        return BalanceOut(rows, many=True).data


class PositionOut(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="code", read_only=True)
    instrument = serializers.SlugRelatedField(slug_field="symbol", read_only=True)

    class Meta:
        model = Position
        fields = ["id", "account_id", "account", "instrument", "quantity", "entry_price", "realised_pnl",
                  "allocated_margin", "updated_at"]  # fmt: skip
        extra_kwargs = {
            "allocated_margin": {"help_text": "USD committed to this position (isolated accounts; else 0)."}
        }


class PositionMarginMoveIn(StrictSerializer):
    amount = NonZeroDecimal(
        help_text="USD, signed: positive moves free collateral into the position, negative moves it back."
    )


class MarginAllocationOut(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="code", read_only=True)
    instrument = serializers.CharField(source="position.instrument.symbol", read_only=True)

    class Meta:
        model = MarginAllocation
        fields = ["id", "account", "position_id", "instrument", "kind", "amount", "allocated_after",
                  "trade_id", "created_at"]  # fmt: skip


class TradeOut(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="code", read_only=True)
    instrument = serializers.SlugRelatedField(slug_field="symbol", read_only=True)
    trade_id = serializers.CharField(source="external_id", allow_null=True, read_only=True)

    class Meta:
        model = Trade
        fields = ["id", "account_id", "account", "instrument", "quantity", "price", "trade_id", "executed_at",
                  "booked_at"]  # fmt: skip


class FillIn(StrictSerializer):
    account = serializers.CharField(max_length=40, help_text="The margin account's code.")
    instrument = serializers.CharField(max_length=40, help_text="The instrument's symbol.")
    quantity = NonZeroDecimal(help_text="Signed: positive buys, negative sells.")
    price = PositiveDecimal()
    trade_id = serializers.CharField(
        max_length=100, required=False, help_text="The venue's own trade id; booked at most once."
    )
    executed_at = serializers.DateTimeField(required=False, help_text="Defaults to the booking time.")
    hedge_request = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="The hedge request this fill executes (its id, from the webhook's `hedge_request`): the "
        "platform links them and requests that hedge no more. A request takes one booking.",
    )


class FillBatchIn(StrictSerializer):
    fills = FillIn(many=True, min_length=1, max_length=MAX_BATCH)


class TradesOut(serializers.Serializer):
    trades = TradeOut(many=True)


class DepositAnnounceIn(StrictSerializer):
    asset = serializers.CharField(max_length=20, help_text="The collateral asset's symbol.")
    amount = PositiveDecimal(help_text="Units of the asset, within the asset's decimal places.")
    note = serializers.CharField(
        max_length=200, required=False, default="", allow_blank=True,
        help_text="Your own words for custody (sending wallet, bank); not a proof of payment.",
    )  # fmt: skip


class WithdrawalRequestIn(StrictSerializer):
    asset = serializers.CharField(max_length=20, help_text="The collateral asset's symbol.")
    amount = PositiveDecimal(help_text="Units of the asset, within the asset's decimal places.")
    destination = serializers.CharField(
        max_length=200, required=False, default="", allow_blank=True,
        help_text="Where custody is to send it (an address or account on file).",
    )  # fmt: skip


class CustodyCreditIn(StrictSerializer):
    account = serializers.CharField(max_length=40, help_text="The margin account's code.")
    asset = serializers.CharField(max_length=20, help_text="The collateral asset's symbol.")
    amount = PositiveDecimal(help_text="Units of the asset received.")
    reference = serializers.CharField(
        max_length=200, help_text="Transaction hash or bank reference; credits at most once per asset."
    )


class CustodyReferenceIn(StrictSerializer):
    reference = serializers.CharField(
        max_length=200, help_text="Transaction hash or bank reference of the money received or sent."
    )


class CustodyFailedIn(StrictSerializer):
    reason = serializers.CharField(max_length=500, help_text="Why custody could not send it.")


class DepositOut(serializers.Serializer):
    id = serializers.IntegerField()
    account_id = serializers.IntegerField()
    account = serializers.CharField(source="account.code")
    asset = serializers.CharField(source="asset.symbol")
    amount = serializers.DecimalField(max_digits=28, decimal_places=10)
    origin = serializers.CharField(help_text="announced (by the member) or observed (by custody).")
    state = serializers.CharField(
        help_text="pending (announced, counts for nothing), confirmed (credited) or expired."
    )
    note = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True, help_text="Unconfirmed by then, it expires.")
    reference = serializers.CharField(
        source="step.reference", allow_null=True, help_text="Custody's reference, once confirmed."
    )
    closed_at = serializers.DateTimeField(source="step.created_at", allow_null=True)
    movement_id = serializers.IntegerField(
        source="step.movement_id", allow_null=True, help_text="The ledger entry that credited it."
    )


class WithdrawalOut(serializers.Serializer):
    id = serializers.IntegerField()
    account_id = serializers.IntegerField()
    account = serializers.CharField(source="account.code")
    asset = serializers.CharField(source="asset.symbol")
    amount = serializers.DecimalField(max_digits=28, decimal_places=10)
    destination = serializers.CharField()
    state = serializers.CharField(
        help_text="requested (amount reserved), sent (by custody) or failed (reservation released)."
    )
    created_at = serializers.DateTimeField()
    reservation_id = serializers.IntegerField(help_text="The ledger entry that reserved the amount.")
    reference = serializers.CharField(
        source="step.reference", allow_null=True, help_text="Custody's reference, once sent."
    )
    reason = serializers.CharField(source="step.reason", allow_null=True, help_text="Why it failed.")
    closed_at = serializers.DateTimeField(source="step.created_at", allow_null=True)
    release_id = serializers.IntegerField(
        source="step.release_id", allow_null=True, help_text="The ledger entry that released it."
    )


class MovementOut(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="code", read_only=True)
    asset = serializers.SlugRelatedField(slug_field="symbol", read_only=True)

    class Meta:
        model = CollateralMovement
        fields = ["id", "account_id", "account", "asset", "kind", "amount", "trade_id", "reference",
                  "created_at"]  # fmt: skip


# --- Margin --------------------------------------------------------------------------------------


class WorstScenarioOut(serializers.Serializer):
    price_move = FiniteFloatField()
    vol_move = serializers.CharField()
    kind = serializers.CharField()


class ByUnderlyingOut(serializers.Serializer):
    underlying = serializers.CharField()
    scan_risk = FiniteFloatField()
    directional = FiniteFloatField()
    delta_usd = FiniteFloatField()
    gamma_usd = FiniteFloatField()
    vega_usd = FiniteFloatField()
    theta_usd = FiniteFloatField()
    worst_scenario = WorstScenarioOut()


class ComponentsOut(serializers.Serializer):
    scan_directional = FiniteFloatField()
    scan_non_directional = FiniteFloatField()
    correlation_credit = FiniteFloatField()
    basis = FiniteFloatField()
    short_option_minimum = FiniteFloatField()
    concentration = FiniteFloatField()


class PositionMarginOut(serializers.Serializer):
    instrument = serializers.CharField()
    quantity = FiniteFloatField()
    price = FiniteFloatField()
    value = FiniteFloatField()
    delta_usd = FiniteFloatField()
    initial_margin = FiniteFloatField()
    maintenance_margin = FiniteFloatField()
    allocated_margin = FiniteFloatField(help_text="Isolated mode: the position's allocation a_i; else null.")
    equity = FiniteFloatField(help_text="Isolated mode: the position's equity a_i + value; else null.")
    status = serializers.CharField(
        allow_null=True,
        help_text="Isolated mode: the position's healthy, margin_call or liquidation; else null.",
    )


class ComparisonOut(serializers.Serializer):
    isolated = FiniteFloatField()
    cross = FiniteFloatField()
    portfolio = FiniteFloatField()


class MarginResultOut(serializers.Serializer):
    """One engine result (methodology section 5), USD."""

    id = serializers.CharField()
    mode = serializers.CharField()
    status = serializers.CharField(help_text="healthy, margin_call or liquidation.")
    equity = FiniteFloatField()
    collateral_value = FiniteFloatField()
    initial_margin = FiniteFloatField()
    maintenance_margin = FiniteFloatField()
    excess = FiniteFloatField()
    margin_ratio = FiniteFloatField()
    components = ComponentsOut()
    by_underlying = ByUnderlyingOut(many=True)
    positions = PositionMarginOut(many=True)
    free_collateral = FiniteFloatField(
        help_text="Isolated mode: collateral value less every position's allocation; else null."
    )
    comparison = ComparisonOut()


class MarginDocumentIn(StrictSerializer):
    """A complete margin document (methodology section 5); the engine validates its contents."""

    valuation_time = serializers.CharField(max_length=40)
    parameters = serializers.DictField()
    market = serializers.DictField()
    portfolios = serializers.ListField(
        child=serializers.DictField(), max_length=settings.CLEARING_SIMULATE_LIMITS["portfolios"]
    )


class SimulateOut(serializers.Serializer):
    results = MarginResultOut(many=True)


class WhatIfTradeIn(StrictSerializer):
    instrument = serializers.CharField(max_length=40)
    quantity = NonZeroDecimal(help_text="Signed: positive buys, negative sells.")
    price = PositiveDecimal(required=False, help_text="Defaults to the current mark.")


class WhatIfCollateralIn(StrictSerializer):
    asset = serializers.CharField(max_length=20)
    amount = NonZeroDecimal(help_text="Signed units of the asset: positive deposits, negative withdraws.")


class WhatIfIn(StrictSerializer):
    trades = WhatIfTradeIn(many=True, required=False, max_length=MAX_WHAT_IF_TRADES)
    collateral = WhatIfCollateralIn(many=True, required=False, max_length=MAX_WHAT_IF_COLLATERAL)


class WhatIfOut(serializers.Serializer):
    before = MarginResultOut()
    after = MarginResultOut()
    document = serializers.DictField(help_text="The margin document that replays `after`.")


# --- Risk parameters -----------------------------------------------------------------------------


class ParameterSetOut(serializers.ModelSerializer):
    class Meta:
        model = ParameterSet
        fields = ["id", "version", "status", "origin", "reason", "effective_at", "activated_at", "created_at"]


class ParameterSetActiveOut(ParameterSetOut):
    parameters = serializers.SerializerMethodField()

    class Meta(ParameterSetOut.Meta):
        fields = [*ParameterSetOut.Meta.fields, "parameters"]

    @extend_schema_field({"type": "object", "description": "The methodology's `parameters` form."})
    def get_parameters(self, parameter_set) -> dict:
        return parameters_form(parameter_set=parameter_set)


# --- Sweeps: current margin, history, margin calls, liquidations ------------------------------------


class SnapshotOut(serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.FloatField: FiniteFloatField,
    }
    sweep_id = serializers.IntegerField()
    valuation_time = serializers.DateTimeField(source="sweep.valuation_time")
    parameter_set_version = serializers.CharField(source="parameter_set.version")
    status = serializers.CharField(help_text="healthy, margin_call or liquidation.")

    class Meta:
        model = MarginSnapshot
        fields = ["id", "sweep_id", "read_at", "valuation_time", "parameter_set_version", "mode", "status",
                  "equity", "collateral_value", "initial_margin", "maintenance_margin", "excess",
                  "margin_ratio"]  # fmt: skip


class MarginFiguresOut(serializers.Serializer):
    id = serializers.CharField()
    mode = serializers.CharField()
    status = serializers.CharField()
    equity = FiniteFloatField()
    collateral_value = FiniteFloatField()
    initial_margin = FiniteFloatField()
    maintenance_margin = FiniteFloatField()
    excess = FiniteFloatField()
    margin_ratio = FiniteFloatField()
    components = ComponentsOut()
    by_underlying = ByUnderlyingOut(many=True)
    comparison = ComparisonOut()


class ForesightSideOut(serializers.Serializer):
    move = FiniteFloatField(help_text="The move x of the underlying's price that liquidates (fraction).")
    price = FiniteFloatField(help_text="The liquidation price S·(1 + x), USD.")
    sigmas = FiniteFloatField(
        help_text="|ln(1 + x)| in forecast daily standard deviations; null without a volatility forecast."
    )


class ForesightUnderlyingOut(serializers.Serializer):
    underlying = serializers.CharField()
    down = ForesightSideOut(allow_null=True, help_text="null: no fall within the range liquidates.")
    up = ForesightSideOut(allow_null=True, help_text="null: no rise within the range liquidates.")


class ForesightJointSideOut(serializers.Serializer):
    move = FiniteFloatField(help_text="Every underlying moved by this fraction together liquidates.")


class ForesightJointOut(serializers.Serializer):
    down = ForesightJointSideOut(allow_null=True)
    up = ForesightJointSideOut(allow_null=True)


class ForesightProbabilityOut(serializers.Serializer):
    value = FiniteFloatField(
        help_text="Probability of liquidation within the horizon; null without a forecast."
    )
    model = serializers.CharField(help_text="The volatility forecast: ewma-0.94.")
    horizon_days = serializers.FloatField()


class ForesightLookaheadOut(serializers.Serializer):
    im = FiniteFloatField(help_text="The initial margin at the next change in sight, USD.")
    excess = FiniteFloatField(help_text="Equity less that requirement, USD.")
    reason = serializers.CharField(
        help_text="tomorrow, or parameter_set <version> (an approved set to come)."
    )


class ForesightOut(serializers.Serializer):
    level = serializers.ChoiceField(choices=["ok", "watch", "warning", "margin_call", "liquidation"])
    computed_at = serializers.DateTimeField()
    horizon_days = serializers.FloatField()
    by_underlying = ForesightUnderlyingOut(many=True)
    joint = ForesightJointOut()
    probability = ForesightProbabilityOut()
    lookahead = ForesightLookaheadOut()


class AccountMarginDetailOut(serializers.Serializer):
    snapshot = SnapshotOut()
    margin = MarginFiguresOut(help_text="The stored figures (methodology section 5 result).")
    document = serializers.DictField(help_text="The margin document the figures replay from.")
    foresight = ForesightOut(
        allow_null=True,
        help_text="Liquidation foresight (methodology section 9, docs/foresight.md): the warning level, "
        "distances and liquidation prices per underlying and for a market-wide move, the probability "
        "of liquidation within the horizon and the look-ahead requirement; as stored after the last "
        "full sweep that graded the account, else computed for this answer; null if it cannot be.",
    )


class MarginCallEventOut(serializers.ModelSerializer):
    class Meta:
        model = MarginCallEvent
        fields = ["at", "from_status", "to_status", "cause", "snapshot_id"]


class MarginCallOut(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="code", read_only=True)
    status = serializers.CharField(help_text="open, cured or escalated (to liquidation).")
    events = MarginCallEventOut(many=True, read_only=True)

    class Meta:
        model = MarginCall
        fields = ["id", "account_id", "account", "status", "amount", "deadline", "opened_at", "closed_at",
                  "events"]  # fmt: skip


class LiquidationOut(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="code", read_only=True)
    status = serializers.CharField(help_text="in_progress or done.")
    trades = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    plan = serializers.JSONField(help_text="Positions closed, in order, with the margin each released.")

    class Meta:
        model = Liquidation
        fields = ["id", "account_id", "account", "call_id", "sweep_id", "status", "started_at", "finished_at",
                  "plan", "trades", "equity_before", "initial_margin_before", "equity_after",
                  "initial_margin_after", "closed_notional", "fee", "deficit_covered"]  # fmt: skip


# --- Model validation (methodology v1.1 sections 7 and 8) --------------------------------------------


class ValidationRunOut(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField(help_text="nightly or on_demand.")
    mode = serializers.CharField(help_text="fixed (the set as it is) or calibrated (psr recalibrated daily).")
    mpor_days = serializers.IntegerField(help_text="h: losses over t → t + h calendar days.")
    parameter_set_version = serializers.CharField(source="parameter_set.version")
    valuation_time = serializers.DateTimeField(help_text="Today's market: option ivs and times to expiry.")
    start = serializers.DateField(source="first_day", help_text="First observation day t.")
    end = serializers.DateField(source="last_day", help_text="Last observation day t.")
    finished_at = serializers.DateTimeField()


class KupiecOut(serializers.Serializer):
    lr = FiniteFloatField(source="kupiec_lr")
    p_value = FiniteFloatField(source="kupiec_p_value")


class ChristoffersenOut(serializers.Serializer):
    lr_ind = FiniteFloatField()
    lr_cc = FiniteFloatField()
    p_value_cc = FiniteFloatField()


class BacktestExceptionOut(serializers.Serializer):
    day = serializers.DateField(help_text="t: the loss is over t → t + h.")
    loss = FiniteFloatField(help_text="USD; null when not finite.")
    initial_margin = FiniteFloatField(help_text="USD, at the closes of t; null when not finite.")
    underlying = serializers.CharField(
        help_text='The underlying whose part of the loss was largest, or "collateral".'
    )


class BacktestSeriesOut(serializers.Serializer):
    days = serializers.ListField(child=serializers.DateField())
    initial_margin = serializers.ListField(child=FiniteFloatField(), help_text="USD per day t.")
    loss = serializers.ListField(child=FiniteFloatField(), help_text="USD, t → t + h, per day t.")


class AccountStressOut(serializers.Serializer):
    equity = FiniteFloatField()
    worst_scenario = serializers.CharField()
    loss = FiniteFloatField(source="worst_loss")
    uncovered = FiniteFloatField(source="worst_uncovered")


class AccountBacktestOut(serializers.Serializer):
    """An account's backtest in the venue's latest completed validation run (section 7)."""

    run = ValidationRunOut()
    account = serializers.CharField()
    observations = serializers.IntegerField()
    exceptions = serializers.IntegerField()
    coverage = FiniteFloatField()
    traffic_light = serializers.CharField(help_text="green, yellow or red (Basel zones).")
    kupiec = KupiecOut()
    christoffersen = ChristoffersenOut()
    peak_to_trough = FiniteFloatField()
    exception_days = BacktestExceptionOut(many=True)
    series = BacktestSeriesOut()
    stress = AccountStressOut(allow_null=True, help_text="The account's worst stress scenario (section 8).")
