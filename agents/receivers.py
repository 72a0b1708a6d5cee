"""What the agents do when a sweep announces its figures (connected in ``AgentsConfig.ready``).

The receiver runs in the sweep's transaction and only reads (two queries): the accounts whose
policies must act are handed to ``agents.accounts_act``, sent once the sweep commits. The sweep
never waits for an agent; an agent never acts on figures that did not commit."""

from __future__ import annotations

import logging

from django.db import transaction

from agents.selectors import swept_accounts_due
from agents.tasks import accounts_act
from riskengine.sweeps.signals import margins_swept

log = logging.getLogger(__name__)


def connect() -> None:
    margins_swept.connect(on_margins_swept, dispatch_uid="agents.margins_swept")


def on_margins_swept(sender, *, sweep, swept, **kwargs) -> None:
    due = swept_accounts_due(swept=swept)
    if due:
        transaction.on_commit(lambda: accounts_act_enqueue(due))


def accounts_act_enqueue(account_ids: list[int]) -> None:
    # After the sweep's commit: a broker error must not fail the sweep's task. The accounts stay
    # outside their band and the next sweep (a minute at most) sends them again.
    try:
        accounts_act.delay(account_ids)
    except Exception:
        log.exception("could not enqueue the agents of %d accounts; the next sweep will", len(account_ids))
