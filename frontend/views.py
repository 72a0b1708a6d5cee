"""Member pages: thin views over ``frontend.selectors`` (reads) and ``frontend.services`` (writes).

Pages that change live render their changing part from a fragment template; the page's script
re-fetches that fragment (``?fragment=1``) when the websocket announces an event for one of its
accounts, or reconnects. The database stays the one source of what is shown.
"""

from __future__ import annotations

import math

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.models import AccountKind
from accounts.selectors import margin_account_visible
from agents.selectors import (
    band_policy_of,
    funding_account_of,
    hedge_policies_of,
    webhook_attempts_of,
    webhook_endpoints_of,
)
from agents.services import (
    band_policy_set,
    band_policy_switch_off,
    hedge_policy_create,
    hedge_policy_switch_off,
    webhook_endpoint_create,
    webhook_endpoint_deactivate,
)
from clearing import charts
from clearing.api.permissions import ACCOUNT_WRITERS, WHAT_IF_USERS, user_role
from clearing.api.throttling import compute_budget_wait
from clearing.bulk import atomic_snapshot
from frontend.forms import (
    BandPolicyForm,
    HedgePolicyForm,
    PositionMarginForm,
    TargetBandForm,
    WebhookEndpointForm,
    what_if_forms,
)
from frontend.selectors import (
    account_now,
    account_summaries,
    account_summary,
    foresight_view,
    hedge_suggestions,
    margin_calls_recent,
    margin_history,
)
from frontend.services import target_band_clear, target_band_set
from riskengine.allocations import position_margin_move
from riskengine.core.errors import DocumentError
from riskengine.selectors import NoActiveParameterSet
from riskengine.validation.selectors import account_validation, venue_disclosure
from riskengine.whatif import margin_what_if
from riskengine.withdrawals import PricesUntrusted

COMPONENTS = [
    ("scan_directional", "Directional scan"),
    ("scan_non_directional", "Non-directional scan"),
    ("correlation_credit", "Correlation credit"),
    ("basis", "Basis"),
    ("short_option_minimum", "Short option min."),
    ("concentration", "Concentration"),
]


def _may(request, roles: frozenset) -> bool:
    """The web app grants what the API grants: the same role sets (``clearing.api.permissions``),
    so a viewer is read-only here too."""
    return user_role(request.user) in roles


@login_required
def overview(request):
    if request.user.is_staff and not request.user.is_member_user:
        return redirect("admin:index")
    context = {"summaries": account_summaries(user=request.user)}
    template = "frontend/_overview_live.html" if request.GET.get("fragment") else "frontend/overview.html"
    return render(request, template, context)


def _im_chart(result: dict):
    """Portfolio margin explains IM by methodology component; the other modes add up positions."""
    if result["mode"] == "portfolio":
        items = [
            (label, -result["components"][key] if key == "correlation_credit" else result["components"][key])
            for key, label in COMPONENTS
        ]
        return charts.bar_chart(items, title="Initial margin by component")
    items = [(p["instrument"], p["initial_margin"]) for p in result["positions"]]
    return charts.bar_chart(items, title="Initial margin by position")


def _foresight_gauge(foresight: dict | None):
    if foresight is None or foresight["thresholds"] is None:
        return None
    thresholds = foresight["thresholds"]
    return charts.distance_gauge(
        foresight["gauge"],
        title="Distance to liquidation per underlying, in forecast daily standard deviations",
        watch=thresholds.watch_sigmas,
        warning=thresholds.warning_sigmas,
    )


def _detail_context(account) -> dict:
    # One snapshot for the whole page: a sweep that commits while the page is read (the foresight
    # can take a while) must not show its margin call beside the margin from before it.
    with atomic_snapshot():
        return _detail_context_read(account)


def _detail_context_read(account) -> dict:
    summary = account_summary(account=account)
    history = margin_history(account=account)
    foresight = foresight_view(account=account)
    context = {
        "account": account,
        "summary": summary,
        "foresight": foresight,
        "foresight_gauge": _foresight_gauge(foresight),
        "calls": margin_calls_recent(account=account),
        "history_chart": charts.line_chart(
            [s.read_at for s in history],
            [
                ("Equity", "#1c2430", [s.equity for s in history]),
                ("IM", "#2456a6", [s.initial_margin for s in history]),
                ("MM", "#c62828", [s.maintenance_margin for s in history]),
            ],
            title="Margin history",
        ),
    }
    try:
        now = account_now(account=account)
    except (DocumentError, ObjectDoesNotExist, NoActiveParameterSet) as error:
        context["now_error"] = str(error)
        return context
    result = now.result
    comparison = result["comparison"]
    context.update(
        now=now,
        result=result,
        components_chart=_im_chart(result),
        underlying_chart=charts.bar_chart(
            [(row["underlying"], row["scan_risk"]) for row in result["by_underlying"]],
            title="Scan risk by underlying",
        ),
        comparison=comparison,
        savings=comparison["isolated"] - comparison["portfolio"],
        savings_cross=comparison["cross"] - comparison["portfolio"],
        hedges=hedge_suggestions(account=account, now=now),
    )
    return context


