"""The per-process fan-out of live events to the sockets this process holds.

Why not let every socket join the channel-layer groups itself (the Channels default)? Then one
event for an account watched by 200 sockets is 200 layer messages, and on Redis 200 pushes and
200 pops through one receive loop: measured at ~80 ms per event at 200 sockets, so a sweep that
updates ten watched accounts took 1.5 s to reach the browsers, and 200 sockets reconnecting at
once exhausted the Redis connection pool with group_add/group_discard calls. Instead each web
process has one ``Hub``: a single layer channel that joins an account's group when the first local
socket watching that account connects and leaves it when the last one goes. One event costs one
layer message per *process*, then plain in-memory calls to the local sockets.

The relay (``frontend.relay``) still ``group_send``s each claimed row once; with several web
processes on Redis every process whose sockets watch the account gets it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

Sink = Callable[[str], Awaitable[None]]  # receives the event as JSON text
# Redis layers forget group members after ``group_expiry`` (a day by default): re-join hourly.
REJOIN_SECONDS = 3600.0


class Hub:
    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.sinks: dict[str, set[Sink]] = defaultdict(set)
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []

    async def _start(self) -> None:
        if self.channel is None:
            self.channel = await self.layer.new_channel()
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._receive(), name="live-hub"),
                loop.create_task(self._rejoin(), name="live-hub-rejoin"),
            ]

    async def subscribe(self, *, groups: Iterable[str], sink: Sink) -> None:
        async with self._lock:
            await self._start()
            for group in groups:
                if not self.sinks[group]:
                    await self.layer.group_add(group, self.channel)
                self.sinks[group].add(sink)

    async def unsubscribe(self, *, groups: Iterable[str], sink: Sink) -> None:
        async with self._lock:
            for group in groups:
                sinks = self.sinks.get(group)
                if sinks is None:
                    continue
                sinks.discard(sink)
                if not sinks:
                    del self.sinks[group]
                    await self.layer.group_discard(group, self.channel)

    async def _receive(self) -> None:
        failures = 0
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                # channels_redis's blocking pop can end in a read timeout on an idle connection
                # (every ~5 s with redis-py 5+): retry at once, and back off only if it keeps failing.
                failures += 1
                if failures > 1:
                    logger.exception("live hub: receiving from the channel layer failed; retrying")
                    await asyncio.sleep(min(0.05 * failures, 1.0))
                continue
            failures = 0
            sinks = list(self.sinks.get(message.get("group"), ()))
            for event in message.get("events", ()):
                # Every socket of a group gets the same text: encode it once, not once per socket.
                text = json.dumps(event, separators=(",", ":"))
                for sink in sinks:
                    try:
                        await sink(text)
                    except Exception:
                        # A socket closing mid-send must not keep the event from the others.
                        logger.debug("live hub: a socket refused an event", exc_info=True)

    async def _rejoin(self) -> None:
        while True:
            await asyncio.sleep(REJOIN_SECONDS)
            async with self._lock:
                for group in list(self.sinks):
                    await self.layer.group_add(group, self.channel)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks, self.channel = [], None
        self.sinks.clear()


_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


def hub_get() -> Hub:
    """This event loop's hub (one per web process)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub


async def hub_stop() -> None:
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    if hub is not None:
        await hub.stop()
