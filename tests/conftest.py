import pytest

from tests import factories


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
