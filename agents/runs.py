"""What runs for an account after a sweep found one of its policies' levels crossed
(``agents.tasks.accounts_act``): its band policy, then each of its running hedge policies, each in
its own transaction, so that one account's refusal never holds back another's."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from agents.band import band_policy_apply
from agents.hedge import hedge_policy_evaluate
from agents.models import BandPolicy, HedgePolicy
from clearing.ops.retry import TRANSIENT_ERRORS

log = logging.getLogger(__name__)


def accounts_act(*, account_ids: Iterable[int]) -> dict[str, int]:
    """Apply the running policies of ``account_ids``; returns how many transfers, hedges (of any
    outcome) and errors there were. A transient database error is raised (the task retries: both
    services are safe to run again); any other error is logged and the next account goes on."""
    done: Counter = Counter()
    ids = sorted(set(account_ids))
    bands = set(
        BandPolicy.objects.filter(account_id__in=ids, is_active=True, suspended_at=None).values_list(
            "account_id", flat=True
        )
    )
    hedges = HedgePolicy.objects.filter(account_id__in=ids, is_active=True, suspended_at=None).order_by("pk")
    by_account: dict[int, list[int]] = {}
    for account_id, policy_id in hedges.values_list("account_id", "pk"):
        by_account.setdefault(account_id, []).append(policy_id)
    for account_id in ids:
        try:
            if account_id in bands:
                outcome = band_policy_apply(account_id=account_id)
                done[outcome.action] += 1
            for policy_id in by_account.get(account_id, []):
                if hedge_policy_evaluate(policy_id=policy_id) is not None:
                    done["hedges"] += 1
        except TRANSIENT_ERRORS:
            raise
        except Exception:
            log.exception("the agents of account %s failed", account_id)
            done["errors"] += 1
    return dict(done)
