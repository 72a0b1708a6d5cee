"""API views: thin. They check roles, resolve accounts through ``margin_accounts_visible`` (another
member's account is a 404), validate input strictly and call one service or selector."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from django.http import HttpResponsePermanentRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import (
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, generics, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from accounts.custody import (
    CustodyConflict,
    deposit_announce,
    deposit_confirm,
    deposit_credit,
    withdrawal_mark_failed,
    withdrawal_mark_sent,
)
from accounts.models import (
    MEMBER_KINDS,
    Asset,
    CollateralBalance,
    CollateralMovement,
    Deposit,
    DepositState,
    MarginAccount,
    Withdrawal,
    WithdrawalState,
)
from accounts.selectors import (
    deposits_in_state,
    deposits_of_account,
    margin_account_visible,
    margin_accounts_visible,
    withdrawals_in_state,
    withdrawals_of_account,
)
from accounts.trading import Fill, trades_book
from agents.hedge import hedge_fills_book
from clearing.api import serializers as s
from clearing.api.errors import validation_error_from_django, validation_error_from_document
from clearing.api.idempotency import idempotent
from clearing.api.parsers import StrictJSONParser
from clearing.api.permissions import (
    ACCOUNT_WRITERS,
    CUSTODIAN,
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
from clearing.api.throttling import ComputeRateThrottle
from clearing.cache import ProcessLRU
from clearing.marketdata.models import IndexState
from clearing.marketdata.services import (
    PriceIn,
    VolIn,
    index_price_confirm,
    price_observations_submit,
    vol_observations_submit,
)
from clearing.models import Instrument, Position, Trade, Underlying
from riskengine.allocations import MarginMoveRefused, position_margin_move
from riskengine.core import DocumentError, DocumentLimits, NonFiniteFigures, compute_document
from riskengine.models import ParameterStatus
from riskengine.reference import quotes_current, reference_current
from riskengine.selectors import NoActiveParameterSet, parameter_set_active, parameter_sets_with_rows
from riskengine.sweeps.foresight import account_foresight
from riskengine.sweeps.models import AccountMargin, Liquidation, MarginCall, MarginCallEvent, MarginSnapshot
from riskengine.sweeps.selectors import (
    margin_account_visible_current,
    margin_account_visible_version,
    margin_snapshot_document_shared,
    margin_snapshot_figures,
)
from riskengine.validation.models import ValidationMode
from riskengine.validation.selectors import account_validation
from riskengine.whatif import margin_what_if
from riskengine.withdrawals import withdrawal_request


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "unavailable"


@csrf_exempt  # it changes nothing; a POST with a session cookie must get the JSON 404, not CSRF's page
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
        statuses = quotes_current().statuses
        page = self.paginate_queryset(self.get_queryset())
        for state in page:
            state.status = statuses.get(state.symbol, state.status)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class IndexPriceConfirm(RoleView):
    write_roles = OPS | PRICE_SOURCES

    @extend_schema(
        request=None,
        responses={201: s.IndexPriceOut},
        summary="Confirm the move the circuit breaker holds for a symbol (venue ops, or a price source "
        "that did not report the move).",
        description="A price source that reported the held move cannot confirm it: `403`, nothing changes.",
    )
    @idempotent
    def post(self, request, symbol: str):
        try:
            row = index_price_confirm(symbol=symbol, confirmed_by=request.user)
        except DjangoPermissionDenied as refusal:
            # As a DRF refusal, so that an Idempotency-Key replays it like any other decided answer.
            raise exceptions.PermissionDenied(str(refusal)) from None
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
            queryset = queryset.filter(
                account=margin_account_visible(user=self.request.user, pk=self.kwargs["pk"])
            )
        return queryset.select_related("account", "instrument").order_by("account_id", "instrument__symbol")


class MovementList(RoleListView):
    read_roles = READERS
    serializer_class = s.MovementOut

    def get_queryset(self):
        account = margin_account_visible(user=self.request.user, pk=self.kwargs["pk"])
        return (
            CollateralMovement.objects.filter(account=account)
            .select_related("account", "asset")
            .order_by("-id")
        )


_FILL_OR_BATCH = one_of("TradeBooking", s.FillIn, s.FillBatchIn)


class TradeListCreate(RoleListView):
    """``GET``: trades of the accounts the user may see. ``POST`` (the trading venue only): clear one
    fill, or a batch ``{"fills": [...]}`` atomically. Trades are accepted even when they breach
    margin; the sweep then calls for margin. A fill may name the hedge request it executes
    (``agents.hedge.hedge_fills_book``)."""

    read_roles = READERS
    write_roles = VENUE
    serializer_class = s.TradeOut

    def get_queryset(self):
        queryset = Trade.objects.filter(account__in=margin_accounts_visible(user=self.request.user))
        return queryset.select_related("account", "instrument").order_by("-id")

    @extend_schema(
        request=_FILL_OR_BATCH,
        responses={201: s.TradesOut},
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
        # liquidation engine's. A funding account is found, and refused by the booking naming it.
        accounts = MarginAccount.objects.filter(kind__in=MEMBER_KINDS).in_bulk(
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
        links = [item.get("hedge_request") for item in items]
        try:
            if any(link is not None for link in links):
                trades = hedge_fills_book(fills=fills, hedge_requests=links, booked_by=request.user)
            else:
                trades = trades_book(fills=fills, booked_by=request.user)
        except DjangoValidationError as error:
            # The service names ``fills[i].external_id``; the API calls it ``trade_id``.
            raise validation_error_from_django(
                error, rename=lambda key: name_of(key.replace("external_id", "trade_id"))
            ) from None
        for trade, fill in zip(trades, fills, strict=True):
            trade.account = fill.account  # already loaded; the serializer reads its code
        return Response({"trades": s.TradeOut(trades, many=True).data}, status=status.HTTP_201_CREATED)


class Unprocessable(exceptions.APIException):
    """422: a well-formed request the account's figures do not allow, as ``{"field": [message]}``."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "unprocessable"


