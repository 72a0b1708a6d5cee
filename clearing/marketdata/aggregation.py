"""The oracle's aggregation rule as a pure function over plain values (no Django, no database).

``index_aggregate(quotes, rules=..., prior=..., now=...)`` turns each source's latest quote for one
symbol into an index price with a status:

1. A source is *fresh* when its ``source_time`` is within ``max_age`` of ``now``. None fresh →
   ``stale``: no price, the last good price stands.
2. The median of the fresh quotes is the centre; a quote more than ``max_deviation`` (a fraction)
   away from it is excluded, with the reason. With exactly two fresh sources there is no
   majority: the one closest to the last good price is kept and the other excluded (two sources are
   never averaged).
3. The price is the median of what remains (with two: the one closest to the last good price; with
   one: that one). Status ``ok``, or ``degraded`` when fewer than ``min_sources`` remain.
4. Circuit breaker: a price more than ``breaker_move`` away from a last good price set within
   ``breaker_window`` is held ``unconfirmed`` (the last good price stands), with the sources that
   made it, until a later aggregation agrees with it within ``max_deviation`` *and counts a source
   that did not make it* — that confirms it — or ops (or another price source) confirm it
   explicitly. A source repeating its own move never confirms it: one feed, wrong or compromised,
   cannot push a sudden move through the breaker alone.

``quorum_until`` is when fewer than ``min_sources`` of the contributing quotes will still be fresh:
an ``ok`` index reads ``degraded`` after it even if no aggregation runs meanwhile
(``clearing.marketdata.selectors``), and liquidation needs ``ok`` (``clearing.marketdata.quotes``).

Every result names the contributing sources and each exclusion with its reason.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from operator import attrgetter

PRICE_PLACES = Decimal("1e-10")

OK, DEGRADED, STALE, UNCONFIRMED = "ok", "degraded", "stale", "unconfirmed"


@dataclass(frozen=True, slots=True)
class Quote:
    source: str
    price: Decimal
    source_time: datetime


@dataclass(frozen=True, slots=True)
class OracleRules:
    max_age: timedelta
    max_deviation: Decimal  # fraction of the median, 0.02 = 2 %
    min_sources: int
    breaker_move: Decimal  # fraction of the last good price
    breaker_window: timedelta
    event_move: Decimal  # fraction of the price at the last sweep


@dataclass(frozen=True, slots=True)
class PriorState:
    last_good_price: Decimal | None = None
    last_good_at: datetime | None = None
    pending_price: Decimal | None = None  # the candidate the breaker holds, if any
    pending_sources: frozenset[str] = frozenset()  # the sources that made the held candidate


@dataclass(frozen=True, slots=True)
class Exclusion:
    source: str
    price: Decimal
    reason: str

    def as_json(self) -> dict:
        # Plain notation without trailing zeros: the same text whether the price came from the
        # request (``6000``) or back from a NUMERIC(28, 10) column (``6000.0000000000``).
        return {"source": self.source, "price": f"{self.price.normalize():f}", "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Aggregate:
    status: str
    price: Decimal | None  # what the fresh sources say (None when stale)
    sources: tuple[str, ...]
    exclusions: tuple[Exclusion, ...]
    note: str
    last_good_price: Decimal | None  # what the platform uses after this aggregation
    last_good_at: datetime | None
    pending_price: Decimal | None  # held by the breaker (status unconfirmed), else None
    pending_status: str  # the status the held price would have had: ok or degraded
    fresh_until: datetime | None  # when the freshest contributing quote goes stale
    pending_sources: tuple[str, ...] = ()  # who made the held price (status unconfirmed)
    # When fewer than min_sources contributing quotes are fresh any more (None: already fewer).
    quorum_until: datetime | None = None

    @property
    def is_good(self) -> bool:
        """True when this aggregation set a new last good price."""
        return self.status in (OK, DEGRADED)


def _pct(fraction: Decimal) -> str:
    return f"{fraction * 100:.2f} %"


def _move(price: Decimal, reference: Decimal) -> Decimal:
    return abs(price / reference - 1)


def index_aggregate(
    quotes: list[Quote], *, rules: OracleRules, prior: PriorState, now: datetime
) -> Aggregate:
    """One aggregation of ``quotes`` (each source's latest quote, one per source) at ``now``."""
    exclusions: list[Exclusion] = []
    notes: list[str] = []
    horizon = now - rules.max_age
    fresh = []
    for quote in sorted(quotes, key=attrgetter("source")):
        if quote.source_time < horizon:
            exclusions.append(
                Exclusion(quote.source, quote.price, f"stale: source time older than {rules.max_age}")
            )
        else:
            fresh.append(quote)
    if not fresh:
        return Aggregate(
            status=STALE,
            price=None,
            sources=(),
            exclusions=tuple(exclusions),
            note="no fresh source; the last good price stands",
            last_good_price=prior.last_good_price,
            last_good_at=prior.last_good_at,
            pending_price=None,
            pending_status="",
            fresh_until=None,
        )

    anchor = prior.last_good_price
    if len(fresh) == 2:
        # No majority between two: never average them; take the one closer to the last good price.
        if anchor is None:
            kept, other = sorted(fresh, key=lambda q: q.source_time, reverse=True)
            why = "no last good price: took the most recent quote"
        else:
            kept, other = sorted(fresh, key=lambda q: (abs(q.price - anchor), q.source))
            why = f"took {kept.source}, closer to the last good price {anchor}"
        disagreement = _move(other.price, kept.price)
        if disagreement > rules.max_deviation:
            remaining = [kept]
            exclusions.append(
                Exclusion(other.source, other.price, f"two sources {_pct(disagreement)} apart: {why}")
            )
        else:
            remaining = [kept, other]
        notes.append(f"two sources, never averaged: {why}")
        price = kept.price
    else:
        centre = statistics.median(q.price for q in fresh)
        remaining = []
        for quote in fresh:
            deviation = _move(quote.price, centre)
            if deviation > rules.max_deviation:
                exclusions.append(
                    Exclusion(
                        quote.source,
                        quote.price,
                        f"deviates {_pct(deviation)} from the median "
                        f"{centre.quantize(PRICE_PLACES).normalize():f} (max {_pct(rules.max_deviation)})",
                    )
                )
            else:
                remaining.append(quote)
        if not remaining:
            # Only possible with an even number of split quotes: fall back to the closest to the
            # last good price (or to the median) rather than to an average nobody quoted.
            target = anchor if anchor is not None else centre
            kept = min(fresh, key=lambda q: (abs(q.price - target), q.source))
            exclusions = [e for e in exclusions if e.source != kept.source]
            remaining = [kept]
            notes.append(f"sources split; kept {kept.source}, closest to {target}")
        if len(remaining) == 2:
            target = anchor if anchor is not None else centre
            kept = min(remaining, key=lambda q: (abs(q.price - target), q.source))
            price = kept.price
            notes.append(f"two sources left: took {kept.source}, closest to {target}")
        else:
            price = statistics.median(q.price for q in remaining)
    price = price.quantize(PRICE_PLACES)
    status = OK if len(remaining) >= rules.min_sources else DEGRADED
    if status == DEGRADED:
        notes.insert(0, f"{len(remaining)} of {rules.min_sources} required sources")
    sources = tuple(q.source for q in remaining)
    fresh_until = max(q.source_time for q in remaining) + rules.max_age
    newest_first = sorted((q.source_time for q in remaining), reverse=True)
    quorum_until = newest_first[rules.min_sources - 1] + rules.max_age if status == OK else None

    breaker_armed = (
        anchor is not None
        and prior.last_good_at is not None
        and prior.last_good_at >= now - rules.breaker_window
        and _move(price, anchor) > rules.breaker_move
    )
    if breaker_armed:
        agrees = prior.pending_price is not None and _move(price, prior.pending_price) <= rules.max_deviation
        independent = sorted(set(sources) - prior.pending_sources)
        if agrees and independent:
            notes.append(
                f"confirms the move of {_pct(_move(price, anchor))} from {anchor} held by the breaker "
                f"({', '.join(independent)} agreeing with {', '.join(sorted(prior.pending_sources)) or 'it'})"
            )
        else:
            if agrees:
                # The same sources repeating their move: still held, and still theirs alone.
                held_by = tuple(sorted(prior.pending_sources | set(sources)))
                notes.append(
                    f"the move of {_pct(_move(price, anchor))} from {anchor} is still reported only by "
                    f"{', '.join(held_by)}, who made it; held until another source or ops confirm it"
                )
            else:
                held_by = sources
                notes.append(
                    f"circuit breaker: {_pct(_move(price, anchor))} from the last good price {anchor} "
                    f"(max {_pct(rules.breaker_move)} within {rules.breaker_window}); held until "
                    "another source or ops confirm it"
                )
            return Aggregate(
                status=UNCONFIRMED,
                price=price,
                sources=sources,
                exclusions=tuple(exclusions),
                note="; ".join(notes),
                last_good_price=anchor,
                last_good_at=prior.last_good_at,
                pending_price=price,
                pending_status=status,
                fresh_until=fresh_until,
                pending_sources=held_by,
                quorum_until=quorum_until,
            )
    return Aggregate(
        status=status,
        price=price,
        sources=sources,
        exclusions=tuple(exclusions),
        note="; ".join(notes),
        last_good_price=price,
        last_good_at=now,
        pending_price=None,
        pending_status="",
        fresh_until=fresh_until,
        quorum_until=quorum_until,
    )
