"""Operations: what keeps the platform running through crashes, outages and late messages —
database timeouts, snapshot retention, the insurance-fund guard, stuck-work recovery and the
Prometheus metrics (docs/operations.md)."""
