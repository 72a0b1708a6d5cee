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

Sessions end while sockets stay open (sign-out, a password change, a user or its member
deactivated): the hub re-checks the session of every socket it holds every
``SESSION_CHECK_SECONDS`` and closes those whose session no longer admits their user
(``accounts.selectors.session_grants_ended``). Why a periodic batched check rather than signals
pushing a close through the channel layer: one check is two indexed queries for all of the
process's sockets (measured on PostgreSQL at 5,000 sockets of 5,000 users: ~25 ms on the hub's own
thread, i.e. about 1 % of one core at a 2 s period; 200 sockets: ~2 ms), it needs no per-user layer
groups, and it cannot miss a way a session ends — signals would miss sessions deleted or expired
outside a request (``clearsessions``, an expiry), users or members changed by ``QuerySet.update``
or SQL, and any message the layer drops; the database is the one truth. The price is a close up
to ``SESSION_CHECK_SECONDS`` (plus the query) after the session ended.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from channels.layers import get_channel_layer
from django.db import close_old_connections, connection

from accounts.selectors import SessionGrant, session_grants_ended

logger = logging.getLogger(__name__)

Sink = Callable[[str], Awaitable[None]]  # receives the event as JSON text
Revoke = Callable[[], Awaitable[None]]  # closes a socket whose session ended
# Redis layers forget group members after ``group_expiry`` (a day by default): re-join hourly.
REJOIN_SECONDS = 3600.0
# How often every socket's session is re-checked: the longest a socket keeps streaming after its
# session ended (plus one query).
SESSION_CHECK_SECONDS = 2.0


def _sessions_check(grants: list[SessionGrant]) -> set[SessionGrant]:
    close_old_connections()
    try:
        return session_grants_ended(grants=grants)
    except Exception:
        # A broken connection is replaced on the next round.
        connection.close()
        raise


def _connection_close() -> None:
    connection.close()


class Hub:
    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.sinks: dict[str, set[Sink]] = defaultdict(set)
        # Each watched socket's session grant and how to close it.
        self.sessions: dict[Revoke, SessionGrant] = {}
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._sessions_task: asyncio.Task | None = None
        # The session checks run on their own thread (and database connection): they never wait
        # for, or hold up, the threads that serve requests.
        self._executor: ThreadPoolExecutor | None = None

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

    def session_watch(self, *, grant: SessionGrant, revoke: Revoke) -> None:
        """Re-check ``grant`` every ``SESSION_CHECK_SECONDS``; once it no longer admits its user,
        ``revoke()`` is awaited (once) and the grant forgotten."""
        self.sessions[revoke] = grant
        if self._sessions_task is None or self._sessions_task.done():
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-hub-sessions")
            self._sessions_task = asyncio.get_running_loop().create_task(
                self._sessions_watch(), name="live-hub-sessions"
            )

    def session_unwatch(self, *, revoke: Revoke) -> None:
        self.sessions.pop(revoke, None)

    async def sessions_check_once(self) -> int:
        """Check every watched socket's session now; returns how many sockets were closed."""
        if not self.sessions:
            return 0
        watched = dict(self.sessions)
        loop = asyncio.get_running_loop()
        ended = await loop.run_in_executor(self._executor, _sessions_check, list(set(watched.values())))
        closed = 0
        for revoke, grant in watched.items():
            # A socket that went away while the check ran is not closed again.
            if grant in ended and self.sessions.pop(revoke, None) is not None:
                try:
                    await revoke()
                except Exception:
                    logger.debug("live hub: closing a socket whose session ended failed", exc_info=True)
                closed += 1
        return closed

    async def _sessions_watch(self) -> None:
        while True:
            await asyncio.sleep(SESSION_CHECK_SECONDS)
            try:
                await self.sessions_check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database is unreachable: no check this round. Nothing new streams meanwhile
                # either (events come from the database through the relay); retry next round.
                logger.exception("live hub: checking the sockets' sessions failed; retrying")

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
        tasks = [*self._tasks, *([self._sessions_task] if self._sessions_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks, self.channel, self._sessions_task = [], None, None
        self.sinks.clear()
        self.sessions.clear()
        if self._executor is not None:
            # The connection belongs to the checks' thread: close it there.
            await asyncio.get_running_loop().run_in_executor(self._executor, _connection_close)
            self._executor.shutdown(wait=False)
            self._executor = None


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
