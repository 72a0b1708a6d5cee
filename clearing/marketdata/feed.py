"""The demo feed: simulated price sources replaying the real history, accelerated.

Each underlying and stablecoin follows its real daily closes from ``start`` on, one historical day
every ``seconds_per_day`` seconds, scaled so that the replay starts at the current index price (no
jump at start-up): ``price(t) = anchor · close(day(t)) / close(start)``, interpolated in log between
closes, plus a mean-reverting intraday noise, occasional jumps (a few percent: event sweeps) and
rare large ones (beyond the circuit breaker). Each source quotes with its own small noise, and now
and then one source sends a bad tick (a decimal slip or a fat finger) that the oracle must exclude.
Option IV marks follow each underlying's demo vol, raised when its recent moves are large.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from clearing.history import daily_history

BAD_TICK_FACTORS = (0.1, 10.0, 0.7, 1.35)


@dataclass
class Path:
    closes: list[tuple[date, float]]
    anchor: float
    intraday_vol: float  # per tick, log
    source_noise: float  # per quote, log
    noise: float = 0.0
    jump: float = 0.0
    base: float = field(init=False)

    def __post_init__(self) -> None:
        self.base = self.closes[0][1]

    def level(self, position: float) -> float:
        """Historical level at fractional day ``position`` (0 = start), log-interpolated."""
        k = min(int(position), len(self.closes) - 2)
        frac = min(max(position - k, 0.0), 1.0)
        lo, hi = self.closes[k][1], self.closes[k + 1][1]
        return math.exp(math.log(lo) * (1 - frac) + math.log(hi) * frac)


@dataclass(frozen=True)
class Tick:
    quotes: list[tuple[int, str, Decimal]]  # (source index, symbol, price), good quotes first
    bad: list[tuple[int, str, Decimal]]  # bad ticks, sent after the good ones
    day: date
    notes: list[str]


class DemoFeed:
    def __init__(
        self,
        *,
        anchors: dict[str, Decimal],
        start: date,
        seconds_per_day: float,
        n_sources: int,
        rng: random.Random,
        quote_probability: float = 0.8,
        jump_probability: float = 0.003,
        big_jump_probability: float = 0.0003,
        bad_tick_probability: float = 0.01,
        warmup_ticks: int = 5,
    ):
        self.rng = rng
        self.start = start
        self.seconds_per_day = seconds_per_day
        self.n_sources = n_sources
        self.quote_probability = quote_probability
        self.jump_probability = jump_probability
        self.big_jump_probability = big_jump_probability
        self.bad_tick_probability = bad_tick_probability
        self.warmup_ticks = warmup_ticks
        self.ticks = 0
        self.paths: dict[str, Path] = {}
        for symbol, anchor in anchors.items():
            closes = [(b.day, float(b.close)) for b in daily_history(symbol) if b.day >= start]
            stable = symbol in ("USDC", "USDT", "DAI")
            self.paths[symbol] = Path(
                closes=closes,
                anchor=float(anchor),
                intraday_vol=0.00005 if stable else 0.0015,
                source_noise=0.00003 if stable else 0.0004,
            )

    def position(self, elapsed: float) -> float:
        return elapsed / self.seconds_per_day

    def prices(self, elapsed: float) -> dict[str, float]:
        """The simulated true price of every symbol ``elapsed`` seconds into the replay."""
        position = self.position(elapsed)
        return {
            symbol: path.anchor * path.level(position) / path.base * math.exp(path.noise + path.jump)
            for symbol, path in self.paths.items()
        }

    def finished(self, elapsed: float) -> bool:
        return any(self.position(elapsed) >= len(p.closes) - 1 for p in self.paths.values())

    def tick(self, elapsed: float) -> Tick:
        rng, notes = self.rng, []
        self.ticks += 1
        for symbol, path in self.paths.items():
            path.noise = 0.9 * path.noise + rng.gauss(0, path.intraday_vol)
            path.jump *= 0.995
            if symbol not in ("USDC", "USDT", "DAI"):
                if rng.random() < self.jump_probability:
                    size = rng.choice([-1, 1]) * rng.uniform(0.03, 0.06)
                    path.jump += size
                    notes.append(f"jump of {size:+.1%} on {symbol}")
                if rng.random() < self.big_jump_probability:
                    size = rng.choice([-1, 1]) * rng.uniform(0.18, 0.25)
                    path.jump += size
                    notes.append(f"large jump of {size:+.1%} on {symbol} (beyond the circuit breaker)")
        prices = self.prices(elapsed)
        quotes = []
        for symbol, price in prices.items():
            for source in range(self.n_sources):
                if rng.random() < self.quote_probability:
                    noisy = price * math.exp(rng.gauss(0, self.paths[symbol].source_noise))
                    quotes.append((source, symbol, _decimal(noisy)))
        bad = []
        if self.ticks > self.warmup_ticks and rng.random() < self.bad_tick_probability:
            symbol = rng.choice(sorted(prices))
            source = rng.randrange(self.n_sources)
            factor = rng.choice(BAD_TICK_FACTORS)
            bad.append((source, symbol, _decimal(prices[symbol] * factor)))
            notes.append(f"bad tick from source {source + 1} on {symbol}: ×{factor}")
        day_index = min(int(self.position(elapsed)), len(next(iter(self.paths.values())).closes) - 1)
        return Tick(
            quotes=quotes, bad=bad, day=next(iter(self.paths.values())).closes[day_index][0], notes=notes
        )

    def ivs(self, base_vols: dict[str, float], elapsed: float) -> dict[str, float]:
        """Mark IV per underlying: its demo vol, lifted by the size of the latest daily move."""
        position = self.position(elapsed)
        marks = {}
        for symbol, vol in base_vols.items():
            path = self.paths.get(symbol)
            if path is None:
                continue
            move = abs(math.log(path.level(position) / path.level(max(position - 1, 0.0))))
            marks[symbol] = min(3.0, vol * (1 + 4 * move) * math.exp(self.rng.gauss(0, 0.02)))
        return marks


def _decimal(value: float) -> Decimal:
    # Eight significant digits: what a price source sends.
    return Decimal(f"{value:.8g}")