class PositionMarginMove(RoleView):
    write_roles = ACCOUNT_WRITERS
    schema_errors = {
        409: "A price the account's margin depends on is not trusted now (stale, unconfirmed or below "
        "quorum), naming it; or a request with this Idempotency-Key is still being processed.",
        422: "The move is refused, naming the field: `account` not isolated, `position` not open in it, "
        "`amount` beyond the free collateral, beyond the allocation or taking the position's equity below "
        "its initial margin; or an Idempotency-Key reused for a different request.",
    }

    @extend_schema(
        request=s.PositionMarginMoveIn,
        responses={201: s.MarginAllocationOut},
        summary="Move margin between free collateral and one position of an isolated account (its member's "
        "traders).",
        description="A positive `amount` (USD) commits free collateral to the position, a negative one moves "
        "its allocation back. Decided under the account lock at the oracle's current prices, which must be "
        "trusted; the answer is the allocation ledger row written (methodology v1.1 section 4a).",
    )
    @idempotent
    def post(self, request, pk: int, position_id: int):
        account = margin_account_visible(user=request.user, pk=pk)
        data = validated(s.PositionMarginMoveIn, request)
        try:
            row = custody_call(
                position_margin_move,
                account=account,
                position_id=position_id,
                amount=data["amount"],
                moved_by=request.user,
            )
        except MarginMoveRefused as refusal:
            raise Unprocessable(validation_error_from_django(refusal).detail) from None
        return Response(s.MarginAllocationOut(row).data, status=status.HTTP_201_CREATED)


class AccountTradeList(RoleListView):
    read_roles = READERS
    serializer_class = s.TradeOut

    def get_queryset(self):
        account = margin_account_visible(user=self.request.user, pk=self.kwargs["pk"])
        return Trade.objects.filter(account=account).select_related("account", "instrument").order_by("-id")


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def custody_call(service: Callable, **kwargs):
    """Call a custody service; its ``CustodyConflict`` (already settled, expired, untrusted
    prices) is a 409 naming what stands in the way. Refusals raise: nothing was written."""
    try:
        return service(**kwargs)
    except CustodyConflict as error:
        raise Conflict(str(error)) from None


class AccountDeposits(RoleListView):
    """``GET``: the account's deposits with their state. ``POST`` (its member's traders): announce
    one. An announcement is pending and counts for nothing until custody confirms the money
    arrived; unconfirmed, it expires."""

    read_roles = READERS
    write_roles = ACCOUNT_WRITERS
    serializer_class = s.DepositOut

    def get_queryset(self):
        return deposits_of_account(
            account=margin_account_visible(user=self.request.user, pk=self.kwargs["pk"])
        )

    @extend_schema(
        request=s.DepositAnnounceIn,
        responses={201: s.DepositOut},
        summary="Announce a deposit (the account's member's traders): pending until custody confirms it.",
        description="Nothing is credited: only the custodian's confirmation, with the reference of the "
        "money received, credits the account. Venue accounts take no announcements.",
    )
    @idempotent
    def post(self, request, pk: int):
        account = margin_account_visible(user=request.user, pk=pk)
        data = validated(s.DepositAnnounceIn, request)
        deposit = deposit_announce(
            account=account,
            asset=asset_by_symbol(data["asset"], field="asset"),
            amount=data["amount"],
            announced_by=request.user,
            note=data["note"],
        )
        return Response(s.DepositOut(deposit).data, status=status.HTTP_201_CREATED)


