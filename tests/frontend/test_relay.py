"""The outbox relay claims each committed event exactly once, in order, and prunes old rows."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from frontend.events import events_publish
from frontend.models import OutboxEvent
from frontend.relay import outbox_claim, outbox_prune


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