BACKTEST_EXCEPTIONS_SHOWN = 20


def _backtest_context(account) -> dict:
    """The account's backtest in the venue's latest validation run (riskengine.validation): not
    part of the live fragment (it changes nightly, not with every sweep)."""
    found = account_validation(account=account)
    if found is None or found.backtest is None:
        return {"validation": found}
    return {
        "validation": found,
        "backtest": found.backtest,
        "backtest_exceptions": found.backtest.exception_days[::-1][:BACKTEST_EXCEPTIONS_SHOWN],
        "backtest_chart": charts.line_chart(
            found.days,
            [
                ("Initial margin", "#2456a6", found.initial_margin),
                ("Two-day loss", "#c62828", found.loss),
            ],
            title="Initial margin against the two-day loss, each day of the history",
            time_format="%d %b %Y",
        ),
    }


@login_required
def account_detail(request, code: str):
    account = margin_account_visible(user=request.user, code=code)
    context = _detail_context(account)
    # Only isolated positions hold margin; traders move it, as on the API.
    context["may_move_margin"] = account.mode == "isolated" and _may(request, ACCOUNT_WRITERS)
    if request.GET.get("fragment"):
        return render(request, "frontend/_account_live.html", context)
    context.update(_backtest_context(account))
    band = context["summary"].band
    context["band_form"] = TargetBandForm(
        initial={"lower": band.lower, "upper": band.upper} if band else None
    )
    context["may_set_band"] = _may(request, ACCOUNT_WRITERS)
    context["may_what_if"] = _may(request, WHAT_IF_USERS)
    context.update(_agents_forms(request, account))
    return render(request, "frontend/account_detail.html", context)


def _agents_forms(request, account, *, band_form=None, hedge_form=None) -> dict:
    """The account page's agent forms (its member's traders, on a margin account)."""
    if account.kind != AccountKind.MEMBER:
        return {"may_set_agents": False}
    policy = band_policy_of(account=account)
    initial = None
    if policy is not None and policy.is_active:
        initial = {
            "search_level": policy.search_level,
            "target_level": policy.target_level,
            "release_level": policy.release_level,
            "assets": ", ".join(policy.assets),
            "min_interval_seconds": policy.min_interval_seconds,
        }
    return {
        "may_set_agents": _may(request, ACCOUNT_WRITERS),
        "funding_account": funding_account_of(member_id=account.member_id),
        "band_policy": policy,
        "band_policy_form": band_form or BandPolicyForm(initial=initial),
        "hedge_form": hedge_form or HedgePolicyForm(member_id=account.member_id),
        "active_hedge_policies": list(hedge_policies_of(account=account).filter(is_active=True)),
    }


def _errors_into(form, error: ValidationError) -> None:
    for name, errors in error.message_dict.items():
        form.add_error(name if name in form.fields else None, errors)


def _writer_account(request, code: str):
    account = margin_account_visible(user=request.user, code=code)
    if not _may(request, ACCOUNT_WRITERS):
        raise PermissionDenied("Your role is read-only: only traders change the agents.")
    return account


def _detail_again(request, account, **forms):
    """The account page again, with the agents form that was refused and its errors (400)."""
    context = _detail_context(account)
    band = context["summary"].band
    context.update(
        band_form=TargetBandForm(initial={"lower": band.lower, "upper": band.upper} if band else None),
        may_set_band=True,
        may_what_if=_may(request, WHAT_IF_USERS),
        **_agents_forms(request, account, **forms),
    )
    return render(request, "frontend/account_detail.html", context, status=400)