class AccountWithdrawals(RoleListView):
    """``GET``: the account's withdrawals with their state. ``POST`` (its member's traders):
    request one; accepted requests are reserved at once and custody sends them."""

    read_roles = READERS
    write_roles = ACCOUNT_WRITERS
    serializer_class = s.WithdrawalOut

    def get_queryset(self):
        return withdrawals_of_account(
            account=margin_account_visible(user=self.request.user, pk=self.kwargs["pk"])
        )

    @extend_schema(
        request=s.WithdrawalRequestIn,
        responses={201: s.WithdrawalOut},
        summary="Request a withdrawal (the account's member's traders); reserved at once, sent by custody.",
        description="Decided under the account lock: refused (400 naming `amount`) if equity would end "
        "below initial margin, valuing each price at the worse of its last good and latest observed "
        "value; refused with 409 naming the symbol while a price the account's margin depends on is "
        "stale, unconfirmed or below quorum. Two concurrent requests never together breach the margin. "
        "Venue accounts take no requests.",
    )
    @idempotent
    def post(self, request, pk: int):
        account = margin_account_visible(user=request.user, pk=pk)
        data = validated(s.WithdrawalRequestIn, request)
        withdrawal = custody_call(
            withdrawal_request,
            account=account,
            asset=asset_by_symbol(data["asset"], field="asset"),
            amount=data["amount"],
            requested_by=request.user,
            destination=data["destination"],
        )
        return Response(s.WithdrawalOut(withdrawal).data, status=status.HTTP_201_CREATED)


# --- Custody (the custodian's system user) -------------------------------------------------------

CUSTODY_DEPOSIT_STATE = OpenApiParameter(
    "state",
    str,
    OpenApiParameter.QUERY,
    required=False,
    enum=[*DepositState.values, "all"],
    description="Which deposits (default pending: announced, waiting for custody).",
)
CUSTODY_WITHDRAWAL_STATE = OpenApiParameter(
    "state",
    str,
    OpenApiParameter.QUERY,
    required=False,
    enum=[*WithdrawalState.values, "all"],
    description="Which withdrawals (default requested: reserved, waiting for custody).",
)


def state_param(request, choices: list[str], default: str) -> str | None:
    state = request.query_params.get("state", default)
    if state not in (*choices, "all"):
        raise exceptions.ValidationError({"state": [f"One of {', '.join([*choices, 'all'])}."]})
    return None if state == "all" else state


