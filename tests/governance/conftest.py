import pytest

from accounts.models import Role
from tests import factories

# ``active_set``, ``ops`` and ``approver`` are shared fixtures (tests/conftest.py); the second
# user of each role is for the four-eyes rules of this package only.


@pytest.fixture(autouse=True)
def _validated(validation_ready):
    """Proposals here are approved, once validated."""


@pytest.fixture
def ops2(db):
    return factories.user_make(username="ops2", role=Role.OPS)


@pytest.fixture
def approver2(db):
    return factories.user_make(username="risk2", role=Role.RISK_APPROVER)
