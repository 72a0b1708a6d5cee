import pytest

from accounts.models import Role
from riskengine.services import parameter_set_bootstrap
from tests import factories


def venue_parameters_form(version: str = "v1") -> dict:
    """A parameters form for the test venue of ``factories.venue_make`` (BTC, ETH; USD, USDC, BTC)."""
    underlying = {
        "psr": 0.15, "vol_up": 0.5, "vol_down": 0.25,
        "extreme": [{"multiple": -2, "coverage": 0.35}, {"multiple": 2, "coverage": 0.35}],
        "min_basis": 0.01, "basis_rate": 0.075, "som_rate": 0.01,
        "conc_threshold": 20_000_000, "conc_rate": 0.05, "imf": 0.10, "mmf": 0.05,
    }  # fmt: skip
    return {
        "version": version,
        "mm_ratio": 0.8,
        "offset_cap": 0.8,
        "underlyings": {"BTC": underlying, "ETH": underlying | {"psr": 0.18}},
        "correlation": {"underlyings": ["BTC", "ETH"], "matrix": [[1.0, 0.8], [0.8, 1.0]]},
        "assets": {
            "USD": {
                "underlying": None,
                "liability_addon": 0.05,
                "haircuts": [{"up_to": None, "haircut": 0.0}],
            },
            "USDC": {
                "underlying": None,
                "liability_addon": 0.05,
                "haircuts": [{"up_to": 10_000_000, "haircut": 0.0}, {"up_to": None, "haircut": 0.02}],
            },
            "BTC": {
                "underlying": "BTC",
                "liability_addon": 0.10,
                "haircuts": [{"up_to": 1_000_000, "haircut": 0.05}, {"up_to": None, "haircut": 0.10}],
            },
        },
    }


@pytest.fixture
def active_set(venue):
    return parameter_set_bootstrap(form=venue_parameters_form("v1"))


@pytest.fixture
def ops(db):
    return factories.user_make(username="ops1", role=Role.OPS)


@pytest.fixture
def ops2(db):
    return factories.user_make(username="ops2", role=Role.OPS)


@pytest.fixture
def approver(db):
    return factories.user_make(username="risk1", role=Role.RISK_APPROVER)


@pytest.fixture
def approver2(db):
    return factories.user_make(username="risk2", role=Role.RISK_APPROVER)
