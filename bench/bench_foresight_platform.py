"""Benchmark of liquidation foresight on the platform (not a test: run it by hand).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_foresight REDIS_URL=redis://127.0.0.1:6379/11 \\
      OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.bench_foresight_platform \\
      [--requests 1000] [--copies 4]

Prepares the database (migrate, ``seed_demo`` with its history of daily closes), then ``--copies``
more copies of every demo member account's book (same positions and collateral, new accounts) so the
after-sweep figures are not those of a few dozen accounts, and a trader with an API token. Then:

1. a full sweep of every account (``sweep_full_run``; the foresight tasks it would send are not
   sent), then ``foresight_accounts_grade`` of every member account in chunks of
   ``TASK_ACCOUNTS`` as the ``sweeps.foresight`` tasks do (one process, one core): total and per
   account, wall and CPU, and how the time splits (engine rebuild + distances, probability,
   look-ahead, store);
2. ``GET /api/v1/accounts/{id}/margin/`` of one graded account, ``--requests`` times one at a time
   through Django's full request cycle (the test client: middleware, token authentication,
   throttling, view, JSON): p50 / p99 / max, wall and CPU, as clients poll it (the answer for the
   account's version kept by the process) and as the first read of a version (nothing kept), then
   the stored-foresight read alone;
3. the same GET for an account with no stored foresight (computed for the answer; the stored row
   is put back afterwards, so every run measures the same account).

The queries of one request are counted, and the directory the code was imported from is printed:
to compare two trees in one session, run this file by path with ``PYTHONPATH`` set to each tree
in turn (``PYTHONPATH=/tmp/base .venv/bin/python bench/bench_foresight_platform.py --api-only``).

Prints the load average before and after each part.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from decimal import ROUND_DOWN, Decimal

# The Django and project imports are inside the functions: they need ``django.setup()`` (``setup``)
# with the settings this script sets first.


def setup(copies: int) -> tuple[list[int], str]:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clearing.config.settings")
    # One client sends every request: the per-user rate limit is not what is measured.
    os.environ.setdefault("API_THROTTLE_RATE", "1000000/min")
    django.setup()
    from django.core.management import call_command
    from django.db import transaction

    from accounts.models import AccountKind, CollateralBalance, MarginAccount, Role, User
    from accounts.services import api_token_issue, collateral_deposit, user_create
    from accounts.trading import Fill, trades_book
    from clearing.models import Position

    call_command("migrate", verbosity=0)
    call_command("seed_demo", "--if-empty", verbosity=0)
    originals = list(MarginAccount.objects.filter(kind=AccountKind.MEMBER).exclude(code__contains="-COPY"))
    for copy in range(copies):
        for account in originals:
            code = f"{account.code}-COPY{copy}"
            if MarginAccount.objects.filter(code=code).exists():
                continue
            with transaction.atomic():
                twin = MarginAccount.objects.create(member=account.member, code=code, mode=account.mode)
                for balance in CollateralBalance.objects.filter(account=account, amount__gt=0):
                    step = Decimal(1).scaleb(-balance.asset.decimals)
                    amount = balance.amount.quantize(step, rounding=ROUND_DOWN)
                    if amount > 0:
                        collateral_deposit(account=twin, asset=balance.asset, amount=amount)
                fills = [
                    Fill(twin, p.instrument, p.quantity, p.entry_price if p.entry_price > 0 else Decimal("1"))
                    for p in Position.objects.filter(account=account)
                    .exclude(quantity=0)
                    .select_related("instrument")
                ]
                if fills:
                    trades_book(fills=fills)
    members = list(
        MarginAccount.objects.filter(kind=AccountKind.MEMBER).order_by("pk").values_list("pk", flat=True)
    )
    trader = User.objects.filter(username="bench-foresight").first() or user_create(
        username="bench-foresight", password=None, role=Role.OPS
    )
    _, token = api_token_issue(user=trader, name="bench")
    return members, token


def load() -> str:
    return "load average {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def quantiles(values: list[float]) -> str:
    ms = sorted(v * 1e3 for v in values)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms"


def after_sweep(members: list[int]) -> None:
    from unittest import mock

    from riskengine.sweeps import foresight, services, tasks
    from riskengine.sweeps.models import AccountForesight

    print(f"after the sweep ({load()})")
    with mock.patch.object(tasks.foresight_grade, "delay"):
        start = time.perf_counter()
        sweep, outcome = services.sweep_full_run(cause="bench")
        print(f"  full sweep of {outcome.accounts} accounts: {time.perf_counter() - start:.2f} s wall")
    AccountForesight.objects.all().delete()
    parts = {"compute": 0.0, "distances": 0.0, "probability": 0.0, "lookahead": 0.0}
    originals = {
        "distances": foresight.distances,
        "liquidation_probability": foresight.liquidation_probability,
        "lookahead": foresight.lookahead,
    }

    def timed(name, key):
        def run(*args, **kwargs):
            started = time.process_time()
            try:
                return originals[name](*args, **kwargs)
            finally:
                parts[key] += time.process_time() - started

        return run

    with (
        mock.patch.object(foresight, "distances", timed("distances", "distances")),
        mock.patch.object(
            foresight, "liquidation_probability", timed("liquidation_probability", "probability")
        ),
        mock.patch.object(foresight, "lookahead", timed("lookahead", "lookahead")),
    ):
        wall, cpu = time.perf_counter(), time.process_time()
        graded = events = 0
        for start in range(0, len(members), foresight.TASK_ACCOUNTS):
            chunk = members[start : start + foresight.TASK_ACCOUNTS]
            result = foresight.foresight_accounts_grade(sweep_id=sweep.pk, account_ids=chunk)
            graded += result.stored
            events += result.events
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = max(graded, 1)
    print(
        f"  graded {graded} member accounts ({events} margin.warning events) in "
        f"{-(-len(members) // foresight.TASK_ACCOUNTS)} chunks: {wall:.2f} s wall, {cpu:.2f} s CPU; "
        f"{cpu / n * 1e3:.1f} ms CPU per account"
    )
    print(
        "  CPU split per account: distances {:.1f} ms, probability {:.1f} ms, look-ahead {:.1f} ms, "
        "the rest (reads, engine rebuild, vols, ladder, store) {:.1f} ms".format(
            parts["distances"] / n * 1e3,
            parts["probability"] / n * 1e3,
            parts["lookahead"] / n * 1e3,
            (cpu - parts["distances"] - parts["probability"] - parts["lookahead"]) / n * 1e3,
        )
    )
    levels = dict.fromkeys(("ok", "watch", "warning", "margin_call", "liquidation"), 0)
    for level in AccountForesight.objects.values_list("level", flat=True):
        levels[level] += 1
    print(f"  levels: {levels} ({load()})")


def api(members: list[int], token: str, requests: int) -> None:
    from django.db import connection
    from django.test import Client

    import clearing
    from accounts.models import MarginAccount
    from clearing.cache import ProcessLRU
    from riskengine.sweeps.foresight import account_foresight
    from riskengine.sweeps.models import AccountForesight
    from riskengine.sweeps.selectors import sweep_market

    client = Client()
    graded = (
        AccountForesight.objects.order_by("-probability", "account_id")
        .values_list("account_id", flat=True)
        .first()
    )
    account = MarginAccount.objects.get(pk=graded)

    def once(account_id: int) -> None:
        response = client.get(f"/api/v1/accounts/{account_id}/margin/", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 200, response.content[:300]
        assert response.json()["foresight"] is not None

    print(f"GET accounts/{{id}}/margin/ in process, stored foresight, account {account.code} ({load()})")
    print(f"  code: {os.path.dirname(os.path.dirname(clearing.__file__))}")
    for _ in range(20):
        once(account.pk)
    # Counted as they execute (CaptureQueriesContext reads the debug log, which is capped and may
    # already be full after the setup).
    executed: list[str] = []

    def count(execute, sql, params, many, context):
        executed.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        once(account.pk)
    print(f"  {len(executed)} queries per request")
    walls, cpus = [], []
    for _ in range(requests):
        wall, cpu = time.perf_counter(), time.process_time()
        once(account.pk)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    print(f"  whole request, {requests} one at a time: wall {quantiles(walls)}; CPU {quantiles(cpus)}")
    # The first read of a new version (after each sweep or grading): the process keeps nothing
    # for the account yet, so the answer is built (the wide read, the replay document, the
    # shaping). The sweep's market is kept, as it is for every account but the first the process
    # serves after a sweep.
    sweep = account.margin.sweep
    walls, cpus = [], []
    for _ in range(requests):
        ProcessLRU.clear_all()
        sweep_market(sweep=sweep)
        wall, cpu = time.perf_counter(), time.process_time()
        once(account.pk)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    print(f"  the first read of a version (nothing kept): wall {quantiles(walls)}; CPU {quantiles(cpus)}")
    walls = []
    for _ in range(requests):
        wall = time.perf_counter()
        # A new instance each time: account_foresight keeps the rows it read on the instance.
        account_foresight(account=MarginAccount(pk=account.pk))
        walls.append(time.perf_counter() - wall)
    print(
        "  account_foresight on a bare account (its margin, snapshot, sweep, set and stored foresight "
        f"read one by one, as the account page does): wall {quantiles(walls)}"
    )

    stored = AccountForesight.objects.get(account=account)
    stored.delete()
    walls = []
    for _ in range(min(requests, 50)):
        wall = time.perf_counter()
        once(account.pk)
        walls.append(time.perf_counter() - wall)
    print(f"  no stored foresight (computed for the answer), {len(walls)} requests: wall {quantiles(walls)}")
    stored.account_id = account.pk  # delete() cleared it
    stored.save(force_insert=True)  # put back: the next run measures the same account
    print(f"  ({load()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--api-only", action="store_true", help="skip the sweep and grading (already graded)")
    args = parser.parse_args()
    members, token = setup(args.copies)
    print(f"{len(members)} member accounts ({load()})")
    if not args.api_only:
        after_sweep(members)
    api(members, token, args.requests)


if __name__ == "__main__":
    main()
