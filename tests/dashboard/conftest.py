import pytest

from accounts.models import User


# The dashboard is read on the seeded demo venue (``demo``, tests/conftest.py) by its own users.
@pytest.fixture
def ops(demo):
    return User.objects.get(username="ops")


@pytest.fixture
def approver(demo):
    return User.objects.get(username="risk")


@pytest.fixture
def trader(demo):
    return User.objects.get(username="alice")
