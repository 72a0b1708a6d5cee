"""The outbox relay: committed ``OutboxEvent`` rows → the channel layer → members' browsers.

Design (see also README, "Live margin"):

* Producers (sweeps, the oracle, target bands) call ``clearing.events.events_publish`` inside the
  transaction of the state change, so an event exists iff its change committed.
* One relay task runs inside each ASGI web process. It is started lazily by the first websocket
  connection (``relay_ensure_started``): a process that serves no websocket has nobody to push to,
  and the lazy start works the same under uvicorn, daphne and the test servers, none of which need
  a lifespan handler for it.
* Every ``POLL_SECONDS`` it *claims* a batch of pending rows in one statement,
  ``UPDATE … SET relayed_at = now WHERE id IN (SELECT … WHERE relayed_at IS NULL ORDER BY id
  [FOR UPDATE SKIP LOCKED] LIMIT n) RETURNING …``. On PostgreSQL, ``SKIP LOCKED`` lets several web
  processes (behind the Redis layer) claim disjoint batches, so each row is sent by one relay
  (and again only if its send failed, below); on SQLite (the embedded stack: one web process,
  writers serialised by the database lock) the same statement without the locking clause is
  atomic.
* Claimed rows are ``group_send``-ed in id order, one message per group, to ``account-<id>``
  groups: the in-memory layer of this process in the embedded stack, Redis in production (where any
  web process may hold the member's socket). The members of those groups are the web processes'
  hubs, one per process, which hand each event to their local sockets (``frontend.hub`` says why).
  The relay adds ``account_code`` to each event (one query per batch).
* Delivery is at least once. A claim is released when its send fails: the rows of every group
  whose ``group_send`` raised or did not finish within ``SEND_TIMEOUT_SECONDS`` (a stale
  connection after a Redis restart, a layer at capacity), or that was never sent because the relay
  was stopped mid-round, go back to pending (``relayed_at`` NULL) with their ids, so the next round
  sends them again, still in id order. A send that failed after it reached Redis is then delivered
  twice; pages re-read their fragment on every event, so a duplicate costs a read, never a wrong
  figure. A release that cannot reach the database is retried before the next claim.
* Rows older than ``RETENTION`` are deleted (relayed or not) by a beat task (``frontend.tasks``,
  every minute, in bounded batches), whether or not any web process relays: pushes are
  notifications, the database is the truth, and a page that connects or reconnects reads the
  current state, never old events.

Why polling and not LISTEN/NOTIFY: a 50 ms poll of a partial index (``outbox_pending``) costs one
cheap query per process and works identically on SQLite; measured end-to-end figures are in
docs/performance.md ("Live margin").

The relay's database work runs on its own single thread (its own connection): it never queues
behind, or holds up, the thread that serves Django's synchronous views.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from channels.layers import get_channel_layer
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from accounts.models import MarginAccount
from clearing.bulk import datetime_aware, skip_locked
from clearing.events import FANOUT_GROUP, account_group, fanout_events
from clearing.models import OutboxEvent
from clearing.ops.metrics import OUTBOX_PRUNED, RELAY_LAG, RELAY_RELEASED, RELAY_SEND_FAILURES, RELAY_SENT

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.05
BATCH = 500
RETENTION = timedelta(minutes=5)
# One prune run deletes at most PRUNE_BATCHES × PRUNE_BATCH rows, each batch its own short
# transaction: at 100,000 accounts a full sweep writes up to one margin.updated per account a
# minute, so 20 × 10,000 a minute keeps up with twice that.
PRUNE_BATCH = 10_000
PRUNE_BATCHES = 20
# The layer message type; ``frontend.hub`` dispatches it by its ``group`` to the local sockets.
MESSAGE_TYPE = "outbox.events"
URGENT = ("margin_call.", "liquidation.")
SEND_CONCURRENCY = 16
# A group_send on a connection that died without a reset can wait for the socket's own timeout;
# past this the send counts as failed and its rows are released.
SEND_TIMEOUT_SECONDS = 5.0


class RelaySendFailed(Exception):
    """Some groups of a round were not sent; their events are pending again."""


def outbox_claim(*, limit: int = BATCH) -> list[tuple[int, str, dict]]:
    """Mark up to ``limit`` pending rows relayed and return their events as ``(id, group,
    payload)`` in id order. Safe with concurrent relays: a row is returned to exactly one caller.
    A fan-out row (group ``FANOUT_GROUP``, many accounts' events) gives one entry per event, each
    with the row's id and its account's group: sent, failed and released like any other event
    (a failed group releases the whole row, so its other accounts get that event again — at
    least once, as for every event)."""
    table = OutboxEvent._meta.db_table
    sql = (
        f"UPDATE {table} SET relayed_at = %s WHERE id IN ("
        f"SELECT id FROM {table} WHERE relayed_at IS NULL ORDER BY id LIMIT %s{skip_locked()}"
        ') RETURNING id, "group", payload, created_at'
    )
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        # The claim time as the ORM stores it (SQLite: naive UTC text, comparable with the others).
        cursor.execute(sql, [connection.ops.adapt_datetimefield_value(now), limit])
        rows = cursor.fetchall()
    field = OutboxEvent._meta.get_field("payload")
    decoded = [(pk, group, field.from_db_value(payload, None, connection)) for pk, group, payload, _ in rows]
    for *_, created_at in rows:
        RELAY_LAG.observe(max(0.0, (now - datetime_aware(created_at)).total_seconds()))
    # RETURNING gives no order guarantee; members must see events in the order they happened.
    decoded.sort(key=lambda row: row[0])
    if any(group == FANOUT_GROUP for _, group, _ in decoded):
        decoded = [
            (pk, account_group(event["account"]), event)
            for pk, group, payload in decoded
            for event in (fanout_events(payload) if group == FANOUT_GROUP else [payload])
        ]
    return decoded


def outbox_release(*, ids: list[int]) -> int:
    """Put claimed rows back to pending (their send failed); returns how many."""
    if not ids:
        return 0
    released = OutboxEvent.objects.filter(pk__in=ids, relayed_at__isnull=False).update(relayed_at=None)
    RELAY_RELEASED.inc(released)
    return released


def outbox_prune(
    *, retention: timedelta = RETENTION, batch: int = PRUNE_BATCH, batches: int = PRUNE_BATCHES
) -> int:
    """Delete rows older than ``retention``, oldest first, in at most ``batches`` statements of
    ``batch`` rows (each committed on its own when called outside a transaction); returns how many."""
    table = OutboxEvent._meta.db_table
    cutoff = connection.ops.adapt_datetimefield_value(timezone.now() - retention)
    deleted = 0
    for _ in range(batches):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN "
                f"(SELECT id FROM {table} WHERE created_at < %s ORDER BY id LIMIT %s)",
                [cutoff, batch],
            )
            count = cursor.rowcount
        deleted += count
        if count < batch:
            break
    OUTBOX_PRUNED.inc(deleted)
    return deleted


def _with_account_codes(rows: list[tuple[int, str, dict]]) -> list[tuple[int, str, dict]]:
    """Add ``account_code`` to each event (one query per batch) so pages can name the account."""
    ids = {payload.get("account") for _, _, payload in rows} - {None}
    if not ids:
        return rows
    codes = dict(MarginAccount.objects.filter(pk__in=ids).values_list("pk", "code"))
    for _, _, payload in rows:
        code = codes.get(payload.get("account"))
        if code is not None:
            payload["account_code"] = code
    return rows


def _connection_close() -> None:
    connection.close()


class OutboxRelay:
    """The polling loop of one process (see the module docstring)."""

    def __init__(self, *, poll_seconds: float = POLL_SECONDS, batch: int = BATCH) -> None:
        self.poll_seconds = poll_seconds
        self.batch = batch
        self.relayed = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-relay")
        self._task: asyncio.Task | None = None
        # Claimed rows whose send failed and whose release has not reached the database yet.
        self._unreleased: list[int] = []

    def _claim(self) -> list[tuple[int, str, dict]]:
        close_old_connections()
        try:
            if self._unreleased:
                outbox_release(ids=self._unreleased)
                self._unreleased = []
            return _with_account_codes(outbox_claim(limit=self.batch))
        except Exception:
            # A broken connection is replaced on the next round; never let the loop die.
            connection.close()
            raise

    def _release(self, ids: list[int]) -> None:
        try:
            outbox_release(ids=ids)
        except Exception:
            connection.close()
            self._unreleased.extend(ids)
            logger.exception("could not release %d outbox events; retrying before the next claim", len(ids))

    async def run_once(self) -> int:
        """Claim one batch and send it; returns how many events were sent. Raises
        ``RelaySendFailed`` when some groups could not be sent (their rows are pending again)."""
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(self._executor, self._claim)
        if not rows:
            return 0
        layer = get_channel_layer()
        # One layer message per group and round, its events in id order: a sweep that touches
        # an account twice (margin.updated, margin_call.opened) costs one fan-out, not two.
        by_group: dict[str, list[dict]] = {}
        ids: dict[str, list[int]] = {}
        for pk, group, payload in rows:
            by_group.setdefault(group, []).append(payload)
            ids.setdefault(group, []).append(pk)
        urgent = [g for g, events in by_group.items() if any(e["type"].startswith(URGENT) for e in events)]
        sent: set[str] = set()
        failed: list[str] = []

        async def send(group: str) -> None:
            message = {"type": MESSAGE_TYPE, "group": group, "events": by_group[group]}
            try:
                await asyncio.wait_for(layer.group_send(group, message), SEND_TIMEOUT_SECONDS)
            except Exception:
                failed.append(group)
                RELAY_SEND_FAILURES.inc()
                logger.warning("group_send to %s failed; its events go back to pending", group, exc_info=True)
            else:
                sent.add(group)

        try:
            # A sweep of thousands of accounts must not hold a margin call behind their routine
            # margin.updated events: accounts with a call or liquidation event go first, one by
            # one; the rest follow, several at a time (each group_send is a few Redis round trips).
            for group in urgent:
                await send(group)
            gate = asyncio.Semaphore(SEND_CONCURRENCY)

            async def gated(group: str) -> None:
                async with gate:
                    await send(group)

            first = set(urgent)
            await asyncio.gather(*(gated(group) for group in by_group if group not in first))
        finally:
            # Failed, timed out, or never sent because the relay is stopping: pending again.
            unsent = [pk for group, pks in ids.items() if group not in sent for pk in pks]
            if unsent:
                # A fan-out row's id stands for many groups: released once.
                await loop.run_in_executor(self._executor, self._release, sorted(set(unsent)))
        delivered = len(rows) - len(unsent)
        self.relayed += delivered
        RELAY_SENT.inc(delivered)
        if failed:
            raise RelaySendFailed(
                f"{len(failed)} of {len(by_group)} groups not sent; {len(unsent)} events pending again"
            )
        return delivered

    async def run(self) -> None:
        while True:
            try:
                sent = await self.run_once()
            except asyncio.CancelledError:
                raise
            except RelaySendFailed as error:  # each failed send was logged with its cause
                logger.warning("outbox relay: %s; retrying in 1 s", error)
                await asyncio.sleep(1.0)
                continue
            except Exception:
                logger.exception("outbox relay round failed; retrying")
                await asyncio.sleep(1.0)
                continue
            # A full batch means more are waiting: go again at once.
            if sent < self.batch:
                await asyncio.sleep(self.poll_seconds)

    def start(self) -> asyncio.Task:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="outbox-relay")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # The connection belongs to the relay's thread: close it there (the proxy resolves per thread).
        await asyncio.get_running_loop().run_in_executor(self._executor, _connection_close)
        self._executor.shutdown(wait=False)


_relays: dict[asyncio.AbstractEventLoop, OutboxRelay] = {}


def relay_ensure_started() -> OutboxRelay:
    """Start this event loop's relay if it is not running (called on every websocket connect)."""
    loop = asyncio.get_running_loop()
    relay = _relays.get(loop)
    if relay is None:
        relay = _relays[loop] = OutboxRelay()
    relay.start()
    return relay


async def relay_stop() -> None:
    """Stop this event loop's relay (tests; servers just exit)."""
    relay = _relays.pop(asyncio.get_running_loop(), None)
    if relay is not None:
        await relay.stop()
