import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.db import connections

from accounts.models import Role
from frontend.hub import hub_stop
from frontend.relay import relay_stop
from tests import factories


@pytest.fixture
def two_members(transactional_db):
    """Members AAA (two accounts) and BBB (one), a trader each; committed, because the consumer and
    the relay read from their own threads and connections."""
    member_a = factories.member_make(code="AAA")
    member_b = factories.member_make(code="BBB")
    return {
        "a_accounts": [
            factories.account_make(member=member_a, code="AAA-01"),
            factories.account_make(member=member_a, code="AAA-02"),
        ],
        "b_accounts": [factories.account_make(member=member_b, code="BBB-01")],
        "alice": factories.user_make(username="alice", role=Role.TRADER, member=member_a),
        "bob": factories.user_make(username="bob", role=Role.VIEWER, member=member_b),
        "ops": factories.user_make(username="ops", role=Role.OPS),
        "feed": factories.user_make(username="feed", role=Role.PRICE_SOURCE),
    }


@pytest_asyncio.fixture
async def stop_relay():
    """Stops the relay a connection started, so no task outlives the test's event loop."""
    yield
    await relay_stop()
    await hub_stop()
    # The test's sync_to_async calls ran on a worker thread with its own connection: close it, or
    # the test database cannot be dropped at the end of the session.
    await sync_to_async(connections.close_all)()
