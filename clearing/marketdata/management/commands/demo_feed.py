"""``manage.py demo_feed``: simulated price sources for the demo venue (``make run`` starts it).

Writes through the oracle's services in this process (one transaction per tick), reniced and
sleeping between ticks so that it never hogs the machine.
"""

from __future__ import annotations

import os
import random
import time
from datetime import date
from decimal import Decimal

from django.core.management.base import BaseCommand
from django.utils import timezone

from clearing.history import daily_history
from clearing.marketdata.demo import (
    HISTORY_SYMBOLS,
    REPLAY_START,
    UNDERLYINGS,
    demo_sources_ensure,
    demo_symbols_prices,
)
from clearing.marketdata.feed import DemoFeed
from clearing.marketdata.models import IndexState
from clearing.marketdata.services import PriceIn, VolIn, price_observations_submit, vol_observations_submit
from clearing.models import Instrument, InstrumentKind


class Command(BaseCommand):
    help = "Simulated price sources replaying the real history, accelerated, with noise, jumps and bad ticks."

    def add_arguments(self, parser):
        parser.add_argument("--start", type=date.fromisoformat, default=REPLAY_START)
        parser.add_argument("--seconds-per-day", type=float, default=20.0, help="Replay speed.")
        parser.add_argument("--interval", type=float, default=2.0, help="Seconds between ticks.")
        parser.add_argument("--iv-every", type=int, default=15, help="IV marks every N ticks.")
        parser.add_argument("--ticks", type=int, default=0, help="Stop after N ticks (0: run forever).")
        parser.add_argument("--bad-tick-probability", type=float, default=0.01)
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args, **options):
        if options["ticks"] == 0 and hasattr(os, "nice"):
            os.nice(10)  # a demo nicety must yield to the web server and the sweeps
        rng = random.Random(options["seed"])
        sources = demo_sources_ensure()
        current = dict(
            IndexState.objects.filter(symbol__in=HISTORY_SYMBOLS)
            .exclude(last_good_price=None)
            .values_list("symbol", "last_good_price")
        )
        anchors = {symbol: current.get(symbol, price) for symbol, price in demo_symbols_prices().items()}
        options_by_underlying: dict[str, list[str]] = {}
        for symbol, underlying in Instrument.objects.filter(
            kind=InstrumentKind.OPTION, is_active=True
        ).values_list("symbol", "underlying__symbol"):
            options_by_underlying.setdefault(underlying, []).append(symbol)
        base_vols = {symbol: vol for symbol, (_n, _s, vol) in UNDERLYINGS.items()}

        def new_feed(start: date) -> DemoFeed:
            return DemoFeed(
                anchors=anchors,
                start=start,
                seconds_per_day=options["seconds_per_day"],
                n_sources=len(sources),
                rng=rng,
                bad_tick_probability=options["bad_tick_probability"],
            )

        feed, began, ticks = new_feed(options["start"]), time.monotonic(), 0
        self.stdout.write(
            f"Demo feed: {len(sources)} sources replaying {', '.join(anchors)} from {options['start']}, "
            f"one day every {options['seconds_per_day']:g} s."
        )
        while True:
            elapsed = time.monotonic() - began
            if feed.finished(elapsed):
                # The end of the history: start over from its beginning, from today's prices.
                anchors = {s: Decimal(f"{p:.8g}") for s, p in feed.prices(elapsed).items()}
                feed, began, elapsed = new_feed(daily_start()), time.monotonic(), 0.0
            tick = feed.tick(elapsed)
            now = timezone.now()
            rows = price_observations_submit(
                observations=[
                    PriceIn(sources[i], symbol, price, now) for i, symbol, price in tick.quotes + tick.bad
                ]
            )
            for note in tick.notes:
                self.stdout.write(f"[{tick.day}] {note}")
            for row in rows[len(tick.quotes) :]:
                self.stdout.write(
                    f"[{tick.day}] oracle: {row.symbol} {row.status} at {row.price}; {row.exclusions}"
                )
            ticks += 1
            if ticks % options["iv_every"] == 1:
                marks = feed.ivs(base_vols, elapsed)
                vol_observations_submit(
                    observations=[
                        VolIn(sources[0], option, Decimal(f"{marks[underlying]:.4f}"), now)
                        for underlying, symbols in options_by_underlying.items()
                        if underlying in marks
                        for option in symbols
                    ]
                )
            if options["ticks"] and ticks >= options["ticks"]:
                return
            time.sleep(max(0.0, options["interval"] - (time.monotonic() - began - elapsed)))


def daily_start() -> date:
    return daily_history("BTC")[0].day