def step_response(serializer, row, created: bool) -> Response:
    # A step taken again with the same reference answers 200 with the request as it stands.
    return Response(serializer(row).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@extend_schema_view(get=extend_schema(parameters=[CUSTODY_DEPOSIT_STATE]))
class CustodyDeposits(RoleListView):
    """``GET``: deposits of every account (pending by default, oldest first). ``POST``: credit money
    custody saw arrive without an announcement."""

    read_roles = write_roles = CUSTODIAN
    serializer_class = s.DepositOut

    def get_queryset(self):
        return deposits_in_state(state=state_param(self.request, DepositState.values, DepositState.PENDING))

    @extend_schema(
        request=s.CustodyCreditIn,
        responses={201: s.DepositOut},
        summary="Credit a deposit custody observed (the custodian only); a reference credits once per asset.",
    )
    @idempotent
    def post(self, request):
        data = validated(s.CustodyCreditIn, request)
        account = MarginAccount.objects.filter(code=data["account"]).first()
        if account is None:
            raise exceptions.ValidationError({"account": [f"Unknown account {data['account']!r}."]})
        deposit = deposit_credit(
            account=account,
            asset=asset_by_symbol(data["asset"], field="asset"),
            amount=data["amount"],
            custodian=request.user,
            reference=data["reference"],
        )
        return Response(s.DepositOut(deposit).data, status=status.HTTP_201_CREATED)


class CustodyDepositConfirm(RoleView):
    write_roles = CUSTODIAN

    @extend_schema(
        request=s.CustodyReferenceIn,
        responses={201: s.DepositOut, 200: s.DepositOut},
        summary="Confirm an announced deposit with the reference of the money received (the custodian only).",
        description="Credits the account. The same reference again answers 200 and credits nothing; an "
        "expired or otherwise settled deposit is refused with 409.",
    )
    @idempotent
    def post(self, request, pk: int):
        deposit = get_object_or_404(Deposit, pk=pk)
        data = validated(s.CustodyReferenceIn, request)
        step, created = custody_call(
            deposit_confirm, deposit=deposit, custodian=request.user, reference=data["reference"]
        )
        return step_response(s.DepositOut, deposits_in_state(state=None).get(pk=step.deposit_id), created)


@extend_schema_view(get=extend_schema(parameters=[CUSTODY_WITHDRAWAL_STATE]))
class CustodyWithdrawals(RoleListView):
    """Withdrawals of every account (requested by default, oldest first): what custody must send."""

    read_roles = CUSTODIAN
    serializer_class = s.WithdrawalOut

    def get_queryset(self):
        return withdrawals_in_state(
            state=state_param(self.request, WithdrawalState.values, WithdrawalState.REQUESTED)
        )


class CustodyWithdrawalSent(RoleView):
    write_roles = CUSTODIAN

    @extend_schema(
        request=s.CustodyReferenceIn,
        responses={201: s.WithdrawalOut, 200: s.WithdrawalOut},
        summary="Mark a requested withdrawal sent, with its reference (the custodian only).",
        description="The same reference again answers 200; a withdrawal already failed is refused with 409.",
    )
    @idempotent
    def post(self, request, pk: int):
        withdrawal = get_object_or_404(Withdrawal, pk=pk)
        data = validated(s.CustodyReferenceIn, request)
        step, created = custody_call(
            withdrawal_mark_sent, withdrawal=withdrawal, custodian=request.user, reference=data["reference"]
        )
        return step_response(
            s.WithdrawalOut, withdrawals_in_state(state=None).get(pk=step.withdrawal_id), created
        )


class CustodyWithdrawalFailed(RoleView):
    write_roles = CUSTODIAN

    @extend_schema(
        request=s.CustodyFailedIn,
        responses={201: s.WithdrawalOut, 200: s.WithdrawalOut},
        summary="Mark a requested withdrawal failed (the custodian only): its reservation is released.",
        description="The same reason again answers 200; a withdrawal already sent is refused with 409.",
    )
    @idempotent
    def post(self, request, pk: int):
        withdrawal = get_object_or_404(Withdrawal, pk=pk)
        data = validated(s.CustodyFailedIn, request)
        step, created = custody_call(
            withdrawal_mark_failed, withdrawal=withdrawal, custodian=request.user, reason=data["reason"]
        )
        return step_response(
            s.WithdrawalOut, withdrawals_in_state(state=None).get(pk=step.withdrawal_id), created
        )


# --- Margin --------------------------------------------------------------------------------------


# The engine-running endpoints: the general per-user budget and a lower compute budget.
COMPUTE_THROTTLES = [*api_settings.DEFAULT_THROTTLE_CLASSES, ComputeRateThrottle]


class AccountWhatIf(RoleView):
    """Computes, writes nothing: ``Idempotency-Key`` is not needed (the request is safe to repeat)."""

    write_roles = WHAT_IF_USERS
    throttle_classes = COMPUTE_THROTTLES
    schema_errors = {503: "No risk parameter set is active: nothing to compute the margin with."}

    @extend_schema(
        request=s.WhatIfIn,
        responses={200: s.WhatIfOut},
        summary="The account's margin before and after hypothetical trades and collateral changes.",
        description="400 names the offending field; 422 names the book (`after`, `before`) whose "
        "figures would not be finite, and the figures.",
    )
    def post(self, request, pk: int):
        account = margin_account_visible(user=request.user, pk=pk)
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
    throttle_classes = COMPUTE_THROTTLES

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


# The current-margin answers of this process by version (``margin_account_visible_version``): an
# answer is built once per version (the wide read of the account's margin, snapshot, sweep, set and
# foresight, the figures and the foresight's shaping) however often clients poll it, and each
# request reads only the narrow version. The version is read first on every request, so a newer
# sweep or foresight is served at once; an answer read after it is at least as new.
CURRENT_MARGIN_ANSWERS = 1024
_current_margin_answers = ProcessLRU(CURRENT_MARGIN_ANSWERS)


class AccountMarginCurrent(RoleView):
    read_roles = READERS
    schema_errors = {404: "No such account for the caller, or it has not been margined by a sweep yet."}

    @extend_schema(
        responses={200: s.AccountMarginDetailOut},
        summary="The account's latest margin snapshot, its figures and the document it replays from.",
    )
    def get(self, request, pk: int):
        version = margin_account_visible_version(user=request.user, pk=pk)
        _, _, snapshot_id, *_ = version
        if snapshot_id is None:
            raise exceptions.NotFound("This account has not been margined by a sweep yet.")
        answer = _current_margin_answers.get_or_build(version, lambda: self._answer(request, pk))
        return Response(answer)

    @staticmethod
    def _answer(request, pk: int) -> dict:
        # One query: the account (if visible), its current margin and its stored foresight.
        account = margin_account_visible_current(user=request.user, pk=pk)
        try:
            snapshot = account.margin.snapshot
        except AccountMargin.DoesNotExist:
            raise exceptions.NotFound("This account has not been margined by a sweep yet.") from None
        foresight = account_foresight(account=account)
        return {
            "snapshot": s.output_data(s.SnapshotOut, snapshot),
            "margin": s.output_data(s.MarginFiguresOut, margin_snapshot_figures(snapshot=snapshot)),
            "document": margin_snapshot_document_shared(snapshot=snapshot),
            "foresight": None if foresight is None else s.output_data(s.ForesightOut, foresight),
        }


class AccountMarginHistory(RoleListView):
    """The account's margin snapshots, newest first."""

    read_roles = READERS
    serializer_class = s.SnapshotOut

    def get_queryset(self):
        account = margin_account_visible(user=self.request.user, pk=self.kwargs["pk"])
        return (
            MarginSnapshot.objects.filter(account=account)
            .select_related("sweep", "parameter_set")
            .defer("by_underlying", "positions", "collateral", "sweep__market")
            .order_by("-read_at", "-id")
        )


BACKTEST_MODE = OpenApiParameter(
    "mode",
    str,
    OpenApiParameter.QUERY,
    required=False,
    enum=ValidationMode.values,
    description="fixed (default): the set as it is; calibrated: psr recalibrated every day.",
)


class AccountBacktestView(RoleView):
    """The account's backtest (methodology section 7) in the venue's latest completed nightly or
    on-demand validation run of the active set: coverage, exceptions with the underlying that
    caused each, the IM and two-day loss series, and its worst stress scenario (section 8)."""

    read_roles = READERS
    schema_errors = {
        400: "A mode other than fixed or calibrated.",
        404: "No such account for the caller, no completed validation run yet, or the account held no "
        "position in it (nothing to backtest).",
    }

    @extend_schema(
        parameters=[BACKTEST_MODE],
        responses={200: s.AccountBacktestOut},
        summary="The account's backtest: coverage, exceptions and the IM against loss series.",
    )
    def get(self, request, pk: int):
        account = margin_account_visible(user=request.user, pk=pk)
        mode = request.query_params.get("mode", ValidationMode.FIXED)
        if mode not in ValidationMode.values:
            raise exceptions.ValidationError({"mode": [f"One of {', '.join(ValidationMode.values)}."]})
        found = account_validation(account=account, mode=mode)
        if found is None:
            raise exceptions.NotFound("No completed validation run of the active set yet.")
        if found.backtest is None:
            raise exceptions.NotFound(
                f"{account.code} held no position in validation run {found.run.pk}: nothing was backtested."
            )
        row = found.backtest
        data = {
            "run": found.run,
            "account": account.code,
            "observations": row.observations,
            "exceptions": row.exceptions,
            "coverage": row.coverage,
            "traffic_light": row.light,
            "kupiec": row,
            "christoffersen": row,
            "peak_to_trough": row.peak_to_trough,
            "exception_days": row.exception_days,
            "series": {
                "days": [day.date() for day in found.days],
                "initial_margin": found.initial_margin,
                "loss": found.loss,
            },
            "stress": found.stress,
        }
        return Response(s.AccountBacktestOut(data).data)


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
    schema_errors = {404: "No risk parameter set is active."}

    @extend_schema(responses={200: s.ParameterSetActiveOut}, summary="The active risk parameter set.")
    def get(self, request):
        try:
            parameter_set = parameter_set_active()
        except NoActiveParameterSet as error:
            raise exceptions.NotFound(str(error)) from None
        return Response(s.ParameterSetActiveOut(parameter_set).data)
