import pytest

from tests import factories


@pytest.fixture
def book(venue, active_set, member_a, member_b, history):
    return factories.validation_book_make(venue, member_a, member_b)


@pytest.fixture
def quotes_now(venue):
    return factories.quotes_fixed()
