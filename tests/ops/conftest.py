from tests.sweeps.conftest import demo, quotes  # noqa: F401  (the seeded demo venue and its prices)
