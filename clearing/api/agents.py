"""The agents over the API (``docs/agents.md``): an account's band policy, its hedge policies,
the hedges they proposed or requested and the transfers they made; a member's webhook endpoints
and every delivery attempt. Members' traders change them; viewers and venue readers read them;
another member's account or endpoint answers 404. Thin: each view calls one service or selector.

Creating an endpoint is the one state-changing ``POST`` that takes no ``Idempotency-Key``: its
answer carries the signing secret, shown once, and a stored answer to replay would keep that
secret in the database in clear. Creating it twice makes two endpoints; switch one off.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response

from accounts.models import AccountKind, MarginAccount
from accounts.selectors import margin_account_visible
from agents.models import (
    AutoTransfer,
    HedgeMode,
    HedgePolicy,
    HedgeRequest,
    WebhookAttempt,
    WebhookEndpoint,
)
from agents.selectors import (
    auto_transfers_of,
    band_policy_of,
    hedge_policies_of,
    hedge_requests_of,
    webhook_attempts_of,
    webhook_endpoints_visible,
)
from agents.services import (
    MAX_INTERVAL_SECONDS,
    band_policy_set,
    band_policy_switch_off,
    hedge_policy_change,
    hedge_policy_create,
    hedge_policy_switch_off,
    webhook_endpoint_create,
    webhook_endpoint_deactivate,
)
from clearing.api.errors import validation_error_from_django
from clearing.api.idempotency import idempotent
from clearing.api.permissions import ACCOUNT_WRITERS, READERS
from clearing.api.serializers import ExactDecimal, PositiveDecimal, StrictSerializer
from clearing.api.views import RoleListView, RoleView

# --- Shapes ----------------------------------------------------------------------------------------


class PolicyStateFields(serializers.Serializer):
    state = serializers.CharField(
        help_text="on, off (switched off by the member) or suspended (by venue ops)."
    )
    suspended_at = serializers.DateTimeField(allow_null=True)
    suspension_reason = serializers.CharField(help_text="Why venue ops suspended it (empty when not).")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class BandPolicyIn(StrictSerializer):
    funding_account = serializers.CharField(
        max_length=40, help_text="The code of the member's funding account."
    )
    search_level = PositiveDecimal(help_text="Below this equity / MM collateral is pulled in (> 1).")
    target_level = PositiveDecimal(help_text="The equity / MM each transfer restores.")
    release_level = PositiveDecimal(help_text="Above this equity / MM the excess goes back to funding.")
    assets = serializers.ListField(
        child=serializers.CharField(max_length=20), min_length=1, max_length=10,
        help_text="Asset symbols, most preferred first: pulled in this order, released in reverse.",
    )  # fmt: skip
    min_interval_seconds = serializers.IntegerField(
        min_value=0, max_value=MAX_INTERVAL_SECONDS, required=False, default=60,
        help_text="At least this long between two transfers.",
    )  # fmt: skip


class BandPolicyOut(PolicyStateFields):
    account = serializers.CharField(source="account.code")
    funding_account = serializers.CharField(source="funding_account.code")
    search_level = serializers.DecimalField(max_digits=12, decimal_places=4)
    target_level = serializers.DecimalField(max_digits=12, decimal_places=4)
    release_level = serializers.DecimalField(max_digits=12, decimal_places=4)
    assets = serializers.ListField(child=serializers.CharField())
    min_interval_seconds = serializers.IntegerField()


class HedgePolicyChangeIn(StrictSerializer):
    instrument = serializers.CharField(max_length=40, help_text="A perpetual or future on the underlying.")
    target_delta_usd = ExactDecimal(required=False, default=0, help_text="The dollar delta wanted (signed).")
    threshold_usd = PositiveDecimal(help_text="Act when the delta strays further than this from the target.")
    max_quantity = PositiveDecimal(help_text="At most this many units of the instrument per hedge.")
    min_interval_seconds = serializers.IntegerField(
        min_value=0, max_value=MAX_INTERVAL_SECONDS, required=False, default=300,
        help_text="At least this long between two hedges.",
    )  # fmt: skip
    mode = serializers.ChoiceField(choices=HedgeMode.choices, required=False, default=HedgeMode.PROPOSE)
    endpoint = serializers.IntegerField(
        required=False, allow_null=True, default=None, help_text="The webhook endpoint's id (request mode)."
    )


class HedgePolicyCreateIn(HedgePolicyChangeIn):
    underlying = serializers.CharField(
        max_length=20, help_text="The underlying whose dollar delta is hedged."
    )


class HedgePolicyOut(PolicyStateFields):
    id = serializers.IntegerField()
    account = serializers.CharField(source="account.code")
    underlying = serializers.CharField(source="underlying.symbol")
    instrument = serializers.CharField(source="instrument.symbol")
    target_delta_usd = serializers.DecimalField(max_digits=28, decimal_places=10)
    threshold_usd = serializers.DecimalField(max_digits=28, decimal_places=10)
    max_quantity = serializers.DecimalField(max_digits=28, decimal_places=10)
    min_interval_seconds = serializers.IntegerField()
    mode = serializers.CharField()
    endpoint = serializers.IntegerField(source="endpoint_id", allow_null=True)


class MarginSideOut(serializers.Serializer):
    equity = serializers.FloatField()
    initial_margin = serializers.FloatField()
    maintenance_margin = serializers.FloatField()


class HedgeRequestOut(serializers.ModelSerializer):
    account = serializers.CharField(source="account.code")
    instrument = serializers.CharField(source="instrument.symbol")
    before = serializers.SerializerMethodField(help_text="The engine's figures of the account now.")
    after = serializers.SerializerMethodField(help_text="The engine's figures once the hedge is filled.")
    trades = serializers.SerializerMethodField(help_text="The booked trades that filled it.")

    class Meta:
        model = HedgeRequest
        fields = [
            "id", "idempotency_id", "policy", "account", "instrument", "mode", "quantity", "price",
            "delta_usd_before", "target_delta_usd", "delta_usd_after", "before", "after", "status", "reason",
            "endpoint", "attempts", "next_attempt_at", "deliver_until", "delivered_at", "filled_at",
            "created_at", "trades",
        ]  # fmt: skip

    @staticmethod
    def _side(request: HedgeRequest, side: str) -> dict:
        names = ("equity", "initial_margin", "maintenance_margin")
        return MarginSideOut({name: getattr(request, f"{name}_{side}") for name in names}).data

    @extend_schema_field(MarginSideOut)
    def get_before(self, request) -> dict:
        return self._side(request, "before")

    @extend_schema_field(MarginSideOut)
    def get_after(self, request) -> dict:
        return self._side(request, "after")

    @extend_schema_field(serializers.ListField(child=serializers.IntegerField()))
    def get_trades(self, request) -> list[int]:
        return [fill.trade_id for fill in request.fills.all()]


class AutoTransferOut(serializers.ModelSerializer):
    account = serializers.CharField(source="account.code")
    funding_account = serializers.CharField(source="funding_account.code")
    legs = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()),
        help_text='[{"asset": "USDC", "amount": "1250.000000"}]: units of each asset moved.',
    )

    class Meta:
        model = AutoTransfer
        fields = [
            "id", "account", "funding_account", "direction", "legs", "target_level", "ratio_before",
            "ratio_after", "equity_before", "equity_after", "initial_margin_before", "initial_margin_after",
            "maintenance_margin_before", "maintenance_margin_after", "cause", "created_at",
        ]  # fmt: skip


class WebhookEndpointIn(StrictSerializer):
    url = serializers.CharField(max_length=500, help_text="https:// URL that receives hedge requests.")
    description = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


class WebhookEndpointOut(serializers.ModelSerializer):
    member = serializers.CharField(source="member.code")

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "member",
            "url",
            "description",
            "secret_hint",
            "is_active",
            "created_at",
            "deactivated_at",
        ]


class WebhookEndpointCreatedOut(WebhookEndpointOut):
    secret = serializers.CharField(help_text="The signing secret: shown this once, never again.")

    class Meta(WebhookEndpointOut.Meta):
        fields = [*WebhookEndpointOut.Meta.fields, "secret"]


class WebhookAttemptOut(serializers.ModelSerializer):
    idempotency_id = serializers.UUIDField(source="hedge_request.idempotency_id")

    class Meta:
        model = WebhookAttempt
        fields = [
            "id", "hedge_request", "idempotency_id", "number", "url", "started_at", "duration_ms",
            "status_code", "outcome", "error", "response_excerpt", "next_attempt_at",
        ]  # fmt: skip


# --- Views -----------------------------------------------------------------------------------------


def _service(call, **kwargs):
    """A service's refusals as the API's: 400 naming the field, 403 for a read-only role."""
    try:
        return call(**kwargs)
    except DjangoValidationError as error:
        raise validation_error_from_django(error) from None
    except DjangoPermissionDenied as refusal:
        raise exceptions.PermissionDenied(str(refusal)) from None


class AccountBandPolicy(RoleView):
    """``GET``: the account's band policy (404 when it has none). ``PUT`` (its member's traders): set
    or replace it, switched on. ``DELETE``: switch it off (it is kept, with its transfers)."""

    read_roles = READERS
    write_roles = ACCOUNT_WRITERS
    schema_errors = {404: "No such account for the caller, or it has no band policy."}

    @extend_schema(responses={200: BandPolicyOut}, summary="The account's band policy.")
    def get(self, request, pk: int):
        policy = band_policy_of(account=margin_account_visible(user=request.user, pk=pk))
        if policy is None:
            raise exceptions.NotFound("This account has no band policy.")
        return Response(BandPolicyOut(policy).data)

    @extend_schema(
        request=BandPolicyIn,
        responses={200: BandPolicyOut},
        summary="Set the account's band policy (its member's traders).",
        description="Refused (400 naming the field) unless the account is a cross or portfolio margin "
        "account, the funding account is its member's, 1 < search < target < release and the assets are "
        "known.",
    )
    def put(self, request, pk: int):
        account = margin_account_visible(user=request.user, pk=pk)
        data = _validated(BandPolicyIn, request)
        funding = MarginAccount.objects.filter(
            code=data.pop("funding_account"), kind=AccountKind.FUNDING
        ).first()
        if funding is None or funding.member_id != account.member_id:
            raise exceptions.ValidationError(
                {"funding_account": ["Must be the funding account of the account's member."]}
            )
        policy = _service(
            band_policy_set, account=account, funding_account=funding, user=request.user, **data
        )
        return Response(BandPolicyOut(band_policy_of(account=policy.account)).data)

    @extend_schema(
        request=None, responses={200: BandPolicyOut}, summary="Switch the account's band policy off."
    )
    def delete(self, request, pk: int):
        account = margin_account_visible(user=request.user, pk=pk)
        policy = _service(band_policy_switch_off, account=account, user=request.user)
        if policy is None:
            raise exceptions.NotFound("This account has no band policy.")
        return Response(BandPolicyOut(band_policy_of(account=account)).data)


def _validated(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _endpoint_named(request, data: dict) -> WebhookEndpoint | None:
    pk = data.pop("endpoint", None)
    if pk is None:
        return None
    endpoint = webhook_endpoints_visible(user=request.user).filter(pk=pk).first()
    if endpoint is None:
        raise exceptions.ValidationError({"endpoint": [f"No webhook endpoint {pk} of the member."]})
    return endpoint


@extend_schema_view(get=extend_schema(summary="The account's hedge policies, active ones first."))
class AccountHedgePolicies(RoleListView):
    """``GET``: the account's hedge policies. ``POST`` (its member's traders): a new one for an
    underlying that has no active policy yet."""

    read_roles = READERS
    write_roles = ACCOUNT_WRITERS
    serializer_class = HedgePolicyOut

    def get_queryset(self):
        return hedge_policies_of(account=margin_account_visible(user=self.request.user, pk=self.kwargs["pk"]))

    @extend_schema(
        request=HedgePolicyCreateIn,
        responses={201: HedgePolicyOut},
        summary="Create a hedge policy (its member's traders).",
        description="Refused (400 naming the field): an instrument that is not a live perpetual or future on "
        "the underlying, a non-positive threshold or size, request mode without an active endpoint of the "
        "member, an underlying that already has an active policy.",
    )
    @idempotent
    def post(self, request, pk: int):
        account = margin_account_visible(user=request.user, pk=pk)
        data = _validated(HedgePolicyCreateIn, request)
        endpoint = _endpoint_named(request, data)
        policy = _service(hedge_policy_create, account=account, user=request.user, endpoint=endpoint, **data)
        return Response(HedgePolicyOut(policy).data, status=status.HTTP_201_CREATED)


class AccountHedgePolicy(RoleView):
    """``GET``: one hedge policy. ``PUT`` (its member's traders): replace its settings (not its
    underlying). ``DELETE``: switch it off (kept, with its hedges)."""

    read_roles = READERS
    write_roles = ACCOUNT_WRITERS

    def _policy(self, request, pk: int, policy_id: int) -> HedgePolicy:
        account = margin_account_visible(user=request.user, pk=pk)
        return get_object_or_404(hedge_policies_of(account=account), pk=policy_id)

    @extend_schema(responses={200: HedgePolicyOut}, summary="One hedge policy of the account.")
    def get(self, request, pk: int, policy_id: int):
        return Response(HedgePolicyOut(self._policy(request, pk, policy_id)).data)

    @extend_schema(
        request=HedgePolicyChangeIn,
        responses={200: HedgePolicyOut},
        summary="Replace a hedge policy's settings (its member's traders).",
    )
    def put(self, request, pk: int, policy_id: int):
        policy = self._policy(request, pk, policy_id)
        data = _validated(HedgePolicyChangeIn, request)
        endpoint = _endpoint_named(request, data)
        policy = _service(hedge_policy_change, policy=policy, user=request.user, endpoint=endpoint, **data)
        return Response(HedgePolicyOut(self._policy(request, pk, policy.pk)).data)

    @extend_schema(request=None, responses={200: HedgePolicyOut}, summary="Switch a hedge policy off.")
    def delete(self, request, pk: int, policy_id: int):
        policy = _service(
            hedge_policy_switch_off, policy=self._policy(request, pk, policy_id), user=request.user
        )
        return Response(HedgePolicyOut(self._policy(request, pk, policy.pk)).data)


@extend_schema_view(
    get=extend_schema(summary="The hedges the account's policies proposed, requested or withheld.")
)
class AccountHedgeRequests(RoleListView):
    read_roles = READERS
    serializer_class = HedgeRequestOut

    def get_queryset(self):
        return hedge_requests_of(account=margin_account_visible(user=self.request.user, pk=self.kwargs["pk"]))


@extend_schema_view(get=extend_schema(summary="The band policy's transfers into or out of the account."))
class AccountAutoTransfers(RoleListView):
    read_roles = READERS
    serializer_class = AutoTransferOut

    def get_queryset(self):
        return auto_transfers_of(account=margin_account_visible(user=self.request.user, pk=self.kwargs["pk"]))


@extend_schema_view(get=extend_schema(summary="The webhook endpoints of the caller's member."))
class WebhookEndpoints(RoleListView):
    """``GET``: the member's endpoints (venue readers: every member's). ``POST`` (a member's trader):
    a new endpoint; the answer holds its signing secret, shown this once."""

    read_roles = READERS
    write_roles = ACCOUNT_WRITERS
    serializer_class = WebhookEndpointOut

    def get_queryset(self):
        return webhook_endpoints_visible(user=self.request.user)

    @extend_schema(
        request=WebhookEndpointIn,
        responses={201: WebhookEndpointCreatedOut},
        summary="Create a webhook endpoint (a member's trader); the signing secret is in this answer only.",
        description="The URL must be https:// (plain http only to this machine in development). No "
        "Idempotency-Key: a stored answer would keep the secret; creating twice makes two endpoints.",
    )
    def post(self, request):
        data = _validated(WebhookEndpointIn, request)
        endpoint, secret = _service(
            webhook_endpoint_create, member=request.user.member, user=request.user, **data
        )
        answer = WebhookEndpointOut(endpoint).data | {"secret": secret}
        return Response(answer, status=status.HTTP_201_CREATED)


class WebhookEndpointDetail(RoleView):
    read_roles = READERS
    write_roles = ACCOUNT_WRITERS

    def _endpoint(self, request, pk: int) -> WebhookEndpoint:
        return get_object_or_404(webhook_endpoints_visible(user=request.user), pk=pk)

    @extend_schema(responses={200: WebhookEndpointOut}, summary="One webhook endpoint (never its secret).")
    def get(self, request, pk: int):
        return Response(WebhookEndpointOut(self._endpoint(request, pk)).data)

    @extend_schema(
        request=None,
        responses={200: WebhookEndpointOut},
        summary="Switch a webhook endpoint off: nothing more is delivered to it.",
    )
    def delete(self, request, pk: int):
        endpoint = _service(
            webhook_endpoint_deactivate, endpoint=self._endpoint(request, pk), user=request.user
        )
        return Response(WebhookEndpointOut(endpoint).data)


@extend_schema_view(get=extend_schema(summary="Every delivery attempt to the endpoint, newest first."))
class WebhookEndpointDeliveries(RoleListView):
    read_roles = READERS
    serializer_class = WebhookAttemptOut

    def get_queryset(self):
        endpoint = get_object_or_404(webhook_endpoints_visible(user=self.request.user), pk=self.kwargs["pk"])
        return webhook_attempts_of(endpoint=endpoint)
