"""``/api/v1/`` resources, ``/api/schema/`` (OpenAPI 3) and ``/api/docs/`` (browsable docs); any
other ``/api/...`` path is a JSON 404 (``views.api_not_found``), never the site's HTML page."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from clearing.api import agents, views

app_name = "api"

v1 = [
    path("underlyings/", views.UnderlyingList.as_view(), name="underlyings"),
    path("instruments/", views.InstrumentList.as_view(), name="instruments"),
    path("assets/", views.AssetList.as_view(), name="assets"),
    path("price-observations/", views.PriceObservationCreate.as_view(), name="price-observations"),
    path("vol-observations/", views.VolObservationCreate.as_view(), name="vol-observations"),
    path("index-prices/", views.IndexPriceList.as_view(), name="index-prices"),
    path("index-prices/<str:symbol>/confirm/", views.IndexPriceConfirm.as_view(), name="index-price-confirm"),
    path("accounts/", views.AccountList.as_view(), name="accounts"),
    path("accounts/<int:pk>/", views.AccountDetail.as_view(), name="account"),
    path("accounts/<int:pk>/positions/", views.PositionList.as_view(), name="account-positions"),
    path(
        "accounts/<int:pk>/positions/<int:position_id>/margin/",
        views.PositionMarginMove.as_view(),
        name="account-position-margin",
    ),
    path("accounts/<int:pk>/trades/", views.AccountTradeList.as_view(), name="account-trades"),
    path("accounts/<int:pk>/collateral-movements/", views.MovementList.as_view(), name="account-movements"),
    path("accounts/<int:pk>/deposits/", views.AccountDeposits.as_view(), name="account-deposits"),
    path("accounts/<int:pk>/withdrawals/", views.AccountWithdrawals.as_view(), name="account-withdrawals"),
    path("accounts/<int:pk>/what-if/", views.AccountWhatIf.as_view(), name="account-what-if"),
    path("accounts/<int:pk>/margin/", views.AccountMarginCurrent.as_view(), name="account-margin"),
    path(
        "accounts/<int:pk>/margin-history/",
        views.AccountMarginHistory.as_view(),
        name="account-margin-history",
    ),
    path("accounts/<int:pk>/backtest/", views.AccountBacktestView.as_view(), name="account-backtest"),
    # The automated agents (clearing.api.agents, docs/agents.md).
    path("accounts/<int:pk>/band-policy/", agents.AccountBandPolicy.as_view(), name="account-band-policy"),
    path(
        "accounts/<int:pk>/hedge-policies/",
        agents.AccountHedgePolicies.as_view(),
        name="account-hedge-policies",
    ),
    path(
        "accounts/<int:pk>/hedge-policies/<int:policy_id>/",
        agents.AccountHedgePolicy.as_view(),
        name="account-hedge-policy",
    ),
    path(
        "accounts/<int:pk>/hedge-requests/",
        agents.AccountHedgeRequests.as_view(),
        name="account-hedge-requests",
    ),
    path(
        "accounts/<int:pk>/auto-transfers/",
        agents.AccountAutoTransfers.as_view(),
        name="account-auto-transfers",
    ),
    path("webhook-endpoints/", agents.WebhookEndpoints.as_view(), name="webhook-endpoints"),
    path("webhook-endpoints/<int:pk>/", agents.WebhookEndpointDetail.as_view(), name="webhook-endpoint"),
    path(
        "webhook-endpoints/<int:pk>/deliveries/",
        agents.WebhookEndpointDeliveries.as_view(),
        name="webhook-endpoint-deliveries",
    ),
    path("custody/deposits/", views.CustodyDeposits.as_view(), name="custody-deposits"),
    path(
        "custody/deposits/<int:pk>/confirm/",
        views.CustodyDepositConfirm.as_view(),
        name="custody-deposit-confirm",
    ),
    path("custody/withdrawals/", views.CustodyWithdrawals.as_view(), name="custody-withdrawals"),
    path(
        "custody/withdrawals/<int:pk>/sent/",
        views.CustodyWithdrawalSent.as_view(),
        name="custody-withdrawal-sent",
    ),
    path(
        "custody/withdrawals/<int:pk>/failed/",
        views.CustodyWithdrawalFailed.as_view(),
        name="custody-withdrawal-failed",
    ),
    path("margin-calls/", views.MarginCallList.as_view(), name="margin-calls"),
    path("margin-calls/<int:pk>/", views.MarginCallDetail.as_view(), name="margin-call"),
    path("liquidations/", views.LiquidationList.as_view(), name="liquidations"),
    path("liquidations/<int:pk>/", views.LiquidationDetail.as_view(), name="liquidation"),
    path("positions/", views.PositionList.as_view(), name="positions"),
    path("trades/", views.TradeListCreate.as_view(), name="trades"),
    path("margin/simulate/", views.MarginSimulate.as_view(), name="margin-simulate"),
    path("risk-parameters/", views.ParameterSetList.as_view(), name="risk-parameters"),
    path("risk-parameters/active/", views.ParameterSetActive.as_view(), name="risk-parameters-active"),
    path("risk-parameters/<int:pk>/", views.ParameterSetDetail.as_view(), name="risk-parameter-set"),
]

urlpatterns = [
    path("v1/", include(v1)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Our template adds the Content-Security-Policy nonce to the page's inline script and style.
    path(
        "docs/",
        SpectacularSwaggerView.as_view(url_name="api:schema", template_name="api/swagger_ui.html"),
        name="docs",
    ),
    re_path(r"^", views.api_not_found, name="not-found"),  # last: whatever nothing above matched
]