@login_required
@require_POST
def band_policy(request, code: str):
    """The account page's band policy form: ``agents.services.band_policy_set`` with the member's
    funding account (the API's ``PUT …/band-policy/``), or switch it off."""
    account = _writer_account(request, code)
    if request.POST.get("off"):
        band_policy_switch_off(account=account, user=request.user)
        messages.info(request, "Band policy switched off.")
        return redirect("frontend:account-detail", code=account.code)
    form = BandPolicyForm(request.POST)
    if form.is_valid():
        funding = funding_account_of(member_id=account.member_id)
        if funding is None:
            form.add_error(None, "Your member has no funding account yet: the venue opens one on request.")
        else:
            try:
                band_policy_set(
                    account=account, funding_account=funding, user=request.user, **form.cleaned_data
                )
            except ValidationError as error:
                _errors_into(form, error)
            else:
                messages.success(request, "Band policy saved: it acts from the next sweep.")
                return redirect("frontend:account-detail", code=account.code)
    return _detail_again(request, account, band_form=form)


@login_required
@require_POST
def hedge_policy(request, code: str):
    """The account page's hedge policy form (the API's ``POST …/hedge-policies/``)."""
    account = _writer_account(request, code)
    form = HedgePolicyForm(request.POST, member_id=account.member_id)
    if form.is_valid():
        data = dict(form.cleaned_data)
        instrument = data.pop("instrument")
        try:
            hedge_policy_create(
                account=account,
                underlying=instrument.underlying,
                instrument=instrument,
                user=request.user,
                **data,
            )
        except ValidationError as error:
            _errors_into(form, error)
        else:
            messages.success(request, f"Hedge policy on {instrument.underlying.symbol} saved.")
            return redirect("frontend:account-detail", code=account.code)
    return _detail_again(request, account, hedge_form=form)


@login_required
@require_POST
def hedge_policy_off(request, code: str, policy_id: int):
    account = _writer_account(request, code)
    policy = get_object_or_404(hedge_policies_of(account=account), pk=policy_id)
    hedge_policy_switch_off(policy=policy, user=request.user)
    messages.info(request, f"Hedge policy on {policy.underlying.symbol} switched off.")
    return redirect("frontend:account-detail", code=account.code)


@login_required
def webhooks(request):
    """The member's webhook endpoints, each with its latest delivery attempts; traders add one
    (its secret is shown on the answer to that request only) or switch one off."""
    if not request.user.is_member_user:
        raise PermissionDenied("Webhook endpoints belong to a member's users.")
    may_change = _may(request, ACCOUNT_WRITERS)
    form = WebhookEndpointForm(request.POST if request.method == "POST" else None)
    context = {"form": form, "may_change": may_change, "secret": None}
    status = 200
    if request.method == "POST":
        if not may_change:
            raise PermissionDenied("Your role is read-only: only traders add webhook endpoints.")
        if form.is_valid():
            try:
                endpoint, secret = webhook_endpoint_create(
                    member=request.user.member, user=request.user, **form.cleaned_data
                )
            except ValidationError as error:
                _errors_into(form, error)
            else:
                # Shown in this answer only (never in a message: those are stored between requests).
                context.update(secret=secret, created=endpoint, form=WebhookEndpointForm())
                status = 201
        if context["secret"] is None:
            status = 400
    endpoints = list(webhook_endpoints_of(member=request.user.member))
    context["endpoints"] = [
        (endpoint, list(webhook_attempts_of(endpoint=endpoint)[:10])) for endpoint in endpoints
    ]
    return render(request, "frontend/webhooks.html", context, status=status)


@login_required
@require_POST
def webhook_off(request, endpoint_id: int):
    if not (request.user.is_member_user and _may(request, ACCOUNT_WRITERS)):
        raise PermissionDenied("Your role is read-only: only traders switch webhook endpoints off.")
    endpoint = get_object_or_404(webhook_endpoints_of(member=request.user.member), pk=endpoint_id)
    webhook_endpoint_deactivate(endpoint=endpoint, user=request.user)
    messages.info(request, f"{endpoint.url} switched off: nothing more is delivered to it.")
    return redirect("frontend:webhooks")


