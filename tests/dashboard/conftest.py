import pytest

from accounts.models import User
from tests.sweeps.conftest import demo, quotes  # noqa: F401 (fixtures: the seeded demo venue)


@pytest.fixture
def ops(demo):  # noqa: F811
    return User.objects.get(username="ops")


@pytest.fixture
def approver(demo):  # noqa: F811
    return User.objects.get(username="risk")


@pytest.fixture
def trader(demo):  # noqa: F811
    return User.objects.get(username="alice")
