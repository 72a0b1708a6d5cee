"""The outbox relay claims each committed event once, in order, sends it again when a send
failed (at least once), and prunes old rows."""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from unittest import mock

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from clearing.events import FANOUT_GROUP, events_fanout_publish, events_publish
from clearing.models import OutboxEvent
from frontend.relay import OutboxRelay, RelaySendFailed, outbox_claim, outbox_prune
from frontend.tasks import outbox_prune_task


def test_claimed_events_come_in_id_order_and_are_never_claimed_again(db):
    events_publish(events=[(1, "margin.updated", {"n": n}) for n in range(5)])
    first = outbox_claim(limit=3)
    second = outbox_claim(limit=3)
    assert [payload["n"] for _, _, payload in first] == [0, 1, 2]
    assert [payload["n"] for _, _, payload in second] == [3, 4]
    assert outbox_claim() == []
    assert first[0][1] == "account-1"
    assert not OutboxEvent.objects.filter(relayed_at__isnull=True).exists()


def test_concurrent_relays_share_the_rows_without_duplicates(transactional_db):
    events_publish(events=[(n % 7, "margin.updated", {"n": n}) for n in range(400)])

    def drain() -> list[int]:
        seen = []
        try:
            while batch := outbox_claim(limit=25):
                seen.extend(payload["n"] for _, _, payload in batch)
        finally:
            connection.close()
        return seen

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: drain(), range(3)))
    claimed = [n for seen in results for n in seen]
    assert sorted(claimed) == list(range(400))
    assert len(set(claimed)) == 400


def test_rows_older_than_the_retention_are_pruned_relayed_or_not(db):
    old, recent = events_publish(events=[(1, "margin.updated", {}), (1, "margin.updated", {})])
    OutboxEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    assert outbox_prune(retention=timedelta(minutes=5)) == 1
    assert list(OutboxEvent.objects.values_list("pk", flat=True)) == [recent.pk]


def test_a_claim_records_its_time_as_the_orm_does_and_measures_the_lag_from_the_creation(db, clock):
    events_publish(events=[(1, "margin.updated", {"n": n}) for n in range(3)])
    created = clock.now
    claimed_at = clock.advance(seconds=2)
    lag = mock.Mock()

    with mock.patch("frontend.relay.RELAY_LAG", lag):
        assert len(outbox_claim()) == 3

    assert OutboxEvent.objects.filter(relayed_at=claimed_at).count() == 3
    assert OutboxEvent.objects.filter(created_at=created).count() == 3
    assert [c.args for c in lag.observe.call_args_list] == [(2.0,)] * 3


def test_a_row_exactly_as_old_as_the_retention_is_kept_and_one_a_microsecond_older_pruned(db, clock):
    (kept,) = events_publish(events=[(1, "margin.updated", {})])
    clock.advance(minutes=5)
    assert outbox_prune(retention=timedelta(minutes=5)) == 0
    clock.advance(microseconds=1)
    assert outbox_prune(retention=timedelta(minutes=5)) == 1
    assert not OutboxEvent.objects.filter(pk=kept.pk).exists()


