"""The look-ahead requirement (issue #17 item 3): the initial margin an account will face at the
next change it can already see coming, like a prime broker's next-requirement figure.

Two changes are visible in advance:

- **tomorrow's valuation** (``valuation_shifted``): the same book and market one day later —
  every dated instrument a day closer to expiry (``T − 1/365``), and the futures and options that
  expire within the day gone with their positions; prices, vols and balances unchanged;
- **the next parameter set**: an approved set with a later effective time, applied to today's
  book and market (the caller builds that input with the set's parameters, same portfolios).

``lookahead_im`` is the larger of the two requirements (``reason`` says which set it: ties go to
tomorrow's valuation), and the **look-ahead excess** is today's equity less it. Equity is today's:
an expiring option or future's value settles into cash at expiry, which the methodology's equity
already counts at today's marks. A requirement that is not a finite number makes the account's
``lookahead_im`` and ``excess`` NaN (fail closed: nothing downstream reads a NaN as room).

Pure numpy; arrays ``(n_port,)`` USD over the input's portfolios.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

import numpy as np

from .document import MarginInput
from .margin import MarginResult, compute_margin
from .market import PERPETUAL

TOMORROW, PARAMETER_SET = 0, 1
REASONS = ("tomorrow", "parameter_set")


def valuation_shifted(margin_input: MarginInput, *, days: float = 1.0) -> MarginInput:
    """``margin_input`` valued ``days`` calendar days later: dated instruments' ``T`` less
    ``days/365``; instruments with ``T ≤ days/365`` (expiring by then) removed from the market,
    and their positions (with their allocations) from the portfolios. Positions keep their order;
    balances, prices and vols are unchanged."""
    m, f = margin_input.market, margin_input.portfolios
    step = days / 365.0
    alive = (m.kind == PERPETUAL) | (m.years > step)
    kept = np.flatnonzero(alive)
    index = np.full(m.n_instruments, -1, dtype=np.int64)
    index[kept] = np.arange(kept.size)
    market = replace(
        m,
        valuation_time=None if m.valuation_time is None else m.valuation_time + timedelta(days=days),
        instruments=tuple(m.instruments[i] for i in kept.tolist()),
        kind=m.kind[kept], underlying=m.underlying[kept], multiplier=m.multiplier[kept],
        years=np.where(m.kind[kept] == PERPETUAL, 0.0, m.years[kept] - step),
        strike=m.strike[kept], is_call=m.is_call[kept], iv=m.iv[kept],
    )  # fmt: skip
    held = alive[f.position_instrument]
    portfolios = replace(
        f,
        position_portfolio=f.position_portfolio[held],
        position_instrument=index[f.position_instrument[held]],
        position_quantity=f.position_quantity[held],
        position_entry=f.position_entry[held],
        position_allocated_margin=f.position_allocated_margin[held],
    )
    return MarginInput(margin_input.parameters, market, portfolios)


@dataclass(frozen=True, eq=False)
class Lookahead:
    """Per portfolio ``(n_port,)``: ``tomorrow_im`` USD (tomorrow's valuation), ``next_set_im`` USD
    (the next parameter set; NaN when none is given), ``im`` the larger (NaN if either is NaN),
    ``excess`` today's equity less ``im`` USD, ``reason`` int8 (``TOMORROW`` or
    ``PARAMETER_SET``, indices into ``REASONS``)."""

    tomorrow_im: np.ndarray
    next_set_im: np.ndarray
    im: np.ndarray
    excess: np.ndarray
    reason: np.ndarray


def lookahead(
    margin_input: MarginInput,
    *,
    result: MarginResult | None = None,
    next_input: MarginInput | None = None,
    days: float = 1.0,
) -> Lookahead:
    """The look-ahead requirement of every portfolio of ``margin_input`` (module doc). ``result``:
    today's engine result when the caller has it (its equity is used); ``next_input``: the same
    portfolios and market under the next parameter set, or ``None`` when no set is coming."""
    today = result if result is not None else compute_margin(margin_input)
    tomorrow = compute_margin(valuation_shifted(margin_input, days=days)).initial_margin
    n = tomorrow.size
    if next_input is None:
        next_im = np.full(n, np.nan)
        im = tomorrow.copy()
        reason = np.full(n, TOMORROW, dtype=np.int8)
    else:
        next_im = compute_margin(next_input).initial_margin
        im = np.maximum(tomorrow, next_im)  # NaN propagates
        reason = np.where(next_im > tomorrow, PARAMETER_SET, TOMORROW).astype(np.int8)
    im = np.where(np.isfinite(im), im, np.nan)
    excess = today.equity - im
    excess = np.where(np.isfinite(excess), excess, np.nan)
    return Lookahead(tomorrow_im=tomorrow, next_set_im=next_im, im=im, excess=excess, reason=reason)
