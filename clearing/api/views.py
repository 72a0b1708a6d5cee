"""API views: thin. They check roles, resolve accounts through ``margin_accounts_visible`` (another
member's account is a 404), validate input strictly and call one service or selector."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from django.http import HttpResponsePermanentRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import Resolver404, resolve
from drf_spectacular.utils import (
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Asset, CollateralBalance, CollateralMovement, MarginAccount
from accounts.selectors import margin_accounts_visible
from accounts.services import collateral_deposit
from clearing.api import serializers as s
from clearing.api.errors import validation_error_from_django, validation_error_from_document
from clearing.api.idempotency import idempotent
from clearing.api.parsers import StrictJSONParser
from clearing.api.permissions import (
    ACCOUNT_WRITERS,
    OPS,
    PRICE_SOURCES,
    READERS,
    REFERENCE_READERS,
    STAFF,
    VENUE,
    WHAT_IF_USERS,
    RolePermission,
    user_role,
)
from clearing.marketdata.models import IndexState
from clearing.marketdata.selectors import market_quotes_current
from clearing.marketdata.services import (
    PriceIn,
    VolIn,
    index_price_confirm,
    price_observations_submit,
    vol_observations_submit,
)
from clearing.models import Instrument, Position, Trade, Underlying
from clearing.services import Fill, trades_book
from riskengine.core import DocumentError, DocumentLimits, NonFiniteFigures, compute_document
from riskengine.models import ParameterStatus
from riskengine.reference import reference_current
from riskengine.selectors import NoActiveParameterSet, parameter_set_active, parameter_sets_with_rows
from riskengine.sweeps.models import AccountMargin, Liquidation, MarginCall, MarginCallEvent, MarginSnapshot
from riskengine.sweeps.selectors import margin_snapshot_document, margin_snapshot_figures
from riskengine.whatif import margin_what_if
from riskengine.withdrawals import collateral_withdraw_checked

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Makes the request safe to retry: a replay returns the stored response; the same key "
    "with a different body is refused (422); while the first request runs, a duplicate gets 409.",
)


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "unavailable"


def api_not_found(request, *args, **kwargs):
    """A JSON 404 for an ``/api/`` path no route matches (the site's HTML 404 page is for browsers).
    A GET or HEAD of a route without its trailing slash is redirected to it, as ``APPEND_SLASH``
    does elsewhere; any other method gets the 404 naming the route it probably meant."""
    detail = f"No API route {request.path!r}: see /api/docs/."
    if not request.path.endswith("/"):
        with_slash = f"{request.path}/"
        try:
            match = resolve(with_slash)
        except Resolver404:
            match = None
        if match is not None and match.url_name != "not-found":
            if settings.APPEND_SLASH and request.method in ("GET", "HEAD"):
                query = request.META.get("QUERY_STRING", "")
                return HttpResponsePermanentRedirect(with_slash + (f"?{query}" if query else ""))
            detail = f"No API route {request.path!r}; did you mean {with_slash!r}?"
    return JsonResponse({"detail": detail}, status=status.HTTP_404_NOT_FOUND)


def validated(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def account_visible(request, pk: int) -> MarginAccount:
    """The account ``pk`` if the user may see it; 404 otherwise (whether or not it exists).
    Without its member joined: the views acting on one account do not need it."""
    return get_object_or_404(margin_accounts_visible(user=request.user).select_related(None), pk=pk)


def reference_lookup(cached: Mapping, symbols: set[str], queryset) -> dict:
    """Rows by symbol from the reference cache, reading only symbols it does not know."""
    found = {symbol: cached[symbol] for symbol in symbols if symbol in cached}
    missing = symbols - found.keys()
    if missing:
        found.update(queryset.in_bulk(missing, field_name="symbol"))
    return found


def asset_by_symbol(symbol: str, *, field: str) -> Asset:
    asset = Asset.objects.filter(symbol=symbol).first()
    if asset is None:
        raise exceptions.ValidationError({field: [f"Unknown asset {symbol!r}."]})
    return asset


class RoleView(APIView):
    permission_classes = [RolePermission]
    parser_classes = [StrictJSONParser]
    read_roles: frozenset = frozenset()
    write_roles: frozenset = frozenset()


class RoleListView(generics.ListAPIView):
    permission_classes = [RolePermission]
    parser_classes = [StrictJSONParser]
    read_roles: frozenset = frozenset()
    write_roles: frozenset = frozenset()


# --- Reference data ------------------------------------------------------------------------------


class UnderlyingList(RoleListView):
    read_roles = REFERENCE_READERS
    serializer_class = s.UnderlyingOut
    queryset = Underlying.objects.order_by("symbol")


class InstrumentList(RoleListView):
    read_roles = REFERENCE_READERS
    serializer_class = s.InstrumentOut
    queryset = Instrument.objects.select_related("underlying").order_by("symbol")


class AssetList(RoleListView):
    read_roles = REFERENCE_READERS
    serializer_class = s.AssetOut
    queryset = Asset.objects.select_related("underlying").order_by("symbol")


# --- Prices ---------------------------------------------------------------------------------------


def one_of(component_name: str, *serializers) -> PolymorphicProxySerializer:
    """A schema that is exactly one of ``serializers`` (told apart by their fields)."""
    return PolymorphicProxySerializer(
        component_name=component_name, serializers=list(serializers), resource_type_field_name=None
    )


_PRICE_OR_BATCH = one_of("PriceObservationSubmission", s.PriceObservationIn, s.PriceObservationBatchIn)
_INDEX_PRICE_OR_BATCH = one_of("PriceObservationResult", s.IndexPriceOut, s.IndexPricesOut)
_VOL_OR_BATCH = one_of("VolObservationSubmission", s.VolObservationIn, s.VolObservationBatchIn)
_VOL_RESULT_OR_BATCH = one_of("VolObservationResult", s.VolObservationOut, s.VolObservationsOut)


class ObservationsCreate(RoleView):
    """A price source's body: one observation or ``{"observations": [...]}`` (up to 1,000). Each
    validated item becomes an ``item_class`` from the user and its fields, and all go to
    ``submit(observations=...)`` in one transaction, all or nothing; one result is answered as
    ``serializer_out``, a batch's as ``{batch_key: [...]}``."""

    write_roles = PRICE_SOURCES
    serializer_one: type
    serializer_batch: type
    item_class: type
    submit: Callable
    serializer_out: type
    batch_key: str

    @idempotent
    def post(self, request):
        batch = isinstance(request.data, Mapping) and "observations" in request.data
        data = validated(self.serializer_batch if batch else self.serializer_one, request)
        items = data["observations"] if batch else [data]

        def field(name: str) -> str:
            # The services name the fields of a lone item without an index.
            if batch and len(items) == 1 and not name.startswith("observations["):
                return f"observations[0].{name}"
            return name

        try:
            rows = self.submit(
                observations=[self.item_class(source_user=request.user, **one) for one in items]
            )
        except DjangoValidationError as error:
            raise validation_error_from_django(error, rename=field) from None
        out = self.serializer_out
        answer = {self.batch_key: out(rows, many=True).data} if batch else out(rows[0]).data
        return Response(answer, status=status.HTTP_201_CREATED)


@extend_schema_view(
    post=extend_schema(
        request=_PRICE_OR_BATCH,
        responses={201: _INDEX_PRICE_OR_BATCH},
        parameters=[IDEMPOTENCY_KEY],
        summary="Submit price observations, one or a batch (price sources only); returns the index prices.",
    )
)
class PriceObservationCreate(ObservationsCreate):
    """One observation, answered with its symbol's new index price; or a batch, stored and
    aggregated in order, answered with one index price per observation. Feeds that need
    throughput batch: one request per observation is bound by its round trips and commit."""

    serializer_one, serializer_batch = s.PriceObservationIn, s.PriceObservationBatchIn
    item_class, submit = PriceIn, staticmethod(price_observations_submit)
    serializer_out, batch_key = s.IndexPriceOut, "index_prices"


@extend_schema_view(
    post=extend_schema(
        request=_VOL_OR_BATCH,
        responses={201: _VOL_RESULT_OR_BATCH},
        parameters=[IDEMPOTENCY_KEY],
        summary="Submit options' mark implied volatilities, one or a batch (price sources only).",
    )
)
class VolObservationCreate(ObservationsCreate):
    """One option's mark implied volatility, or a batch (the latest source time becomes the mark)."""

    serializer_one, serializer_batch = s.VolObservationIn, s.VolObservationBatchIn
    item_class, submit = VolIn, staticmethod(vol_observations_submit)
    serializer_out, batch_key = s.VolObservationOut, "observations"


class IndexPriceList(RoleListView):
    """Each symbol's index price with its status (``stale`` once its sources went quiet)."""

    read_roles = REFERENCE_READERS
    serializer_class = s.IndexStateOut
    queryset = IndexState.objects.order_by("symbol")

    def list(self, request, *args, **kwargs):
        statuses = market_quotes_current().statuses
        page = self.paginate_queryset(self.get_queryset())
        for state in page:
            state.status = statuses.get(state.symbol, state.status)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class IndexPriceConfirm(RoleView):
    write_roles = OPS

    @extend_schema(
        request=None,
        responses={201: s.IndexPriceOut},
        parameters=[IDEMPOTENCY_KEY],
        summary="Confirm the move the circuit breaker holds for a symbol (venue ops only).",
    )
    @idempotent
    def post(self, request, symbol: str):
        row = index_price_confirm(symbol=symbol, confirmed_by=request.user)
        return Response(s.IndexPriceOut(row).data, status=status.HTTP_201_CREATED)


# --- Accounts ------------------------------------------------------------------------------------


def accounts_visible_with_balances(request):
    balances = CollateralBalance.objects.select_related("asset").order_by("asset__symbol")
    return (
        margin_accounts_visible(user=request.user)
        .select_related("margin")
        .prefetch_related(Prefetch("balances", queryset=balances))
        .order_by("pk")
    )


class AccountList(RoleListView):
    read_roles = READERS
    serializer_class = s.AccountOut

    def get_queryset(self):
        return accounts_visible_with_balances(self.request)


class AccountDetail(generics.RetrieveAPIView):
    permission_classes = [RolePermission]
    read_roles = READERS
    serializer_class = s.AccountOut

    def get_queryset(self):
        return accounts_visible_with_balances(self.request)


class PositionList(RoleListView):
    """Positions of every account the user may see (``/accounts/{id}/positions/`` for one)."""

    read_roles = READERS
    serializer_class = s.PositionOut

    def get_queryset(self):
        queryset = Position.objects.filter(account__in=margin_accounts_visible(user=self.request.user))
        if "pk" in self.kwargs:
            queryset = queryset.filter(account=account_visible(self.request, self.kwargs["pk"]))
        return queryset.select_related("account", "instrument").order_by("account_id", "instrument__symbol")


class MovementList(RoleListView):
    read_roles = READERS
    serializer_class = s.MovementOut

    def get_queryset(self):
        account = account_visible(self.request, self.kwargs["pk"])
        return (
            CollateralMovement.objects.filter(account=account)
            .select_related("account", "asset")
            .order_by("-id")
        )


_FILL_OR_BATCH = one_of("TradeBooking", s.FillIn, s.FillBatchIn)


class TradeListCreate(RoleListView):
    """``GET``: trades of the accounts the user may see. ``POST`` (the trading venue only): clear one
    fill, or a batch ``{"fills": [...]}`` atomically. Trades are accepted even when they breach
    margin; the sweep then calls for margin."""

    read_roles = READERS
    write_roles = VENUE
    serializer_class = s.TradeOut

    def get_queryset(self):
        queryset = Trade.objects.filter(account__in=margin_accounts_visible(user=self.request.user))
        return queryset.select_related("account", "instrument").order_by("-id")

    @extend_schema(
        request=_FILL_OR_BATCH,
        responses={201: s.TradesOut},
        parameters=[IDEMPOTENCY_KEY],
        summary="Book one fill or a batch of fills (the trading venue only), all or nothing.",
    )
    @idempotent
    def post(self, request, *args, **kwargs):
        batch = isinstance(request.data, Mapping) and "fills" in request.data
        data = validated(s.FillBatchIn if batch else s.FillIn, request)
        items = data["fills"] if batch else [data]

        def name(index: int, field: str) -> str:
            return f"fills[{index}].{field}" if batch else field

        def name_of(key: str) -> str:
            return key if batch else key.removeprefix("fills[0].")

        # The venue books into member accounts only: the house and the insurance fund are the
        # liquidation engine's.
        accounts = MarginAccount.objects.filter(kind="member").in_bulk(
            {item["account"] for item in items}, field_name="code"
        )
        for index, item in enumerate(items):
            if item["account"] not in accounts:
                raise exceptions.ValidationError(
                    {name(index, "account"): [f"Unknown account {item['account']!r}."]}
                )
        fills = [
            Fill(
                account=accounts[item["account"]],
                instrument=item["instrument"],
                quantity=item["quantity"],
                price=item["price"],
                external_id=item.get("trade_id"),
                executed_at=item.get("executed_at"),
            )
            for item in items
        ]
        try:
            trades = trades_book(fills=fills, booked_by=request.user)
        except DjangoValidationError as error:
            # The service names ``fills[i].external_id``; the API calls it ``trade_id``.
            raise validation_error_from_django(
                error, rename=lambda key: name_of(key.replace("external_id", "trade_id"))
            ) from None
        for trade, fill in zip(trades, fills, strict=True):
            trade.account = fill.account  # already loaded; the serializer reads its code
        return Response({"trades": s.TradeOut(trades, many=True).data}, status=status.HTTP_201_CREATED)


class AccountTradeList(RoleListView):
    read_roles = READERS
    serializer_class = s.TradeOut

    def get_queryset(self):
        account = account_visible(self.request, self.kwargs["pk"])
        return Trade.objects.filter(account=account).select_related("account", "instrument").order_by("-id")


class AccountDeposit(RoleView):
    write_roles = ACCOUNT_WRITERS

    @extend_schema(
        request=s.CollateralIn,
        responses={201: s.MovementOut},
        parameters=[IDEMPOTENCY_KEY],
        summary="Deposit collateral into an account (its member's traders, or venue ops).",
    )
    @idempotent
    def post(self, request, pk: int):
        account = account_visible(request, pk)
        data = validated(s.CollateralIn, request)
        movement = collateral_deposit(
            account=account,
            asset=asset_by_symbol(data["asset"], field="asset"),
            amount=data["amount"],
            created_by=request.user,
            reference=data["reference"],
        )
        return Response(s.MovementOut(movement).data, status=status.HTTP_201_CREATED)


class AccountWithdrawal(RoleView):
    write_roles = ACCOUNT_WRITERS

    @extend_schema(
        request=s.CollateralIn,
        responses={201: s.MovementOut},
        parameters=[IDEMPOTENCY_KEY],
        summary="Withdraw collateral; refused (naming `amount`) if equity would end below initial margin.",
        description="Decided under the account lock: two concurrent withdrawals never together breach it.",
    )
    @idempotent
    def post(self, request, pk: int):
        account = account_visible(request, pk)
        data = validated(s.CollateralIn, request)
        movement = collateral_withdraw_checked(
            account=account,
            asset=asset_by_symbol(data["asset"], field="asset"),
            amount=data["amount"],
            created_by=request.user,
            reference=data["reference"],
        )
        return Response(s.MovementOut(movement).data, status=status.HTTP_201_CREATED)


# --- Margin --------------------------------------------------------------------------------------


class AccountWhatIf(RoleView):
    """Computes, writes nothing: ``Idempotency-Key`` is not needed (the request is safe to repeat)."""

    write_roles = WHAT_IF_USERS

    @extend_schema(
        request=s.WhatIfIn,
        responses={200: s.WhatIfOut},
        summary="The account's margin before and after hypothetical trades and collateral changes.",
        description="400 names the offending field; 422 names the book (`after`, `before`) whose "
        "figures would not be finite, and the figures.",
    )
    def post(self, request, pk: int):
        account = account_visible(request, pk)
        data = validated(s.WhatIfIn, request)
        trades_in, collateral_in = data.get("trades", []), data.get("collateral", [])
        try:
            # The active set, instruments and assets, cached per process (one probe query).
            reference = reference_current()
        except NoActiveParameterSet:
            reference = None  # bad input is still reported first; the what-if then answers 503
        except DocumentError as error:
            # The venue's active set fails today's validation (activated before it): not the
            # caller's fault, and nothing can be margined with it.
            raise ServiceUnavailable(f"The active risk parameter set cannot be used: {error}") from None
        instruments = reference_lookup(
            reference.instruments_by_symbol if reference else {},
            {t["instrument"] for t in trades_in},
            Instrument.objects.select_related("underlying"),
        )
        assets = reference_lookup(
            reference.assets_by_symbol if reference else {},
            {c["asset"] for c in collateral_in},
            Asset.objects,
        )
        errors = {}
        for index, trade in enumerate(trades_in):
            if trade["instrument"] not in instruments:
                errors[f"trades[{index}].instrument"] = [f"Unknown instrument {trade['instrument']!r}."]
        for index, change in enumerate(collateral_in):
            if change["asset"] not in assets:
                errors[f"collateral[{index}].asset"] = [f"Unknown asset {change['asset']!r}."]
        if errors:
            raise exceptions.ValidationError(errors)
        try:
            result = margin_what_if(
                account=account,
                trades=[(instruments[t["instrument"]], t["quantity"], t.get("price")) for t in trades_in],
                collateral=[(assets[c["asset"]], c["amount"]) for c in collateral_in],
                reference=reference,
            )
        except NoActiveParameterSet as error:
            raise ServiceUnavailable(str(error)) from None
        except NonFiniteFigures as error:
            raise validation_error_from_document(error) from None  # 422 naming the book and figures
        except DocumentError as error:
            raise validation_error_from_document(error, prefix="document.") from None
        return Response({"before": result.before, "after": result.after, "document": result.document})


def simulate_limits() -> DocumentLimits:
    """The size bounds of a simulated document (``CLEARING_SIMULATE_LIMITS``)."""
    return DocumentLimits(**settings.CLEARING_SIMULATE_LIMITS)


class MarginSimulate(RoleView):
    """Computes, writes nothing. The document is bounded (``CLEARING_SIMULATE_LIMITS``: portfolios,
    positions, instruments, underlyings, assets, brackets, extreme moves; ``price_steps`` ≤ 50 by
    the methodology), so one request's work is too; a larger one is a 400 naming the field."""

    write_roles = READERS

    @extend_schema(
        request=s.MarginDocumentIn,
        responses={200: s.SimulateOut},
        summary="Run the margin engine on a complete margin document (methodology section 5).",
        description="400 names the offending field (a malformed document, or one over the size limits); "
        "422 names the portfolio whose figures would not be finite; no partial result.",
    )
    def post(self, request):
        validated(s.MarginDocumentIn, request)
        try:
            results = compute_document(request.data, limits=simulate_limits())
        except DocumentError as error:
            # 400 naming the field; 422 naming the portfolio whose figures would not be finite.
            raise validation_error_from_document(error) from None
        return Response({"results": results})


class AccountMarginCurrent(RoleView):
    read_roles = READERS

    @extend_schema(
        responses={200: s.AccountMarginDetailOut},
        summary="The account's latest margin snapshot, its figures and the document it replays from.",
    )
    def get(self, request, pk: int):
        account = account_visible(request, pk)
        current = (
            AccountMargin.objects.filter(account=account)
            .select_related("snapshot__sweep", "snapshot__parameter_set", "snapshot__account")
            .first()
        )
        if current is None:
            raise exceptions.NotFound("This account has not been margined by a sweep yet.")
        snapshot = current.snapshot
        return Response(
            {
                "snapshot": s.SnapshotOut(snapshot).data,
                "margin": s.MarginFiguresOut(margin_snapshot_figures(snapshot=snapshot)).data,
                "document": margin_snapshot_document(snapshot=snapshot),
            }
        )


class AccountMarginHistory(RoleListView):
    """The account's margin snapshots, newest first."""

    read_roles = READERS
    serializer_class = s.SnapshotOut

    def get_queryset(self):
        account = account_visible(self.request, self.kwargs["pk"])
        return (
            MarginSnapshot.objects.filter(account=account)
            .select_related("sweep", "parameter_set")
            .defer("by_underlying", "positions", "collateral", "sweep__market")
            .order_by("-read_at", "-id")
        )


class MarginCallViews:
    read_roles = READERS
    serializer_class = s.MarginCallOut
    permission_classes = [RolePermission]

    def get_queryset(self):
        events = MarginCallEvent.objects.order_by("id")
        return (
            MarginCall.objects.filter(account__in=margin_accounts_visible(user=self.request.user))
            .select_related("account")
            .prefetch_related(Prefetch("events", queryset=events))
            .order_by("-id")
        )


class MarginCallList(MarginCallViews, generics.ListAPIView):
    pass


class MarginCallDetail(MarginCallViews, generics.RetrieveAPIView):
    pass


class LiquidationViews:
    read_roles = READERS
    serializer_class = s.LiquidationOut
    permission_classes = [RolePermission]

    def get_queryset(self):
        return (
            Liquidation.objects.filter(account__in=margin_accounts_visible(user=self.request.user))
            .select_related("account")
            .prefetch_related("trades")
            .order_by("-id")
        )


class LiquidationList(LiquidationViews, generics.ListAPIView):
    pass


class LiquidationDetail(LiquidationViews, generics.RetrieveAPIView):
    pass


# --- Risk parameters -----------------------------------------------------------------------------


def parameter_sets_visible(request):
    """Members see the published sets (approved, active, superseded); staff see every set."""
    queryset = parameter_sets_with_rows().order_by("-created_at", "-id")
    if user_role(request.user) in STAFF:
        return queryset
    return queryset.filter(
        status__in=[ParameterStatus.APPROVED, ParameterStatus.ACTIVE, ParameterStatus.SUPERSEDED]
    )


class ParameterSetList(RoleListView):
    read_roles = READERS
    serializer_class = s.ParameterSetOut

    def get_queryset(self):
        return parameter_sets_visible(self.request)


class ParameterSetDetail(generics.RetrieveAPIView):
    permission_classes = [RolePermission]
    read_roles = READERS
    serializer_class = s.ParameterSetActiveOut

    def get_queryset(self):
        return parameter_sets_visible(self.request)


class ParameterSetActive(RoleView):
    read_roles = READERS

    @extend_schema(responses={200: s.ParameterSetActiveOut}, summary="The active risk parameter set.")
    def get(self, request):
        try:
            parameter_set = parameter_set_active()
        except NoActiveParameterSet as error:
            raise exceptions.NotFound(str(error)) from None
        return Response(s.ParameterSetActiveOut(parameter_set).data)
