import pytest
from django.conf import settings

from riskengine.reference import reference_clear
from riskengine.sweeps.selectors import _parameters_form
from tests import factories


@pytest.fixture(autouse=True)
def _process_caches_cleared():
    """Per-process caches keyed by database ids start empty in every test: SQLite hands the ids of
    a rolled-back test out again (PostgreSQL's sequences never do), and a test that edits a frozen
    parameter set in place must not meet the form a previous test cached under the same id."""
    reference_clear()
    _parameters_form.cache_clear()


def pytest_runtest_setup(item):
    """Tests marked ``postgresql`` exercise what only PostgreSQL has (row-lock races between
    connections, SKIP LOCKED, real workers on a shared server, pg_terminate_backend, pipeline mode):
    on the embedded SQLite stack (``make test-sqlite``) they are skipped, saying why."""
    marker = item.get_closest_marker("postgresql")
    if marker and settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "needs PostgreSQL")
        pytest.skip(f"PostgreSQL only: {reason}")


@pytest.fixture
def venue(db):
    """A small venue: BTC and ETH with a perpetual, a dated future and an option each; USD, USDC
    and a BTC asset linked to its underlying."""
    return factories.venue_make()


@pytest.fixture
def member_a(db):
    return factories.member_make(code="AAA")


@pytest.fixture
def member_b(db):
    return factories.member_make(code="BBB")