class FlakyLayer:
    """A channel layer whose first ``group_send`` fails the way a stale connection after a Redis
    restart does; later sends reach the real (in-memory) layer."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0

    async def group_send(self, group, message) -> None:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("Connection closed by server.")
        await self.inner.group_send(group, message)


@pytest.mark.asyncio
async def test_an_event_whose_send_failed_is_delivered_on_the_next_round(transactional_db):
    (event,) = await sync_to_async(events_publish)(events=[(1, "margin_call.opened", {"call": 7})])
    inner = InMemoryChannelLayer()
    channel = await inner.new_channel()
    await inner.group_add("account-1", channel)
    layer = FlakyLayer(inner)
    relay = OutboxRelay()
    try:
        with mock.patch("frontend.relay.get_channel_layer", return_value=layer):
            with pytest.raises(RelaySendFailed):
                await relay.run_once()
            row = await OutboxEvent.objects.aget(pk=event.pk)
            assert row.relayed_at is None  # the claim was released: pending again
            assert await relay.run_once() == 1
        message = await asyncio.wait_for(inner.receive(channel), timeout=2)
        assert [e["call"] for e in message["events"]] == [7]
        assert (await OutboxEvent.objects.aget(pk=event.pk)).relayed_at is not None
        assert await relay.run_once() == 0  # delivered once the send succeeded, not again
    finally:
        await relay.stop()
        await sync_to_async(connections.close_all)()


@pytest.mark.asyncio
async def test_only_the_groups_that_failed_are_sent_again(transactional_db):
    await sync_to_async(events_publish)(
        events=[(1, "margin.updated", {"n": 1}), (2, "margin.updated", {"n": 2})]
    )
    inner = InMemoryChannelLayer()
    channels = {}
    for account in (1, 2):
        channels[account] = await inner.new_channel()
        await inner.group_add(f"account-{account}", channels[account])

    class FailsForAccountTwo:
        async def group_send(self, group, message):
            if group == "account-2":
                raise TimeoutError
            await inner.group_send(group, message)

    relay = OutboxRelay()
    try:
        flaky = mock.patch("frontend.relay.get_channel_layer", return_value=FailsForAccountTwo())
        with flaky, pytest.raises(RelaySendFailed):
            await relay.run_once()
        with mock.patch("frontend.relay.get_channel_layer", return_value=inner):
            assert await relay.run_once() == 1
        first = await asyncio.wait_for(inner.receive(channels[1]), timeout=2)
        second = await asyncio.wait_for(inner.receive(channels[2]), timeout=2)
        assert [e["n"] for e in first["events"]] == [1]
        assert [e["n"] for e in second["events"]] == [2]
        assert await relay.run_once() == 0
    finally:
        await relay.stop()
        await sync_to_async(connections.close_all)()


def test_the_beat_task_prunes_old_rows_in_bounded_batches_without_any_relay(db):
    events = events_publish(events=[(1, "margin.updated", {"n": n}) for n in range(5)])
    OutboxEvent.objects.filter(pk__in=[e.pk for e in events[:4]]).update(
        created_at=timezone.now() - timedelta(minutes=6)
    )
    assert outbox_prune(batch=3, batches=1) == 3  # one bounded batch, oldest first
    assert outbox_prune_task() == 1
    assert list(OutboxEvent.objects.values_list("pk", flat=True)) == [events[4].pk]
    assert settings.CELERY_BEAT_SCHEDULE["frontend-outbox-prune"]["task"] == outbox_prune_task.name


def fanout(*accounts: int) -> int:
    return events_fanout_publish(
        type="margin.updated",
        fields={"sweep": 9},
        columns={
            "account": np.array(accounts),
            "status": ["margin_call" if a % 2 else "healthy" for a in accounts],
            "equity": np.array(accounts, dtype=float) + 0.1,
        },
    )


def test_a_fanout_row_is_claimed_as_one_event_per_account_in_order_after_earlier_rows(db):
    events_publish(events=[(3, "margin_call.opened", {"call": 1})])
    assert fanout(1, 2, 3) == 3
    assert OutboxEvent.objects.filter(group=FANOUT_GROUP).count() == 1  # one row, three events

    claimed = outbox_claim()

    assert [(group, payload["type"]) for _, group, payload in claimed] == [
        ("account-3", "margin_call.opened"),
        ("account-1", "margin.updated"),
        ("account-2", "margin.updated"),
        ("account-3", "margin.updated"),
    ]
    assert [payload for _, _, payload in claimed[1:]] == [
        {"type": "margin.updated", "sweep": 9, "account": a, "status": status, "equity": a + 0.1}
        for a, status in ((1, "margin_call"), (2, "healthy"), (3, "margin_call"))
    ]
    assert outbox_claim() == []


@pytest.mark.asyncio
async def test_each_account_of_a_fanout_row_gets_its_own_event_and_a_failed_one_gets_it_again(
    transactional_db,
):
    await sync_to_async(fanout)(1, 2)
    inner = InMemoryChannelLayer()
    channels = {}
    for account in (1, 2):
        channels[account] = await inner.new_channel()
        await inner.group_add(f"account-{account}", channels[account])

    class FailsForAccountTwo:
        async def group_send(self, group, message):
            if group == "account-2":
                raise TimeoutError
            await inner.group_send(group, message)

    relay = OutboxRelay()
    try:
        flaky = mock.patch("frontend.relay.get_channel_layer", return_value=FailsForAccountTwo())
        with flaky, pytest.raises(RelaySendFailed):
            await relay.run_once()
        first = await asyncio.wait_for(inner.receive(channels[1]), timeout=2)
        assert [(e["account"], e["type"]) for e in first["events"]] == [(1, "margin.updated")]
        # The row went back to pending as a whole: both accounts get it again (at least once).
        with mock.patch("frontend.relay.get_channel_layer", return_value=inner):
            assert await relay.run_once() == 2
        second = await asyncio.wait_for(inner.receive(channels[2]), timeout=2)
        assert [(e["account"], e["equity"]) for e in second["events"]] == [(2, 2.1)]
        again = await asyncio.wait_for(inner.receive(channels[1]), timeout=2)
        assert [e["account"] for e in again["events"]] == [1]
        assert await relay.run_once() == 0
    finally:
        await relay.stop()
        await sync_to_async(connections.close_all)()
