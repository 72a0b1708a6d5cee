from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render

from accounts.selectors import margin_accounts_visible


@login_required
def overview(request):
    if request.user.is_staff and not request.user.is_member_user:
        return redirect("admin:index")
    accounts = margin_accounts_visible(user=request.user).prefetch_related("balances__asset")
    return render(request, "frontend/overview.html", {"accounts": accounts})


@login_required
def account_detail(request, code: str):
    # Another member's account is indistinguishable from one that does not exist.
    account = get_object_or_404(margin_accounts_visible(user=request.user), code=code)
    positions = account.positions.select_related("instrument__underlying").exclude(quantity=0)
    balances = account.balances.select_related("asset").exclude(amount=0)
    return render(
        request,
        "frontend/account_detail.html",
        {"account": account, "positions": positions, "balances": balances},
    )
