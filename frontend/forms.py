from __future__ import annotations

from django import forms
from django.utils import timezone

from accounts.models import Asset
from agents.models import HedgeMode, WebhookEndpoint
from clearing.models import Instrument, InstrumentKind
from riskengine.forms import PlainDecimalsMixin

TRADE_ROWS = 3
COLLATERAL_ROWS = 2


# Every decimal typed here is read by the one number parser (``PlainDecimalsMixin``, as in the
# admin; ``clearing.validation.decimal_plain`` as in the API): ``"１２３"``, ``"١٢٣"`` or ``"1_000"``
# is an error on its field, where Django's ``DecimalField`` alone would read 123 or 1000.


class TradeRow(PlainDecimalsMixin, forms.Form):
    instrument = forms.ModelChoiceField(queryset=Instrument.objects.none(), required=False)
    quantity = forms.DecimalField(required=False, max_digits=28, decimal_places=10, help_text="+ buy, − sell")
    price = forms.DecimalField(required=False, max_digits=28, decimal_places=10, help_text="blank: mark")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["instrument"].queryset = (
            Instrument.objects.filter(is_active=True)
            .exclude(expiry__lte=timezone.now())
            .select_related("underlying")
            .order_by("underlying__symbol", "kind", "symbol")
        )

    def clean(self):
        data = super().clean()
        if data.get("instrument") and data.get("quantity") in (None, 0) and "quantity" not in self.errors:
            self.add_error("quantity", "Give a non-zero quantity.")
        if data.get("quantity") and not data.get("instrument"):
            self.add_error("instrument", "Choose an instrument.")
        return data


class CollateralRow(PlainDecimalsMixin, forms.Form):
    asset = forms.ModelChoiceField(queryset=Asset.objects.order_by("symbol"), required=False)
    amount = forms.DecimalField(
        required=False, max_digits=28, decimal_places=10, help_text="+ deposit, − withdraw"
    )

    def clean(self):
        data = super().clean()
        if data.get("asset") and data.get("amount") in (None, 0) and "amount" not in self.errors:
            self.add_error("amount", "Give a non-zero amount.")
        if data.get("amount") and not data.get("asset"):
            self.add_error("asset", "Choose an asset.")
        return data


def what_if_forms(data=None) -> tuple[list[TradeRow], list[CollateralRow]]:
    trades = [TradeRow(data, prefix=f"t{i}") for i in range(TRADE_ROWS)]
    collateral = [CollateralRow(data, prefix=f"c{i}") for i in range(COLLATERAL_ROWS)]
    return trades, collateral


class PositionMarginForm(PlainDecimalsMixin, forms.Form):
    amount = forms.DecimalField(
        max_digits=28, decimal_places=10, help_text="USD: + into the position, − back to free collateral"
    )


class TargetBandForm(PlainDecimalsMixin, forms.Form):
    lower = forms.DecimalField(min_value=0, max_digits=12, decimal_places=4, label="Lowest equity / MM")
    upper = forms.DecimalField(min_value=0, max_digits=12, decimal_places=4, label="Highest equity / MM")


# --- The automated agents (agents.services; the API's band-policy and hedge-policies) ---------------


class BandPolicyForm(PlainDecimalsMixin, forms.Form):
    search_level = forms.DecimalField(max_digits=12, decimal_places=4, label="Pull in below (equity / MM)")
    target_level = forms.DecimalField(max_digits=12, decimal_places=4, label="Back to")
    release_level = forms.DecimalField(max_digits=12, decimal_places=4, label="Release above")
    assets = forms.CharField(
        max_length=200, initial="USDC, USD", label="Assets, preferred first", help_text="Comma-separated."
    )
    min_interval_seconds = forms.IntegerField(min_value=0, initial=60, label="Seconds between transfers")

    def clean_assets(self) -> list[str]:
        return [symbol.strip().upper() for symbol in self.cleaned_data["assets"].split(",") if symbol.strip()]


class HedgePolicyForm(PlainDecimalsMixin, forms.Form):
    instrument = forms.ModelChoiceField(queryset=Instrument.objects.none(), label="Hedge with")
    target_delta_usd = forms.DecimalField(max_digits=28, decimal_places=2, initial=0, label="Target Δ$")
    threshold_usd = forms.DecimalField(max_digits=28, decimal_places=2, label="Act beyond (USD)")
    max_quantity = forms.DecimalField(max_digits=28, decimal_places=10, label="At most (units)")
    min_interval_seconds = forms.IntegerField(min_value=0, initial=300, label="Seconds between hedges")
    mode = forms.ChoiceField(choices=HedgeMode.choices, initial=HedgeMode.PROPOSE)
    endpoint = forms.ModelChoiceField(
        queryset=WebhookEndpoint.objects.none(), required=False, label="Webhook (request mode)"
    )

    def __init__(self, *args, member_id: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["instrument"].queryset = (
            Instrument.objects.filter(
                is_active=True, kind__in=[InstrumentKind.PERPETUAL, InstrumentKind.FUTURE]
            )
            .exclude(expiry__lte=timezone.now())
            .select_related("underlying")
            .order_by("underlying__symbol", "kind", "symbol")
        )
        self.fields["endpoint"].queryset = WebhookEndpoint.objects.filter(member_id=member_id, is_active=True)


class WebhookEndpointForm(forms.Form):
    url = forms.CharField(
        max_length=500, label="URL", help_text="https:// where your hedging system listens."
    )
    description = forms.CharField(max_length=200, required=False)
