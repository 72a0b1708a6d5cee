from tests.governance.conftest import active_set, approver, ops  # noqa: F401  (governance fixtures)
from tests.sweeps.conftest import demo, quotes  # noqa: F401  (the seeded demo venue and its prices)