@login_required
@require_POST
def target_band(request, code: str):
    account = margin_account_visible(user=request.user, code=code)
    if not _may(request, ACCOUNT_WRITERS):
        raise PermissionDenied("Your role is read-only: only traders change target bands.")
    if request.POST.get("clear"):
        target_band_clear(account=account, user=request.user)
        messages.info(request, "Target band removed.")
        return redirect("frontend:account-detail", code=account.code)
    form = TargetBandForm(request.POST)
    if form.is_valid():
        try:
            target_band_set(account=account, user=request.user, **form.cleaned_data)
        except ValidationError as error:
            for name, errors in error.message_dict.items():
                form.add_error(name if name in form.fields else None, errors)
        else:
            messages.success(request, "Target band saved.")
            return redirect("frontend:account-detail", code=account.code)
    context = _detail_context(account)
    context.update(_backtest_context(account))
    context.update(band_form=form, may_set_band=True, may_what_if=_may(request, WHAT_IF_USERS))
    context.update(_agents_forms(request, account))
    return render(request, "frontend/account_detail.html", context, status=400)


@login_required
def disclosure(request):
    """The venue's model validation in aggregate (coverage, traffic light, Cover-2 against the
    fund): every signed-in user may read it; it holds no account's or member's result."""
    return render(request, "frontend/disclosure.html", {"disclosure": venue_disclosure()})


@login_required
@require_POST
def position_margin(request, code: str, position_id: int):
    """The account page's margin form: ``position_margin_move`` with the signed ``amount`` typed
    (the API's ``POST …/positions/{id}/margin/``); the outcome is a message on the account page."""
    account = margin_account_visible(user=request.user, code=code)
    if not _may(request, ACCOUNT_WRITERS):
        raise PermissionDenied("Your role is read-only: only traders move margin.")
    form = PositionMarginForm(request.POST)
    if not form.is_valid():
        messages.error(request, "; ".join(" ".join(errors) for errors in form.errors.values()))
        return redirect("frontend:account-detail", code=account.code)
    try:
        row = position_margin_move(
            account=account,
            position_id=position_id,
            amount=form.cleaned_data["amount"],
            moved_by=request.user,
        )
    except PricesUntrusted as error:
        messages.error(request, str(error))
    except ValidationError as error:
        messages.error(request, "; ".join(" ".join(errors) for errors in error.message_dict.values()))
    else:
        moved = "into" if row.amount > 0 else "out of"
        messages.success(
            request,
            f"Moved {abs(row.amount):,.2f} USD {moved} the position, which holds {row.allocated_after:,.2f}.",
        )
    return redirect("frontend:account-detail", code=account.code)


@login_required
def what_if(request, code: str):
    account = margin_account_visible(user=request.user, code=code)
    may_what_if = _may(request, WHAT_IF_USERS)
    if request.method == "POST" and not may_what_if:
        raise PermissionDenied("Your role is read-only: what-if is for traders, as on the API.")
    trade_forms, collateral_forms = what_if_forms(request.POST if request.method == "POST" else None)
    context = {
        "account": account,
        "trade_forms": trade_forms,
        "collateral_forms": collateral_forms,
        "may_what_if": may_what_if,
    }
    valid = all(f.is_valid() for f in [*trade_forms, *collateral_forms]) if request.method == "POST" else None
    if valid is False:
        context["error"] = "Correct the rows marked below."
    if valid:
        trades = [
            (f.cleaned_data["instrument"], f.cleaned_data["quantity"], f.cleaned_data["price"])
            for f in trade_forms
            if f.cleaned_data.get("instrument")
        ]
        collateral = [
            (f.cleaned_data["asset"], f.cleaned_data["amount"])
            for f in collateral_forms
            if f.cleaned_data.get("asset")
        ]
        if not trades and not collateral:
            context["error"] = "Add at least one hypothetical trade or collateral change."
        elif (wait := compute_budget_wait(user=request.user)) is not None:
            # The engine-run budget the API's what-if and simulate draw on too.
            context["error"] = f"Too many what-ifs: try again in {math.ceil(wait)} s."
            response = render(request, "frontend/what_if.html", context, status=429)
            response["Retry-After"] = str(math.ceil(wait))
            return response
        else:
            try:
                outcome = margin_what_if(account=account, trades=trades, collateral=collateral)
            except ValidationError as error:
                context["error"] = "; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items())
            except DocumentError as error:
                context["error"] = str(error)
            else:
                context["rows"] = [
                    (label, outcome.before[key], outcome.after[key], outcome.after[key] - outcome.before[key])
                    for key, label in [
                        ("equity", "Equity"),
                        ("initial_margin", "Initial margin"),
                        ("maintenance_margin", "Maintenance margin"),
                        ("excess", "Excess"),
                    ]
                ]
                context["before"], context["after"] = outcome.before, outcome.after
    return render(request, "frontend/what_if.html", context, status=400 if context.get("error") else 200)
