"""What a task retries, and how: the transient errors of the database and the broker.

``RETRY`` goes into ``@shared_task(**RETRY)`` of every task that is safe to run again. A lost
database connection, a lock wait past ``lock_timeout``, a failover or a broker that is briefly
unreachable end the attempt; the task is sent again after 2, 4, 8, … s (at most 60 s, with
jitter so a fleet of workers does not retry in step), at most 5 times. Anything else is a bug or
bad data and fails at once (``clearing_task_failures_total``). The longest countdown (60 s) plus
the largest hard time limit stays below the broker's visibility timeout (settings).
"""

from __future__ import annotations

from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    BrokerOperationalError,
    ConnectionError,
    TimeoutError,
)
RETRY_BACKOFF_MAX = 60
RETRY = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": RETRY_BACKOFF_MAX,
    "retry_jitter": True,
    "max_retries": 5,
}
